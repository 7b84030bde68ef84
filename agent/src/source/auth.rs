//! Credentials for the fleet repo remote, and keeping them out of every message.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::Error;

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

/// Checks an SSH host key against a known_hosts file (plain and hashed entries).
pub(super) fn host_key_known(
    known_hosts: &Path,
    host: &str,
    port: Option<u16>,
    key: &[u8],
) -> Result<bool, String> {
    let text = std::fs::read_to_string(known_hosts)
        .map_err(|e| format!("cannot read {}: {e}", known_hosts.display()))?;
    let name = match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_key_type), Some(key_b64)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !hosts_match(hosts, &name) {
            continue;
        }
        if let Ok(known) = base64::engine::general_purpose::STANDARD.decode(key_b64)
            && known == key
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn hosts_match(pattern: &str, name: &str) -> bool {
    if let Some(hashed) = pattern.strip_prefix("|1|") {
        let Some((salt, hash)) = hashed.split_once('|') else {
            return false;
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    pattern.split(',').any(|p| p == name)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn known_hosts_plain_and_hashed() -> Result<(), Box<dyn std::error::Error>> {
        let key = b"\x00\x00\x00\x0bssh-ed25519fake-key-bytes";
        let b64 = base64::engine::general_purpose::STANDARD;
        let salt = b"0123456789abcdef0123";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt)?;
        mac.update(b"[127.0.0.1]:2222");
        let hashed = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!(
                "# comment\ngit.example.com,10.0.0.1 ssh-ed25519 {k}\n{hashed} ssh-ed25519 {k}\n",
                k = b64.encode(key)
            ),
        )?;
        assert!(host_key_known(&file, "git.example.com", None, key)?);
        assert!(host_key_known(&file, "127.0.0.1", Some(2222), key)?);
        assert!(!host_key_known(&file, "127.0.0.1", Some(22), key)?);
        assert!(!host_key_known(&file, "git.example.com", None, b"other")?);
        Ok(())
    }
}
