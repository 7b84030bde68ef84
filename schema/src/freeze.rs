//! Freeze windows of a fleet (`fleet.yaml` `spec.freezes`): times when `tidemark promote`
//! refuses to move any wave tag. Two shapes, each in a time zone:
//!
//! - a calendar freeze, `from` (inclusive) `until` (exclusive), each a date (`2026-12-21`,
//!   meaning its midnight) or a date and time (`2026-12-21T18:00`);
//! - a weekly freeze, written like a maintenance window: `days`, `start`, `duration`.
//!
//! Freezes stop promotions only; agents keep converging to the tags as they are.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;
use crate::window::{Day, MaintenanceWindow, WallTime, utc};

/// One freeze window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Freeze {
    /// Name of the freeze, said when it refuses a promotion (`year-end`).
    pub name: String,
    /// Calendar freeze: when it begins, a date (`2026-12-21`) or date and time
    /// (`2026-12-21T18:00`) in `timeZone`. With `until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<CivilTime>,
    /// Calendar freeze: when it ends (exclusive): `until: "2027-01-04"` lifts it as
    /// 4 January begins. With `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<CivilTime>,
    /// Weekly freeze: days on which it begins (`Mon` .. `Sun`). With `start` and `duration`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// Weekly freeze: when it begins, `HH:MM` in `timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<WallTime>,
    /// Weekly freeze: how long it lasts (at most 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// IANA time zone of the times above. Default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// Why, shown with a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What is wrong with a freeze.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    /// Neither shape, or both.
    #[error(
        "a freeze is either a calendar freeze (`from` and `until`) or a weekly one (`days`, `start` and `duration`)"
    )]
    Shape,
    /// `until` is not after `from`.
    #[error("`until` must be after `from`")]
    Empty,
    /// Unknown IANA zone.
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    /// A weekly freeze that is not a valid window.
    #[error("{0}")]
    Weekly(crate::window::WindowError),
}

impl Freeze {
    /// Checks the shape, the time zone and the times.
    pub fn check(&self) -> Result<(), FreezeError> {
        let zone = TimeZone::get(&self.time_zone)
            .map_err(|_| FreezeError::TimeZone(self.time_zone.clone()))?;
        match self.shape() {
            Some(Shape::Calendar { from, until }) => {
                let (Ok(from), Ok(until)) = (from.at(&zone), until.at(&zone)) else {
                    return Err(FreezeError::TimeZone(self.time_zone.clone()));
                };
                if until <= from {
                    return Err(FreezeError::Empty);
                }
                Ok(())
            }
            Some(Shape::Weekly(window)) => window.check().map_err(FreezeError::Weekly),
            None => Err(FreezeError::Shape),
        }
    }

    fn shape(&self) -> Option<Shape<'_>> {
        let calendar = self.from.is_some() || self.until.is_some();
        let weekly = !self.days.is_empty() || self.start.is_some() || self.duration.is_some();
        match (calendar, weekly) {
            (true, false) => Some(Shape::Calendar {
                from: self.from.as_ref()?,
                until: self.until.as_ref()?,
            }),
            (false, true) => Some(Shape::Weekly(MaintenanceWindow {
                days: self.days.clone(),
                start: self.start?,
                duration: self.duration?,
                time_zone: self.time_zone.clone(),
            })),
            _ => None,
        }
    }

    /// When the freeze ends, if it is in force at `now`. A freeze that does not pass
    /// [`Freeze::check`] is never in force (validation reports it).
    pub fn ends_after(&self, now: Timestamp) -> Option<Timestamp> {
        match self.shape()? {
            Shape::Calendar { from, until } => {
                let zone = TimeZone::get(&self.time_zone).ok()?;
                let (from, until) = (from.at(&zone).ok()?, until.at(&zone).ok()?);
                (from <= now && now < until).then_some(until)
            }
            Shape::Weekly(window) => window.closes_after(now),
        }
    }
}

enum Shape<'a> {
    Calendar {
        from: &'a CivilTime,
        until: &'a CivilTime,
    },
    Weekly(MaintenanceWindow),
}

/// The freezes in force at `now` and when the last of them ends: a freeze that begins
/// before another ends extends it (a weekly freeze inside a year-end freeze).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frozen {
    /// Names of the freezes in force, in declaration order, then those that follow on.
    pub names: Vec<String>,
    /// When promotions may resume.
    pub until: Timestamp,
}

/// Whether `freezes` hold promotions at `now`, and until when.
pub fn frozen(freezes: &[Freeze], now: Timestamp) -> Option<Frozen> {
    let mut names: Vec<String> = Vec::new();
    let mut until = now;
    // Each round moves `until` to the end of a freeze in force then; bounded because a
    // chain of freezes longer than this is not a configuration anyone means.
    for _ in 0..64 {
        let mut later = None;
        for f in freezes {
            if let Some(end) = f.ends_after(until)
                && end > until
            {
                if !names.contains(&f.name) {
                    names.push(f.name.clone());
                }
                later = Some(later.map_or(end, |l: Timestamp| l.max(end)));
            }
        }
        match later {
            Some(end) => until = end,
            None => break,
        }
    }
    (!names.is_empty()).then_some(Frozen { names, until })
}

/// A wall-clock date, or date and time, in a freeze's time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// The date and time (midnight for a date).
    pub datetime: DateTime,
    /// Whether it was written as a date only.
    pub date_only: bool,
}

impl CivilTime {
    fn at(&self, zone: &TimeZone) -> Result<Timestamp, jiff::Error> {
        Ok(self.datetime.to_zoned_datetime(zone.clone())?.timestamp())
    }
}

impl FromStr for CivilTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || {
            format!(
                "`{s}` is not a date or date and time (expected 2026-12-21 or 2026-12-21T18:00, without a zone: the freeze's timeZone applies)"
            )
        };
        if s.len() == 10 {
            let date: Date = s.parse().map_err(|_| err())?;
            return Ok(Self {
                datetime: date.at(0, 0, 0, 0),
                date_only: true,
            });
        }
        // A zone or offset in the text would disagree with `timeZone`.
        if s.ends_with('Z')
            || s.contains('[')
            || s.get(10..).is_some_and(|t| t.contains(['+', '-']))
        {
            return Err(err());
        }
        let datetime: DateTime = s.parse().map_err(|_| err())?;
        Ok(Self {
            datetime,
            date_only: false,
        })
    }
}

impl fmt::Display for CivilTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.date_only {
            write!(f, "{}", self.datetime.date())
        } else {
            write!(f, "{}", self.datetime.strftime("%Y-%m-%dT%H:%M"))
        }
    }
}

impl Serialize for CivilTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CivilTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for CivilTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CivilTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?$",
            "description": "A date (2026-12-21) or date and time (2026-12-21T18:00), in the freeze's time zone"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freeze(yaml: &str) -> Freeze {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test freeze: {e}"))
    }

    fn at(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
    }

    #[test]
    fn a_calendar_freeze_holds_from_its_start_until_its_end_in_its_zone() {
        let f = freeze(
            "{name: year-end, from: \"2026-12-21\", until: \"2027-01-04T06:00\", timeZone: Europe/Berlin}",
        );
        assert_eq!(f.check(), Ok(()));
        // Midnight in Berlin (UTC+1) is 23:00Z the day before.
        assert_eq!(f.ends_after(at("2026-12-20T22:59:59Z")), None);
        assert_eq!(
            f.ends_after(at("2026-12-20T23:00:00Z")),
            Some(at("2027-01-04T05:00:00Z"))
        );
        assert_eq!(f.ends_after(at("2027-01-04T05:00:00Z")), None);
    }

    #[test]
    fn a_weekly_freeze_ends_when_its_opening_closes() {
        // 2026-11-27 is a Friday.
        let f = freeze("{name: weekend, days: [Fri], start: \"16:00\", duration: 64h}");
        assert_eq!(f.check(), Ok(()));
        assert_eq!(f.ends_after(at("2026-11-27T15:59:00Z")), None);
        assert_eq!(
            f.ends_after(at("2026-11-28T12:00:00Z")),
            Some(at("2026-11-30T08:00:00Z"))
        );
    }

    #[test]
    fn freezes_that_follow_on_extend_each_other() {
        let freezes = [
            freeze("{name: a, from: \"2026-12-21\", until: \"2026-12-24\"}"),
            freeze("{name: b, from: \"2026-12-23T12:00\", until: \"2026-12-28\"}"),
            freeze("{name: c, from: \"2027-02-01\", until: \"2027-02-02\"}"),
        ];
        assert_eq!(
            frozen(&freezes, at("2026-12-22T00:00:00Z")),
            Some(Frozen {
                names: vec!["a".into(), "b".into()],
                until: at("2026-12-28T00:00:00Z")
            })
        );
        assert_eq!(frozen(&freezes, at("2027-01-10T00:00:00Z")), None);
    }

    #[test]
    fn bad_freezes_are_named() {
        assert_eq!(
            freeze("{name: x, from: \"2026-12-21\"}").check(),
            Err(FreezeError::Shape)
        );
        assert_eq!(
            freeze("{name: x, from: \"2026-12-21\", until: \"2026-12-21\"}").check(),
            Err(FreezeError::Empty)
        );
        assert_eq!(
            freeze(
                "{name: x, from: \"2026-12-21\", until: \"2026-12-22\", days: [Mon], start: \"01:00\", duration: 1h}"
            )
            .check(),
            Err(FreezeError::Shape)
        );
        assert_eq!(
            freeze("{name: x, from: \"2026-12-21\", until: \"2026-12-22\", timeZone: Mars/Base}")
                .check(),
            Err(FreezeError::TimeZone("Mars/Base".into()))
        );
        for bad in [
            "2026-12-21T18:00Z",
            "2026-12-21T18:00+01:00",
            "21.12.2026",
            "2026-13-01",
        ] {
            assert!(bad.parse::<CivilTime>().is_err(), "{bad}");
        }
        assert_eq!(
            "2026-12-21T18:00"
                .parse::<CivilTime>()
                .map(|c| c.to_string()),
            Ok("2026-12-21T18:00".to_string())
        );
    }
}
