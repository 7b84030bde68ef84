//! Maintenance windows: when control-plane and node-group steps may run.

use std::fmt;
use std::str::FromStr;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::duration::Duration;

/// A weekly window: it opens at `start` (wall-clock time in `timeZone`) on each of `days`
/// and stays open for `duration`. A window may run past midnight into the next day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Days on which the window opens (`Mon` .. `Sun`).
    pub days: Vec<Day>,
    /// Opening time, `HH:MM` (24-hour clock).
    pub start: WallTime,
    /// How long the window stays open: more than 0 and at most 7 days.
    pub duration: Duration,
    /// IANA time zone of `start`, e.g. `UTC` or `Europe/Berlin`. Default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
}

pub(crate) fn utc() -> String {
    "UTC".to_string()
}

/// What is wrong with a maintenance window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// No days listed.
    #[error("days must list at least one day")]
    NoDays,
    /// Zero or more than a week.
    #[error("duration must be more than 0 and at most 7d")]
    Duration,
    /// Unknown IANA zone.
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
}

impl MaintenanceWindow {
    /// Checks days, duration and time zone.
    pub fn check(&self) -> Result<(), WindowError> {
        if self.days.is_empty() {
            return Err(WindowError::NoDays);
        }
        let d = self.duration.as_std();
        if d.is_zero() || d > std::time::Duration::from_secs(7 * 86_400) {
            return Err(WindowError::Duration);
        }
        self.zone()?;
        Ok(())
    }

    fn zone(&self) -> Result<TimeZone, WindowError> {
        TimeZone::get(&self.time_zone).map_err(|_| WindowError::TimeZone(self.time_zone.clone()))
    }

    /// Whether the window is open at `now`. A window whose zone is unknown is never open
    /// (validation reports it; the agent must not act on a guess).
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.opening_containing(now).is_some()
    }

    /// The opening of the window that contains `now`, if any.
    fn opening_containing(&self, now: Timestamp) -> Option<Timestamp> {
        let tz = self.zone().ok()?;
        let today = now.to_zoned_datetime(tz.clone()).date();
        let len = jiff::SignedDuration::try_from(self.duration.as_std()).ok()?;
        // A window of up to 7 days can have opened on any of the last 8 dates.
        (0..=7i64).find_map(|back| {
            let date = today.checked_sub(back.days()).ok()?;
            if !self.days.iter().any(|d| d.weekday() == date.weekday()) {
                return None;
            }
            let open = date
                .at(self.start.hour, self.start.minute, 0, 0)
                .to_zoned_datetime(tz.clone())
                .ok()?;
            let open = open.timestamp();
            let close = open.checked_add(len).ok()?;
            (open <= now && now < close).then_some(open)
        })
    }

    /// When the opening that contains `now` closes; `None` when the window is not open.
    pub fn closes_after(&self, now: Timestamp) -> Option<Timestamp> {
        let len = jiff::SignedDuration::try_from(self.duration.as_std()).ok()?;
        self.opening_containing(now)?.checked_add(len).ok()
    }

    /// The next time the window opens strictly after `now` (within the next 8 days).
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let tz = self.zone().ok()?;
        let today = now.to_zoned_datetime(tz.clone()).date();
        (0..=8i64).find_map(|ahead| {
            let date = today.checked_add(ahead.days()).ok()?;
            if !self.days.iter().any(|d| d.weekday() == date.weekday()) {
                return None;
            }
            let open = date
                .at(self.start.hour, self.start.minute, 0, 0)
                .to_zoned_datetime(tz.clone())
                .ok()?;
            let open = open.timestamp();
            (open > now).then_some(open)
        })
    }
}

/// A day of the week, written `Mon` .. `Sun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub(crate) fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// A wall-clock time of day, `HH:MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallTime {
    /// 0..=23
    pub hour: i8,
    /// 0..=59
    pub minute: i8,
}

impl FromStr for WallTime {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("`{s}` is not a time of day (expected HH:MM, e.g. 02:00)");
        let (h, m) = s.split_once(':').ok_or_else(err)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(err());
        }
        let hour: i8 = h.parse().map_err(|_| err())?;
        let minute: i8 = m.parse().map_err(|_| err())?;
        if !(0..=23).contains(&hour) || !(0..=59).contains(&minute) {
            return Err(err());
        }
        Ok(Self { hour, minute })
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour, self.minute)
    }
}

impl Serialize for WallTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for WallTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WallTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
            "description": "Time of day, HH:MM (24-hour clock)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(yaml: &str) -> MaintenanceWindow {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test window: {e}"))
    }

    fn at(s: &str) -> Timestamp {
        s.parse()
            .unwrap_or_else(|e| panic!("bad test time {s}: {e}"))
    }

    #[test]
    fn open_inside_and_closed_outside() {
        // 2026-11-28 is a Saturday.
        let w = window("{days: [Sat, Sun], start: \"02:00\", duration: 4h}");
        assert!(w.check().is_ok());
        assert!(w.is_open(at("2026-11-28T02:00:00Z")));
        assert!(w.is_open(at("2026-11-28T05:59:59Z")));
        assert!(!w.is_open(at("2026-11-28T06:00:00Z")));
        assert!(!w.is_open(at("2026-11-27T03:00:00Z")));
        assert_eq!(
            w.next_open(at("2026-11-24T10:00:00Z")),
            Some(at("2026-11-28T02:00:00Z"))
        );
        assert_eq!(
            w.next_open(at("2026-11-28T03:00:00Z")),
            Some(at("2026-11-29T02:00:00Z"))
        );
    }

    #[test]
    fn crosses_midnight_and_honours_zone() {
        let w = window("{days: [Fri], start: \"22:00\", duration: 6h, timeZone: Europe/Berlin}");
        // Fri 2026-11-27 22:00 in Berlin (UTC+1) is 21:00Z; open until Sat 03:00Z.
        assert!(!w.is_open(at("2026-11-27T20:59:00Z")));
        assert!(w.is_open(at("2026-11-27T21:00:00Z")));
        assert!(w.is_open(at("2026-11-28T02:30:00Z")));
        assert!(!w.is_open(at("2026-11-28T03:00:00Z")));
    }

    #[test]
    fn rejects_bad_windows() {
        assert_eq!(
            window("{days: [], start: \"02:00\", duration: 1h}").check(),
            Err(WindowError::NoDays)
        );
        assert_eq!(
            window("{days: [Mon], start: \"02:00\", duration: 8d}").check(),
            Err(WindowError::Duration)
        );
        assert_eq!(
            window("{days: [Mon], start: \"02:00\", duration: 1h, timeZone: Mars/Olympus}").check(),
            Err(WindowError::TimeZone("Mars/Olympus".into()))
        );
        assert!(
            serde_yaml::from_str::<MaintenanceWindow>(
                "{days: [Mon], start: \"25:00\", duration: 1h}"
            )
            .is_err()
        );
        assert!(
            serde_yaml::from_str::<MaintenanceWindow>(
                "{days: [Monday], start: \"02:00\", duration: 1h}"
            )
            .is_err()
        );
    }
}
