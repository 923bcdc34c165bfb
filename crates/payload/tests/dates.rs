//! The .NET date writer and parser (spec 1.2).
#![allow(clippy::unwrap_used)]

use crmhooks_payload::{DateKind, NetDateTime};
use proptest::prelude::*;
use time::macros::{datetime, offset};
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

#[test]
fn writer_matches_every_documented_example() {
    let cases: Vec<(NetDateTime, &str)> = vec![
        // UTC, 7 digits
        (
            NetDateTime::utc(datetime!(2018-04-24 07:50:50.6812131 UTC)),
            "2018-04-24T07:50:50.6812131Z",
        ),
        // UTC, 6 digits (a trailing zero dropped)
        (
            NetDateTime::utc(datetime!(2018-04-24 08:18:42.0898950 UTC)),
            "2018-04-24T08:18:42.089895Z",
        ),
        // UTC, 5 digits
        (
            NetDateTime::utc(datetime!(2025-09-16 07:24:33.27583 UTC)),
            "2025-09-16T07:24:33.27583Z",
        ),
        // local with offset, 7 digits
        (
            NetDateTime::local(datetime!(2025-05-14 10:48:07.8912039 +02:00)),
            "2025-05-14T10:48:07.8912039+02:00",
        ),
        (
            NetDateTime::local(datetime!(2022-08-02 03:24:52.1307225 +02:00)),
            "2022-08-02T03:24:52.1307225+02:00",
        ),
        // no offset, no fraction
        (
            NetDateTime::unspecified(datetime!(2020-02-16 17:50:17)),
            "2020-02-16T17:50:17",
        ),
        (
            NetDateTime::unspecified(datetime!(2020-02-13 00:00:00)),
            "2020-02-13T00:00:00",
        ),
        // DateTime.MinValue
        (NetDateTime::MIN, "0001-01-01T00:00:00"),
        // negative offset, and a half-hour one
        (
            NetDateTime::local(datetime!(2025-01-02 03:04:05.5 -05:00)),
            "2025-01-02T03:04:05.5-05:00",
        ),
        (
            NetDateTime::local(datetime!(2025-01-02 03:04:05 -00:30)),
            "2025-01-02T03:04:05-00:30",
        ),
        (
            NetDateTime::local(datetime!(2025-01-02 03:04:05 +00:00)),
            "2025-01-02T03:04:05+00:00",
        ),
        // fraction exactly zero: no dot, whatever the kind
        (
            NetDateTime::utc(datetime!(2018-04-24 07:50:50.0 UTC)),
            "2018-04-24T07:50:50Z",
        ),
        (
            NetDateTime::local(datetime!(2018-04-24 07:50:50 +02:00)),
            "2018-04-24T07:50:50+02:00",
        ),
        // one tick; sub-tick nanoseconds are truncated, not rounded
        (
            NetDateTime::utc(datetime!(2018-04-24 07:50:50.0000001 UTC)),
            "2018-04-24T07:50:50.0000001Z",
        ),
        (
            NetDateTime::utc(datetime!(2018-04-24 07:50:50.999999999 UTC)),
            "2018-04-24T07:50:50.9999999Z",
        ),
        // utc() converts to UTC
        (
            NetDateTime::utc(datetime!(2025-05-14 10:48:07.8912039 +02:00)),
            "2025-05-14T08:48:07.8912039Z",
        ),
        (
            NetDateTime::unspecified(datetime!(9999-12-31 23:59:59.9999999)),
            "9999-12-31T23:59:59.9999999",
        ),
    ];
    for (value, expected) in cases {
        assert_eq!(value.to_string(), expected);
        let parsed: NetDateTime = expected.parse().unwrap();
        assert_eq!(parsed, value, "parse of {expected}");
        assert_eq!(
            parsed.to_string(),
            expected,
            "parse -> display of {expected}"
        );
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            format!("\"{expected}\"")
        );
        let back: NetDateTime = serde_json::from_str(&format!("\"{expected}\"")).unwrap();
        assert_eq!(back, value);
    }
}

#[test]
fn kinds() {
    assert_eq!(
        NetDateTime::parse("2018-04-24T07:50:50Z").unwrap().kind(),
        DateKind::Utc
    );
    assert_eq!(
        NetDateTime::parse("2018-04-24T07:50:50").unwrap().kind(),
        DateKind::Unspecified
    );
    assert_eq!(
        NetDateTime::parse("2018-04-24T07:50:50-03:30")
            .unwrap()
            .kind(),
        DateKind::Local(offset!(-03:30))
    );
    assert_eq!(NetDateTime::MIN.kind(), DateKind::Unspecified);
}

#[test]
fn instants() {
    let local = NetDateTime::parse("2025-05-14T10:48:07.8912039+02:00").unwrap();
    let utc = NetDateTime::parse("2025-05-14T08:48:07.8912039Z").unwrap();
    let unspecified = NetDateTime::parse("2025-05-14T08:48:07.8912039").unwrap();
    assert_ne!(local, utc);
    assert_eq!(local.to_offset_date_time(), utc.to_offset_date_time());
    assert_eq!(unspecified.to_offset_date_time(), utc.to_offset_date_time());
    assert_eq!(
        utc.to_offset_date_time(),
        Some(datetime!(2025-05-14 08:48:07.8912039 UTC))
    );
    assert!(NetDateTime::MIN.is_min());
    assert!(NetDateTime::MIN.to_offset_date_time().is_none());
    assert!(!utc.is_min());
}

#[test]
fn errors_say_what_is_wrong() {
    let err = NetDateTime::parse("2025-13-01T00:00:00").unwrap_err();
    assert_eq!(err.reason(), "month out of range");
    assert!(err.to_string().contains("2025-13-01T00:00:00"), "{err}");
    let err = serde_json::from_str::<NetDateTime>("\"2025-01-01\"").unwrap_err();
    assert!(err.to_string().contains("too short"), "{err}");
    assert!(serde_json::from_str::<NetDateTime>("12").is_err());
}

fn arb_wall() -> impl Strategy<Value = PrimitiveDateTime> {
    // Years .NET can hold; nanoseconds at 100 ns (tick) precision.
    (
        1i32..=9999,
        1u8..=12,
        1u8..=28,
        0u8..24,
        0u8..60,
        0u8..60,
        0u32..10_000_000,
    )
        .prop_map(|(y, mo, d, h, mi, s, ticks)| {
            let date =
                time::Date::from_calendar_date(y, time::Month::try_from(mo).unwrap(), d).unwrap();
            let t = time::Time::from_hms_nano(h, mi, s, ticks * 100).unwrap();
            PrimitiveDateTime::new(date, t)
        })
}

fn arb_date() -> impl Strategy<Value = NetDateTime> {
    // Offsets stay within .NET's ±14:00, whole minutes; avoid the edges of the year range so
    // converting between offsets stays within years 1..=9999.
    let offset = (-14i8..=14, 0i8..60).prop_map(|(h, m)| {
        let m = if h < 0 { -m } else { m };
        UtcOffset::from_hms(h, if h.abs() == 14 { 0 } else { m }, 0).unwrap()
    });
    prop_oneof![
        arb_wall().prop_map(|w| NetDateTime::utc(w.assume_utc())),
        (arb_wall(), offset).prop_map(|(w, o)| NetDateTime::local(w.assume_offset(o))),
        arb_wall().prop_map(NetDateTime::unspecified),
    ]
    .prop_filter("stay away from year 1 and 9999 for offsets", |d| {
        let y = d.wall_clock().year();
        (2..=9998).contains(&y) || matches!(d.kind(), DateKind::Unspecified | DateKind::Utc)
    })
}

proptest! {
    #[test]
    fn format_parse_round_trip(d in arb_date()) {
        let s = d.to_string();
        let back = NetDateTime::parse(&s).unwrap();
        prop_assert_eq!(back, d);
        prop_assert_eq!(back.to_string(), s.clone());
        // Shape: the fraction never ends in zero and never has more than 7 digits.
        if let Some(dot) = s.find('.') {
            let frac: String = s[dot + 1..].chars().take_while(char::is_ascii_digit).collect();
            prop_assert!(!frac.is_empty() && frac.len() <= 7 && !frac.ends_with('0'), "{}", s);
        }
    }

    #[test]
    fn to_offset_date_time_keeps_the_instant(w in arb_wall(), h in -12i8..=12) {
        prop_assume!((2..=9998).contains(&w.year()));
        let t: OffsetDateTime = w.assume_offset(UtcOffset::from_hms(h, 0, 0).unwrap());
        prop_assert_eq!(NetDateTime::local(t).to_offset_date_time(), Some(t));
        prop_assert_eq!(NetDateTime::utc(t).to_offset_date_time(), Some(t));
    }

    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = NetDateTime::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_near_misses(s in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?(Z|[+-][0-9]{2}:[0-9]{2})?") {
        if let Ok(d) = NetDateTime::parse(&s) {
            prop_assert_eq!(NetDateTime::parse(&d.to_string()).unwrap(), d);
        }
    }
}
