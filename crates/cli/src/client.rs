//! Client subcommands: `crmhooks contact ...` and `crmhooks webhook ...` call a running crmhooks
//! server over its REST API (`/api/v1/Contact`, `/api/v1/Webhook`).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use crmhooks_client::{routes, ApiKey, ContactBody, HttpApi, NewWebhook, Replay, Transport as _};
use serde_json::{Map, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// How to reach the server; flattened into every client subcommand.
#[derive(Args, Clone)]
pub struct Conn {
    /// Base URL of the crmhooks server (may end in a tenant, e.g. http://host:8080/Acme).
    #[arg(long, env = "CRMHOOKS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "CRMHOOKS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// Contact fields settable from flags, for `contact create` and `contact update`.
#[derive(Args, Clone, Default)]
pub struct ContactFields {
    /// Name.
    #[arg(long)]
    name: Option<String>,
    /// Department.
    #[arg(long)]
    department: Option<String>,
    /// Organisation number.
    #[arg(long)]
    org_nr: Option<String>,
    /// Number1 (customer number).
    #[arg(long)]
    number1: Option<String>,
    /// Business list id.
    #[arg(long, value_name = "ID")]
    business: Option<i32>,
    /// Category list id.
    #[arg(long, value_name = "ID")]
    category: Option<i32>,
    /// Country id (e.g. 578 for Norway).
    #[arg(long, value_name = "ID")]
    country: Option<i32>,
    /// Associate (owner) id.
    #[arg(long, value_name = "ID")]
    associate: Option<i32>,
    /// JSON object (or @FILE) laid over the flags: a ContactEntity for create, a merge patch for update.
    #[arg(long, value_name = "JSON")]
    json: Option<String>,
}

/// A server connection plus the id of one contact or webhook.
#[derive(Args, Clone)]
pub struct IdArgs {
    #[command(flatten)]
    conn: Conn,
    /// Contact or webhook id.
    id: u32,
}

/// `crmhooks contact ...`
#[derive(Subcommand)]
pub enum ContactCmd {
    /// Show a contact.
    Get(IdArgs),
    /// Create a contact (a name is required, from --name or --json).
    Create {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        fields: ContactFields,
    },
    /// Change fields of a contact (sends a JSON merge patch).
    Update {
        #[command(flatten)]
        target: IdArgs,
        #[command(flatten)]
        fields: ContactFields,
    },
    /// Delete a contact: into the recycle bin, or for good with --permanent.
    Delete {
        #[command(flatten)]
        target: IdArgs,
        /// Remove the row at once (fires contact.deleted).
        #[arg(long)]
        permanent: bool,
    },
    /// Restore a soft-deleted contact.
    Restore(IdArgs),
}

/// Flags of `webhook create`.
#[derive(Args, Clone)]
pub struct WebhookCreate {
    #[command(flatten)]
    conn: Conn,
    /// Name of the webhook.
    #[arg(long)]
    name: String,
    /// Target URL the events are POSTed to (`--url` is the server's address).
    #[arg(long = "target-url", visible_alias = "target", value_name = "URL")]
    target_url: String,
    /// Event to subscribe to; repeat or separate with commas.
    #[arg(long = "event", value_name = "EVENT", value_delimiter = ',',
          default_values = ["contact.created", "contact.changed", "contact.softdeleted", "contact.deleted"])]
    events: Vec<String>,
    /// Shared secret for the X-SuperOffice-Signature header.
    #[arg(long)]
    secret: Option<String>,
    /// Create it Stopped instead of Active.
    #[arg(long)]
    stopped: bool,
    /// Custom HTTP header sent with every delivery; repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_kv)]
    headers: Vec<(String, String)>,
    /// Address that gets a mail when the webhook fails.
    #[arg(long, value_name = "EMAIL")]
    errors_email: Option<String>,
    /// Retry policy.
    #[arg(long, value_name = "POLICY", value_parser = ["superoffice", "exponential"])]
    retry_policy: Option<String>,
    /// Which answers count as success.
    #[arg(long, value_name = "STATUS", value_parser = ["200", "2xx"])]
    success_status: Option<String>,
}

/// `crmhooks webhook ...`
#[derive(Subcommand)]
pub enum WebhookCmd {
    /// List webhooks as a table.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only webhooks with exactly this name.
        #[arg(long)]
        name: Option<String>,
        /// Only webhooks subscribed to this event.
        #[arg(long)]
        event: Option<String>,
        /// Only webhooks in this state (Active, Stopped, TooManyErrors).
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a webhook.
    Get(IdArgs),
    /// Create a webhook (the server first sends it a test event when Active).
    Create(Box<WebhookCreate>),
    /// Set a webhook Active.
    Start(IdArgs),
    /// Set a webhook Stopped.
    Stop(IdArgs),
    /// Delete a webhook for good.
    Delete(IdArgs),
    /// Show the last delivery error of a webhook.
    LastError(IdArgs),
    /// Show call and error counters of a webhook.
    Usage(IdArgs),
    /// List recent deliveries of a webhook as a table.
    Deliveries {
        #[command(flatten)]
        target: IdArgs,
        /// Only deliveries with this status.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Queue logged events again for a webhook.
    Replay {
        #[command(flatten)]
        target: IdArgs,
        /// Events since TIME: RFC 3339, or an age like 30s, 10m, 2h, 1d, 1w.
        #[arg(long, value_name = "TIME", value_parser = parse_when)]
        since: OffsetDateTime,
        /// Events before TIME (same forms as --since).
        #[arg(long, value_name = "TIME", value_parser = parse_when)]
        until: Option<OffsetDateTime>,
        /// Only events whose delivery did not succeed.
        #[arg(long)]
        only_failed: bool,
    },
}

/// Runs a `crmhooks contact ...` subcommand.
pub async fn run_contact(cmd: ContactCmd) -> Result<()> {
    match cmd {
        ContactCmd::Get(t) => print_json(&t.conn.api()?.json(&routes::get_contact(t.id())).await?),
        ContactCmd::Create { conn, fields } => {
            let body = contact_body(&fields)?;
            if body
                .get("Name")
                .and_then(Value::as_str)
                .is_none_or(|n| n.trim().is_empty())
            {
                bail!("a contact needs a name: pass --name or put \"Name\" in --json");
            }
            print_json(&conn.api()?.json(&routes::create_contact(&body)?).await?)
        }
        ContactCmd::Update { target: t, fields } => {
            let patch = contact_body(&fields)?;
            if patch.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: pass at least one field flag or --json");
            }
            let call = routes::change_contact(t.id(), &patch)?;
            print_json(&t.conn.api()?.json(&call).await?)
        }
        ContactCmd::Delete {
            target: t,
            permanent,
        } => {
            let call = routes::delete_contact(t.id(), permanent);
            t.conn.api()?.call(&call).await?;
            println!(
                "{} contact {}",
                if permanent {
                    "permanently deleted"
                } else {
                    "deleted"
                },
                t.id
            );
            Ok(())
        }
        ContactCmd::Restore(t) => {
            let v = t.conn.api()?.json(&routes::restore_contact(t.id())).await?;
            if v.is_null() {
                println!("restored contact {}", t.id);
                return Ok(());
            }
            print_json(&v)
        }
    }
}

/// Runs a `crmhooks webhook ...` subcommand.
pub async fn run_webhook(cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::List {
            conn,
            name,
            event,
            status,
        } => {
            let v = conn
                .api()?
                .json(&routes::list_webhooks(name, event, status))
                .await?;
            let cols = [
                &["WebhookId"][..],
                &["State"],
                &["Name"],
                &["Events"],
                &["TargetUrl"],
            ];
            print_table(
                &["ID", "STATE", "NAME", "EVENTS", "TARGET"],
                &cols,
                &v,
                "webhooks",
            )
        }
        WebhookCmd::Get(t) => print_json(&t.conn.api()?.json(&routes::get_webhook(t.id())).await?),
        WebhookCmd::Create(c) => {
            let call = routes::create_webhook(&webhook_body(&c))?;
            print_json(&c.conn.api()?.json(&call).await?)
        }
        WebhookCmd::Start(t) => set_state(&t, "Active").await,
        WebhookCmd::Stop(t) => set_state(&t, "Stopped").await,
        WebhookCmd::Delete(t) => {
            t.conn.api()?.call(&routes::delete_webhook(t.id())).await?;
            println!("deleted webhook {}", t.id);
            Ok(())
        }
        WebhookCmd::LastError(t) => {
            let call = routes::webhook_last_error(t.id());
            match t.conn.api()?.json(&call).await? {
                Value::String(s) if !s.trim().is_empty() => println!("{s}"),
                Value::Null | Value::String(_) => println!("(no error recorded)"),
                other => print_json(&other)?,
            }
            Ok(())
        }
        WebhookCmd::Usage(t) => {
            print_json(&t.conn.api()?.json(&routes::webhook_usage(t.id())).await?)
        }
        WebhookCmd::Deliveries {
            target: t,
            status,
            limit,
        } => {
            let call = routes::webhook_deliveries(t.id(), status, limit);
            let v = t.conn.api()?.json(&call).await?;
            let cols = [
                &["delivery_id", "DeliveryId"][..],
                &["status", "Status"],
                &["event", "Event"],
                &["primary_key", "PrimaryKey"],
                &["attempts", "Attempts"],
                &["last_status", "LastStatus"],
                &["created", "Created"],
                &["last_error", "LastError"],
            ];
            let head = [
                "ID",
                "STATUS",
                "EVENT",
                "KEY",
                "ATTEMPTS",
                "HTTP",
                "CREATED",
                "LAST ERROR",
            ];
            print_table(&head, &cols, &v, "deliveries")
        }
        WebhookCmd::Replay {
            target: t,
            since,
            until,
            only_failed,
        } => {
            let replay = Replay {
                since,
                until,
                only_failed,
            };
            let call = routes::replay(t.id(), &replay)?;
            let mut api = t.conn.api()?.with_timeout(Duration::from_secs(900));
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("replaying events to webhook {}...", t.id));
            spinner.enable_steady_tick(Duration::from_millis(100));
            let res = api.json(&call).await;
            spinner.finish_and_clear();
            let v = res?;
            println!(
                "matched {}, queued {}, skipped {}",
                cell(&v["matched"]),
                cell(&v["queued"]),
                cell(&v["skipped"])
            );
            Ok(())
        }
    }
}

/// PATCHes the webhook's `State` and reports the state the server answers with.
async fn set_state(t: &IdArgs, state: &str) -> Result<()> {
    let call = routes::set_webhook_state(t.id(), state)?;
    let v = t.conn.api()?.json(&call).await?;
    println!(
        "webhook {}: {}",
        t.id,
        if v["State"].is_null() {
            state.to_owned()
        } else {
            cell(&v["State"])
        }
    );
    Ok(())
}

impl Conn {
    /// The server these flags name, with their key.
    fn api(&self) -> Result<HttpApi> {
        let key = (self.api_key.as_deref())
            .filter(|k| !k.trim().is_empty())
            .context("no API key: pass --api-key or set CRMHOOKS_API_KEY")?;
        Ok(HttpApi::new(&self.url, ApiKey::new(key)?)?)
    }
}

impl IdArgs {
    fn id(&self) -> i64 {
        i64::from(self.id)
    }
}

/// The ContactEntity (create) or merge patch (update) the flags describe, with `--json` laid over it.
fn contact_body(f: &ContactFields) -> Result<Value> {
    let flags = ContactBody {
        name: f.name.as_deref(),
        department: f.department.as_deref(),
        org_nr: f.org_nr.as_deref(),
        number1: f.number1.as_deref(),
        business: f.business,
        category: f.category,
        country: f.country,
        associate: f.associate,
    };
    let mut body = serde_json::to_value(&flags)?;
    if let Some(raw) = &f.json {
        overlay(&mut body, parse_json_arg(raw)?);
    }
    Ok(body)
}

/// Parses `--json`: inline JSON, or `@FILE`; must be an object.
fn parse_json_arg(raw: &str) -> Result<Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --json file {path}"))?,
        None => raw.to_owned(),
    };
    let v: Value = serde_json::from_str(&text).context("--json is not valid JSON")?;
    if !v.is_object() {
        bail!("--json must be a JSON object");
    }
    Ok(v)
}

/// Lays `top` over `base`: objects merge key by key (recursively), anything else replaces.
/// `null`s are kept, so a merge patch can still clear a field.
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k).filter(|s| s.is_object() && v.is_object()) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// The `Webhook` body of `webhook create`.
fn webhook_body(c: &WebhookCreate) -> NewWebhook {
    let mut hook = NewWebhook::new(&c.name, c.events.clone(), &c.target_url);
    if c.stopped {
        hook.state = "Stopped";
    }
    hook.secret.clone_from(&c.secret);
    hook.headers.clone_from(&c.headers);
    hook.errors_email.clone_from(&c.errors_email);
    hook.retry_policy.clone_from(&c.retry_policy);
    hook.success_status.clone_from(&c.success_status);
    hook
}

/// Parses `K=V` (for `--header`).
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// clap parser for `--since`/`--until`, relative to now.
fn parse_when(s: &str) -> Result<OffsetDateTime, String> {
    let now = OffsetDateTime::now_utc();
    parse_time(s, now.replace_nanosecond(0).unwrap_or(now)).map_err(|e| e.to_string())
}

/// RFC 3339, or an age (`30s`, `10m`, `2h`, `1d`, `1w`) counted back from `now`; the result is in UTC.
fn parse_time(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.to_offset(UtcOffset::UTC));
    }
    let bad = || {
        anyhow!("invalid time {s:?}: expected RFC 3339 (2024-05-01T12:00:00Z) or an age like 10m, 2h, 1d")
    };
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let per_unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(per_unit).ok_or_else(bad)?;
    now.checked_sub(time::Duration::seconds(secs))
        .filter(|t| t.year() >= 1)
        .ok_or_else(bad)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A JSON value as a table cell: strings bare, arrays comma-joined, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A table cell on one line (whitespace runs collapsed), at most 80 characters.
fn clip(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(79) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Prints a JSON array as a table, one column per entry of `cols` (the first key present wins).
fn print_table(head: &[&str], cols: &[&[&str]], rows: &Value, what: &str) -> Result<()> {
    let rows = rows
        .as_array()
        .context("the server did not answer with a list")?;
    if rows.is_empty() {
        println!("(no {what})");
        return Ok(());
    }
    let body: Vec<Vec<String>> = (rows.iter())
        .map(|r| {
            cols.iter()
                .map(|keys| {
                    clip(&cell(
                        keys.iter().find_map(|k| r.get(*k)).unwrap_or(&Value::Null),
                    ))
                })
                .collect()
        })
        .collect();
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&body) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use serde_json::json;
    use time::macros::datetime;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        #[command(subcommand)]
        Contact(ContactCmd),
        #[command(subcommand)]
        Webhook(WebhookCmd),
    }

    const NOW: OffsetDateTime = datetime!(2024-05-01 12:00:00 UTC);

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn relative_and_absolute_times() -> Result<()> {
        assert_eq!(parse_time("10m", NOW)?, datetime!(2024-05-01 11:50:00 UTC));
        assert_eq!(parse_time("2h", NOW)?, datetime!(2024-05-01 10:00:00 UTC));
        assert_eq!(parse_time("1d", NOW)?, datetime!(2024-04-30 12:00:00 UTC));
        assert_eq!(
            parse_time(" 30s ", NOW)?,
            datetime!(2024-05-01 11:59:30 UTC)
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05+01:00", NOW)?,
            datetime!(2024-01-02 02:04:05 UTC)
        );
        assert_eq!(
            parse_time("2024-01-02T03:04:05Z", NOW)?.format(&Rfc3339)?,
            "2024-01-02T03:04:05Z"
        );
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "-5m",
            "1.5h",
            "yesterday",
            "99999999999999999999d",
            "800000d",
            "2024-01-02",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad:?} should be refused");
        }
        Ok(())
    }

    #[test]
    fn update_flags_make_a_merge_patch() -> Result<()> {
        let json = r#"{"OrgNr": null, "Business": {"Value": "IT"}, "Department": "Ops"}"#;
        let args =
            "x contact update 7 --api-key k --department Sales --business 2 --country 578 --json"
                .split(' ');
        let cli = Cli::try_parse_from(args.chain([json]))?;
        let Top::Contact(ContactCmd::Update { target, fields }) = cli.cmd else {
            bail!("wrong subcommand")
        };
        assert_eq!(target.id, 7);
        let patch = contact_body(&fields)?;
        let want = json!({"Department": "Ops", "Business": {"Id": 2, "Value": "IT"}, "Country": {"CountryId": 578}, "OrgNr": null});
        assert_eq!(patch, want);
        assert_eq!(contact_body(&ContactFields::default())?, json!({}));
        let f = ContactFields {
            json: Some("[1]".into()),
            ..ContactFields::default()
        };
        assert!(contact_body(&f).is_err());
        Ok(())
    }

    #[test]
    fn create_flags_make_a_contact_entity() -> Result<()> {
        let f = ContactFields {
            name: Some("Acme".into()),
            associate: Some(5),
            org_nr: Some("123".into()),
            ..Default::default()
        };
        assert_eq!(
            contact_body(&f)?,
            json!({"Name": "Acme", "OrgNr": "123", "Associate": {"AssociateId": 5}})
        );
        Ok(())
    }

    #[test]
    fn webhook_create_body() -> Result<()> {
        let args = "x webhook create --name n --target-url https://example.com/hook --stopped --success-status 2xx";
        let cli = Cli::try_parse_from(args.split(' ').chain(["--header", "X-A = b=c"]))?;
        let Top::Webhook(WebhookCmd::Create(c)) = cli.cmd else {
            bail!("wrong subcommand")
        };
        let events = [
            "contact.created",
            "contact.changed",
            "contact.softdeleted",
            "contact.deleted",
        ];
        let want = json!({"Name": "n", "Events": events, "TargetUrl": "https://example.com/hook", "State": "Stopped",
            "Type": "webhook", "Headers": {"X-A": "b=c"}, "SuccessStatus": "2xx"});
        assert_eq!(serde_json::to_value(webhook_body(&c))?, want);
        let cli = Cli::try_parse_from(
            "x webhook create --name n --target u --event a,b --event c".split(' '),
        )?;
        let Top::Webhook(WebhookCmd::Create(c)) = cli.cmd else {
            bail!("wrong subcommand")
        };
        assert_eq!(c.events, ["a", "b", "c"]);
        assert!(
            Cli::try_parse_from("x webhook create --name n --target u --header =v".split(' '))
                .is_err()
        );
        assert!(Cli::try_parse_from("x webhook replay 3 --since 5q".split(' ')).is_err());
        assert!(Cli::try_parse_from(
            "x webhook replay 3 --since 5m --until 2024-05-01T00:00:00Z".split(' ')
        )
        .is_ok());
        Ok(())
    }

    #[test]
    fn table_cells_are_clipped() {
        assert_eq!(clip("a\n  b"), "a b");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), 80);
        assert_eq!(cell(&json!(["a", 1, null])), "a,1,-");
    }

    #[test]
    fn a_key_is_needed() -> Result<()> {
        let conn = Conn {
            url: "http://h:1/Acme/".into(),
            api_key: Some("k".into()),
        };
        assert!(conn.api().is_ok());
        for key in [None, Some(" ".to_owned())] {
            let conn = Conn {
                url: "http://h:1".into(),
                api_key: key,
            };
            let err = conn.api().err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("no API key: pass --api-key or set CRMHOOKS_API_KEY")
            );
        }
        let conn = Conn {
            url: "ftp://h".into(),
            api_key: Some("k".into()),
        };
        assert!(conn.api().is_err());
        Ok(())
    }
}
