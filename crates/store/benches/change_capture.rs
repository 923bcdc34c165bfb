//! Micro-benchmarks of change capture: the `Changes` list of a `contact.changed` event (a diff of
//! two 38-column rows) and of a `contact.created` event.
//!
//! `cargo bench -p crmhooks-store` (add `-- --quick` for a short run).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use crmhooks_store::contact::CONTACT;
use crmhooks_store::{Row, Value, TICKS_PER_SECOND};

/// 2025-05-14T08:48:07Z in ticks since the Unix epoch.
const NOW: i64 = 1_747_212_487 * TICKS_PER_SECOND;

/// A live contact row with every column set, as the store reads it.
fn contact_row() -> Row {
    let mut row = Row::empty(&CONTACT);
    for (name, value) in [
        ("contact_id", Value::Int(994_863)),
        ("activeErpLinks", Value::Int(0)),
        ("activeInterests", Value::Int(0)),
        ("associate_id", Value::Int(12)),
        ("business_idx", Value::Int(2)),
        ("category_idx", Value::Int(4)),
        ("country_id", Value::Int(826)),
        ("dbi_agent_id", Value::Int(0)),
        ("dbi_key", Value::Null),
        ("dbi_last_modified", Value::Null),
        ("dbi_last_syncronized", Value::Null),
        ("deleted", Value::Int(0)),
        ("DeletedDate", Value::Null),
        ("department", Value::Text("Sales".into())),
        ("group_id", Value::Int(3)),
        ("kananame", Value::Null),
        ("mother_id", Value::Int(0)),
        ("name", Value::Text("Acme Inc".into())),
        ("nomailing", Value::Int(0)),
        ("number1", Value::Text("10021".into())),
        ("number2", Value::Null),
        ("orgNr", Value::Text("NO 987 654 321".into())),
        ("registered_associate_id", Value::Int(5)),
        ("registered", Value::Date(NOW - 86_400 * TICKS_PER_SECOND)),
        ("soundEx", Value::Text("A252".into())),
        ("source", Value::Int(0)),
        ("supportAssociateId", Value::Int(0)),
        ("supportLanguageId", Value::Int(0)),
        ("supportPersonId", Value::Int(0)),
        ("text_id", Value::Int(0)),
        ("ticketPriorityId", Value::Int(0)),
        ("tzLocationId", Value::Int(0)),
        ("updated_associate_id", Value::Int(5)),
        ("updated", Value::Date(NOW - 3_600 * TICKS_PER_SECOND)),
        ("updatedCount", Value::Int(7)),
        ("userdef_id", Value::Int(22)),
        ("userdef2_id", Value::Int(0)),
        ("xstop", Value::Int(0)),
    ] {
        row.set(&CONTACT, name, value);
    }
    row
}

fn change_capture(c: &mut Criterion) {
    let before = contact_row();
    // One edited column plus the bookkeeping a save maintains: the common `contact.changed`.
    let mut department = before.clone();
    department.set(&CONTACT, "department", Value::Text("Key accounts".into()));
    department.set(&CONTACT, "updated_associate_id", Value::Int(316));
    department.set(&CONTACT, "updated", Value::Date(NOW));
    department.set(&CONTACT, "updatedCount", Value::Int(8));
    // A rename: `soundEx` is listed as a derived column.
    let mut renamed = department.clone();
    renamed.set(&CONTACT, "name", Value::Text("Acme Holding".into()));
    // Nothing but bookkeeping: the diff is empty (no event).
    let mut touched = before.clone();
    touched.set(&CONTACT, "updated", Value::Date(NOW));

    let mut g = c.benchmark_group("change capture");
    g.bench_function("diff department", |b| {
        b.iter(|| CONTACT.diff(black_box(&before), black_box(&department)))
    });
    g.bench_function("diff name (derived soundEx)", |b| {
        b.iter(|| CONTACT.diff(black_box(&before), black_box(&renamed)))
    });
    g.bench_function("diff bookkeeping only", |b| {
        b.iter(|| CONTACT.diff(black_box(&before), black_box(&touched)))
    });
    g.bench_function("created_changes", |b| {
        b.iter(|| black_box(&CONTACT).created_changes())
    });
    g.finish();
}

criterion_group!(benches, change_capture);
criterion_main!(benches);
