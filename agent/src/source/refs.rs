//! The cheap "has anything moved?" check: asks the remote for the refs the agent follows
//! and nothing else, before any fetch.
//!
//! - Over the network (`git://`, `ssh://` and scp-like, `http(s)://`) this is protocol v2's
//!   `ls-refs` with one `ref-prefix` per followed ref (`HEAD` or the branch, the wave tags'
//!   prefix, any extra prefix), so an idle poll costs a few hundred bytes however many
//!   other refs (release tags, pull-request refs) the repository holds.
//! - A server that does not speak v2 answers with the v0 advertisement of every ref; that
//!   still works (filtered here to the same refs), at the old price.
//! - A local path or `file://` is read in-process with git2, as libgit2's local transport
//!   does: there is no wire to save, and no `git` binary is needed.
//!
//! libgit2 speaks only v0/v1, so the wire goes through gitoxide's transport layer
//! (`gix-transport`: packet lines, the v2 handshake, smart HTTP over reqwest and openssl).
//! SSH sessions come from [`super::ssh`] (libssh2, the key and host-key policy of the
//! fetch). The fetch itself stays with git2.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix_transport::bstr::BString;
use gix_transport::client::blocking_io::http::{self, reqwest::Remote as Reqwest};
use gix_transport::client::blocking_io::{
    ReadlineBufRead, SetServiceResponse, Transport, TransportV2Ext,
};
use gix_transport::client::git::{ConnectMode, blocking_io::Connection};
use gix_transport::client::{
    self, Account, AuthenticationRequired, MessageKind, TransportWithoutIO, WriteMode,
};
use gix_transport::{Protocol as Wire, Service};

use super::auth::Auth;
use super::{Protocol, RemoteRefs};

/// How tidemark introduces itself to git servers (`agent` capability, HTTP User-Agent).
const AGENT: &str = concat!("tidemark/", env!("CARGO_PKG_VERSION"));
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any one read or write may block (a stalled server fails the poll, which is
/// retried, instead of hanging the agent).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a listing failed. The message may still contain the URL: the caller scrubs it.
#[derive(Debug)]
pub(super) struct Failure {
    /// What failed.
    pub message: String,
    /// Whether trying again may help (not for rejected credentials or host keys).
    pub transient: bool,
}

impl Failure {
    pub(super) fn transient(message: String) -> Self {
        Self {
            message,
            transient: true,
        }
    }

    pub(super) fn permanent(message: String) -> Self {
        Self {
            message,
            transient: false,
        }
    }
}

/// The refs a listing returned, and how it got them.
#[derive(Debug)]
pub(super) struct Listing {
    /// The refs (only those under the prefixes asked for).
    pub refs: RemoteRefs,
    /// How they were listed.
    pub protocol: Protocol,
}

/// Lists the refs of `url` whose names start with one of `prefixes` (all refs for `None`).
/// `HEAD` is a prefix like any other: ask for it to learn the default branch. When HEAD
/// points at a branch, that branch is in the answer too.
pub(super) fn list(
    url: &str,
    auth: &Auth,
    prefixes: Option<&[String]>,
) -> Result<Listing, Failure> {
    if let Some(path) = local_path(url) {
        return local(&path, prefixes);
    }
    let parsed = gix_url::parse(gix_transport::bstr::BStr::new(url.as_bytes()))
        .map_err(|e| Failure::permanent(format!("invalid URL: {e}")))?;
    let mut listing = match parsed.scheme {
        gix_url::Scheme::Git => daemon(&parsed, prefixes),
        gix_url::Scheme::Ssh => ssh(&parsed, auth, prefixes),
        gix_url::Scheme::Http | gix_url::Scheme::Https => https(parsed, auth, prefixes),
        other => Err(Failure::permanent(format!(
            "unsupported URL scheme `{other}`"
        ))),
    }?;
    complete_head(&mut listing.refs);
    Ok(listing)
}

/// A local path or `file://` URL, as a path.
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    (!url.contains("://") && !super::cache::is_scp_like(url)).then(|| PathBuf::from(url))
}

fn wants(prefixes: Option<&[String]>, name: &str) -> bool {
    prefixes.is_none_or(|ps| ps.iter().any(|p| name.starts_with(p.as_str())))
}

/// When HEAD is a symref, its branch points where HEAD does: record it, so a listing that
/// asked for HEAD alone also answers "where is the default branch?".
fn complete_head(refs: &mut RemoteRefs) {
    if let (Some(branch), Some(oid)) = (&refs.head_branch, refs.refs.get("HEAD")) {
        let name = format!("refs/heads/{branch}");
        let oid = oid.clone();
        refs.refs.entry(name).or_insert(oid);
    }
}

fn local(path: &Path, prefixes: Option<&[String]>) -> Result<Listing, Failure> {
    let fail = |e: git2::Error| Failure {
        message: e.message().to_string(),
        transient: super::cache::is_transient(&e),
    };
    let repo = git2::Repository::open(path).map_err(fail)?;
    let mut refs = RemoteRefs::default();
    if wants(prefixes, "HEAD")
        && let Ok(head) = repo.find_reference("HEAD")
    {
        refs.head_branch = head
            .symbolic_target()
            .ok()
            .flatten()
            .and_then(|t| t.strip_prefix("refs/heads/"))
            .map(str::to_string);
        if let Ok(oid) = repo.refname_to_id("HEAD") {
            refs.refs.insert("HEAD".into(), oid.to_string());
        }
    }
    // Ref names cannot contain glob characters (git check-ref-format), so a prefix plus
    // `*` (which spans `/` in libgit2's ref globs) is exactly "starts with".
    let globs: Vec<String> = match prefixes {
        None => vec!["refs/*".into()],
        Some(ps) => ps
            .iter()
            .filter(|p| p.starts_with("refs/"))
            .map(|p| format!("{p}*"))
            .collect(),
    };
    for glob in globs {
        for r in repo.references_glob(&glob).map_err(fail)? {
            let r = r.map_err(fail)?;
            let (Ok(name), Ok(resolved)) = (r.name(), r.resolve()) else {
                continue;
            };
            if let Some(oid) = resolved.target() {
                refs.refs.insert(name.to_string(), oid.to_string());
            }
        }
    }
    complete_head(&mut refs);
    Ok(Listing {
        refs,
        protocol: Protocol::Local,
    })
}

/// Connects to `host:port`, trying each address, with [`CONNECT_TIMEOUT`] and
/// [`IO_TIMEOUT`] set.
pub(super) fn connect_tcp(
    host: &str,
    port: u16,
    io_timeout: Duration,
) -> Result<TcpStream, Failure> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Failure::transient(format!("failed to resolve {host}: {e}")))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                let timeouts = stream
                    .set_read_timeout(Some(io_timeout))
                    .and_then(|()| stream.set_write_timeout(Some(io_timeout)));
                if let Err(e) = timeouts {
                    last = Some(e);
                    continue;
                }
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Failure::transient(match last {
        Some(e) => format!("failed to connect to {host}:{port}: {e}"),
        None => format!("{host} resolves to no address"),
    }))
}

fn daemon(url: &gix_url::Url, prefixes: Option<&[String]>) -> Result<Listing, Failure> {
    let host = url
        .host()
        .ok_or_else(|| Failure::permanent("the URL names no host".into()))?;
    let read = connect_tcp(host, url.port.unwrap_or(9418), IO_TIMEOUT)?;
    let write = read
        .try_clone()
        .map_err(|e| Failure::transient(format!("failed to use the connection: {e}")))?;
    let mut connection = Connection::new(
        read,
        write,
        Wire::V2,
        url.path.clone(),
        Some((host.to_string(), url.port)),
        ConnectMode::Daemon,
        false,
    );
    ls_refs(&mut connection, prefixes).map_err(|e| transport_failure(&e, false))
}

fn ssh(url: &gix_url::Url, auth: &Auth, prefixes: Option<&[String]>) -> Result<Listing, Failure> {
    let mut upload_pack = super::ssh::upload_pack(url, auth, IO_TIMEOUT)?;
    let listed = ls_refs(&mut upload_pack.connection, prefixes);
    match listed {
        Ok(listing) => {
            let _ = upload_pack.channel.send_eof();
            Ok(listing)
        }
        Err(e) => {
            let mut failure = transport_failure(&e, false);
            let stderr = upload_pack.stderr();
            if !stderr.is_empty() {
                failure.message = format!("{}: {stderr}", failure.message);
            }
            Err(failure)
        }
    }
}

fn https(
    mut url: gix_url::Url,
    auth: &Auth,
    prefixes: Option<&[String]>,
) -> Result<Listing, Failure> {
    // The credentials go into the Authorization header only, never into the URL that
    // requests (and their errors) carry. Configured ones win over the URL's, as in the
    // fetch's credential callback.
    let user = url.set_user(None);
    let password = url.set_password(None);
    let identity = match auth {
        Auth::Basic { username, password } => Some(Account {
            username: username.clone(),
            password: password.clone(),
            oauth_refresh_token: None,
        }),
        _ => user.zip(password).map(|(username, password)| Account {
            username,
            password,
            oauth_refresh_token: None,
        }),
    };
    let has_identity = identity.is_some();
    let mut transport = http::connect::<Reqwest>(url, Wire::V2, false);
    let configure_client: Box<http::reqwest::ConfigureClientFn> = Box::new(|builder| {
        // The fetch (libgit2) does not read proxy variables either: both take the
        // same route.
        Ok(builder.timeout(IO_TIMEOUT).no_proxy())
    });
    let backend: Arc<Mutex<dyn std::any::Any + Send + Sync>> =
        Arc::new(Mutex::new(http::reqwest::Options {
            configure_client: Some(configure_client),
            configure_request: None,
        }));
    let options = http::Options {
        connect_timeout: Some(CONNECT_TIMEOUT),
        user_agent: Some(AGENT.into()),
        backend: Some(backend),
        ..http::Options::default()
    };
    transport
        .configure(&options)
        .map_err(|e| Failure::permanent(format!("failed to configure HTTP: {e}")))?;
    if let Some(identity) = identity {
        transport
            .set_identity(identity)
            .map_err(|e| transport_failure(&e, true))?;
    }
    ls_refs(&mut transport, prefixes).map_err(|e| transport_failure(&e, has_identity))
}

/// The handshake, then `ls-refs` (v2) or the advertisement the server sent instead (v0).
fn ls_refs<T: Transport>(
    transport: &mut T,
    prefixes: Option<&[String]>,
) -> Result<Listing, client::Error> {
    let SetServiceResponse {
        actual_protocol,
        capabilities,
        refs: mut advertised,
    } = transport.handshake(Service::UploadPack, &[])?;
    let mut refs = RemoteRefs::default();
    let protocol = if let Some(advertised) = advertised.as_mut() {
        read_lines(advertised, |line| {
            if let Some((oid, name)) = parse_v0_line(line)
                && wants(prefixes, name)
            {
                refs.refs.insert(name.to_string(), oid.to_string());
            }
        })?;
        if wants(prefixes, "HEAD") {
            refs.head_branch = capabilities
                .iter()
                .filter(|c| c.name() == "symref")
                .filter_map(|c| c.value())
                .filter_map(|v| std::str::from_utf8(v).ok())
                .find_map(|v| v.strip_prefix("HEAD:refs/heads/"))
                .map(str::to_string);
        }
        Protocol::V0
    } else if actual_protocol == Wire::V2 {
        Protocol::V2
    } else {
        return Err(unexpected("the server sent no refs"));
    };
    drop(advertised);

    if protocol == Protocol::V2 {
        if !capabilities.contains("ls-refs") {
            return Err(unexpected("the server speaks protocol v2 without ls-refs"));
        }
        let mut arguments: Vec<BString> = vec!["symrefs".into()];
        if let Some(prefixes) = prefixes {
            arguments.extend(prefixes.iter().map(|p| format!("ref-prefix {p}").into()));
        }
        let agent = capabilities
            .contains("agent")
            .then_some(("agent", Some(AGENT)));
        let mut reply = transport.invoke(
            "ls-refs",
            agent.into_iter(),
            Some(arguments.into_iter()),
            false,
        )?;
        read_lines(&mut reply, |line| parse_v2_line(line, &mut refs))?;
    }
    // An empty request ends the conversation on connections that stay open (git://,
    // ssh): upload-pack then exits without complaint.
    if transport.connection_persists_across_multiple_requests() {
        transport
            .request(WriteMode::Binary, MessageKind::Flush, false)?
            .into_read()?;
    }
    Ok(Listing { refs, protocol })
}

fn unexpected(what: &'static str) -> client::Error {
    client::Error::ExpectedLine(what)
}

fn read_lines(
    reader: &mut (impl ReadlineBufRead + ?Sized),
    mut each: impl FnMut(&str),
) -> Result<(), client::Error> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.readline_str(&mut line)? == 0 {
            return Ok(());
        }
        each(line.trim_end_matches('\n'));
    }
}

/// `<oid> <name>[ symref-target:<target>][ peeled:<oid>]` (an `ls-refs` answer line).
fn parse_v2_line(line: &str, refs: &mut RemoteRefs) {
    let mut fields = line.split(' ');
    let (Some(oid), Some(name)) = (fields.next(), fields.next()) else {
        return;
    };
    if oid == "unborn" {
        return;
    }
    for attribute in fields {
        if name == "HEAD"
            && let Some(branch) = attribute
                .strip_prefix("symref-target:")
                .and_then(|t| t.strip_prefix("refs/heads/"))
        {
            refs.head_branch = Some(branch.to_string());
        }
    }
    refs.refs.insert(name.to_string(), oid.to_string());
}

/// `<oid> <name>` of a v0 advertisement; `None` for peeled entries (`^{}`) and the
/// placeholder of an empty repository.
fn parse_v0_line(line: &str) -> Option<(&str, &str)> {
    let (oid, name) = line.split_once(' ')?;
    let name = name.split('\0').next()?;
    (!name.ends_with("^{}") && name != "capabilities^{}").then_some((oid, name))
}

/// A transport error as a message (its causes joined, as `{:#}` prints) and whether a
/// retry may help: HTTP 401 needs a person.
fn transport_failure(e: &(dyn std::error::Error + 'static), has_identity: bool) -> Failure {
    let mut message = String::new();
    let mut unauthorized = false;
    let mut next = Some(e);
    while let Some(err) = next {
        unauthorized |= err.is::<AuthenticationRequired>()
            || err.downcast_ref::<io::Error>().is_some_and(|io| {
                io.kind() == io::ErrorKind::PermissionDenied
                    || io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<AuthenticationRequired>())
            });
        let text = err.to_string();
        if message.is_empty() {
            message = text;
        } else if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        next = err.source();
    }
    // Like libgit2's certificate errors: an untrusted server needs a person.
    if message.contains("certificate verify failed") {
        return Failure::permanent(message);
    }
    if unauthorized {
        return Failure::permanent(
            if has_identity {
                "authentication failed (credentials rejected)"
            } else {
                "the remote asks for credentials and none are configured"
            }
            .into(),
        );
    }
    Failure::transient(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_lines() {
        let mut refs = RemoteRefs::default();
        parse_v2_line(
            "1111111111111111111111111111111111111111 HEAD symref-target:refs/heads/main",
            &mut refs,
        );
        parse_v2_line(
            "2222222222222222222222222222222222222222 refs/tags/wave/canary peeled:3333333333333333333333333333333333333333",
            &mut refs,
        );
        parse_v2_line("unborn refs/heads/next", &mut refs);
        assert_eq!(refs.head_branch.as_deref(), Some("main"));
        assert_eq!(
            refs.refs.get("refs/tags/wave/canary").map(String::as_str),
            Some("2222222222222222222222222222222222222222")
        );
        assert!(!refs.refs.contains_key("refs/heads/next"));
        complete_head(&mut refs);
        assert_eq!(
            refs.refs.get("refs/heads/main").map(String::as_str),
            Some("1111111111111111111111111111111111111111")
        );
    }

    #[test]
    fn v0_lines() {
        assert_eq!(
            parse_v0_line("1111111111111111111111111111111111111111 refs/tags/x"),
            Some(("1111111111111111111111111111111111111111", "refs/tags/x"))
        );
        assert_eq!(
            parse_v0_line("1111111111111111111111111111111111111111 refs/tags/x^{}"),
            None
        );
        assert_eq!(
            parse_v0_line("0000000000000000000000000000000000000000 capabilities^{}"),
            None
        );
    }

    #[test]
    fn local_paths_and_urls() {
        assert_eq!(local_path("file:///srv/fleet"), Some("/srv/fleet".into()));
        assert_eq!(local_path("/srv/fleet"), Some("/srv/fleet".into()));
        assert_eq!(local_path("git@host:org/fleet.git"), None);
        assert_eq!(local_path("git://127.0.0.1/fleet"), None);
        assert!(wants(Some(&["refs/tags/wave/".into()]), "refs/tags/wave/a"));
        assert!(!wants(
            Some(&["refs/tags/wave/".into()]),
            "refs/tags/release"
        ));
        assert!(wants(None, "refs/anything"));
    }
}
