//! Whom the agent trusts to move its wave tag. Given an allowed-signers file, the agent
//! follows a wave tag only when it is an annotated tag carrying an SSH signature (SSHSIG,
//! namespace `git`, as `git tag -s` with `gpg.format=ssh` makes it) by a key listed there
//! for that namespace and valid now. Everything else is a [`Refusal`], which names the key
//! (when there is one) and why.
//!
//! Pure: this module parses text and checks bytes that `source` reads from git; it does no
//! I/O and reads no clock (the instant a key must be valid at is a parameter). Signatures
//! are checked with the `ssh-key` crate, never by running `ssh-keygen`.
//!
//! - [`allowed_signers`]: the `ssh-keygen` ALLOWED SIGNERS format, with line:column
//!   diagnostics.
//! - [`tag`]: a tag object split as git splits it (payload, signature, header).
//! - [`pattern`]: OpenSSH pattern lists, also used for `known_hosts` host names.
//!
//! Differences from `git verify-tag` (with `gpg.ssh.allowedSignersFile`), all stricter:
//! - `valid-after`/`valid-before` are checked at the time of the check, not at the time
//!   the tagger line claims: a key that expired cannot sign a tag by backdating it.
//! - The tag object must carry the name of the ref it is found under: a signed
//!   `wave/canary` object pushed as `wave/prod` is refused.
//! - The tag must point at a commit.
//! - Signatures made by SSH certificates (`cert-authority` lines) are refused: the
//!   `ssh-key` crate cannot read certificate keys inside an SSHSIG.

pub mod allowed_signers;
pub mod pattern;
pub mod sign;
pub mod tag;

use jiff::Timestamp;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey, SshSig};

pub use allowed_signers::{AllowedSigners, Entry};
pub use sign::{SignError, SigningKey};

/// The namespace git signs tags and commits in (`ssh-keygen -Y sign -n git`).
pub const GIT_NAMESPACE: &str = "git";

/// The key that made an accepted signature, and the allowed-signers line that allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The principals of the line.
    pub principals: String,
    /// The line (1-based).
    pub line: usize,
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.fingerprint, self.principals)
    }
}

/// A wave tag whose signature was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTag {
    /// The commit the signed tag object names.
    pub commit: String,
    /// Who signed it.
    pub signer: Signer,
}

/// Why a tag or a signature is not trusted. Each needs a person: re-sign the tag with an
/// allowed key, or change the allowed-signers file.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The ref points straight at a commit (or another object): no tag object, so no
    /// signature.
    #[error(
        "it is a lightweight tag (it points at a {target} directly), so it carries no signature; make it with `git tag -s`"
    )]
    Lightweight {
        /// The type of object the ref points at.
        target: String,
    },
    /// An annotated tag without a signature block.
    #[error("the tag is not signed; sign it with `git tag -s` (gpg.format=ssh)")]
    Unsigned,
    /// Signed, but not with SSH.
    #[error(
        "the tag carries an {format} signature; only SSH signatures (gpg.format=ssh) are accepted"
    )]
    OtherFormat {
        /// The kind of signature found.
        format: tag::Format,
    },
    /// The SSH signature block cannot be decoded.
    #[error("the tag's SSH signature cannot be decoded")]
    Undecodable {
        /// What the decoder said.
        #[source]
        source: ssh_key::Error,
    },
    /// The signature was made by an SSH certificate.
    #[error(
        "the signature was made with an SSH certificate ({algorithm}, {fingerprint}); certificates are not supported, sign with the key itself"
    )]
    Certificate {
        /// Fingerprint of the certificate blob.
        fingerprint: String,
        /// The certificate type.
        algorithm: String,
    },
    /// The signature is for another use than git.
    #[error(
        "the signature by key {fingerprint} was made for namespace `{namespace}`, not `{GIT_NAMESPACE}`"
    )]
    WrongNamespace {
        /// The signing key.
        fingerprint: String,
        /// The namespace of the signature.
        namespace: String,
    },
    /// A key type this build does not verify.
    #[error(
        "key {fingerprint} is of type {algorithm}, which tidemark cannot verify (supported: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa with rsa-sha2-256/512, and their sk- variants)"
    )]
    UnsupportedKey {
        /// The signing key.
        fingerprint: String,
        /// Its type.
        algorithm: String,
    },
    /// The signature does not match the signed bytes.
    #[error(
        "the signature by key {fingerprint} does not match the tag object: it was changed after signing, or the signature is forged"
    )]
    BadSignature {
        /// The key the signature names.
        fingerprint: String,
    },
    /// The key is not in the allowed-signers file.
    #[error("key {fingerprint} is not in the allowed signers file {file}")]
    UnknownKey {
        /// The signing key.
        fingerprint: String,
        /// The allowed-signers file.
        file: String,
    },
    /// The key is allowed, but not for namespace `git`.
    #[error(
        "key {fingerprint} ({principals}) is allowed only for namespaces \"{namespaces}\" ({file}:{line}), not `{GIT_NAMESPACE}`"
    )]
    NamespaceNotAllowed {
        /// The signing key.
        fingerprint: String,
        /// The principals of its line.
        principals: String,
        /// The namespaces its line allows.
        namespaces: String,
        /// The allowed-signers file.
        file: String,
        /// The line.
        line: usize,
    },
    /// The key's `valid-after` is still ahead.
    #[error("key {fingerprint} ({principals}) is valid only after {valid_after} ({file}:{line})")]
    NotYetValid {
        /// The signing key.
        fingerprint: String,
        /// The principals of its line.
        principals: String,
        /// Its `valid-after`.
        valid_after: Timestamp,
        /// The allowed-signers file.
        file: String,
        /// The line.
        line: usize,
    },
    /// The key's `valid-before` has passed.
    #[error("key {fingerprint} ({principals}) expired at {valid_before} ({file}:{line})")]
    Expired {
        /// The signing key.
        fingerprint: String,
        /// The principals of its line.
        principals: String,
        /// Its `valid-before`.
        valid_before: Timestamp,
        /// The allowed-signers file.
        file: String,
        /// The line.
        line: usize,
    },
    /// The key is listed only as a certificate authority.
    #[error(
        "key {fingerprint} is listed only as a cert-authority ({file}:{line}): it may sign certificates, not tags"
    )]
    CertAuthorityOnly {
        /// The signing key.
        fingerprint: String,
        /// The allowed-signers file.
        file: String,
        /// The line.
        line: usize,
    },
    /// The signed payload is not a tag object.
    #[error(
        "the signed payload by key {fingerprint} is not a tag object (no object/type/tag header)"
    )]
    NotATag {
        /// The signing key.
        fingerprint: String,
    },
    /// A signed tag object moved under another name.
    #[error(
        "the tag object signed by key {fingerprint} ({principals}) is for tag `{signed_name}`; a signed tag cannot be reused under another name"
    )]
    NameMismatch {
        /// The signing key.
        fingerprint: String,
        /// The principals that allowed it.
        principals: String,
        /// The name inside the signed object.
        signed_name: String,
    },
    /// The signed tag points at something else than a commit.
    #[error("the tag signed by key {fingerprint} points at a {kind}, not a commit")]
    NotACommit {
        /// The signing key.
        fingerprint: String,
        /// The type of the object tagged.
        kind: String,
    },
}

impl Refusal {
    /// The fingerprint of the key involved, when a signature names one.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Refusal::Lightweight { .. }
            | Refusal::Unsigned
            | Refusal::OtherFormat { .. }
            | Refusal::Undecodable { .. } => None,
            Refusal::Certificate { fingerprint, .. }
            | Refusal::WrongNamespace { fingerprint, .. }
            | Refusal::UnsupportedKey { fingerprint, .. }
            | Refusal::BadSignature { fingerprint }
            | Refusal::UnknownKey { fingerprint, .. }
            | Refusal::NamespaceNotAllowed { fingerprint, .. }
            | Refusal::NotYetValid { fingerprint, .. }
            | Refusal::Expired { fingerprint, .. }
            | Refusal::CertAuthorityOnly { fingerprint, .. }
            | Refusal::NotATag { fingerprint }
            | Refusal::NameMismatch { fingerprint, .. }
            | Refusal::NotACommit { fingerprint, .. } => Some(fingerprint),
        }
    }
}

impl AllowedSigners {
    /// Checks the raw object of the annotated tag `name` (e.g. `wave/canary`): signed with
    /// SSH in namespace `git` by a key allowed here at `now`, for that name, pointing at a
    /// commit. The commit returned is the one the signed bytes name.
    pub fn verify_tag(
        &self,
        name: &str,
        object: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedTag, Refusal> {
        let signed = tag::split_signed(object).ok_or(Refusal::Unsigned)?;
        if signed.format != tag::Format::Ssh {
            return Err(Refusal::OtherFormat {
                format: signed.format,
            });
        }
        let signer = self.verify(signed.payload, signed.signature, GIT_NAMESPACE, now)?;
        let Some(header) = tag::parse_header(signed.payload) else {
            return Err(Refusal::NotATag {
                fingerprint: signer.fingerprint,
            });
        };
        if header.tag != name {
            return Err(Refusal::NameMismatch {
                fingerprint: signer.fingerprint,
                principals: signer.principals,
                signed_name: header.tag,
            });
        }
        if header.kind != "commit" {
            return Err(Refusal::NotACommit {
                fingerprint: signer.fingerprint,
                kind: header.kind,
            });
        }
        Ok(VerifiedTag {
            commit: header.object,
            signer,
        })
    }

    /// Checks an armoured SSH signature (`-----BEGIN SSH SIGNATURE-----`) of `payload` in
    /// `namespace`, as `ssh-keygen -Y verify -n NAMESPACE -f FILE` does: the signature
    /// must be valid, and some line of this file must list its key, not as a
    /// cert-authority, for that namespace, valid at `now`.
    pub fn verify(
        &self,
        payload: &[u8],
        armored: &[u8],
        namespace: &str,
        now: Timestamp,
    ) -> Result<Signer, Refusal> {
        let sig = SshSig::from_pem(armored).map_err(|source| Refusal::Undecodable { source })?;
        let key = sig.public_key();
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let algorithm = key.algorithm();
        if algorithm.as_str().ends_with("-cert-v01@openssh.com") {
            return Err(Refusal::Certificate {
                fingerprint,
                algorithm: algorithm.to_string(),
            });
        }
        if sig.namespace() != namespace {
            return Err(Refusal::WrongNamespace {
                fingerprint,
                namespace: sig.namespace().to_string(),
            });
        }
        if !verifiable(&algorithm) {
            return Err(Refusal::UnsupportedKey {
                fingerprint,
                algorithm: algorithm.to_string(),
            });
        }
        PublicKey::from(key.clone())
            .verify(namespace, payload, &sig)
            .map_err(|_| Refusal::BadSignature {
                fingerprint: fingerprint.clone(),
            })?;

        // The first reason a line that lists the key gives; a cert-authority line only if
        // no other line lists it.
        let mut refusal: Option<Refusal> = None;
        let mut as_authority: Option<Refusal> = None;
        let file = self.origin().to_string();
        for entry in self.entries().iter().filter(|e| e.key.key_data() == key) {
            let principals = entry.principals.clone();
            let line = entry.line;
            let why = if entry.cert_authority {
                as_authority.get_or_insert(Refusal::CertAuthorityOnly {
                    fingerprint: fingerprint.clone(),
                    file: file.clone(),
                    line,
                });
                continue;
            } else if let Some(namespaces) = entry
                .namespaces
                .as_ref()
                .filter(|n| !pattern::match_list(namespace, n, false).is_match())
            {
                Refusal::NamespaceNotAllowed {
                    fingerprint: fingerprint.clone(),
                    principals,
                    namespaces: namespaces.clone(),
                    file: file.clone(),
                    line,
                }
            } else if let Some(valid_after) = entry.valid_after.filter(|t| now < *t) {
                Refusal::NotYetValid {
                    fingerprint: fingerprint.clone(),
                    principals,
                    valid_after,
                    file: file.clone(),
                    line,
                }
            } else if let Some(valid_before) = entry.valid_before.filter(|t| now > *t) {
                Refusal::Expired {
                    fingerprint: fingerprint.clone(),
                    principals,
                    valid_before,
                    file: file.clone(),
                    line,
                }
            } else {
                return Ok(Signer {
                    fingerprint,
                    principals,
                    line,
                });
            };
            refusal.get_or_insert(why);
        }
        Err(refusal
            .or(as_authority)
            .unwrap_or(Refusal::UnknownKey { fingerprint, file }))
    }
}

/// The key types this build verifies (the `ssh-key` features enabled in Cargo.toml).
fn verifiable(algorithm: &Algorithm) -> bool {
    matches!(
        algorithm,
        Algorithm::Ed25519
            | Algorithm::SkEd25519
            | Algorithm::SkEcdsaSha2NistP256
            | Algorithm::Rsa { .. }
            | Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256
            }
    )
}

#[cfg(test)]
mod tests;
