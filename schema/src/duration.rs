//! Durations as people write them in manifests: `90s`, `10m`, `4h`, `1h30m`, `2d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as one or more `<number><unit>` parts, units
/// `ms`, `s`, `m`, `h`, `d`, largest first (`1h30m`, not `30m1h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration (expected e.g. 90s, 10m, 4h, 1h30m)")]
pub struct DurationError(pub String);

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    /// The duration as a `std::time::Duration`.
    pub fn as_std(self) -> StdDuration {
        self.0
    }

    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(StdDuration::from_secs(secs))
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_string());
        if s.is_empty() {
            return Err(err());
        }
        let mut rest = s;
        let mut total_ms: u64 = 0;
        // Index into UNITS of the last unit used, to force largest-first order.
        let mut last_unit: Option<usize> = None;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            // "ms" must be tried before "m".
            let (idx, (unit, ms)) = UNITS
                .iter()
                .enumerate()
                .filter(|(_, (u, _))| rest.starts_with(u))
                .max_by_key(|(_, (u, _))| u.len())
                .ok_or_else(err)?;
            if last_unit.is_some_and(|l| l >= idx) {
                return Err(err());
            }
            last_unit = Some(idx);
            rest = &rest[unit.len()..];
            total_ms = n
                .checked_mul(*ms)
                .and_then(|v| total_ms.checked_add(v))
                .ok_or_else(err)?;
        }
        Ok(Self(StdDuration::from_millis(total_ms)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in UNITS {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$",
            "minLength": 2,
            "description": "A duration such as 90s, 10m, 4h or 1h30m",
            "examples": ["90s", "10m", "4h"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Result<StdDuration, DurationError> {
        s.parse::<Duration>().map(Duration::as_std)
    }

    #[test]
    fn parses_units() {
        assert_eq!(d("90s"), Ok(StdDuration::from_secs(90)));
        assert_eq!(d("10m"), Ok(StdDuration::from_secs(600)));
        assert_eq!(d("4h"), Ok(StdDuration::from_secs(4 * 3600)));
        assert_eq!(d("1h30m"), Ok(StdDuration::from_secs(5400)));
        assert_eq!(d("2d"), Ok(StdDuration::from_secs(2 * 86400)));
        assert_eq!(d("250ms"), Ok(StdDuration::from_millis(250)));
        assert_eq!(d("1m30s500ms"), Ok(StdDuration::from_millis(90_500)));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "1.5h",
            "30m1h",
            "1h1h",
            "-5s",
            "10 m",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn displays_canonically() {
        for (input, shown) in [
            ("90s", "1m30s"),
            ("4h", "4h"),
            ("0s", "0s"),
            ("1500ms", "1s500ms"),
        ] {
            assert_eq!(
                input.parse::<Duration>().map(|x| x.to_string()),
                Ok(shown.to_string())
            );
        }
    }
}
