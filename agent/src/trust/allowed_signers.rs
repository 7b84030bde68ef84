//! The allowed-signers file of `ssh-keygen -Y verify` (ssh-keygen(1), ALLOWED SIGNERS):
//! one key per line,
//!
//! ```text
//! principals [options] keytype base64-key [comment]
//! ```
//!
//! - `principals`: comma-separated patterns naming who holds the key (quoted if it has
//!   spaces). tidemark does not ask for a principal; it reports the ones of the line that
//!   allowed the key.
//! - options, comma-separated, names case-insensitive: `cert-authority`,
//!   `namespaces="git,file"` (a pattern list), `valid-after="YYYYMMDD[HHMM[SS]]"` and
//!   `valid-before="..."` (local time, or UTC with a `Z` or `UTC` suffix).
//! - blank lines and lines starting with `#` are ignored.
//!
//! Every problem is reported with its line and column, all of them at once.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use ssh_key::{Algorithm, PublicKey};
use tidemark_schema::{Diagnostic, Diagnostics};

/// The options ssh-keygen knows in an allowed-signers line.
const OPTIONS: &str = "cert-authority, namespaces, valid-after, valid-before";

/// The keys allowed to sign, read from one allowed-signers file.
#[derive(Clone, Debug)]
pub struct AllowedSigners {
    origin: String,
    entries: Vec<Entry>,
}

/// One line of the file.
#[derive(Clone, Debug)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The principals field as written (patterns, comma-separated).
    pub principals: String,
    /// `cert-authority`: the key signs certificates, it does not sign itself.
    pub cert_authority: bool,
    /// `namespaces="..."`: the pattern list of namespaces the key may sign for; any if none.
    pub namespaces: Option<String>,
    /// `valid-after`: not valid before this instant.
    pub valid_after: Option<Timestamp>,
    /// `valid-before`: not valid after this instant.
    pub valid_before: Option<Timestamp>,
    /// The public key.
    pub key: PublicKey,
}

impl AllowedSigners {
    /// Parses `text`, the content of the file named `origin` (used in diagnostics and
    /// messages). Times without a `Z`/`UTC` suffix are read in `tz`, as ssh-keygen reads
    /// them in the local time zone. A file without any key is an error too: every
    /// signature would be refused.
    pub fn parse(origin: &str, text: &str, tz: &TimeZone) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match parse_line(line, i + 1, tz) {
                Ok(Some(entry)) => entries.push(entry),
                Ok(None) => {}
                Err(LineError { column, message }) => diags.push(Diagnostic {
                    file: origin.to_string(),
                    line: Some(i + 1),
                    column: Some(column),
                    field: None,
                    message,
                }),
            }
        }
        if diags.is_empty() && entries.is_empty() {
            diags.push(Diagnostic::file(
                origin,
                "lists no key, so every signature would be refused",
            ));
        }
        if diags.is_empty() {
            Ok(Self {
                origin: origin.to_string(),
                entries,
            })
        } else {
            Err(diags)
        }
    }

    /// Where the entries were read from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The lines that list a key, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

struct LineError {
    column: usize,
    message: String,
}

/// A cursor over one line; columns are 1-based and count characters.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    fn column_at(&self, pos: usize) -> usize {
        self.line[..pos].chars().count() + 1
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t', '\r']).len();
    }

    fn at_end(&self) -> bool {
        self.rest().is_empty()
    }

    /// The next whitespace-delimited token.
    fn token(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest.find([' ', '\t', '\r']).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    /// The next token, in which whitespace inside double quotes does not end it.
    fn quoted_token(&mut self) -> Result<&'a str, LineError> {
        let start = self.pos;
        let rest = self.rest();
        let mut in_quotes = false;
        let mut end = rest.len();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                // An escaped quote neither opens nor closes a quoted value.
                '\\' if rest[i + 1..].starts_with('"') => {
                    chars.next();
                }
                '"' => in_quotes = !in_quotes,
                ' ' | '\t' | '\r' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        if in_quotes {
            return Err(self.error_at(start, "missing closing quote in options"));
        }
        self.pos += end;
        Ok(&rest[..end])
    }

    fn error_at(&self, pos: usize, message: impl Into<String>) -> LineError {
        LineError {
            column: self.column_at(pos),
            message: message.into(),
        }
    }
}

fn parse_line(line: &str, number: usize, tz: &TimeZone) -> Result<Option<Entry>, LineError> {
    let mut cur = Cursor { line, pos: 0 };
    cur.skip_space();
    if cur.at_end() || cur.rest().starts_with('#') {
        return Ok(None);
    }

    // Principals: one token, or a quoted string that may hold spaces.
    let principals_at = cur.pos;
    let principals = if let Some(quoted) = cur.rest().strip_prefix('"') {
        let Some(end) = quoted.find('"') else {
            return Err(cur.error_at(principals_at, "missing closing quote in principals"));
        };
        cur.pos += end + 2;
        &quoted[..end]
    } else {
        let token = cur.token();
        if let Some(q) = token.find('"') {
            return Err(cur.error_at(
                principals_at + q,
                "unexpected quote in principals (quote the whole field)",
            ));
        }
        token
    };
    if principals.is_empty() {
        return Err(cur.error_at(principals_at, "empty principals"));
    }
    cur.skip_space();
    if cur.at_end() {
        return Err(cur.error_at(
            cur.pos,
            "missing key: expected `principals [options] keytype base64-key`",
        ));
    }

    // Options, unless the next token already is a key type.
    let mut options = Options::default();
    let next = cur.rest().split([' ', '\t', '\r']).next().unwrap_or("");
    if !is_key_type(next) {
        let options_at = cur.pos;
        let text = cur.quoted_token()?;
        options = parse_options(text, &cur, options_at, tz)?;
        cur.skip_space();
        if cur.at_end() {
            return Err(cur.error_at(cur.pos, "missing key after the options"));
        }
    }

    // The key: type, base64, optional comment.
    let key_at = cur.pos;
    let key_type = cur.token();
    if !is_key_type(key_type) {
        return Err(cur.error_at(key_at, format!("unknown key type `{key_type}`")));
    }
    cur.skip_space();
    let data_at = cur.pos;
    let data = cur.token();
    if data.is_empty() {
        return Err(cur.error_at(
            data_at,
            format!("missing base64 data of the {key_type} key"),
        ));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {data}"))
        .map_err(|e| cur.error_at(data_at, format!("invalid {key_type} key: {e}")))?;
    Ok(Some(Entry {
        line: number,
        principals: principals.to_string(),
        cert_authority: options.cert_authority,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        key,
    }))
}

/// A key type ssh-key reads (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `sk-...@openssh.com`, ...).
fn is_key_type(token: &str) -> bool {
    !token.is_empty()
        && !token.contains(['=', '"', ','])
        && token
            .parse::<Algorithm>()
            .is_ok_and(|a| !matches!(a, Algorithm::Other(_)))
}

#[derive(Default)]
struct Options {
    cert_authority: bool,
    namespaces: Option<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
}

/// Parses the options field `text`, which starts at byte `base` of the line.
fn parse_options(
    text: &str,
    cur: &Cursor<'_>,
    base: usize,
    tz: &TimeZone,
) -> Result<Options, LineError> {
    let mut out = Options::default();
    let mut i = 0;
    let err = |at: usize, message: String| cur.error_at(base + at, message);
    loop {
        let rest = &text[i..];
        let start = i;
        let has = |name: &str| {
            rest.get(..name.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
        };
        if has("cert-authority") {
            out.cert_authority = true;
            i += "cert-authority".len();
        } else if has("namespaces=") {
            i += "namespaces=".len();
            let (value, used) = dequote(&text[i..]).map_err(|m| err(i, m))?;
            if out.namespaces.is_some() {
                return Err(err(start, "`namespaces` given twice".into()));
            }
            out.namespaces = Some(value);
            i += used;
        } else if has("valid-after=") || has("valid-before=") {
            let after = has("valid-after=");
            let name = if after { "valid-after" } else { "valid-before" };
            i += name.len() + 1;
            let (value, used) = dequote(&text[i..]).map_err(|m| err(i, m))?;
            let time = parse_time(&value, tz).ok_or_else(|| {
                err(
                    i,
                    format!("invalid {name} time `{value}`: expected YYYYMMDD[HHMM[SS]], optionally followed by Z or UTC"),
                )
            })?;
            let slot = if after {
                &mut out.valid_after
            } else {
                &mut out.valid_before
            };
            if slot.is_some() {
                return Err(err(start, format!("`{name}` given twice")));
            }
            *slot = Some(time);
            i += used;
        } else {
            let name = rest.split([',', '=']).next().unwrap_or(rest);
            return Err(err(
                start,
                format!("unknown option `{name}` (allowed signers know {OPTIONS})"),
            ));
        }
        match text[i..].chars().next() {
            None => break,
            Some(',') => {
                i += 1;
                if i == text.len() {
                    return Err(err(i, "option expected after `,`".into()));
                }
            }
            Some(_) => {
                return Err(err(
                    i,
                    format!("expected `,` between options, found `{}`", &text[i..]),
                ));
            }
        }
    }
    if let (Some(after), Some(before)) = (out.valid_after, out.valid_before)
        && before <= after
    {
        return Err(err(
            0,
            format!("valid-before ({before}) is not after valid-after ({after})"),
        ));
    }
    Ok(out)
}

/// A double-quoted option value (`\"` escapes a quote); returns it and the bytes used.
fn dequote(text: &str) -> Result<(String, usize), String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Err("option value must be in double quotes".into());
    };
    let mut value = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if inner[i + 1..].starts_with('"') => {
                value.push('"');
                chars.next();
            }
            '"' => return Ok((value, i + 2)),
            c => value.push(c),
        }
    }
    Err("missing closing quote".into())
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in `tz` unless suffixed `Z` or `UTC`.
fn parse_time(text: &str, tz: &TimeZone) -> Option<Timestamp> {
    let upper = text.to_ascii_uppercase();
    let (digits, utc) = if let Some(d) = upper.strip_suffix("UTC") {
        (d, true)
    } else if let Some(d) = upper.strip_suffix('Z') {
        (d, true)
    } else {
        (upper.as_str(), false)
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i16>().ok());
    let part = |r: std::ops::Range<usize>| {
        if digits.len() >= r.end {
            num(r).and_then(|n| i8::try_from(n).ok())
        } else {
            Some(0)
        }
    };
    let dt = DateTime::new(
        num(0..4)?,
        part(4..6)?,
        part(6..8)?,
        part(8..10)?,
        part(10..12)?,
        part(12..14)?,
        0,
    )
    .ok()?;
    let tz = if utc { TimeZone::UTC } else { tz.clone() };
    tz.to_timestamp(dt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGQKEPKqyF+YEyMnfwnpwRDRr3CcXQ+qR9JFIhu7sGcU";

    fn parse(text: &str) -> Result<AllowedSigners, Vec<String>> {
        AllowedSigners::parse("allowed_signers", text, &TimeZone::UTC)
            .map_err(|d| d.iter().map(ToString::to_string).collect())
    }

    fn one(text: &str) -> Entry {
        match parse(text) {
            Ok(s) if s.entries().len() == 1 => s.entries()[0].clone(),
            other => panic!("expected one entry from {text:?}, got {other:?}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(s) => panic!("expected errors from {text:?}, got {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_line_comments_and_blank_lines() {
        let s = parse(&format!(
            "# release managers\n\n   \nalice@example.com {ED} alice's laptop\n  # indented comment\n"
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(s.entries().len(), 1);
        let e = &s.entries()[0];
        assert_eq!(e.line, 4);
        assert_eq!(e.principals, "alice@example.com");
        assert!(!e.cert_authority && e.namespaces.is_none() && e.valid_after.is_none());
        assert_eq!(e.key.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn options() {
        let e = one(&format!(
            "alice,bob NameSpaces=\"git,file\",Valid-After=\"20240101\",valid-before=\"202501011230Z\" {ED}"
        ));
        assert_eq!(e.principals, "alice,bob");
        assert_eq!(e.namespaces.as_deref(), Some("git,file"));
        assert_eq!(
            e.valid_after,
            Some("2024-01-01T00:00:00Z".parse().unwrap_or_default())
        );
        assert_eq!(
            e.valid_before,
            Some("2025-01-01T12:30:00Z".parse().unwrap_or_default())
        );
        let ca = one(&format!("*@example.com cert-authority {ED}"));
        assert!(ca.cert_authority);
        // Tabs separate fields as well as spaces; seconds and a UTC suffix.
        let t = one(&format!("a\tvalid-after=\"20240101123045utc\"\t{ED}"));
        assert_eq!(
            t.valid_after,
            Some("2024-01-01T12:30:45Z".parse().unwrap_or_default())
        );
        // A quoted value may hold an escaped quote and a comma.
        let q = one(&format!("a namespaces=\"g\\\"it,x\" {ED}"));
        assert_eq!(q.namespaces.as_deref(), Some("g\"it,x"));
    }

    #[test]
    fn local_time_uses_the_given_zone() -> Result<(), jiff::Error> {
        let tz = TimeZone::fixed(jiff::tz::offset(2));
        let s = AllowedSigners::parse("f", &format!("a valid-after=\"20240101\" {ED}"), &tz)
            .map_err(|d| jiff::Error::from_args(format_args!("{d}")))?;
        assert_eq!(
            s.entries()[0].valid_after,
            Some("2023-12-31T22:00:00Z".parse()?)
        );
        Ok(())
    }

    #[test]
    fn quoted_principals() {
        let e = one(&format!("\"Alice Doe,bob\" namespaces=\"git\" {ED}"));
        assert_eq!(e.principals, "Alice Doe,bob");
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, &str)] = &[
            ("alice", "allowed_signers:1:6: missing key"),
            (
                "alice ssh-ed25519",
                "allowed_signers:1:18: missing base64 data",
            ),
            (
                "alice ssh-ed25519 AAAAnotakey",
                "allowed_signers:1:19: invalid ssh-ed25519 key",
            ),
            (
                "alice bogus-option {ED}",
                "allowed_signers:1:7: unknown option `bogus-option` (allowed signers know cert-authority",
            ),
            (
                "alice cert-authority,frob=\"x\" {ED}",
                "allowed_signers:1:22: unknown option `frob`",
            ),
            (
                "alice namespaces=git {ED}",
                "allowed_signers:1:18: option value must be in double quotes",
            ),
            (
                "alice namespaces=\"git {ED}",
                "allowed_signers:1:7: missing closing quote in options",
            ),
            (
                "alice valid-after=\"2024-01-01\" {ED}",
                "allowed_signers:1:19: invalid valid-after time `2024-01-01`",
            ),
            (
                "alice valid-after=\"20241301\" {ED}",
                "allowed_signers:1:19: invalid valid-after time `20241301`",
            ),
            (
                "alice valid-after=\"20250101\",valid-before=\"20240101\" {ED}",
                "allowed_signers:1:7: valid-before (2024-01-01T00:00:00Z) is not after valid-after",
            ),
            (
                "alice namespaces=\"git\",namespaces=\"file\" {ED}",
                "allowed_signers:1:24: `namespaces` given twice",
            ),
            (
                "alice cert-authority, {ED}",
                "allowed_signers:1:22: option expected after `,`",
            ),
            (
                "alice cert-authorityx {ED}",
                "allowed_signers:1:21: expected `,` between options, found `x`",
            ),
            (
                "alice cert-authority",
                "allowed_signers:1:21: missing key after the options",
            ),
            (
                "alice cert-authority ssh-foo AAAA",
                "allowed_signers:1:22: unknown key type `ssh-foo`",
            ),
            (
                "\"alice {ED}",
                "allowed_signers:1:1: missing closing quote in principals",
            ),
            (
                "al\"ice {ED}",
                "allowed_signers:1:3: unexpected quote in principals",
            ),
            ("# nothing\n\n", "allowed_signers: lists no key"),
        ];
        for (text, want) in cases {
            let text = text.replace("{ED}", ED);
            let got = errors(&text);
            assert!(
                got.len() == 1 && got[0].starts_with(want),
                "{text:?}:\n  got  {got:?}\n  want {want:?}"
            );
        }
    }

    #[test]
    fn every_bad_line_is_reported() {
        let got = errors(&format!("a {ED}\nb frob {ED}\n\nc ssh-ed25519\n"));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("allowed_signers:2:3: unknown option `frob`"));
        assert!(got[1].starts_with("allowed_signers:4:14: missing base64 data"));
    }

    #[test]
    fn ecdsa_and_rsa_keys_are_read() {
        let p256 = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBPn+Pp3eA9Cd1DQZg+73j7U7nQr+vAsgf6Dwo5ETZlI8lZvZ2E+A+fco5ZS3P+V7pWy9rp/JkKG/fYbB9I+ieHo=";
        assert!(one(&format!("a {p256}")).key.algorithm().is_ecdsa());
        let rsa = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDB76yc7PnZYFZsQV0jGDs96lQxh8IUdhnAra8h6kUz6SY4x4XPhqEuEOuG75CKd15hiAObUEXtw+ai/VMFLL+/fdk4gxF8+Bd8Me+4Hhez0Z9+55aJul7MWPci/UZbQCVq4wa0/yhBrEd5PmArpFMUOiAdbfwEN+UrRUl8FB5k6Q==";
        assert!(one(&format!("a {rsa}")).key.algorithm().is_rsa());
    }
}
