//! A git tag object as git reads it for `git verify-tag`: the signed payload, the signature
//! appended to it, and the header that says what the tag points at.
//!
//! git appends the signature to the tag message; the payload is everything before the last
//! line that starts a signature block (`parse_signed_buffer` in git's `gpg-interface.c`).

/// The kind of signature block git recognizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenPGP (`gpg.format=openpgp`).
    OpenPgp,
    /// X.509 / S/MIME (`gpg.format=x509`).
    X509,
    /// SSH (`gpg.format=ssh`): an SSHSIG armoured block.
    Ssh,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::OpenPgp => "OpenPGP",
            Format::X509 => "X.509",
            Format::Ssh => "SSH",
        })
    }
}

/// The lines that start a signature block, as git's `gpg-interface.c` lists them.
const MARKERS: [(&str, Format); 4] = [
    ("-----BEGIN PGP SIGNATURE-----", Format::OpenPgp),
    ("-----BEGIN PGP MESSAGE-----", Format::OpenPgp),
    ("-----BEGIN SIGNED MESSAGE-----", Format::X509),
    ("-----BEGIN SSH SIGNATURE-----", Format::Ssh),
];

/// A tag object split into what was signed and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    /// The bytes the signature covers: the object up to the signature block.
    pub payload: &'a [u8],
    /// The signature block, to the end of the object.
    pub signature: &'a [u8],
    /// Which kind of block it is.
    pub format: Format,
}

/// Splits a raw tag object at the start of its last signature block; `None` when it has
/// none (an unsigned annotated tag).
pub fn split_signed(object: &[u8]) -> Option<Signed<'_>> {
    let mut found = None;
    let mut start = 0;
    while start < object.len() {
        let line = &object[start..];
        if let Some((_, format)) = MARKERS.iter().find(|(m, _)| line.starts_with(m.as_bytes())) {
            found = Some((start, *format));
        }
        start += line
            .iter()
            .position(|b| *b == b'\n')
            .map_or(line.len(), |i| i + 1);
    }
    let (at, format) = found?;
    Some(Signed {
        payload: &object[..at],
        signature: &object[at..],
        format,
    })
}

/// The header of a tag object: `object`, `type` and `tag`, in this order, first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The id of the object tagged.
    pub object: String,
    /// Its type (`commit`, `tag`, `tree`, `blob`).
    pub kind: String,
    /// The tag's own name, as it was when it was made.
    pub tag: String,
}

/// Reads the header of a tag object (or of its payload); `None` when it is not one.
pub fn parse_header(payload: &[u8]) -> Option<Header> {
    let mut lines = payload.split(|b| *b == b'\n');
    let mut field = |name: &str| {
        let line = std::str::from_utf8(lines.next()?).ok()?;
        line.strip_prefix(name).map(str::to_string)
    };
    let object = field("object ")?;
    let kind = field("type ")?;
    let tag = field("tag ")?;
    let is_id = matches!(object.len(), 40 | 64) && object.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_id || kind.is_empty() || tag.is_empty() {
        return None;
    }
    Some(Header { object, kind, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &[u8] = include_bytes!("testdata/wave-canary.tag");

    #[test]
    fn splits_a_real_signed_tag() -> Result<(), String> {
        let signed = split_signed(TAG).ok_or("no signature found")?;
        assert_eq!(signed.format, Format::Ssh);
        assert!(signed.payload.ends_with(b"\n\npromote canary\n"));
        assert!(
            signed
                .signature
                .starts_with(b"-----BEGIN SSH SIGNATURE-----\n")
        );
        assert!(signed.signature.ends_with(b"-----END SSH SIGNATURE-----\n"));
        assert_eq!(signed.payload.len() + signed.signature.len(), TAG.len());
        let header = parse_header(signed.payload).ok_or("no header")?;
        assert_eq!(
            header,
            Header {
                object: "f75d075e28333d640f307469d50465e638421fda".into(),
                kind: "commit".into(),
                tag: "wave/canary".into(),
            }
        );
        Ok(())
    }

    #[test]
    fn the_last_block_is_the_signature() {
        // A message quoting a signature block: the last block is the one that counts.
        let object = b"object 0123456789012345678901234567890123456789\ntype commit\ntag t\n\n\
            -----BEGIN PGP SIGNATURE-----\nquoted\n-----END PGP SIGNATURE-----\n\
            -----BEGIN SSH SIGNATURE-----\nsig\n-----END SSH SIGNATURE-----\n";
        let Some(signed) = split_signed(object) else {
            panic!("no signature found");
        };
        assert_eq!(signed.format, Format::Ssh);
        assert!(signed.payload.ends_with(b"-----END PGP SIGNATURE-----\n"));
        // A marker must start a line.
        assert_eq!(
            split_signed(b"tag t\n\nsee -----BEGIN SSH SIGNATURE-----\n"),
            None
        );
        assert_eq!(split_signed(b"tag t\n\nunsigned\n"), None);
        let pgp = split_signed(b"tag t\n\n-----BEGIN PGP SIGNATURE-----\nx\n");
        assert_eq!(pgp.map(|s| s.format), Some(Format::OpenPgp));
        // No trailing newline.
        let bare = split_signed(b"m\n-----BEGIN SSH SIGNATURE-----");
        assert_eq!(bare.map(|s| s.payload), Some(&b"m\n"[..]));
    }

    #[test]
    fn headers() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        let ok = format!("object {id}\ntype commit\ntag wave/x\ntagger a <b> 1 +0000\n\nmsg\n");
        assert_eq!(
            parse_header(ok.as_bytes()).map(|h| h.tag),
            Some("wave/x".into())
        );
        for bad in [
            format!("type commit\nobject {id}\ntag x\n"),
            format!("object {id}\ntype commit\n"),
            "object nothex\ntype commit\ntag x\n".to_string(),
            format!("object {id}\ntype \ntag x\n"),
            String::new(),
        ] {
            assert_eq!(parse_header(bad.as_bytes()), None, "{bad:?}");
        }
    }
}
