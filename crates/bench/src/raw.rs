//! The raw baseline: the bodies a delivery carries, POSTed straight to the receiver over
//! hyper's connection-level client, as fast as this machine allows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use crmhooks_listen::counting::{CountingReceiver, RAW_PREFIX};
use crmhooks_payload::{
    headers, sign, ContactEvent, ContactFieldValues, NetDateTime, WebhookPayload, CONTACT_ENTITY,
};
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::conn::Conn;
use crate::report::round;
use crate::{BENCH_SECRET, BENCH_TENANT};

/// A body and the headers that go with it, as the dispatcher would send them.
pub(crate) struct RawBody {
    pub(crate) body: Bytes,
    event: &'static str,
    signature: String,
}

/// One `contact.created` and `changes` × `contact.changed` bodies: the mix the load produces,
/// with the same shapes (Changes, FieldValues) and so the same sizes as real deliveries.
pub(crate) fn realistic_bodies(changes: usize) -> Vec<RawBody> {
    let now = time::OffsetDateTime::now_utc();
    let field_values = ContactFieldValues {
        active_interests: 0,
        associate_id: 1,
        business_idx: 0,
        category_idx: 0,
        country_id: 0,
        deleted: 0,
        deleted_date: NetDateTime::MIN,
        registered: NetDateTime::unspecified(time::PrimitiveDateTime::new(now.date(), now.time())),
        registered_associate_id: 1,
        source: 0,
        updated: NetDateTime::local(now),
        userdef2_id: 0,
        userdef_id: 0,
    };
    let payload = |event: ContactEvent, changes: Vec<String>| WebhookPayload {
        event_id: uuid::Uuid::new_v4(),
        timestamp: NetDateTime::utc(now),
        changes,
        values: None,
        event: event.to_string(),
        primary_key: 123_456,
        entity: CONTACT_ENTITY.to_owned(),
        context_identifier: BENCH_TENANT.to_owned(),
        changed_by_associate_id: 1,
        webhook_name: "bench 1".to_owned(),
        field_values: Some(field_values.to_map()),
        properties: None,
    };
    let created = payload(
        ContactEvent::Created,
        crmhooks_store::contact::CONTACT.created_changes(),
    );
    let changed = payload(
        ContactEvent::Changed,
        [
            "contact_id",
            "department",
            "updated_associate_id",
            "updated",
            "updatedCount",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    let raw = |event: ContactEvent, p: &WebhookPayload| {
        let body = p.to_bytes();
        RawBody {
            signature: sign(BENCH_SECRET, &body),
            body: Bytes::from(body),
            event: event.as_str(),
        }
    };
    let mut bodies = vec![raw(ContactEvent::Created, &created)];
    for _ in 0..changes {
        bodies.push(raw(ContactEvent::Changed, &changed));
    }
    bodies
}

/// A POST of one body with the headers the dispatcher sends with it.
#[derive(Clone)]
pub(crate) struct RawRequest {
    body: Bytes,
    headers: Arc<[(&'static str, String); 6]>,
}

impl RawRequest {
    /// The request to `uri`.
    pub(crate) fn to(&self, uri: hyper::Uri) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut req = Request::post(uri);
        for (k, v) in self.headers.iter() {
            req = req.header(*k, v.as_str());
        }
        req.body(Full::new(self.body.clone()))
    }
}

/// The bodies with their headers, as the raw baseline and the relay send them.
pub(crate) fn raw_requests(bodies: &[RawBody]) -> Vec<RawRequest> {
    let user_agent = format!(
        "{}/{}.0",
        headers::USER_AGENT_PRODUCT,
        env!("CARGO_PKG_VERSION")
    );
    bodies
        .iter()
        .map(|b| RawRequest {
            body: b.body.clone(),
            headers: Arc::new([
                (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
                (headers::USER_AGENT, user_agent.clone()),
                (headers::EVENT, b.event.to_owned()),
                (headers::EVENT_ID, uuid::Uuid::new_v4().to_string()),
                (headers::SIGNATURE, b.signature.clone()),
                (headers::RETRY, "0".to_owned()),
            ]),
        })
        .collect()
}

/// What the relay answers an API call with: a contact's JSON as the server answers it (the
/// same fields and about the same size as for a new contact), with `id` as its ContactId.
pub(crate) fn contact_answer(id: u64) -> Bytes {
    const REST: &str = r#","Name":"bench 1-1","Department":"","OrgNr":"","Number1":"","Number2":"","Kananame":"","CreatedDate":"2026-11-27T17:54:44+00:00","UpdatedDate":"2026-11-27T17:54:44.6720612+00:00","CreatedBy":{"AssociateId":1,"Name":"","FullName":""},"UpdatedBy":{"AssociateId":1,"Name":"","FullName":""},"Associate":{"AssociateId":0,"Name":"","FullName":""},"Business":{"Id":0,"Value":"","Tooltip":""},"Category":{"Id":0,"Value":"","Tooltip":""},"Country":{"CountryId":0,"Name":""},"NoMailing":false,"Xstop":false,"GroupId":0,"Deleted":0,"DeletedDate":null,"Source":0,"ActiveInterests":0,"ActiveErpLinks":0,"DbiAgentId":0,"DbiKey":"","DbiLastSyncronized":null,"DbiLastModified":null,"SupportAssociateId":0,"SupportPersonId":0,"SupportLanguageId":0,"TicketPriorityId":0,"TzLocationId":0,"MotherId":0,"UserdefId":0,"Userdef2Id":0,"_Links":{"Self":"http://127.0.0.1:18080/api/v1/Contact/1","Archive":"http://127.0.0.1:18080/api/v1/Contact/1"}}"#;
    Bytes::from(format!("{{\"ContactId\":{id}{REST}"))
}

/// What the raw baseline measured.
#[derive(Default)]
pub(crate) struct RawResult {
    /// POSTs answered 200.
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) posts_per_sec: Option<f64>,
}

/// POSTs the bodies to the receiver over `connections` keep-alive connections (one per
/// worker) for `duration`.
pub(crate) async fn raw_baseline(
    receiver: &CountingReceiver,
    bodies: &[RawBody],
    connections: usize,
    duration: Duration,
) -> anyhow::Result<RawResult> {
    let uri: hyper::Uri = RAW_PREFIX.parse()?;
    let requests = Arc::new(raw_requests(bodies));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..connections {
        let (uri, requests, ok, failed) =
            (uri.clone(), requests.clone(), ok.clone(), failed.clone());
        let addr = receiver.addr();
        workers.spawn(async move {
            let mut conn: Option<Conn> = None;
            let mut n = w;
            while Instant::now() < deadline {
                let request = &requests[n % requests.len()];
                n += 1;
                let Ok(req) = request.to(uri.clone()) else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                let c = match Conn::in_slot(&mut conn, addr).await {
                    Ok(c) => c,
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                };
                match c.send(req).await {
                    Ok((StatusCode::OK, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::SeqCst);
    let received = receiver.tally().raw();
    if ok == 0 {
        bail!("the raw baseline got no 200 from its own receiver ({received} requests arrived)");
    }
    Ok(RawResult {
        ok,
        failed: failed.load(Ordering::SeqCst),
        posts_per_sec: Some(round(ok as f64 / elapsed, 1)),
    })
}

#[cfg(test)]
mod tests {
    use crmhooks_listen::counting::{commit_micros, unix_micros_now};

    use super::*;

    #[test]
    fn the_timestamp_is_found_in_a_real_body() {
        let bodies = realistic_bodies(1);
        assert_eq!(bodies.len(), 2);
        for b in &bodies {
            let ts = commit_micros(&b.body);
            let now = unix_micros_now();
            assert!(ts.is_some_and(|t| (now - t).abs() < 60_000_000));
            assert!(b.body.len() > 500, "{} bytes", b.body.len());
        }
    }
}
