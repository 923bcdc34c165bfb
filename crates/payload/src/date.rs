//! .NET-style date-times as SuperOffice writes them (spec 1.2).
//!
//! SuperOffice serializes dates with Json.NET's default ISO writer: `yyyy-MM-ddTHH:mm:ss`, then
//! `.FFFFFFF` (up to seven digits of 100 ns ticks, trailing zeros removed, no dot at all when the
//! fraction is zero), then a suffix chosen by the .NET `DateTimeKind`: `Z` for UTC, `±hh:mm` for
//! local time, nothing for unspecified. [`NetDateTime`] keeps the wall-clock value and the kind, so
//! a parsed value is written back byte for byte.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The .NET `DateTimeKind` of a [`NetDateTime`], which decides the suffix it is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DateKind {
    /// UTC, written with a `Z` suffix (`Timestamp`).
    Utc,
    /// Server-local time, written with its offset as `+hh:mm` or `-hh:mm` (`FieldValues.updated`).
    Local(UtcOffset),
    /// No zone information, written without a suffix (values read straight from DB columns).
    Unspecified,
}

/// A date-time with 100 ns precision and a [`DateKind`], written the way Json.NET writes a .NET
/// `DateTime`.
///
/// ```
/// use crmhooks_payload::{DateKind, NetDateTime};
///
/// let updated: NetDateTime = "2025-05-14T10:48:07.8912039+02:00".parse()?;
/// assert!(matches!(updated.kind(), DateKind::Local(_)));
/// assert_eq!(updated.to_string(), "2025-05-14T10:48:07.8912039+02:00");
/// assert_eq!(NetDateTime::MIN.to_string(), "0001-01-01T00:00:00");
/// # Ok::<(), crmhooks_payload::DateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NetDateTime {
    /// The wall-clock value in the zone given by `kind` (UTC for `Utc` and `Unspecified`),
    /// always a whole multiple of 100 ns.
    wall: PrimitiveDateTime,
    kind: DateKind,
}

/// Why a string is not a .NET date-time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid date-time {input:?}: {reason}")]
pub struct DateError {
    input: String,
    reason: &'static str,
}

impl DateError {
    fn new(input: &str, reason: &'static str) -> Self {
        // Keep error messages short even when fed a whole request body.
        let input = input.chars().take(64).collect();
        DateError { input, reason }
    }

    /// What was wrong with the input, e.g. `"month out of range"`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

const TICK_NANOS: u32 = 100;

fn truncate_to_ticks(t: PrimitiveDateTime) -> PrimitiveDateTime {
    let ns = t.nanosecond();
    // Cannot fail: the value is below the input's own (valid) nanosecond.
    t.replace_nanosecond(ns - ns % TICK_NANOS).unwrap_or(t)
}

/// Moves `t` to `offset`, saturating at the limits of `time`'s supported range instead of
/// panicking.
fn to_offset_saturating(t: OffsetDateTime, offset: UtcOffset) -> PrimitiveDateTime {
    match t.checked_to_offset(offset) {
        Some(moved) => PrimitiveDateTime::new(moved.date(), moved.time()),
        None if t.year() < 0 => PrimitiveDateTime::MIN,
        None => PrimitiveDateTime::MAX,
    }
}

impl NetDateTime {
    /// .NET `DateTime.MinValue`, SuperOffice's "no date": written as `0001-01-01T00:00:00`.
    pub const MIN: NetDateTime = NetDateTime {
        wall: time::macros::datetime!(0001-01-01 00:00:00),
        kind: DateKind::Unspecified,
    };

    /// A UTC value: `t` converted to UTC and truncated to 100 ns, written with `Z`.
    pub fn utc(t: OffsetDateTime) -> Self {
        NetDateTime {
            wall: truncate_to_ticks(to_offset_saturating(t, UtcOffset::UTC)),
            kind: DateKind::Utc,
        }
    }

    /// The current time as a UTC value (what `Timestamp` carries).
    pub fn now_utc() -> Self {
        Self::utc(OffsetDateTime::now_utc())
    }

    /// A local value: `t` keeps its offset and is written with it (`+hh:mm` / `-hh:mm`).
    ///
    /// .NET offsets are whole minutes; an offset with seconds is rounded down to the minute (and
    /// the wall clock moved with it, so the instant is kept).
    pub fn local(t: OffsetDateTime) -> Self {
        let off = t.offset();
        let minutes_only = if off.seconds_past_minute() == 0 {
            off
        } else {
            UtcOffset::from_hms(off.whole_hours(), off.minutes_past_hour(), 0).unwrap_or(off)
        };
        NetDateTime {
            wall: truncate_to_ticks(to_offset_saturating(t, minutes_only)),
            kind: DateKind::Local(minutes_only),
        }
    }

    /// An unspecified-kind value (no suffix), truncated to 100 ns.
    pub fn unspecified(t: PrimitiveDateTime) -> Self {
        NetDateTime {
            wall: truncate_to_ticks(t),
            kind: DateKind::Unspecified,
        }
    }

    /// Parses every shape of spec 1.2: `yyyy-MM-ddTHH:mm:ss`, an optional fraction of 1 to 9
    /// digits (digits past the seventh are truncated to 100 ns), then `Z`, `±hh:mm` or nothing.
    pub fn parse(s: &str) -> Result<Self, DateError> {
        let b = s.as_bytes();
        let err = |reason| DateError::new(s, reason);
        if b.len() < 19 {
            return Err(err("too short for yyyy-MM-ddTHH:mm:ss"));
        }
        let year = digits(&b[0..4]).ok_or_else(|| err("year is not four digits"))?;
        let month = two_digits(b, 5, b'-').ok_or_else(|| err("expected -MM after the year"))?;
        let day = two_digits(b, 8, b'-').ok_or_else(|| err("expected -dd after the month"))?;
        let hour = two_digits(b, 11, b'T').ok_or_else(|| err("expected THH after the date"))?;
        let minute = two_digits(b, 14, b':').ok_or_else(|| err("expected :mm after the hour"))?;
        let second = two_digits(b, 17, b':').ok_or_else(|| err("expected :ss after the minute"))?;

        let mut rest = &b[19..];
        let mut nanos: u32 = 0;
        if let Some((b'.', frac)) = rest.split_first() {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err(err("a dot must be followed by fraction digits"));
            }
            if n > 9 {
                return Err(err("more than 9 fraction digits"));
            }
            for (i, c) in frac[..n].iter().enumerate() {
                if i < 7 {
                    nanos = nanos * 10 + u32::from(c - b'0');
                }
            }
            nanos *= 10u32.pow(7 - n.min(7) as u32) * TICK_NANOS;
            rest = &frac[n..];
        }

        let kind = match rest {
            [] => DateKind::Unspecified,
            [b'Z'] => DateKind::Utc,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let hh = digits(&[*h1, *h2]).ok_or_else(|| err("offset hours are not digits"))?;
                let mm = digits(&[*m1, *m2]).ok_or_else(|| err("offset minutes are not digits"))?;
                if hh > 14 || mm > 59 {
                    return Err(err("offset out of range"));
                }
                let (hh, mm) = if *sign == b'-' {
                    (-(hh as i8), -(mm as i8))
                } else {
                    (hh as i8, mm as i8)
                };
                DateKind::Local(
                    UtcOffset::from_hms(hh, mm, 0).map_err(|_| err("offset out of range"))?,
                )
            }
            _ => return Err(err("expected Z, ±hh:mm or nothing after the time")),
        };

        let month = u8::try_from(month)
            .ok()
            .and_then(|m| Month::try_from(m).ok())
            .ok_or_else(|| err("month out of range"))?;
        let date = Date::from_calendar_date(year as i32, month, day as u8)
            .map_err(|_| err("day out of range for the month"))?;
        let time = Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos)
            .map_err(|_| err("time of day out of range"))?;
        Ok(NetDateTime {
            wall: PrimitiveDateTime::new(date, time),
            kind,
        })
    }

    /// The kind, which decides the suffix.
    pub fn kind(&self) -> DateKind {
        self.kind
    }

    /// The wall-clock value as written (in the value's own offset for [`DateKind::Local`]).
    pub fn wall_clock(&self) -> PrimitiveDateTime {
        self.wall
    }

    /// The instant this value denotes; unspecified values are taken as UTC.
    ///
    /// Returns `None` for [`NetDateTime::MIN`], which SuperOffice uses for "no date" (a NULL
    /// column, e.g. `DeletedDate` of a contact that is not deleted).
    pub fn to_offset_date_time(&self) -> Option<OffsetDateTime> {
        if self.is_min() {
            return None;
        }
        Some(match self.kind {
            DateKind::Utc | DateKind::Unspecified => self.wall.assume_utc(),
            DateKind::Local(offset) => self.wall.assume_offset(offset),
        })
    }

    /// Whether this is `0001-01-01T00:00:00` (.NET `DateTime.MinValue`) of any kind.
    pub fn is_min(&self) -> bool {
        self.wall == Self::MIN.wall
    }
}

/// Parses ASCII digits into a number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Two digits at `at`, preceded by the separator `sep`.
fn two_digits(b: &[u8], at: usize, sep: u8) -> Option<u32> {
    if *b.get(at - 1)? != sep {
        return None;
    }
    digits(b.get(at..at + 2)?)
}

impl fmt::Display for NetDateTime {
    /// Writes the digits into a buffer on the stack, then the buffer at once: every payload
    /// and API answer writes several dates, and `write!` with width specifiers for each of
    /// the seven fields showed in the server's CPU profile under load.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.wall;
        let Ok(year) = u16::try_from(w.year()) else {
            // Before year 0: no SuperOffice date, written the long way.
            return self.fmt_general(f);
        };
        if year > 9999 {
            return self.fmt_general(f);
        }
        // yyyy-MM-ddTHH:mm:ss.FFFFFFF+hh:mm is 33 bytes.
        let mut buf = [0u8; 33];
        let mut y = year;
        for i in (0..4).rev() {
            buf[i] = b'0' + (y % 10) as u8;
            y /= 10;
        }
        let fields = [
            (b'-', u32::from(u8::from(w.month()))),
            (b'-', u32::from(w.day())),
            (b'T', u32::from(w.hour())),
            (b':', u32::from(w.minute())),
            (b':', u32::from(w.second())),
        ];
        let mut len = 4;
        for (sep, v) in fields {
            buf[len] = sep;
            buf[len + 1] = b'0' + (v / 10 % 10) as u8;
            buf[len + 2] = b'0' + (v % 10) as u8;
            len += 3;
        }
        let mut ticks = w.nanosecond() / TICK_NANOS;
        if ticks != 0 {
            let mut digits = 7;
            while ticks.is_multiple_of(10) {
                ticks /= 10;
                digits -= 1;
            }
            buf[len] = b'.';
            for i in (0..digits).rev() {
                buf[len + 1 + i] = b'0' + (ticks % 10) as u8;
                ticks /= 10;
            }
            len += 1 + digits;
        }
        match self.kind {
            DateKind::Utc => {
                buf[len] = b'Z';
                len += 1;
            }
            DateKind::Unspecified => {}
            DateKind::Local(off) => {
                buf[len] = if off.is_negative() { b'-' } else { b'+' };
                let h = u32::from(off.whole_hours().unsigned_abs());
                let m = u32::from(off.minutes_past_hour().unsigned_abs());
                buf[len + 1] = b'0' + (h / 10 % 10) as u8;
                buf[len + 2] = b'0' + (h % 10) as u8;
                buf[len + 3] = b':';
                buf[len + 4] = b'0' + (m / 10 % 10) as u8;
                buf[len + 5] = b'0' + (m % 10) as u8;
                len += 6;
            }
        }
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
    }
}

impl NetDateTime {
    /// The same text as [`fmt::Display`], for any year `time` holds (and the reference the
    /// fast path is tested against).
    fn fmt_general(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.wall;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            w.year(),
            u8::from(w.month()),
            w.day(),
            w.hour(),
            w.minute(),
            w.second()
        )?;
        let ticks = w.nanosecond() / TICK_NANOS;
        if ticks != 0 {
            let mut digits = format!("{ticks:07}");
            while digits.ends_with('0') {
                digits.pop();
            }
            write!(f, ".{digits}")?;
        }
        match self.kind {
            DateKind::Utc => f.write_str("Z"),
            DateKind::Unspecified => Ok(()),
            DateKind::Local(off) => {
                let sign = if off.is_negative() { '-' } else { '+' };
                write!(
                    f,
                    "{sign}{:02}:{:02}",
                    off.whole_hours().unsigned_abs(),
                    off.minutes_past_hour().unsigned_abs()
                )
            }
        }
    }
}

impl FromStr for NetDateTime {
    type Err = DateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for NetDateTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NetDateTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NetDateTime;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a .NET date-time string such as 2018-04-24T07:50:50.6812131Z")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NetDateTime, E> {
                NetDateTime::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The text of the general formatter, for comparison.
    fn general(d: &NetDateTime) -> String {
        struct G<'a>(&'a NetDateTime);
        impl fmt::Display for G<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_general(f)
            }
        }
        G(d).to_string()
    }

    proptest! {
        #[test]
        fn the_fast_writer_writes_what_the_general_one_does(
            secs in (PrimitiveDateTime::MIN.assume_utc().unix_timestamp())..=(PrimitiveDateTime::MAX.assume_utc().unix_timestamp()),
            ticks in prop_oneof![Just(0u32), 0u32..10_000_000, (0u32..10).prop_map(|d| d * 1_000_000)],
            kind in 0u8..3,
            offset_minutes in -(23 * 60 + 59)..=(23 * 60 + 59i32),
        ) {
            let t = OffsetDateTime::from_unix_timestamp(secs)
                .unwrap()
                .replace_nanosecond(ticks * TICK_NANOS)
                .unwrap();
            let wall = PrimitiveDateTime::new(t.date(), t.time());
            let kind = match kind {
                0 => DateKind::Utc,
                1 => DateKind::Unspecified,
                _ => DateKind::Local(UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap()),
            };
            let d = NetDateTime { wall, kind };
            prop_assert_eq!(d.to_string(), general(&d));
        }
    }

    #[test]
    fn fraction_digits_scale_to_ticks() {
        let d = NetDateTime::parse("2025-09-16T07:24:33.27583Z").unwrap();
        assert_eq!(d.wall_clock().nanosecond(), 275_830_000);
        let d = NetDateTime::parse("2025-09-16T07:24:33.123456789Z").unwrap();
        assert_eq!(d.wall_clock().nanosecond(), 123_456_700);
        assert_eq!(d.to_string(), "2025-09-16T07:24:33.1234567Z");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2025-09-16",
            "2025-09-16 07:24:33",
            "2025-13-16T07:24:33",
            "2025-02-30T07:24:33",
            "2025-09-16T24:00:00",
            "2025-09-16T07:24:60",
            "2025-09-16T07:24:33.",
            "2025-09-16T07:24:33.1234567890Z",
            "2025-09-16T07:24:33+2:00",
            "2025-09-16T07:24:33+15:00",
            "2025-09-16T07:24:33ZZ",
            "2025-09-16T07:24:33 ",
            "+025-09-16T07:24:33",
            "２025-09-16T07:24:33",
        ] {
            assert!(NetDateTime::parse(s).is_err(), "{s:?} was accepted");
        }
    }
}
