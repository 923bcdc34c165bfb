//! Micro-benchmarks of the per-delivery payload work: serializing a `contact.created` body with
//! `FieldValues`, parsing it back, and signing and verifying a 1 KiB body.
//!
//! `cargo bench -p crmhooks-payload` (add `-- --quick` for a short run).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use crmhooks_payload::{
    sign, verify, ContactEvent, ContactFieldValues, NetDateTime, PayloadTemplate, WebhookPayload,
    CONTACT_ENTITY,
};
use time::macros::datetime;

/// `Changes` of a `contact.created` event: every contact column but `DeletedDate`.
const CREATED_CHANGES: [&str; 37] = [
    "contact_id",
    "activeErpLinks",
    "activeInterests",
    "associate_id",
    "business_idx",
    "category_idx",
    "country_id",
    "dbi_agent_id",
    "dbi_key",
    "dbi_last_modified",
    "dbi_last_syncronized",
    "deleted",
    "department",
    "group_id",
    "kananame",
    "mother_id",
    "name",
    "nomailing",
    "number1",
    "number2",
    "orgNr",
    "registered_associate_id",
    "registered",
    "soundEx",
    "source",
    "supportAssociateId",
    "supportLanguageId",
    "supportPersonId",
    "text_id",
    "ticketPriorityId",
    "tzLocationId",
    "updated_associate_id",
    "updated",
    "updatedCount",
    "userdef_id",
    "userdef2_id",
    "xstop",
];

/// A `contact.created` payload shaped like the ones the dispatcher sends.
fn created_payload() -> WebhookPayload {
    let field_values = ContactFieldValues {
        active_interests: 0,
        associate_id: 12,
        business_idx: 2,
        category_idx: 4,
        country_id: 826,
        deleted: 0,
        deleted_date: NetDateTime::MIN,
        registered: NetDateTime::unspecified(datetime!(2020-02-16 17:50:17)),
        registered_associate_id: 5,
        source: 0,
        updated: NetDateTime::local(datetime!(2025-05-14 10:48:07.8912039 +02:00)),
        userdef2_id: 0,
        userdef_id: 22,
    };
    WebhookPayload {
        event_id: uuid::Uuid::from_u128(0x8337ae4a_1dd6_40fd_8dc7_a050664a0af7),
        timestamp: NetDateTime::utc(datetime!(2018-04-24 07:50:50.6812131 UTC)),
        changes: CREATED_CHANGES.iter().map(|c| (*c).to_owned()).collect(),
        values: None,
        event: ContactEvent::Created.to_string(),
        primary_key: 994_863,
        entity: CONTACT_ENTITY.to_owned(),
        context_identifier: "Cust1234".to_owned(),
        changed_by_associate_id: 316,
        webhook_name: "Name you provided".to_owned(),
        field_values: Some(field_values.to_map()),
        properties: None,
    }
}

fn payload(c: &mut Criterion) {
    let payload = created_payload();
    let body = payload.to_bytes();
    let mut g = c.benchmark_group("payload");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("to_bytes contact.created", |b| {
        b.iter(|| black_box(&payload).to_bytes())
    });
    // What the dispatcher does per delivery: the event's shared parts serialized once
    // (`PayloadTemplate::new`, paid once per event), then one render per webhook.
    let template = PayloadTemplate::new(&payload.as_ref());
    g.bench_function("template render contact.created", |b| {
        b.iter(|| black_box(&template).render(payload.event_id, &payload.webhook_name, None))
    });
    g.bench_function("template new contact.created", |b| {
        b.iter(|| PayloadTemplate::new(&black_box(&payload).as_ref()))
    });
    g.bench_function("from_slice contact.created", |b| {
        b.iter(|| WebhookPayload::from_slice(black_box(&body)))
    });
    g.finish();
}

fn signature(c: &mut Criterion) {
    let secret = "a 32-byte webhook secret, padded";
    let body: Vec<u8> = (0..1024u32)
        .map(|i| b"{}\",:abcxyz0189"[i as usize % 15])
        .collect();
    let sig = sign(secret, &body);
    let mut g = c.benchmark_group("signature 1 KiB");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("sign", |b| {
        b.iter(|| sign(black_box(secret), black_box(&body)))
    });
    g.bench_function("verify", |b| {
        b.iter(|| verify(black_box(secret), black_box(&body), Some(black_box(&sig))))
    });
    g.finish();
}

criterion_group!(benches, payload, signature);
criterion_main!(benches);
