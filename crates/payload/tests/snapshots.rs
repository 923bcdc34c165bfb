//! Exact bytes of payloads we build ourselves (insta snapshots).
#![allow(clippy::unwrap_used)]

use crmhooks_payload::{
    contact_deleted_values, ContactEvent, ContactFieldValues, NetDateTime, WebhookPayload,
    CONTACT_ENTITY,
};
use time::macros::datetime;

fn event_id() -> uuid::Uuid {
    "8337ae4a-1dd6-40fd-8dc7-a050664a0af7".parse().unwrap()
}

fn field_values(deleted: bool) -> ContactFieldValues {
    ContactFieldValues {
        active_interests: 0,
        associate_id: 12,
        business_idx: 2,
        category_idx: 4,
        country_id: 826,
        deleted: i64::from(deleted),
        deleted_date: if deleted {
            NetDateTime::utc(datetime!(2025-06-01 12:00:00.5 UTC))
        } else {
            NetDateTime::MIN
        },
        registered: NetDateTime::unspecified(datetime!(2020-02-16 17:50:17)),
        registered_associate_id: 5,
        source: 0,
        updated: NetDateTime::local(datetime!(2025-05-14 10:48:07.8912039 +02:00)),
        userdef2_id: 0,
        userdef_id: 22,
    }
}

fn contact(event: ContactEvent, changes: &[&str], deleted: bool) -> WebhookPayload {
    WebhookPayload {
        event_id: event_id(),
        timestamp: NetDateTime::utc(datetime!(2025-05-14 08:48:07.891 UTC)),
        changes: changes.iter().map(|s| (*s).to_owned()).collect(),
        values: None,
        event: event.to_string(),
        primary_key: 18,
        entity: CONTACT_ENTITY.to_owned(),
        context_identifier: "Cust54321".to_owned(),
        changed_by_associate_id: 5,
        webhook_name: "Tonys \"Contact\" Handler ✓".to_owned(),
        field_values: Some(field_values(deleted).to_map()),
        properties: None,
    }
}

fn text(p: &WebhookPayload) -> String {
    String::from_utf8(p.to_bytes()).unwrap()
}

#[test]
fn contact_changed() {
    let p = contact(
        ContactEvent::Changed,
        &[
            "contact_id",
            "associate_id",
            "department",
            "updated_associate_id",
            "updated",
            "updatedCount",
        ],
        false,
    );
    insta::assert_snapshot!(text(&p));
}

#[test]
fn contact_softdeleted() {
    let p = contact(
        ContactEvent::SoftDeleted,
        &[
            "contact_id",
            "deleted",
            "DeletedDate",
            "updated_associate_id",
            "updated",
            "updatedCount",
        ],
        true,
    );
    insta::assert_snapshot!(text(&p));
}

#[test]
fn contact_deleted_with_values_and_properties() {
    let mut p = contact(ContactEvent::Deleted, &[], true);
    p.values = Some(contact_deleted_values(18, 12));
    let mut props = serde_json::Map::new();
    props.insert("team".into(), "north\nline".into());
    props.insert("priority".into(), 3.into());
    p.properties = Some(props);
    insta::assert_snapshot!(text(&p));
}

#[test]
fn the_test_event() {
    let p = WebhookPayload::test_event(
        event_id(),
        NetDateTime::utc(datetime!(2018-04-24 08:52:59.0005158 UTC)),
        "Default",
        316,
        "Name you provided",
    );
    insta::assert_snapshot!(text(&p));
}
