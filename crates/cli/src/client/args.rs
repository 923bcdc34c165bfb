//! The flags of `crmhooks contact ...` and `crmhooks webhook ...`, and their value parsers.

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use time::{format_description::well_known::Rfc3339, OffsetDateTime, UtcOffset};

/// How to reach the server; flattened into every client subcommand.
#[derive(Args, Clone)]
pub struct Conn {
    /// Base URL of the crmhooks server (may end in a tenant, e.g. http://host:8080/Acme).
    #[arg(long, env = "CRMHOOKS_URL", default_value = "http://127.0.0.1:8080")]
    pub(super) url: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "CRMHOOKS_API_KEY", hide_env_values = true)]
    pub(super) api_key: Option<String>,
}

/// Contact fields settable from flags, for `contact create` and `contact update`.
#[derive(Args, Clone, Default)]
pub struct ContactFields {
    /// Name.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Department.
    #[arg(long)]
    pub(super) department: Option<String>,
    /// Organisation number.
    #[arg(long)]
    pub(super) org_nr: Option<String>,
    /// Number1 (customer number).
    #[arg(long)]
    pub(super) number1: Option<String>,
    /// Business list id.
    #[arg(long, value_name = "ID")]
    pub(super) business: Option<i32>,
    /// Category list id.
    #[arg(long, value_name = "ID")]
    pub(super) category: Option<i32>,
    /// Country id (e.g. 578 for Norway).
    #[arg(long, value_name = "ID")]
    pub(super) country: Option<i32>,
    /// Associate (owner) id.
    #[arg(long, value_name = "ID")]
    pub(super) associate: Option<i32>,
    /// JSON object (or @FILE) laid over the flags: a ContactEntity for create, a merge patch for update.
    #[arg(long, value_name = "JSON")]
    pub(super) json: Option<String>,
}

/// A server connection plus the id of one contact or webhook.
#[derive(Args, Clone)]
pub struct IdArgs {
    #[command(flatten)]
    pub(super) conn: Conn,
    /// Contact or webhook id.
    pub(super) id: u32,
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
    pub(super) conn: Conn,
    /// Name of the webhook.
    #[arg(long)]
    pub(super) name: String,
    /// Target URL the events are POSTed to (`--url` is the server's address).
    #[arg(long = "target-url", visible_alias = "target", value_name = "URL")]
    pub(super) target_url: String,
    /// Event to subscribe to; repeat or separate with commas.
    #[arg(long = "event", value_name = "EVENT", value_delimiter = ',',
          default_values = ["contact.created", "contact.changed", "contact.softdeleted", "contact.deleted"])]
    pub(super) events: Vec<String>,
    /// Shared secret for the X-SuperOffice-Signature header.
    #[arg(long)]
    pub(super) secret: Option<String>,
    /// Create it Stopped instead of Active.
    #[arg(long)]
    pub(super) stopped: bool,
    /// Custom HTTP header sent with every delivery; repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_kv)]
    pub(super) headers: Vec<(String, String)>,
    /// Address that gets a mail when the webhook fails.
    #[arg(long, value_name = "EMAIL")]
    pub(super) errors_email: Option<String>,
    /// Retry policy.
    #[arg(long, value_name = "POLICY", value_parser = ["superoffice", "exponential"])]
    pub(super) retry_policy: Option<String>,
    /// Which answers count as success.
    #[arg(long, value_name = "STATUS", value_parser = ["200", "2xx"])]
    pub(super) success_status: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2024-05-01 12:00:00 UTC);

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
}
