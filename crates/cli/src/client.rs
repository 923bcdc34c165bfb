//! Client subcommands: `crmhooks contact ...` and `crmhooks webhook ...` call a running crmhooks
//! server over its REST API (`/api/v1/Contact`, `/api/v1/Webhook`).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::{header::ACCEPT, Method, StatusCode};
use serde_json::{json, Map, Value};
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
    /// List contacts (GET /api/v1/Contact), in pages.
    List {
        #[command(flatten)]
        conn: Conn,
        /// Rows to show (the server's $top: 1 to 1000).
        #[arg(long, default_value_t = 50)]
        top: u32,
        /// Rows to skip ($skip).
        #[arg(long, default_value_t = 0)]
        skip: u32,
        /// Sort order, e.g. "name asc,contactId desc" ($orderBy: contactId, name, updated).
        #[arg(long = "order-by", value_name = "ORDER")]
        order_by: Option<String>,
        /// Filter, e.g. "name begins 'A' and contactId gt 10" ($filter: name begins,
        /// updated afterTime, contactId gt).
        #[arg(long, value_name = "FILTER")]
        filter: Option<String>,
        /// Print the server's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        ContactCmd::List {
            conn,
            top,
            skip,
            order_by,
            filter,
            json,
        } => {
            let mut query = vec![("$top", top.to_string()), ("$skip", skip.to_string())];
            query.extend(order_by.map(|o| ("$orderBy", o)));
            query.extend(filter.map(|f| ("$filter", f)));
            let v = Api::new(&conn)?
                .call(Method::GET, "Contact", &query, None)
                .await?;
            if json {
                return print_json(&v);
            }
            let cols = [
                &["contactId"][..],
                &["name"],
                &["department"],
                &["updatedDate"],
            ];
            print_table(
                &["ID", "NAME", "DEPARTMENT", "UPDATED"],
                &cols,
                &v["value"],
                "contacts",
            )?;
            if v.get("odata.nextLink").is_some() {
                println!("(more: --skip {})", u64::from(skip) + u64::from(top));
            }
            Ok(())
        }
        ContactCmd::Get(t) => print_json(
            &Api::new(&t.conn)?
                .call(Method::GET, &format!("Contact/{}", t.id), &[], None)
                .await?,
        ),
        ContactCmd::Create { conn, fields } => {
            let body = contact_body(&fields)?;
            if body
                .get("Name")
                .and_then(Value::as_str)
                .is_none_or(|n| n.trim().is_empty())
            {
                bail!("a contact needs a name: pass --name or put \"Name\" in --json");
            }
            print_json(
                &Api::new(&conn)?
                    .call(Method::POST, "Contact", &[], Some(&body))
                    .await?,
            )
        }
        ContactCmd::Update { target: t, fields } => {
            let patch = contact_body(&fields)?;
            if patch.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: pass at least one field flag or --json");
            }
            print_json(
                &Api::new(&t.conn)?
                    .call(
                        Method::PATCH,
                        &format!("Contact/{}", t.id),
                        &[],
                        Some(&patch),
                    )
                    .await?,
            )
        }
        ContactCmd::Delete {
            target: t,
            permanent,
        } => {
            let query = if permanent {
                vec![("permanent", "true".to_owned())]
            } else {
                vec![]
            };
            Api::new(&t.conn)?
                .call(Method::DELETE, &format!("Contact/{}", t.id), &query, None)
                .await?;
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
            let v = Api::new(&t.conn)?
                .call(
                    Method::POST,
                    &format!("Contact/{}/Restore", t.id),
                    &[],
                    None,
                )
                .await?;
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
            let query: Vec<(&str, String)> = [
                ("nameFilter", name),
                ("eventFilter", event),
                ("statusFilter", status),
            ]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
            let v = Api::new(&conn)?
                .call(Method::GET, "Webhook", &query, None)
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
        WebhookCmd::Get(t) => print_json(&webhook_get(&t, "").await?),
        WebhookCmd::Create(c) => print_json(
            &Api::new(&c.conn)?
                .call(Method::POST, "Webhook", &[], Some(&webhook_body(&c)))
                .await?,
        ),
        WebhookCmd::Start(t) => set_state(&t, "Active").await,
        WebhookCmd::Stop(t) => set_state(&t, "Stopped").await,
        WebhookCmd::Delete(t) => {
            Api::new(&t.conn)?
                .call(Method::DELETE, &format!("Webhook/{}", t.id), &[], None)
                .await?;
            println!("deleted webhook {}", t.id);
            Ok(())
        }
        WebhookCmd::LastError(t) => {
            match webhook_get(&t, "/LastError").await? {
                Value::String(s) if !s.trim().is_empty() => println!("{s}"),
                Value::Null | Value::String(_) => println!("(no error recorded)"),
                other => print_json(&other)?,
            }
            Ok(())
        }
        WebhookCmd::Usage(t) => print_json(&webhook_get(&t, "/Usage").await?),
        WebhookCmd::Deliveries {
            target: t,
            status,
            limit,
        } => {
            let query: Vec<(&str, String)> =
                [("status", status), ("limit", limit.map(|n| n.to_string()))]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v?)))
                    .collect();
            let v = Api::new(&t.conn)?
                .call(
                    Method::GET,
                    &format!("Webhook/{}/Deliveries", t.id),
                    &query,
                    None,
                )
                .await?;
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
            let mut body = json!({ "since": since.format(&Rfc3339)?, "onlyFailed": only_failed });
            if let Some(u) = until {
                body["until"] = Value::String(u.format(&Rfc3339)?);
            }
            let mut api = Api::new(&t.conn)?;
            api.timeout = Duration::from_secs(900);
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("replaying events to webhook {}...", t.id));
            spinner.enable_steady_tick(Duration::from_millis(100));
            let res = api
                .call(
                    Method::POST,
                    &format!("Webhook/{}/Replay", t.id),
                    &[],
                    Some(&body),
                )
                .await;
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

/// `GET /api/v1/Webhook/{id}{suffix}`.
async fn webhook_get(t: &IdArgs, suffix: &str) -> Result<Value> {
    Api::new(&t.conn)?
        .call(Method::GET, &format!("Webhook/{}{suffix}", t.id), &[], None)
        .await
}

/// PATCHes the webhook's `State` and reports the state the server answers with.
async fn set_state(t: &IdArgs, state: &str) -> Result<()> {
    let body = json!({ "State": state });
    let v = Api::new(&t.conn)?
        .call(
            Method::PATCH,
            &format!("Webhook/{}", t.id),
            &[],
            Some(&body),
        )
        .await?;
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

/// A configured connection to one crmhooks server.
struct Api {
    http: reqwest::Client,
    base: url::Url,
    key: String,
    timeout: Duration,
}

impl Api {
    fn new(conn: &Conn) -> Result<Self> {
        let key = (conn
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty()))
        .context("no API key: pass --api-key or set CRMHOOKS_API_KEY")?
        .to_owned();
        let base = url::Url::parse(conn.url.trim())
            .with_context(|| format!("invalid server URL {:?}", conn.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!(
                "invalid server URL {:?}: expected http(s)://HOST:PORT",
                conn.url
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crmhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            http,
            base,
            key,
            timeout: Duration::from_secs(120),
        })
    }

    /// `{base}/api/v1/{path}`, keeping any path prefix (tenant) of the base URL.
    fn endpoint(&self, path: &str) -> Result<url::Url> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| anyhow!("invalid server URL {}", self.base))?
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(path.split('/'));
        Ok(url)
    }

    /// Sends one request; returns the JSON answer (`Null` when empty) or the server's error message.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = self.endpoint(path)?;
        let mut req = (self.http.request(method.clone(), url.clone()))
            .bearer_auth(&self.key)
            .header(ACCEPT, "application/json")
            .timeout(self.timeout);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the crmhooks server at {}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {method} {url}"))?;
        if !status.is_success() {
            bail!("{}", error_message(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("the answer to {method} {url} is not JSON"))
    }
}

/// The message of an error answer: `Message` (or `Error`) of a JSON error body, else the body.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        ["Message", "Error"].iter().find_map(|k| {
            v.get(k)?
                .as_str()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        })
    });
    let text = from_json.unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect()
    });
    if text.is_empty() {
        format!("server answered {status}")
    } else {
        format!("server answered {status}: {text}")
    }
}

/// The ContactEntity (create) or merge patch (update) the flags describe, with `--json` laid over it.
fn contact_body(f: &ContactFields) -> Result<Value> {
    let mut m = Map::new();
    let strings = [
        ("Name", &f.name),
        ("Department", &f.department),
        ("OrgNr", &f.org_nr),
        ("Number1", &f.number1),
    ];
    for (key, v) in strings {
        if let Some(v) = v {
            m.insert(key.to_owned(), Value::String(v.clone()));
        }
    }
    let carriers = [
        ("Business", "Id", f.business),
        ("Category", "Id", f.category),
        ("Country", "CountryId", f.country),
        ("Associate", "AssociateId", f.associate),
    ];
    for (key, id_key, v) in carriers {
        if let Some(id) = v {
            m.insert(key.to_owned(), json!({ id_key: id }));
        }
    }
    let mut body = Value::Object(m);
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
fn webhook_body(c: &WebhookCreate) -> Value {
    let mut body = json!({
        "Name": c.name,
        "Events": c.events,
        "TargetUrl": c.target_url,
        "State": if c.stopped { "Stopped" } else { "Active" },
        "Type": "webhook",
    });
    let headers: Map<String, Value> = c
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let optional = [
        ("Secret", c.secret.clone().map(Value::String)),
        (
            "Headers",
            (!headers.is_empty()).then_some(Value::Object(headers)),
        ),
        ("ErrorsEmail", c.errors_email.clone().map(Value::String)),
        ("RetryPolicy", c.retry_policy.clone().map(Value::String)),
        ("SuccessStatus", c.success_status.clone().map(Value::String)),
    ];
    for (key, v) in optional {
        if let Some(v) = v {
            body[key] = v;
        }
    }
    body
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
        assert_eq!(webhook_body(&c), want);
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
    fn error_messages() {
        let body =
            br#"{"Error": "not_found", "ErrorType": "NotFound", "Message": "Contact 9 not found"}"#;
        assert_eq!(
            error_message(StatusCode::NOT_FOUND, body),
            "server answered 404 Not Found: Contact 9 not found"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, b" oops "),
            "server answered 502 Bad Gateway: oops"
        );
        assert_eq!(
            error_message(StatusCode::UNAUTHORIZED, b""),
            "server answered 401 Unauthorized"
        );
        assert_eq!(clip("a\n  b"), "a b");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), 80);
    }

    #[test]
    fn endpoints_keep_a_tenant_prefix() -> Result<()> {
        let conn = Conn {
            url: "http://h:1/Acme/".into(),
            api_key: Some("k".into()),
        };
        assert_eq!(
            Api::new(&conn)?.endpoint("Contact/5")?.as_str(),
            "http://h:1/Acme/api/v1/Contact/5"
        );
        let conn = Conn {
            url: "http://h:1".into(),
            api_key: None,
        };
        let err = Api::new(&conn).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no API key: pass --api-key or set CRMHOOKS_API_KEY")
        );
        Ok(())
    }
}
