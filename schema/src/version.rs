//! Kubernetes versions as the fleet repo writes them (`1.30`, `1.30.4`, `v1.30.4`) and as a
//! cluster reports them (`v1.30.4-eks-1a2b3c`, `v1.29.8+k3s1`).
//!
//! A version is parsed once into [`KubeVersion`]; the rest of tidemark compares and steps
//! versions through its methods and never re-parses strings.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Kubernetes `major.minor[.patch]` version.
///
/// - A version without a patch (`1.30`) means "the latest patch of that minor that the
///   provider offers"; it sorts before every patch release of the same minor, and
///   [`KubeVersion::satisfied_by`] accepts any patch of that minor.
/// - Pre-release and build suffixes of observed versions are dropped: tidemark plans by
///   minor and patch only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KubeVersion {
    /// Major version, `1` for every Kubernetes release so far.
    pub major: u32,
    /// Minor version: the unit of the version-skew policy.
    pub minor: u32,
    /// Patch version, when declared.
    pub patch: Option<u32>,
}

/// Why a string is not a Kubernetes version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The string is empty.
    #[error("empty version")]
    Empty,
    /// The string does not have the `major.minor[.patch]` shape.
    #[error(
        "`{0}` is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.30.4)"
    )]
    Shape(String),
    /// A number is out of range.
    #[error("`{0}` has a number that is too large")]
    TooLarge(String),
}

impl KubeVersion {
    /// A version with a patch number.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch: Some(patch),
        }
    }

    /// A version naming only a minor (`1.30`).
    pub const fn minor_only(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            patch: None,
        }
    }

    /// Parses a version as a cluster reports it: a leading `v` and any `-...` or `+...`
    /// suffix are accepted and the suffix is dropped (`v1.29.8-eks-a737599` is `1.29.8`).
    pub fn parse_observed(s: &str) -> Result<Self, VersionError> {
        let trimmed = s.trim();
        let end = trimmed.find(['-', '+']).unwrap_or(trimmed.len());
        Self::parse_strict(&trimmed[..end], s)
    }

    fn parse_strict(core: &str, original: &str) -> Result<Self, VersionError> {
        if original.trim().is_empty() {
            return Err(VersionError::Empty);
        }
        let core = core.strip_prefix('v').unwrap_or(core);
        let parts: Vec<&str> = core.split('.').collect();
        if !(2..=3).contains(&parts.len())
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
            || parts.iter().any(|p| p.len() > 1 && p.starts_with('0'))
        {
            return Err(VersionError::Shape(original.to_string()));
        }
        let num = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| VersionError::TooLarge(original.into()))
        };
        Ok(Self {
            major: num(parts[0])?,
            minor: num(parts[1])?,
            patch: parts.get(2).map(|p| num(p)).transpose()?,
        })
    }

    /// This version's minor without its patch: the `1.30` of `1.30.4`.
    pub fn minor_version(self) -> Self {
        Self::minor_only(self.major, self.minor)
    }

    /// How many minors `self` is ahead of `other` (negative when behind). Versions of
    /// different majors are treated as 100 minors apart per major: no Kubernetes 2 exists,
    /// and a huge gap makes any skew check fail safely.
    pub fn minor_gap(self, other: Self) -> i64 {
        let major_gap = i64::from(self.major) - i64::from(other.major);
        major_gap * 100 + i64::from(self.minor) - i64::from(other.minor)
    }

    /// The next minor (`1.30.4` -> `1.31`).
    pub fn next_minor(self) -> Self {
        Self::minor_only(self.major, self.minor.saturating_add(1))
    }

    /// The version `n` minors later, as a minor-only version.
    pub fn plus_minors(self, n: u32) -> Self {
        Self::minor_only(self.major, self.minor.saturating_add(n))
    }

    /// Whether `self` is newer than `other`, comparing patches only when both declare one
    /// (`1.30` means "some 1.30": it is neither newer nor older than `1.30.4`).
    pub fn is_newer_than(self, other: Self) -> bool {
        if self.patch.is_none() || other.patch.is_none() {
            self.minor_version() > other.minor_version()
        } else {
            self > other
        }
    }

    /// Whether a cluster running `observed` meets this desired version: same minor, and
    /// the same patch when one is declared, or a later patch.
    pub fn satisfied_by(self, observed: Self) -> bool {
        observed.major == self.major
            && observed.minor == self.minor
            && match self.patch {
                None => true,
                Some(p) => observed.patch.unwrap_or(0) >= p,
            }
    }
}

impl Ord for KubeVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch))
    }
}

impl PartialOrd for KubeVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for KubeVersion {
    type Err = VersionError;

    /// Parses a declared version: `1.30`, `1.30.4` or `v1.30.4`, nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_strict(s, s)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept YAML numbers too (`version: 1.30` is a float to a YAML parser) but keep the
        // text as written: 1.30 must not become 1.3.
        let raw = StringOrNumber::deserialize(d)?;
        raw.0.parse().map_err(serde::de::Error::custom)
    }
}

/// A scalar read as text. `1.30` written without quotes arrives as the float 1.3, so
/// a float is refused with a hint rather than silently misread.
pub(crate) struct StringOrNumber(pub(crate) String);

impl<'de> Deserialize<'de> for StringOrNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StringOrNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted version string such as \"1.30.4\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StringOrNumber(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "version must be quoted: YAML reads it as the number {v} (an unquoted 1.30 becomes 1.3); write a string, e.g. \"1.30\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for KubeVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KubeVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?$",
            "description": "Kubernetes version: MAJOR.MINOR or MAJOR.MINOR.PATCH, optionally with a leading v",
            "examples": ["1.30.4", "1.30"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_declared_forms() {
        assert_eq!("1.30".parse(), Ok(KubeVersion::minor_only(1, 30)));
        assert_eq!("1.30.4".parse(), Ok(KubeVersion::new(1, 30, 4)));
        assert_eq!("v1.30.4".parse(), Ok(KubeVersion::new(1, 30, 4)));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "", "1", "1.", "1.30.", "1.30.4.1", "x.30", "1.030", "1.30-rc1", " 1.30", "1.-1",
        ] {
            assert!(
                bad.parse::<KubeVersion>().is_err(),
                "{bad:?} should not parse"
            );
        }
        assert_eq!(
            "1.99999999999".parse::<KubeVersion>(),
            Err(VersionError::TooLarge("1.99999999999".into()))
        );
    }

    #[test]
    fn observed_versions_drop_suffixes() {
        assert_eq!(
            KubeVersion::parse_observed("v1.29.8-eks-a737599"),
            Ok(KubeVersion::new(1, 29, 8))
        );
        assert_eq!(
            KubeVersion::parse_observed("v1.30.2+k3s1"),
            Ok(KubeVersion::new(1, 30, 2))
        );
        assert!(KubeVersion::parse_observed("garbage").is_err());
    }

    #[test]
    fn orders_by_minor_then_patch() {
        let v = |s: &str| {
            s.parse::<KubeVersion>()
                .unwrap_or(KubeVersion::minor_only(0, 0))
        };
        assert!(v("1.29.10") < v("1.30"));
        assert!(v("1.30") < v("1.30.0"));
        assert!(v("1.30.2") < v("1.30.10"));
        assert!(v("1.9") < v("1.10"));
    }

    #[test]
    fn minor_arithmetic() {
        let a = KubeVersion::new(1, 31, 2);
        let b = KubeVersion::new(1, 28, 9);
        assert_eq!(a.minor_gap(b), 3);
        assert_eq!(b.minor_gap(a), -3);
        assert_eq!(b.next_minor(), KubeVersion::minor_only(1, 29));
        assert_eq!(b.plus_minors(2), KubeVersion::minor_only(1, 30));
        assert_eq!(a.minor_version(), KubeVersion::minor_only(1, 31));
    }

    #[test]
    fn newer_compares_patches_only_when_both_have_one() {
        let v = |s: &str| {
            s.parse::<KubeVersion>()
                .unwrap_or(KubeVersion::minor_only(0, 0))
        };
        assert!(v("1.30.5").is_newer_than(v("1.30.4")));
        assert!(!v("1.30").is_newer_than(v("1.30.4")));
        assert!(!v("1.30.4").is_newer_than(v("1.30")));
        assert!(v("1.31").is_newer_than(v("1.30.9")));
    }

    #[test]
    fn satisfaction_ignores_undeclared_patch() {
        let want = KubeVersion::minor_only(1, 30);
        assert!(want.satisfied_by(KubeVersion::new(1, 30, 7)));
        assert!(!want.satisfied_by(KubeVersion::new(1, 29, 7)));
        let want = KubeVersion::new(1, 30, 4);
        assert!(want.satisfied_by(KubeVersion::new(1, 30, 5)));
        assert!(!want.satisfied_by(KubeVersion::new(1, 30, 3)));
    }

    #[test]
    fn yaml_float_is_refused_with_hint() {
        let err = serde_yaml::from_str::<KubeVersion>("1.30")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("must be quoted")));
        let ok: Result<KubeVersion, _> = serde_yaml::from_str("\"1.30\"");
        assert_eq!(ok.ok(), Some(KubeVersion::minor_only(1, 30)));
    }
}
