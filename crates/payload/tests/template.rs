//! `PayloadTemplate::render` gives exactly the bytes of `PayloadRef::to_bytes`, whatever the
//! strings, maps and numbers in the payload.

use crmhooks_payload::{NetDateTime, PayloadRef, PayloadTemplate};
use proptest::prelude::*;
use serde_json::{Map, Value};
use uuid::Uuid;

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        "[\"\\\\\u{0}-\u{1f}\u{7f}\u{2028}é😀]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("\\PC{0,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_map() -> impl Strategy<Value = Option<Map<String, Value>>> {
    proptest::option::of(
        proptest::collection::vec(("[a-zA-Z_\"\\\\]{0,12}", arb_value()), 0..8)
            .prop_map(|kv| kv.into_iter().collect()),
    )
}

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{0,30}", "[\"\\\\\u{0}-\u{1f}a-z]{0,12}"]
}

proptest! {
    #[test]
    fn render_equals_to_bytes(
        event_id in any::<u128>().prop_map(Uuid::from_u128),
        other_id in any::<u128>().prop_map(Uuid::from_u128),
        nanos in -62_135_596_800_000_000_000i128..253_402_300_799_999_999_999i128,
        changes in proptest::collection::vec(arb_text(), 0..40),
        values in arb_map(),
        event in arb_text(),
        primary_key in any::<i64>(),
        entity in arb_text(),
        tenant in arb_text(),
        changed_by in any::<i64>(),
        name in arb_text(),
        other_name in arb_text(),
        field_values in arb_map(),
        properties in arb_map(),
    ) {
        let timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(nanos / 100 * 100)
            .map(NetDateTime::utc)
            .unwrap_or(NetDateTime::MIN);
        let payload = PayloadRef {
            event_id,
            timestamp,
            changes: &changes,
            values: values.as_ref(),
            event: &event,
            primary_key,
            entity: &entity,
            context_identifier: &tenant,
            changed_by_associate_id: changed_by,
            webhook_name: &name,
            field_values: field_values.as_ref(),
            properties: properties.as_ref(),
        };
        let template = PayloadTemplate::new(&payload);
        let rendered = template.render(event_id, &name, properties.as_ref());
        let expected = payload.to_bytes();
        prop_assert_eq!(String::from_utf8_lossy(&rendered), String::from_utf8_lossy(&expected));
        // FieldValues given as serde_json's text of the map (as a store keeps it): the same.
        let text = field_values.as_ref().map(|m| serde_json::to_string(m).unwrap_or_default());
        let from_text = PayloadTemplate::with_field_values_json(&payload, text.as_deref());
        prop_assert_eq!(from_text.render(event_id, &name, properties.as_ref()), expected.clone());
        // The same template for another delivery of the event: another webhook and EventId.
        let other = PayloadRef { event_id: other_id, webhook_name: &other_name, properties: None, ..payload };
        prop_assert_eq!(template.render(other_id, &other_name, None), other.to_bytes());
    }
}

#[test]
fn a_rendered_body_is_the_fixture_shape() {
    let changes = vec!["contact_id".to_owned(), "name".to_owned()];
    let mut fv = Map::new();
    fv.insert("name".into(), Value::from("Acme \"Inc\""));
    let payload = PayloadRef {
        event_id: Uuid::from_u128(1),
        timestamp: NetDateTime::MIN,
        changes: &changes,
        values: None,
        event: "contact.changed",
        primary_key: 7,
        entity: "contact",
        context_identifier: "Cust1",
        changed_by_associate_id: 5,
        webhook_name: "hook",
        field_values: Some(&fv),
        properties: None,
    };
    let body = PayloadTemplate::new(&payload).render(Uuid::from_u128(2), "other", None);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"EventId":"00000000-0000-0000-0000-000000000002","Timestamp":"0001-01-01T00:00:00","Changes":["contact_id","name"],"Event":"contact.changed","PrimaryKey":7,"Entity":"contact","ContextIdentifier":"Cust1","ChangedByAssociateId":5,"WebhookName":"other","FieldValues":{"name":"Acme \"Inc\""}}"#
    );
}
