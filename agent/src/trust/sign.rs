//! Signing a wave tag as `git tag -s` with `gpg.format=ssh` does: an SSH signature
//! (SSHSIG, namespace `git`, SHA-512 as `ssh-keygen -Y sign` uses by default) over the tag
//! object, armoured and appended to it. What [`super::AllowedSigners::verify_tag`] and
//! `git verify-tag` check. Pure: the key's text is read by the caller.

use ssh_key::{HashAlg, LineEnding, PrivateKey};

use super::GIT_NAMESPACE;

/// Why a key cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Not an OpenSSH private key.
    #[error("failed to read the SSH private key (OpenSSH format expected)")]
    Unreadable(#[source] ssh_key::Error),
    /// Protected by a passphrase.
    #[error(
        "the SSH private key is protected by a passphrase; use a key without one (for example a deploy key kept in a secret store)"
    )]
    Encrypted,
    /// The signature could not be made.
    #[error("failed to sign with key {fingerprint}")]
    Sign {
        /// The key.
        fingerprint: String,
        /// The cause.
        #[source]
        source: ssh_key::Error,
    },
}

/// An SSH private key that signs wave tags.
pub struct SigningKey {
    key: PrivateKey,
    fingerprint: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key in an OpenSSH private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub fn from_openssh(text: &str) -> Result<Self, SignError> {
        let key = PrivateKey::from_openssh(text).map_err(SignError::Unreadable)?;
        if key.is_encrypted() {
            return Err(SignError::Encrypted);
        }
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        Ok(Self { key, fingerprint })
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// `payload` (a tag object without signature) with its armoured signature appended.
    pub fn sign_tag(&self, payload: &[u8]) -> Result<Vec<u8>, SignError> {
        let fail = |source| SignError::Sign {
            fingerprint: self.fingerprint.clone(),
            source,
        };
        let armoured = self
            .key
            .sign(GIT_NAMESPACE, HashAlg::Sha512, payload)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(fail)?;
        let mut object = payload.to_vec();
        object.extend_from_slice(armoured.as_bytes());
        if !armoured.ends_with('\n') {
            object.push(b'\n');
        }
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::AllowedSigners;

    /// A throw-away ed25519 key made with `ssh-keygen -t ed25519 -N ""` for this test.
    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDeId03IG77McWJnWFoW8DZZxgvhW/Jabm596JKXBn7MwAAAJBUndAeVJ3Q
HgAAAAtzc2gtZWQyNTUxOQAAACDeId03IG77McWJnWFoW8DZZxgvhW/Jabm596JKXBn7Mw
AAAEB3hURJzAUgJuM+nlCoTXYhIBMGF7ogBJAZXjo9tiIEp94h3TcgbvsxxYmdYWhbwNln
GC+Fb8lpubn3okpcGfszAAAAC3NpZ25lckB0ZXN0AQI=
-----END OPENSSH PRIVATE KEY-----
";

    #[test]
    fn a_signed_tag_is_accepted_by_the_verifier() {
        let key = SigningKey::from_openssh(KEY).unwrap_or_else(|e| panic!("{e}"));
        let public = key.key.public_key().to_openssh().unwrap_or_default();
        let signers = AllowedSigners::parse(
            "allowed_signers",
            &format!("ci@example.com namespaces=\"git\" {public}\n"),
            &jiff::tz::TimeZone::UTC,
        )
        .unwrap_or_else(|d| panic!("{d}"));
        let payload = b"object 0123456789012345678901234567890123456789\ntype commit\ntag wave/early\ntagger ci <> 1795514400 +0000\n\npromote early\n";
        let object = key.sign_tag(payload).unwrap_or_else(|e| panic!("{e}"));
        let now = "2026-11-24T10:00:00Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let verified = signers
            .verify_tag("wave/early", &object, now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verified.commit, "0123456789012345678901234567890123456789");
        assert_eq!(verified.signer.fingerprint, key.fingerprint());
        // The same object under another name, or changed, is refused.
        assert!(signers.verify_tag("wave/main", &object, now).is_err());
        let mut tampered = object.clone();
        tampered[7] = b'f';
        assert!(signers.verify_tag("wave/early", &tampered, now).is_err());
    }

    #[test]
    fn a_key_that_is_not_a_private_key_is_refused() {
        assert!(matches!(
            SigningKey::from_openssh("ssh-ed25519 AAAA"),
            Err(SignError::Unreadable(_))
        ));
    }
}
