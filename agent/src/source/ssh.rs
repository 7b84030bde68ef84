//! SSH for the ref check, and the one host-key decision that it and the fetch share.
//!
//! The session runs over libssh2 (the `ssh2` crate: git2 links the same library), so the
//! key, the user and the known_hosts policy are those of the fetch, in-process: no `ssh`
//! binary is needed.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use gix_transport::Protocol;
use gix_transport::client::git::{ConnectMode, blocking_io::Connection};

use super::auth::{Auth, HostKeyStatus, check_host_key, known_hosts_name};
use super::refs::{Failure, connect_tcp};

/// What the configured policy says about a server's host key.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HostKeyVerdict {
    /// The configured known_hosts file names this key.
    Known,
    /// Refused, with the precise reason.
    Refused(String),
    /// No known_hosts file is configured: `~/.ssh/known_hosts` decides, as libgit2 does.
    UserDefault,
}

/// Checks `key`, the host key `host` (port `port` when not 22) presented, against the
/// known_hosts file configured in `auth` (plain, hashed and pattern entries; `@revoked`
/// keys are refused; `@cert-authority` lines are noted, not trusted: neither libgit2 nor
/// libssh2 receives host certificates).
pub(super) fn host_key_verdict(
    auth: &Auth,
    host: &str,
    port: Option<u16>,
    key: &[u8],
) -> HostKeyVerdict {
    let Auth::SshKey {
        known_hosts: Some(known_hosts),
        ..
    } = auth
    else {
        return HostKeyVerdict::UserDefault;
    };
    let name = known_hosts_name(host, port);
    let file = known_hosts.display();
    match check_host_key(known_hosts, &name, key) {
        Ok(HostKeyStatus::Known) => HostKeyVerdict::Known,
        Ok(HostKeyStatus::Revoked { line }) => HostKeyVerdict::Refused(format!(
            "host key of {name} is marked @revoked in {file}:{line}; refusing to connect"
        )),
        Ok(HostKeyStatus::Unknown {
            cert_authority: None,
        }) => HostKeyVerdict::Refused(format!("host key of {name} is not in {file}")),
        Ok(HostKeyStatus::Unknown {
            cert_authority: Some(line),
        }) => HostKeyVerdict::Refused(format!(
            "host key of {name} is not in {file}; line {line} trusts a @cert-authority for it, but host certificates are not supported (libgit2's SSH transport never receives one): list the host's key itself"
        )),
        Err(e) => HostKeyVerdict::Refused(e),
    }
}

/// `git-upload-pack` running on the far side of an SSH channel, ready for the handshake.
pub(super) struct UploadPack {
    /// The channel (kept to read the server's stderr when something fails).
    pub channel: ssh2::Channel,
    /// The git protocol over the channel.
    pub connection: Connection<ssh2::Stream, ssh2::Stream>,
}

impl UploadPack {
    /// What the server wrote on stderr (e.g. "fatal: ... does not appear to be a git
    /// repository"), to explain a failed handshake.
    pub fn stderr(&mut self) -> String {
        // Our end of stdin closed, upload-pack exits if it has not yet: stderr then ends.
        let _ = self.channel.send_eof();
        let mut text = String::new();
        let _ = self.channel.stderr().take(4096).read_to_string(&mut text);
        text.trim().to_string()
    }
}

/// Opens an SSH session to `url`'s host, checks its host key, authenticates with the key
/// of `auth` and starts `git-upload-pack` asking for protocol v2 (`GIT_PROTOCOL`; a server
/// that does not accept the variable answers with v0).
pub(super) fn upload_pack(
    url: &gix_url::Url,
    auth: &Auth,
    timeout: Duration,
) -> Result<UploadPack, Failure> {
    let host = url
        .host()
        .ok_or_else(|| Failure::permanent("the URL names no host".into()))?;
    let (user, key) = match auth {
        Auth::SshKey { username, key, .. } => (url.user().unwrap_or(username), key),
        _ => {
            return Err(Failure::permanent(
                "the remote asks for credentials and none are configured".into(),
            ));
        }
    };
    let tcp = connect_tcp(host, url.port.unwrap_or(22), timeout)?;
    let ssh_err = |what: &str, e: ssh2::Error| Failure::transient(format!("{what}: {e}"));
    let mut session = ssh2::Session::new().map_err(|e| ssh_err("ssh session", e))?;
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    session.set_tcp_stream(tcp);
    session
        .handshake()
        .map_err(|e| ssh_err("ssh handshake", e))?;

    let Some((host_key, _)) = session.host_key() else {
        return Err(Failure::permanent(
            "the ssh server presented no host key".into(),
        ));
    };
    match host_key_verdict(auth, host, url.port, host_key) {
        HostKeyVerdict::Known => {}
        HostKeyVerdict::Refused(reason) => return Err(Failure::permanent(reason)),
        HostKeyVerdict::UserDefault => {
            if !in_user_known_hosts(&session, host, url.port, host_key) {
                // libgit2's words for the same refusal, so both paths read alike.
                return Err(Failure::permanent(
                    "invalid or unknown remote ssh hostkey".into(),
                ));
            }
        }
    }

    if let Err(e) = session.userauth_pubkey_file(user, None, key, None) {
        return Err(Failure::permanent(format!(
            "authentication failed (credentials rejected): {}",
            e.message()
        )));
    }
    if !session.authenticated() {
        return Err(Failure::permanent(
            "authentication failed (credentials rejected)".into(),
        ));
    }
    let mut channel = session
        .channel_session()
        .map_err(|e| ssh_err("ssh channel", e))?;
    // NB: sshd passes the variable on only if its AcceptEnv allows it (GitHub's, GitLab's
    // and Gitea's do; a stock Debian sshd does not): refused, it is protocol v0.
    let _ = channel.setenv("GIT_PROTOCOL", "version=2");
    let path = gix_url::expand_path::for_shell(url.path.clone());
    let command = format!("git-upload-pack {}", gix_quote::single(path.as_ref()));
    channel
        .exec(&command)
        .map_err(|e| ssh_err("failed to start git-upload-pack", e))?;
    let connection = Connection::new(
        channel.stream(0),
        channel.stream(0),
        Protocol::V2,
        path,
        None::<(String, Option<u16>)>,
        ConnectMode::Process,
        false,
    );
    Ok(UploadPack {
        channel,
        connection,
    })
}

/// libgit2's default when no known_hosts file is configured: `~/.ssh/known_hosts`, read
/// by libssh2; a missing file trusts nothing.
fn in_user_known_hosts(session: &ssh2::Session, host: &str, port: Option<u16>, key: &[u8]) -> bool {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return false;
    };
    let file = PathBuf::from(home).join(".ssh").join("known_hosts");
    let Ok(mut known) = session.known_hosts() else {
        return false;
    };
    if known
        .read_file(&file, ssh2::KnownHostFileKind::OpenSSH)
        .is_err()
    {
        return false;
    }
    matches!(
        known.check_port(host, port.unwrap_or(22), key),
        ssh2::CheckResult::Match
    )
}
