//! Credentials for the fleet repo remote, and keeping them out of every message.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use ssh_key::known_hosts;

use super::Error;
use crate::trust::pattern;

/// How to authenticate to the remote.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials (public remotes, `git://`, local paths).
    #[default]
    None,
    /// HTTP(S) basic auth; a token is a password (user e.g. `x-access-token`).
    Basic {
        /// User name.
        username: String,
        /// Password or token. Never logged.
        password: String,
    },
    /// SSH with a private key file.
    SshKey {
        /// User name, default `git`.
        username: String,
        /// Private key file.
        key: PathBuf,
        /// known_hosts file to check the server's key against; without one libgit2's
        /// own check of `~/.ssh/known_hosts` applies.
        known_hosts: Option<PathBuf>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(
                f,
                "Basic {{ username: {username:?}, password: <redacted> }}"
            ),
            Auth::SshKey {
                username,
                key,
                known_hosts,
            } => f
                .debug_struct("SshKey")
                .field("username", username)
                .field("key", key)
                .field("known_hosts", known_hosts)
                .finish(),
        }
    }
}

/// `url` with its credentials removed (`https://***@host/...`). An SSH user name without
/// a password is kept (`ssh://git@host/...`): it is not a secret, and it helps debugging.
/// Over HTTP(S) a lone user name may be a token, so it is removed too.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if url.starts_with("ssh://") && !rest[..at].contains(':') => url.to_string(),
        Some(at) => format!("{}***@{}", &url[..scheme_end + 3], &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Removes `secret` and the credentials of `url` from a message.
pub(super) fn scrub(message: &str, url: &str, auth: &Auth) -> String {
    let mut out = message.replace(url, &redact_url(url));
    if let Auth::Basic { password, .. } = auth
        && !password.is_empty()
    {
        out = out.replace(password.as_str(), "***");
    }
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some((_, pass)) = userinfo.split_once(':')
                && !pass.is_empty()
            {
                out = out.replace(pass, "***");
            }
        }
    }
    out
}

/// Reads a secret from a file, trimming a trailing newline.
pub fn read_secret_file(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| Error::Credentials(format!("cannot read {}: {e}", path.display())))
}

/// What a known_hosts file says of the key a server offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostKeyStatus {
    /// A plain entry for the host lists the key.
    Known,
    /// An `@revoked` entry matching the host lists the key: refuse, whatever else says.
    Revoked {
        /// 1-based line of the entry.
        line: usize,
    },
    /// No entry accepts the key.
    Unknown {
        /// A `@cert-authority` entry for the host, if any (line): it could vouch only for
        /// a host certificate, which libgit2's SSH transport never receives.
        cert_authority: Option<usize>,
    },
}

/// The name a known_hosts entry uses for `host` reached on `port`: `host` on port 22,
/// `[host]:port` elsewhere.
pub(super) fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

/// Checks the key a server offered (`key`, its SSH wire encoding) for `name` (from
/// [`known_hosts_name`]) against a known_hosts file, as OpenSSH does: entries are plain,
/// hashed (`|1|salt|hash`) or patterns (`*`, `?`, `!`); an `@revoked` entry for the host
/// with this key refuses it even if another entry lists it; `@cert-authority` entries
/// vouch only for host certificates. Entries are read with the `ssh-key` crate; an
/// unreadable line is skipped, as ssh does, except an unreadable `@revoked` line, which
/// fails the check (it may be revoking this key).
pub(super) fn check_host_key(
    known_hosts: &Path,
    name: &str,
    key: &[u8],
) -> Result<HostKeyStatus, String> {
    let text = std::fs::read_to_string(known_hosts)
        .map_err(|e| format!("cannot read {}: {e}", known_hosts.display()))?;
    host_key_status(&known_hosts.display().to_string(), &text, name, key)
}

/// [`check_host_key`] on the text of a known_hosts file (`origin` names it in errors).
pub(crate) fn host_key_status(
    origin: &str,
    text: &str,
    name: &str,
    key: &[u8],
) -> Result<HostKeyStatus, String> {
    let known_hosts = origin;
    let mut known = false;
    let mut cert_authority = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // ssh-key splits fields on single spaces; known_hosts allows any run of blanks.
        let normalized = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let entry = match normalized.parse::<known_hosts::Entry>() {
            Ok(entry) => entry,
            Err(e) if line.starts_with("@revoked") => {
                return Err(format!(
                    "{known_hosts}:{}: cannot read this @revoked entry ({e}); fix or remove it",
                    i + 1
                ));
            }
            Err(e) => {
                tracing::debug!(file = %known_hosts, line = i + 1, error = %e, "known_hosts line skipped");
                continue;
            }
        };
        if !host_matches(entry.host_patterns(), name) {
            continue;
        }
        let same_key = entry
            .public_key()
            .to_bytes()
            .is_ok_and(|listed| listed == key);
        match entry.marker() {
            Some(known_hosts::Marker::Revoked) if same_key => {
                return Ok(HostKeyStatus::Revoked { line: i + 1 });
            }
            Some(known_hosts::Marker::Revoked) => {}
            Some(known_hosts::Marker::CertAuthority) => {
                cert_authority.get_or_insert(i + 1);
            }
            None => known |= same_key,
        }
    }
    Ok(if known {
        HostKeyStatus::Known
    } else {
        HostKeyStatus::Unknown { cert_authority }
    })
}

/// Whether an entry's host field names `name`: a hashed name (HMAC-SHA1 of the name with
/// the entry's salt), or a pattern list (case-insensitive; a matching `!pattern` excludes).
fn host_matches(patterns: &known_hosts::HostPatterns, name: &str) -> bool {
    match patterns {
        known_hosts::HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        known_hosts::HostPatterns::Patterns(list) => {
            pattern::match_list(name, &list.join(","), true).is_match()
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://user:s3cret@example.com/fleet.git"),
            "https://***@example.com/fleet.git"
        );
        assert_eq!(
            redact_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(redact_url("/srv/fleet"), "/srv/fleet");
        assert_eq!(redact_url("ssh://git@host/fleet"), "ssh://git@host/fleet");
        assert_eq!(
            redact_url("ssh://git:pw@host/fleet"),
            "ssh://***@host/fleet"
        );
        assert_eq!(
            redact_url("https://ghp_token@host/fleet"),
            "https://***@host/fleet"
        );
        let auth = Auth::Basic {
            username: "u".into(),
            password: "tok3n".into(),
        };
        let msg = scrub(
            "failed for https://u:pw@h/x with tok3n",
            "https://u:pw@h/x",
            &auth,
        );
        assert_eq!(msg, "failed for https://***@h/x with ***");
        assert!(!format!("{auth:?}").contains("tok3n"));
    }

    /// A known_hosts line's key and the wire encoding a server would offer.
    fn test_key(seed: u8) -> Result<(String, Vec<u8>), ssh_key::Error> {
        let keypair = ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
        let public = ssh_key::PublicKey::from(keypair.public);
        Ok((public.to_openssh()?, public.to_bytes()?))
    }

    fn hashed(name: &str) -> Result<String, Box<dyn std::error::Error>> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b"0123456789abcdef0123";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt)?;
        mac.update(name.as_bytes());
        Ok(format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        ))
    }

    fn check(
        text: &str,
        name: &str,
        key: &[u8],
    ) -> Result<HostKeyStatus, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, text)?;
        Ok(check_host_key(&file, name, key)?)
    }

    #[test]
    fn known_hosts_plain_hashed_and_patterns() -> Result<(), Box<dyn std::error::Error>> {
        let (k, key) = test_key(1)?;
        let (_, other) = test_key(2)?;
        let text = format!(
            "# comment\ngit.example.com,10.0.0.1 {k}\n{} {k}\n*.corp.example  {k}\n\n",
            hashed("[127.0.0.1]:2222")?
        );
        let known = |name: &str, key: &[u8]| check(&text, name, key);
        assert_eq!(known("git.example.com", &key)?, HostKeyStatus::Known);
        assert_eq!(known("GIT.example.com", &key)?, HostKeyStatus::Known);
        assert_eq!(known("10.0.0.1", &key)?, HostKeyStatus::Known);
        assert_eq!(known("[127.0.0.1]:2222", &key)?, HostKeyStatus::Known);
        assert_eq!(known("git.corp.example", &key)?, HostKeyStatus::Known);
        let unknown = HostKeyStatus::Unknown {
            cert_authority: None,
        };
        assert_eq!(known("127.0.0.1", &key)?, unknown);
        assert_eq!(known("git.example.com", &other)?, unknown);
        // A negated pattern excludes a host the rest of the list matches.
        let negated = format!("*.corp.example,!bad.corp.example {k}\n");
        assert_eq!(check(&negated, "bad.corp.example", &key)?, unknown);
        assert_eq!(
            check(&negated, "ok.corp.example", &key)?,
            HostKeyStatus::Known
        );
        assert_eq!(
            known_hosts_name("127.0.0.1", Some(2222)),
            "[127.0.0.1]:2222"
        );
        assert_eq!(known_hosts_name("host", Some(22)), "host");
        assert_eq!(known_hosts_name("host", None), "host");
        Ok(())
    }

    /// r9: `@revoked` lines were skipped, so a revoked key listed elsewhere was accepted.
    #[test]
    fn a_revoked_host_key_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (k, key) = test_key(1)?;
        let (k2, _) = test_key(2)?;
        // Revoked for every host, and listed for this one: revoked wins, in any order.
        for text in [
            format!("@revoked * {k}\ngit.example.com {k}\n"),
            format!("git.example.com {k}\n@revoked  *  {k}\n"),
            format!(
                "{} {k}\n@revoked {} {k}\n",
                hashed("git.example.com")?,
                hashed("git.example.com")?
            ),
        ] {
            assert!(
                matches!(
                    check(&text, "git.example.com", &key)?,
                    HostKeyStatus::Revoked { .. }
                ),
                "{text}"
            );
        }
        // A revocation of another key, or for another host, does not refuse this one.
        let text =
            format!("@revoked * {k2}\n@revoked other.example.com {k}\ngit.example.com {k}\n");
        assert_eq!(check(&text, "git.example.com", &key)?, HostKeyStatus::Known);
        assert_eq!(
            check(&text, "other.example.com", &key)?,
            HostKeyStatus::Revoked { line: 2 }
        );
        // An unreadable @revoked line fails the check rather than being skipped.
        let err = check(
            &format!("@revoked * ssh-ed25519 AAAAnope\ngit.example.com {k}\n"),
            "git.example.com",
            &key,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains(":1: cannot read this @revoked entry"), "{err}");
        // Other unreadable lines are skipped, as ssh skips them.
        let text = format!("garbage\n@bogus-marker * {k}\ngit.example.com {k}\n");
        assert_eq!(check(&text, "git.example.com", &key)?, HostKeyStatus::Known);
        Ok(())
    }

    #[test]
    fn a_cert_authority_entry_is_noted_not_trusted() -> Result<(), Box<dyn std::error::Error>> {
        let (k, key) = test_key(1)?;
        // The CA key itself offered as the host key is not accepted (as in OpenSSH).
        let text = format!("# CA\n@cert-authority *.example.com {k}\n");
        assert_eq!(
            check(&text, "git.example.com", &key)?,
            HostKeyStatus::Unknown {
                cert_authority: Some(2)
            }
        );
        assert_eq!(
            check(&text, "git.other.org", &key)?,
            HostKeyStatus::Unknown {
                cert_authority: None
            }
        );
        Ok(())
    }
}
