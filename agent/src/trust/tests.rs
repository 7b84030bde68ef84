//! Verification against signatures made by git and ssh-keygen (fixtures in `testdata/`)
//! and by the `ssh-key` crate with fixed test keys (for the cases the fixtures lack).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{HashAlg, LineEnding, PrivateKey};

use super::*;

const TAG: &[u8] = include_bytes!("testdata/wave-canary.tag");
const TAG_COMMIT: &str = "f75d075e28333d640f307469d50465e638421fda";
/// `testdata/signer.pub`.
const SIGNER: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPa3el9n1pzN72jiTi8Lwiy4xngWpZOi2Tk9c39eHw2P release@example.com";
const SIGNER_FP: &str = "SHA256:HzlM/0RDrEUkLgMWkDNlkhg1inonQnmHvOE3Bfa30Lw";

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn now() -> Timestamp {
    Timestamp::from_second(1_748_736_000).unwrap_or_default() // 2025-06-01T00:00:00Z
}

fn signers(text: &str) -> Result<AllowedSigners, String> {
    AllowedSigners::parse("allowed_signers", text, &TimeZone::UTC).map_err(|d| d.to_string())
}

/// A test key made from a fixed seed.
fn key(seed: u8) -> Result<PrivateKey, ssh_key::Error> {
    PrivateKey::new(
        KeypairData::from(Ed25519Keypair::from_seed(&[seed; 32])),
        "test",
    )
}

fn public(k: &PrivateKey) -> Result<String, ssh_key::Error> {
    k.public_key().to_openssh()
}

fn fingerprint(k: &PrivateKey) -> String {
    k.public_key().fingerprint(HashAlg::Sha256).to_string()
}

fn tag_payload(kind: &str, name: &str, message: &str) -> String {
    format!(
        "object {TAG_COMMIT}\ntype {kind}\ntag {name}\ntagger t <t@example.com> 1735689600 +0000\n\n{message}\n"
    )
}

/// `payload` followed by an SSH signature of it in `namespace`, as `git tag -s` lays it out.
fn signed(k: &PrivateKey, namespace: &str, payload: &str) -> Result<Vec<u8>, ssh_key::Error> {
    let sig = k.sign(namespace, HashAlg::Sha512, payload.as_bytes())?;
    Ok(format!("{payload}{}", sig.to_pem(LineEnding::LF)?).into_bytes())
}

#[test]
fn a_tag_signed_by_git_verifies() -> TestResult {
    let allowed = signers(&format!("release@example.com {SIGNER}"))?;
    let verified = allowed.verify_tag("wave/canary", TAG, now())?;
    assert_eq!(
        verified,
        VerifiedTag {
            commit: TAG_COMMIT.into(),
            signer: Signer {
                fingerprint: SIGNER_FP.into(),
                principals: "release@example.com".into(),
                line: 1,
            },
        }
    );
    Ok(())
}

#[test]
fn a_changed_byte_breaks_the_signature() -> TestResult {
    let allowed = signers(&format!("release@example.com {SIGNER}"))?;
    let text = String::from_utf8(TAG.to_vec())?;
    for tampered in [
        text.replace("promote canary", "promote canarY"),
        text.replace(TAG_COMMIT, "0000000000000000000000000000000000000000"),
        text.replace("1735689600", "1735689601"),
    ] {
        let err = allowed
            .verify_tag("wave/canary", tampered.as_bytes(), now())
            .err()
            .ok_or("a tampered tag verified")?;
        assert!(
            matches!(&err, Refusal::BadSignature { fingerprint } if fingerprint == SIGNER_FP),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the signature by key {SIGNER_FP} does not match the tag object: it was changed after signing, or the signature is forged"
            )
        );
    }
    Ok(())
}

#[test]
fn a_signed_tag_reused_under_another_name_is_refused() -> TestResult {
    let allowed = signers(&format!("release@example.com {SIGNER}"))?;
    let err = allowed.verify_tag("wave/prod", TAG, now()).err();
    assert!(
        matches!(&err, Some(Refusal::NameMismatch { signed_name, .. }) if signed_name == "wave/canary"),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn signatures_made_by_ssh_keygen_verify() -> TestResult {
    let payload = include_bytes!("testdata/payload.txt");
    for (key, sig, principal) in [
        (
            include_str!("testdata/rsa.pub"),
            &include_bytes!("testdata/payload.rsa.sig")[..],
            "rsa@example.com",
        ),
        (
            include_str!("testdata/ecdsa.pub"),
            &include_bytes!("testdata/payload.ecdsa.sig")[..],
            "ecdsa@example.com",
        ),
    ] {
        let allowed = signers(&format!("{principal} {key}"))?;
        let signer = allowed.verify(payload, sig, "git", now())?;
        assert_eq!(signer.principals, principal);
        let err = allowed
            .verify(b"signed payload!\n", sig, "git", now())
            .err();
        assert!(
            matches!(err, Some(Refusal::BadSignature { .. })),
            "{principal}: {err:?}"
        );
    }
    Ok(())
}

#[test]
fn unknown_key() -> TestResult {
    let other = key(2)?;
    let allowed = signers(&format!("someone {}", public(&other)?))?;
    let err = allowed.verify_tag("wave/canary", TAG, now()).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "key {SIGNER_FP} is not in the allowed signers file allowed_signers"
        ))
    );
    Ok(())
}

#[test]
fn namespaces_option() -> TestResult {
    let cases = [
        ("namespaces=\"file\"", false),
        ("namespaces=\"file,ssh-*\"", false),
        ("namespaces=\"*,!git\"", false),
        ("namespaces=\"\"", false),
        ("namespaces=\"git\"", true),
        ("namespaces=\"file,g?t\"", true),
        ("namespaces=\"*\"", true),
    ];
    for (option, ok) in cases {
        let allowed = signers(&format!("release@example.com {option} {SIGNER}"))?;
        match allowed.verify_tag("wave/canary", TAG, now()) {
            Ok(_) if ok => {}
            Err(Refusal::NamespaceNotAllowed {
                fingerprint, line, ..
            }) if !ok => {
                assert_eq!((fingerprint.as_str(), line), (SIGNER_FP, 1));
            }
            other => panic!("{option}: {other:?}"),
        }
    }
    let allowed = signers(&format!("release@example.com namespaces=\"file\" {SIGNER}"))?;
    let err = allowed.verify_tag("wave/canary", TAG, now()).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "key {SIGNER_FP} (release@example.com) is allowed only for namespaces \"file\" (allowed_signers:1), not `git`"
        ))
    );
    Ok(())
}

#[test]
fn validity_is_checked_at_the_time_given() -> TestResult {
    // The tag claims 2025-01-01; the check runs on 2025-06-01: that time counts.
    let window =
        format!("release@example.com valid-after=\"20250301\",valid-before=\"20250901Z\" {SIGNER}");
    let allowed = signers(&window)?;
    assert!(allowed.verify_tag("wave/canary", TAG, now()).is_ok());
    let early = Timestamp::from_second(1_740_000_000)?; // 2025-02-19
    let err = allowed.verify_tag("wave/canary", TAG, early).err();
    assert!(
        matches!(&err, Some(Refusal::NotYetValid { valid_after, .. }) if valid_after.to_string() == "2025-03-01T00:00:00Z"),
        "{err:?}"
    );
    let late = Timestamp::from_second(1_760_000_000)?; // 2025-10-09
    let err = allowed.verify_tag("wave/canary", TAG, late).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "key {SIGNER_FP} (release@example.com) expired at 2025-09-01T00:00:00Z (allowed_signers:1)"
        ))
    );
    Ok(())
}

#[test]
fn the_first_line_that_allows_the_key_wins() -> TestResult {
    let allowed = signers(&format!(
        "old namespaces=\"file\" {SIGNER}\nexpired valid-before=\"20240101\" {SIGNER}\nrelease@example.com {SIGNER}\n"
    ))?;
    let signer = allowed.verify_tag("wave/canary", TAG, now())?.signer;
    assert_eq!(
        (signer.principals.as_str(), signer.line),
        ("release@example.com", 3)
    );
    // None allows it: the first line's reason is reported.
    let allowed = signers(&format!(
        "old namespaces=\"file\" {SIGNER}\nexpired valid-before=\"20240101\" {SIGNER}\n"
    ))?;
    let err = allowed.verify_tag("wave/canary", TAG, now()).err();
    assert!(
        matches!(err, Some(Refusal::NamespaceNotAllowed { line: 1, .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_cert_authority_key_does_not_sign_tags_itself() -> TestResult {
    let allowed = signers(&format!("*@example.com cert-authority {SIGNER}"))?;
    let err = allowed.verify_tag("wave/canary", TAG, now()).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "key {SIGNER_FP} is listed only as a cert-authority (allowed_signers:1): it may sign certificates, not tags"
        ))
    );
    // Listed both ways: the plain line allows it.
    let allowed = signers(&format!(
        "*@example.com cert-authority {SIGNER}\nrelease@example.com {SIGNER}"
    ))?;
    assert!(allowed.verify_tag("wave/canary", TAG, now()).is_ok());
    Ok(())
}

#[test]
fn unsigned_and_foreign_signatures() -> TestResult {
    let allowed = signers(&format!("release@example.com {SIGNER}"))?;
    let unsigned = tag_payload("commit", "wave/canary", "no signature");
    assert!(matches!(
        allowed.verify_tag("wave/canary", unsigned.as_bytes(), now()),
        Err(Refusal::Unsigned)
    ));
    let pgp =
        format!("{unsigned}-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n");
    let err = allowed
        .verify_tag("wave/canary", pgp.as_bytes(), now())
        .err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some("the tag carries an OpenPGP signature; only SSH signatures (gpg.format=ssh) are accepted".into())
    );
    let garbage = format!(
        "{unsigned}-----BEGIN SSH SIGNATURE-----\nbm90IGEgc2lnbmF0dXJl\n-----END SSH SIGNATURE-----\n"
    );
    let err = allowed
        .verify_tag("wave/canary", garbage.as_bytes(), now())
        .err();
    assert!(matches!(err, Some(Refusal::Undecodable { .. })), "{err:?}");
    assert!(
        err.and_then(|e| e.fingerprint().map(str::to_string))
            .is_none()
    );
    Ok(())
}

#[test]
fn a_signature_for_another_namespace_is_refused() -> TestResult {
    let k = key(1)?;
    let allowed = signers(&format!("ci {}", public(&k)?))?;
    let payload = tag_payload("commit", "wave/canary", "m");
    let object = signed(&k, "file", &payload)?;
    let err = allowed.verify_tag("wave/canary", &object, now()).err();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "the signature by key {} was made for namespace `file`, not `git`",
            fingerprint(&k)
        ))
    );
    // The same key in namespace git is accepted.
    let object = signed(&k, "git", &payload)?;
    assert_eq!(
        allowed
            .verify_tag("wave/canary", &object, now())?
            .signer
            .fingerprint,
        fingerprint(&k)
    );
    Ok(())
}

#[test]
fn a_signature_by_one_key_claimed_for_another_is_refused() -> TestResult {
    // Signed by key 1, but the SSHSIG blob names key 2 (which is allowed): the signature
    // does not verify under key 2.
    let (k1, k2) = (key(1)?, key(2)?);
    let payload = tag_payload("commit", "wave/canary", "m");
    let sig = k1.sign("git", HashAlg::Sha512, payload.as_bytes())?;
    let forged = SshSig::new(
        k2.public_key().key_data().clone(),
        "git",
        HashAlg::Sha512,
        sig.signature().clone(),
    )?;
    let object = format!("{payload}{}", forged.to_pem(LineEnding::LF)?);
    let allowed = signers(&format!("ci {}", public(&k2)?))?;
    let err = allowed
        .verify_tag("wave/canary", object.as_bytes(), now())
        .err();
    assert!(
        matches!(&err, Some(Refusal::BadSignature { fingerprint: f }) if *f == fingerprint(&k2)),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn the_signed_object_must_be_a_tag_of_a_commit() -> TestResult {
    let k = key(1)?;
    let allowed = signers(&format!("ci {}", public(&k)?))?;
    let tree = signed(&k, "git", &tag_payload("tree", "wave/canary", "m"))?;
    let err = allowed.verify_tag("wave/canary", &tree, now()).err();
    assert!(
        matches!(&err, Some(Refusal::NotACommit { kind, .. }) if kind == "tree"),
        "{err:?}"
    );
    let not_a_tag = signed(&k, "git", "just some text\n")?;
    let err = allowed.verify_tag("wave/canary", &not_a_tag, now()).err();
    assert!(matches!(err, Some(Refusal::NotATag { .. })), "{err:?}");
    Ok(())
}
