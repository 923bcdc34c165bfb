//! `crmhooks check-receiver URL --secret S`: drives a webhook receiver through what
//! SuperOffice (and crmhooks) will send it, and grades it check by check.
//!
//! Every request goes out through the dispatcher's own request builder, HTTP client and target
//! policy (`crmhooks_dispatch::send`), so what is checked is what the server sends: the same
//! header names and order, the same signature, the same TLS and address rules (loopback and
//! private targets, and `http://`, only with `--dev`).
//!
//! Idempotency cannot be seen from outside: a receiver that takes a repeated `EventId` with
//! 200 may still have processed it twice. The check passes when the receiver says it saw the
//! `EventId` before (a `X-Webhook-Duplicate: true` answer, as `crmhooks listen` gives), and
//! warns otherwise.

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use crmhooks_dispatch::client::{build_client, HttpClient, Timeouts};
use crmhooks_dispatch::send::{self, Response};
use crmhooks_dispatch::{check_url, OwnAddresses, TargetPolicy};
use crmhooks_payload::{NetDateTime, WebhookPayload};
use crmhooks_store::Webhook;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The header a receiver answers a repeated `EventId` with, to show it was not processed
/// again.
pub const DUPLICATE_HEADER: &str = "X-Webhook-Duplicate";

/// Flags of `crmhooks check-receiver`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The receiver's URL, as a webhook's TargetUrl.
    url: String,
    /// The shared secret the receiver verifies signatures with.
    #[arg(long)]
    secret: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Allow http:// and loopback or private targets (as `crmhooks serve --dev`).
    #[arg(long)]
    dev: bool,
    /// Longest wait for an answer, in milliseconds (crmhooks' delivery.timeout_ms default;
    /// SuperOffice does not document its own).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

/// The grade of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Grade {
    /// As SuperOffice needs.
    Pass,
    /// Works, but worth a look.
    Warn,
    /// SuperOffice would fail here.
    Fail,
}

/// One graded check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// A stable name.
    pub name: &'static str,
    /// The grade.
    pub grade: Grade,
    /// Why, in one line.
    pub reason: String,
}

/// Answers slower than this are a warning.
const SLOW: Duration = Duration::from_secs(5);

/// Requests of the answer-time check.
const TIMED: usize = 20;

/// Size of the large-body check's body.
const LARGE: usize = 256 * 1024;

struct Probe {
    client: HttpClient,
    hook: Webhook,
    user_agent: http::HeaderValue,
}

/// How a request is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signing {
    Signed,
    Unsigned,
    /// Signed, then the body changed by one byte.
    Tampered,
}

impl Probe {
    async fn send(
        &self,
        payload: &WebhookPayload,
        retry: i64,
        signing: Signing,
    ) -> Result<Response, String> {
        let mut hook = self.hook.clone();
        if signing == Signing::Unsigned {
            hook.secret = None;
        }
        let mut out = send::build(
            &hook,
            &payload.as_ref(),
            retry,
            payload.is_test(),
            &self.user_agent,
        )?;
        if signing == Signing::Tampered {
            // The signature covers the body as built; change one digit of PrimaryKey after.
            let text = String::from_utf8_lossy(&out.body).replacen(
                "\"PrimaryKey\":4",
                "\"PrimaryKey\":5",
                1,
            );
            out.body = text.into_bytes();
        }
        Ok(send::send(&self.client, out).await)
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// What came back, in a few words.
fn answered(r: &Response) -> String {
    match (r.status, &r.error) {
        (Some(s), _) => format!("answered {s} in {}", ms(r.elapsed)),
        (None, Some(e)) => format!("no answer: {e}"),
        (None, None) => "no answer".into(),
    }
}

fn check(name: &'static str, grade: Grade, reason: impl Into<String>) -> Check {
    Check {
        name,
        grade,
        reason: reason.into(),
    }
}

/// Passes on 200; fails on anything else.
fn wants_200(name: &'static str, r: &Result<Response, String>, what: &str) -> Check {
    match r {
        Err(e) => check(name, Grade::Fail, format!("{what}: not sent: {e}")),
        Ok(r) if r.status == Some(200) => {
            check(name, Grade::Pass, format!("{what}: {}", answered(r)))
        }
        Ok(r) => check(
            name,
            Grade::Fail,
            format!(
                "{what}: {}; SuperOffice counts only 200 as success",
                answered(r)
            ),
        ),
    }
}

/// Passes when refused (4xx); fails when taken.
fn wants_refusal(name: &'static str, r: &Result<Response, String>, what: &str) -> Check {
    match r {
        Err(e) => check(name, Grade::Fail, format!("{what}: not sent: {e}")),
        Ok(r) => match r.status {
            Some(s) if (400..500).contains(&s) => {
                check(name, Grade::Pass, format!("{what}: refused with {s}"))
            }
            Some(s) if (200..300).contains(&s) => check(
                name,
                Grade::Fail,
                format!("{what}: accepted with {s}; anyone could post events to this receiver"),
            ),
            _ => check(
                name,
                Grade::Warn,
                format!("{what}: {}; a refusal should be a 4xx (401)", answered(r)),
            ),
        },
    }
}

/// A `contact.<verb>` payload like SuperOffice's, with a fresh `EventId` and this timestamp.
fn contact_event(verb: &str, timestamp: NetDateTime) -> WebhookPayload {
    let field_values = json!({
        "activeInterests": 0, "associate_id": 12, "business_idx": 2, "category_idx": 4,
        "country_id": 578, "deleted": 0, "DeletedDate": "0001-01-01T00:00:00",
        "registered": "2020-02-16T17:50:17", "registered_associate_id": 5, "source": 0,
        "updated": "2025-05-14T10:48:07.8912039+02:00", "userdef2_id": 0, "userdef_id": 22
    });
    WebhookPayload {
        event_id: Uuid::new_v4(),
        timestamp,
        changes: vec![
            "contact_id".into(),
            "name".into(),
            "updated_associate_id".into(),
            "updated".into(),
            "updatedCount".into(),
        ],
        values: None,
        event: format!("contact.{verb}"),
        primary_key: 4711,
        entity: "contact".into(),
        context_identifier: "Default".into(),
        changed_by_associate_id: 5,
        webhook_name: "crmhooks check-receiver".into(),
        field_values: field_values.as_object().cloned(),
        properties: None,
    }
}

/// Runs every check against the receiver at `url`.
async fn run_checks(args: &CheckArgs) -> Result<Vec<Check>> {
    let policy = if args.dev {
        TargetPolicy::Dev
    } else {
        TargetPolicy::Strict
    };
    check_url(policy, &args.url).map_err(|e| anyhow!("{}: {e}", args.url))?;
    let timeouts = Timeouts {
        connect: Duration::from_millis(args.timeout_ms.min(5_000)),
        total: Duration::from_millis(args.timeout_ms),
    };
    let client = build_client(policy, timeouts, 4, OwnAddresses::default())?;
    let mut hook = Webhook::default_for(crmhooks_store::TenantId::default());
    hook.name = "crmhooks check-receiver".into();
    hook.target_url = args.url.clone();
    hook.secret = Some(args.secret.clone());
    let probe = Probe {
        client,
        hook,
        user_agent: send::user_agent_value(&send::default_user_agent_version()),
    };
    let now = NetDateTime::now_utc;
    let mut checks = Vec::new();

    let test = WebhookPayload::test_event(Uuid::new_v4(), now(), "Default", 5, &probe.hook.name);
    let r = probe.send(&test, 0, Signing::Signed).await;
    checks.push(wants_200(
        "test-event",
        &r,
        "the test event (X-Hook-Test: true)",
    ));

    let created = contact_event("created", now());
    let first = probe.send(&created, 0, Signing::Signed).await;
    let mut c = wants_200("signed-event", &first, "a signed contact.created");
    if let Ok(r) = &first {
        if c.grade == Grade::Pass && r.elapsed > SLOW {
            c.grade = Grade::Warn;
            c.reason.push_str(&format!(
                "; slower than {}, and SuperOffice retries after its own timeout",
                ms(SLOW)
            ));
        }
    }
    checks.push(c);

    let again = probe.send(&created, 1, Signing::Signed).await;
    checks.push(match &again {
        Ok(r) if r.status == Some(200) => {
            if r.header(DUPLICATE_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                check(
                    "retry-same-eventid",
                    Grade::Pass,
                    format!("accepted, and the receiver reports the EventId as seen ({DUPLICATE_HEADER})"),
                )
            } else {
                check(
                    "retry-same-eventid",
                    Grade::Warn,
                    format!("accepted; whether it was processed twice cannot be seen from outside (answer {DUPLICATE_HEADER}: true to show it)"),
                )
            }
        }
        other => wants_200("retry-same-eventid", other, "the same EventId with X-Superoffice-Retry: 1"),
    });

    let tampered = contact_event("changed", now());
    let r = probe.send(&tampered, 0, Signing::Tampered).await;
    checks.push(wants_refusal(
        "tampered-body",
        &r,
        "a body changed after signing",
    ));

    let unsigned = contact_event("changed", now());
    let r = probe.send(&unsigned, 0, Signing::Unsigned).await;
    checks.push(wants_refusal(
        "unsigned",
        &r,
        &format!("a request without {}", crmhooks_payload::headers::SIGNATURE),
    ));

    let mut failed = Vec::new();
    for stamp in [
        "2025-09-16T07:24:33.27583Z",
        "2018-04-24T08:18:42.089895Z",
        "2018-04-24T07:50:50.6812131Z",
    ] {
        let Ok(t) = NetDateTime::parse(stamp) else {
            continue;
        };
        let r = probe
            .send(&contact_event("changed", t), 0, Signing::Signed)
            .await;
        if !matches!(&r, Ok(r) if r.status == Some(200)) {
            let why = match &r {
                Ok(r) => answered(r),
                Err(e) => e.clone(),
            };
            failed.push(format!("{stamp}: {why}"));
        }
    }
    checks.push(if failed.is_empty() {
        check(
            "timestamps",
            Grade::Pass,
            "Timestamps with 5, 6 and 7 fractional digits are accepted",
        )
    } else {
        check("timestamps", Grade::Fail, failed.join("; "))
    });

    let mut large = contact_event("changed", now());
    let body_now = large.to_bytes().len();
    let mut props = Map::new();
    props.insert(
        "padding".into(),
        Value::String("x".repeat(LARGE.saturating_sub(body_now + 30))),
    );
    large.properties = Some(props);
    let r = probe.send(&large, 0, Signing::Signed).await;
    checks.push(wants_200(
        "large-body",
        &r,
        &format!("a body of {} KiB", large.to_bytes().len() / 1024),
    ));

    let mut times = Vec::with_capacity(TIMED);
    let mut errors = 0;
    for _ in 0..TIMED {
        match probe
            .send(&contact_event("changed", now()), 0, Signing::Signed)
            .await
        {
            Ok(r) if r.status == Some(200) => times.push(r.elapsed),
            _ => errors += 1,
        }
    }
    times.sort();
    let pick = |q: f64| {
        let i = ((times.len() as f64) * q).ceil() as usize;
        times.get(i.saturating_sub(1)).copied().unwrap_or_default()
    };
    let (p50, p99) = (pick(0.50), pick(0.99));
    let summary = format!(
        "p50 {} / p99 {} over {} requests",
        ms(p50),
        ms(p99),
        times.len()
    );
    checks.push(if errors > 0 {
        check(
            "answer-time",
            Grade::Fail,
            format!("{errors} of {TIMED} requests did not get 200; {summary}"),
        )
    } else if p99 > SLOW {
        check(
            "answer-time",
            Grade::Warn,
            format!("{summary}; p99 over {}", ms(SLOW)),
        )
    } else {
        check("answer-time", Grade::Pass, summary)
    });
    Ok(checks)
}

/// `crmhooks check-receiver`: prints the report; fails when a check failed.
pub async fn run(args: CheckArgs) -> Result<()> {
    let checks = run_checks(&args).await?;
    let failed = checks.iter().filter(|c| c.grade == Grade::Fail).count();
    let mut text = String::new();
    if args.json {
        let report = json!({
            "target": args.url,
            "passed": failed == 0,
            "checks": checks,
        });
        text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
    } else {
        text.push_str(&format!("check-receiver {}\n", args.url));
        for c in &checks {
            let grade = match c.grade {
                Grade::Pass => "PASS",
                Grade::Warn => "WARN",
                Grade::Fail => "FAIL",
            };
            text.push_str(&format!("{grade}  {:<20} {}\n", c.name, c.reason));
        }
    }
    // A closed stdout (`| head`) is not worth a panic; the exit code still tells.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    if failed > 0 {
        return Err(anyhow!("{failed} of {} checks failed", checks.len()));
    }
    Ok(())
}
