//! The documented payloads: parse, write back, compare bytes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use crmhooks_payload::{
    contact_deleted_values, ContactFieldValues, NetDateTime, WebhookPayload,
    CONTACT_FIELD_VALUE_KEYS,
};

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

fn json_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_fixture_round_trips_byte_for_byte() {
    let fixtures = json_fixtures();
    assert_eq!(
        fixtures.len(),
        5,
        "expected the 5 fixtures of shared/fixtures"
    );
    for (name, bytes) in fixtures {
        let payload = WebhookPayload::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            String::from_utf8(payload.to_bytes()).unwrap(),
            String::from_utf8(bytes).unwrap(),
            "{name} did not round-trip"
        );
    }
}

#[test]
fn copied_fixtures_match_shared_ones_when_present() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if !shared.is_dir() {
        return;
    }
    for (name, bytes) in json_fixtures() {
        assert_eq!(
            std::fs::read(shared.join(&name)).unwrap(),
            bytes,
            "{name} differs from shared/fixtures"
        );
    }
}

#[test]
fn documented_created_example_is_rejected_and_the_corrected_one_round_trips() {
    let documented = fixture("contact-created-as-documented.txt");
    let err = WebhookPayload::from_slice(&documented).unwrap_err();
    assert!(err.is_syntax(), "{err}");

    // Fix exactly the two documented errors (spec 1.6 item 1), then compact.
    let text = String::from_utf8(documented).unwrap();
    let fixed = text
        .replace("\"category_idx\"\n", "\"category_idx\",\n")
        .replace("\"xstop\",\n", "\"xstop\"\n");
    assert_ne!(fixed, text);
    let payload = WebhookPayload::from_slice(fixed.as_bytes()).unwrap();
    assert_eq!(payload.changes.len(), 37);
    assert_eq!(payload.to_bytes(), fixture("contact-created.json"));
    let again = WebhookPayload::from_slice(&payload.to_bytes()).unwrap();
    assert_eq!(again, payload);
}

#[test]
fn any_property_order_and_unknown_properties_are_accepted() {
    let body = br#"{"WebhookName":"w","Extra":{"nested":[1,2]},"ChangedByAssociateId":5,
        "ContextIdentifier":"Cust1","Entity":"contact","PrimaryKey":7,"Event":"contact.changed",
        "Changes":["contact_id"],"Timestamp":"2025-09-16T07:24:33.27583Z",
        "EventId":"88f91933-edce-4c1a-8ded-ade8e2f72434","UnknownNumber":1.5}"#;
    let p = WebhookPayload::from_slice(body).unwrap();
    assert_eq!(p.primary_key, 7);
    assert_eq!(p.webhook_name, "w");
    assert_eq!(p.timestamp.to_string(), "2025-09-16T07:24:33.27583Z");
    assert_eq!(
        String::from_utf8(p.to_bytes()).unwrap(),
        r#"{"EventId":"88f91933-edce-4c1a-8ded-ade8e2f72434","Timestamp":"2025-09-16T07:24:33.27583Z","Changes":["contact_id"],"Event":"contact.changed","PrimaryKey":7,"Entity":"contact","ContextIdentifier":"Cust1","ChangedByAssociateId":5,"WebhookName":"w"}"#
    );
}

#[test]
fn absent_optional_objects_are_omitted_never_null() {
    let p = WebhookPayload::from_slice(&fixture("contact-changed.json")).unwrap();
    assert!(p.values.is_none() && p.field_values.is_none() && p.properties.is_none());
    let text = String::from_utf8(p.to_bytes()).unwrap();
    assert!(!text.contains("null"), "{text}");
    for key in ["Values", "FieldValues", "Properties"] {
        assert!(!text.contains(&format!("\"{key}\"")), "{key} in {text}");
    }
    // Explicit nulls from a lenient sender read as absent.
    let with_nulls = text.replacen(
        '}',
        r#","Values":null,"FieldValues":null,"Properties":null}"#,
        1,
    );
    assert_eq!(
        WebhookPayload::from_slice(with_nulls.as_bytes()).unwrap(),
        p
    );
}

#[test]
fn properties_follow_field_values() {
    let mut p = WebhookPayload::from_slice(&fixture("contact-changed-fieldvalues.json")).unwrap();
    let mut props = serde_json::Map::new();
    props.insert("zeta".into(), "1".into());
    props.insert("alpha".into(), 2.into());
    p.properties = Some(props);
    let text = String::from_utf8(p.to_bytes()).unwrap();
    assert!(
        text.ends_with(r#""userdef_id":22},"Properties":{"zeta":"1","alpha":2}}"#),
        "{text}"
    );
}

/// `Entity` is optional: SuperOffice's webhook state events have none (spec 6.1). A body
/// without it reads as an empty entity and is written back without it.
#[test]
fn a_body_without_entity_reads_and_writes_back_without_it() {
    let text = String::from_utf8(fixture("test.json")).unwrap();
    let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    m.shift_remove("Entity");
    let body = serde_json::to_vec(&m).unwrap();
    let p = WebhookPayload::from_slice(&body).unwrap();
    assert_eq!(p.entity, "");
    assert_eq!(p.to_bytes(), body);
}

#[test]
fn required_properties_are_required() {
    let text = String::from_utf8(fixture("test.json")).unwrap();
    for key in [
        "EventId",
        "Timestamp",
        "Changes",
        "Event",
        "PrimaryKey",
        "ContextIdentifier",
        "ChangedByAssociateId",
        "WebhookName",
    ] {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut m = v.as_object().unwrap().clone();
        m.remove(key);
        let body = serde_json::to_vec(&m).unwrap();
        assert!(
            WebhookPayload::from_slice(&body).is_err(),
            "accepted without {key}"
        );
    }
    for bad in [
        &b"not json"[..],
        b"[]",
        b"{}",
        b"",
        br#"{"EventId":"nope"}"#,
    ] {
        assert!(WebhookPayload::from_slice(bad).is_err());
    }
    let dup = text.replacen("{", r#"{"Event":"x","#, 1);
    assert!(
        WebhookPayload::from_slice(dup.as_bytes()).is_err(),
        "duplicate key accepted"
    );
}

#[test]
fn test_event_matches_the_documented_one() {
    let p = WebhookPayload::test_event(
        "4b5ce038-50f2-4796-bdb2-f96908cf31c2".parse().unwrap(),
        "2018-04-24T08:52:59.0005158Z".parse().unwrap(),
        "Default",
        316,
        "Name you provided",
    );
    assert!(p.is_test());
    assert_eq!(p.to_bytes(), fixture("test.json"));
}

#[test]
fn contact_field_values_round_trip_through_the_fixture() {
    let p = WebhookPayload::from_slice(&fixture("contact-created.json")).unwrap();
    let map = p.field_values.unwrap();
    let fv = ContactFieldValues::from_map(&map).unwrap();
    assert_eq!(fv.country_id, 826);
    assert_eq!(fv.deleted_date, NetDateTime::MIN);
    assert_eq!(fv.updated.to_string(), "2025-05-14T10:48:07.8912039+02:00");
    assert_eq!(fv.to_map(), map);
    let keys: Vec<_> = fv.to_map().keys().cloned().collect();
    assert_eq!(keys, CONTACT_FIELD_VALUE_KEYS);
}

#[test]
fn contact_field_values_errors() {
    let p = WebhookPayload::from_slice(&fixture("contact-created.json")).unwrap();
    let good = p.field_values.unwrap();
    let mut m = good.clone();
    m.remove("updated");
    assert_eq!(
        ContactFieldValues::from_map(&m).unwrap_err().to_string(),
        "FieldValues has no \"updated\""
    );
    let mut m = good.clone();
    m.insert("country_id".into(), "826".into());
    assert!(ContactFieldValues::from_map(&m)
        .unwrap_err()
        .to_string()
        .contains("country_id"));
    let mut m = good;
    m.insert("registered".into(), "yesterday".into());
    assert!(ContactFieldValues::from_map(&m)
        .unwrap_err()
        .to_string()
        .contains("registered"));
}

#[test]
fn deleted_values_in_documented_order() {
    let v = contact_deleted_values(994863, 4039840);
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"associate_id":4039840,"contact_id":994863}"#
    );
    let p = WebhookPayload::from_slice(&fixture("contact-deleted.json")).unwrap();
    assert_eq!(p.values, Some(v));
}
