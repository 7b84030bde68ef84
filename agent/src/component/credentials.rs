//! Chart credentials: how the agent reaches private chart repositories and OCI registries.
//!
//! Credentials never live in git. A component's `chart.repository` only names the
//! repository (validation refuses a `user:password@` in it); the agent is given one file,
//! `--chart-credentials`, that maps repository URLs to the *files* holding the secrets:
//!
//! ```yaml
//! repositories:
//!   - url: https://charts.example.com/private     # the repository, or a prefix of it
//!     username: deploy                             # or usernameFile
//!     passwordFile: /var/run/secrets/charts/token  # a password or a token
//!     caFile: /etc/tidemark/charts-ca.crt          # CA bundle of the repository's TLS
//!   - url: oci://registry.example.com/charts
//!     username: robot
//!     passwordFile: /var/run/secrets/registry/token
//! registryConfig: /var/run/secrets/registry/.dockerconfigjson  # helm's registry config, for oci://
//! ```
//!
//! - The file itself holds no secret (it can be one ConfigMap for the whole fleet); the
//!   secret files are mounted Secrets, read at every render, so a rotated password is used
//!   from the next render on without a restart.
//! - An entry applies to a repository whose scheme and host (and port) are its own and whose
//!   path is its path or below it (`/private` covers `/private/stable`, not `/private2`);
//!   the longest matching entry wins.
//! - This module is pure: it parses the file and matches URLs. Reading the secret files and
//!   handing them to helm (never on its command line) is [`super::helm`]'s.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parsed `--chart-credentials` file: nothing configured by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChartCredentials {
    /// Per repository, in file order.
    pub repositories: Vec<RepositoryAccess>,
    /// helm's registry config (a docker `config.json`) for `oci://` charts no entry gives
    /// credentials for: `--registry-config`.
    pub registry_config: Option<PathBuf>,
}

/// How to reach one repository (or every repository below a URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryAccess {
    /// The URL as written (without a trailing `/`).
    pub url: String,
    /// Who to log in as, with a password from a file.
    pub login: Option<Login>,
    /// CA bundle to verify the server with (`--ca-file`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (`--cert-file`, `--key-file`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Send the credentials to chart archives on other hosts than the repository's
    /// (helm's `--pass-credentials`; off by default, as in helm).
    pub pass_credentials: bool,
}

/// A user name and the file holding the password or token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Login {
    /// The user name, written in the file or read from one.
    pub username: Username,
    /// The file holding the password or token (its trailing newline is ignored).
    pub password_file: PathBuf,
}

/// Where the user name comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Username {
    /// Written in the credentials file.
    Literal(String),
    /// Read from a file (a Secret's `username` key), at every render.
    File(PathBuf),
}

/// Why a credentials file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// Not YAML, or not the expected shape.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The credentials file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field holds something unusable.
    #[error("{file}: {field}: {problem}")]
    Invalid {
        /// The credentials file.
        file: String,
        /// `repositories[1].url`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    repositories: Vec<EntryDoc>,
    #[serde(default)]
    registry_config: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EntryDoc {
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    username_file: Option<PathBuf>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    pass_credentials: bool,
}

impl ChartCredentials {
    /// Parses a credentials file; `file` names it in errors. Paths must be absolute (the
    /// agent's working directory is no place to look for secrets).
    pub fn parse(file: &str, text: &str) -> Result<Self, CredentialsError> {
        let doc: FileDoc = if text.trim().is_empty() {
            FileDoc {
                repositories: Vec::new(),
                registry_config: None,
            }
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
                let message = e.to_string();
                let message = match e.location() {
                    Some(l) => message.replacen(
                        &format!(" at line {} column {}", l.line(), l.column()),
                        "",
                        1,
                    ),
                    None => message,
                };
                CredentialsError::Syntax {
                    file: file.to_owned(),
                    line,
                    column,
                    message,
                }
            })?
        };
        let invalid = |field: String, problem: &str| CredentialsError::Invalid {
            file: file.to_owned(),
            field,
            problem: problem.to_owned(),
        };
        let absolute = |field: String, path: &Path| {
            if path.is_absolute() {
                Ok(())
            } else {
                Err(invalid(field, "must be an absolute path"))
            }
        };
        if let Some(path) = &doc.registry_config {
            absolute("registryConfig".to_owned(), path)?;
        }
        let mut repositories = Vec::with_capacity(doc.repositories.len());
        for (i, entry) in doc.repositories.into_iter().enumerate() {
            let field = |name: &str| format!("repositories[{i}].{name}");
            let url = entry.url.trim_end_matches('/').to_owned();
            if let Err(problem) = check_url(&url) {
                return Err(invalid(field("url"), &problem));
            }
            if repositories
                .iter()
                .any(|r: &RepositoryAccess| same_url(&r.url, &url))
            {
                return Err(invalid(field("url"), "is listed twice"));
            }
            let username = match (entry.username, entry.username_file) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        field("usernameFile"),
                        "give either username or usernameFile, not both",
                    ));
                }
                (Some(name), None) if name.is_empty() => {
                    return Err(invalid(field("username"), "must not be empty"));
                }
                (Some(name), None) => Some(Username::Literal(name)),
                (None, Some(path)) => {
                    absolute(field("usernameFile"), &path)?;
                    Some(Username::File(path))
                }
                (None, None) => None,
            };
            let login = match (username, entry.password_file) {
                (Some(username), Some(password_file)) => {
                    absolute(field("passwordFile"), &password_file)?;
                    Some(Login {
                        username,
                        password_file,
                    })
                }
                (Some(_), None) => {
                    return Err(invalid(
                        field("passwordFile"),
                        "a username needs a passwordFile (the password or token)",
                    ));
                }
                (None, Some(_)) => {
                    return Err(invalid(
                        field("username"),
                        "a passwordFile needs a username (or usernameFile)",
                    ));
                }
                (None, None) => None,
            };
            if let Some(path) = &entry.ca_file {
                absolute(field("caFile"), path)?;
            }
            let client_cert = match (entry.cert_file, entry.key_file) {
                (Some(cert), Some(key)) => {
                    absolute(field("certFile"), &cert)?;
                    absolute(field("keyFile"), &key)?;
                    Some((cert, key))
                }
                (None, None) => None,
                (Some(_), None) => {
                    return Err(invalid(field("keyFile"), "a certFile needs a keyFile"));
                }
                (None, Some(_)) => {
                    return Err(invalid(field("certFile"), "a keyFile needs a certFile"));
                }
            };
            if entry.pass_credentials && login.is_none() {
                return Err(invalid(
                    field("passCredentials"),
                    "there are no credentials to pass: give username and passwordFile",
                ));
            }
            repositories.push(RepositoryAccess {
                url,
                login,
                ca_file: entry.ca_file,
                client_cert,
                pass_credentials: entry.pass_credentials,
            });
        }
        Ok(Self {
            repositories,
            registry_config: doc.registry_config,
        })
    }

    /// The entry for the repository at `url` (a classic repository's URL, or an `oci://`
    /// repository or chart reference): the longest entry whose URL is `url` or a parent of it.
    pub fn for_url(&self, url: &str) -> Option<&RepositoryAccess> {
        self.repositories
            .iter()
            .filter(|r| covers(&r.url, url))
            .max_by_key(|r| r.url.len())
    }

    /// Every file the configuration names (to check at start-up that they can be read).
    pub fn files(&self) -> Vec<(String, &Path)> {
        let mut files: Vec<(String, &Path)> = Vec::new();
        if let Some(path) = &self.registry_config {
            files.push(("registryConfig".to_owned(), path));
        }
        for (i, r) in self.repositories.iter().enumerate() {
            let field = |name: &str| format!("repositories[{i}].{name}");
            if let Some(login) = &r.login {
                if let Username::File(path) = &login.username {
                    files.push((field("usernameFile"), path));
                }
                files.push((field("passwordFile"), &login.password_file));
            }
            if let Some(path) = &r.ca_file {
                files.push((field("caFile"), path));
            }
            if let Some((cert, key)) = &r.client_cert {
                files.push((field("certFile"), cert));
                files.push((field("keyFile"), key));
            }
        }
        files
    }
}

/// `scheme://host[:port]/path` with scheme `https`, `http` or `oci`, no user info, query or
/// fragment.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL (expected https://, http:// or oci://)"
        ));
    };
    if !matches!(scheme, "https" | "http" | "oci") {
        return Err(format!(
            "unsupported scheme `{scheme}` (expected https, http or oci)"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if authority.contains('@') {
        return Err("must not hold credentials: use username and passwordFile".to_owned());
    }
    if rest.contains(['?', '#']) {
        return Err("must not have a query or a fragment".to_owned());
    }
    Ok(())
}

/// Splits `scheme://authority/path` into (scheme, authority in lower case, path without
/// the trailing `/`).
fn parts(url: &str) -> Option<(&str, String, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    Some((
        scheme,
        authority.to_ascii_lowercase(),
        path.trim_end_matches('/'),
    ))
}

fn same_url(a: &str, b: &str) -> bool {
    parts(a).is_some() && parts(a) == parts(b)
}

/// Whether the entry at `prefix` covers `url`: same scheme and authority, and `url`'s path is
/// the entry's path or below it.
fn covers(prefix: &str, url: &str) -> bool {
    let (Some((scheme, authority, path)), Some((url_scheme, url_authority, url_path))) =
        (parts(prefix), parts(url))
    else {
        return false;
    };
    scheme.eq_ignore_ascii_case(url_scheme)
        && authority == url_authority
        && url_path
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The `host[:port]` of an `oci://` reference, as helm's registry config keys it.
pub fn registry_host(reference: &str) -> Option<String> {
    let (_, authority, _) = parts(reference)?;
    Some(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ChartCredentials {
        ChartCredentials::parse("creds.yaml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        match ChartCredentials::parse("creds.yaml", text) {
            Ok(c) => panic!("expected an error, parsed {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    const FILE: &str = "\
repositories:
  - url: https://charts.example.com/private/
    username: deploy
    passwordFile: /secrets/charts/password
    caFile: /etc/ca.crt
  - url: https://charts.example.com/private/stable
    usernameFile: /secrets/stable/username
    passwordFile: /secrets/stable/password
    passCredentials: true
  - url: oci://registry.example.com:5000/charts
    username: robot
    passwordFile: /secrets/registry/token
    certFile: /tls/tls.crt
    keyFile: /tls/tls.key
  - url: https://tls-only.example.com
    caFile: /etc/other-ca.crt
registryConfig: /secrets/registry/.dockerconfigjson
";

    #[test]
    fn parses_entries_and_the_registry_config() {
        let c = parse(FILE);
        assert_eq!(c.repositories.len(), 4);
        assert_eq!(c.repositories[0].url, "https://charts.example.com/private");
        assert_eq!(
            c.repositories[0].login,
            Some(Login {
                username: Username::Literal("deploy".into()),
                password_file: "/secrets/charts/password".into(),
            })
        );
        assert!(c.repositories[1].pass_credentials);
        assert_eq!(
            c.repositories[2].client_cert,
            Some(("/tls/tls.crt".into(), "/tls/tls.key".into()))
        );
        assert_eq!(c.repositories[3].login, None);
        assert_eq!(
            c.registry_config.as_deref(),
            Some(Path::new("/secrets/registry/.dockerconfigjson"))
        );
        assert_eq!(c.files().len(), 9);
        assert_eq!(parse(""), ChartCredentials::default());
    }

    #[test]
    fn the_longest_covering_entry_wins() {
        let c = parse(FILE);
        let url = |u: &str| c.for_url(u).map(|r| r.url.as_str());
        assert_eq!(
            url("https://charts.example.com/private"),
            Some("https://charts.example.com/private")
        );
        assert_eq!(
            url("https://CHARTS.example.com/private/other/"),
            Some("https://charts.example.com/private")
        );
        assert_eq!(
            url("https://charts.example.com/private/stable"),
            Some("https://charts.example.com/private/stable")
        );
        assert_eq!(url("https://charts.example.com/private2"), None);
        assert_eq!(url("https://charts.example.com"), None);
        assert_eq!(url("http://charts.example.com/private"), None);
        assert_eq!(url("https://charts.example.com:8443/private"), None);
        assert_eq!(
            url("oci://registry.example.com:5000/charts/app"),
            Some("oci://registry.example.com:5000/charts")
        );
        assert_eq!(url("oci://registry.example.com/charts/app"), None);
        assert_eq!(
            url("https://tls-only.example.com/x"),
            Some("https://tls-only.example.com")
        );
        assert_eq!(
            registry_host("oci://Registry.example.com:5000/charts/app").as_deref(),
            Some("registry.example.com:5000")
        );
    }

    #[test]
    fn mistakes_name_the_file_and_field() {
        let cases = [
            (
                "repositories:\n  - url: ftp://x\n",
                "creds.yaml: repositories[0].url: unsupported scheme `ftp` (expected https, http or oci)",
            ),
            (
                "repositories:\n  - url: https://u:p@x\n",
                "creds.yaml: repositories[0].url: must not hold credentials: use username and passwordFile",
            ),
            (
                "repositories:\n  - {url: https://x, username: u}\n",
                "creds.yaml: repositories[0].passwordFile: a username needs a passwordFile (the password or token)",
            ),
            (
                "repositories:\n  - {url: https://x, passwordFile: /p}\n",
                "creds.yaml: repositories[0].username: a passwordFile needs a username (or usernameFile)",
            ),
            (
                "repositories:\n  - {url: https://x, username: u, passwordFile: p}\n",
                "creds.yaml: repositories[0].passwordFile: must be an absolute path",
            ),
            (
                "repositories:\n  - {url: https://x, username: u, usernameFile: /u, passwordFile: /p}\n",
                "creds.yaml: repositories[0].usernameFile: give either username or usernameFile, not both",
            ),
            (
                "repositories:\n  - {url: https://x, certFile: /c}\n",
                "creds.yaml: repositories[0].keyFile: a certFile needs a keyFile",
            ),
            (
                "repositories:\n  - {url: https://x, passCredentials: true}\n",
                "creds.yaml: repositories[0].passCredentials: there are no credentials to pass: give username and passwordFile",
            ),
            (
                "repositories:\n  - {url: https://x/a}\n  - {url: https://X/a/}\n",
                "creds.yaml: repositories[1].url: is listed twice",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "{text}");
        }
        let e = error("repositories:\n  - url: https://x\n    password: hunter2\n");
        assert!(
            e.starts_with("creds.yaml:3:5: repositories[0]: unknown field `password`"),
            "{e}"
        );
        // An unknown field is named, never its value.
        assert!(!e.contains("hunter2"), "{e}");
    }
}
