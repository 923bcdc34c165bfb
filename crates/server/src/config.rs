//! Configuration: commented defaults (`config.default.toml`, embedded), then a config file,
//! then `CRMHOOKS_*` environment variables, then command-line flags; then [`Config::validate`].

use std::time::Duration;

use crmhooks_dispatch::policy::{ExponentialPolicy, Policies, SuperOfficePolicy, POLICY_NAMES};
use crmhooks_dispatch::{DispatchConfig, RetryPolicy, SuccessRule, TargetPolicy, Timeouts};
use serde::Deserialize;

/// The embedded defaults, with comments.
pub const DEFAULTS: &str = include_str!("../config.default.toml");

/// Server configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// `sqlite://PATH` or `postgres://…`.
    pub database: String,
    /// Allow http and private targets.
    pub dev: bool,
    /// Bootstrap API key for `tenant` (optional).
    pub api_key: Option<String>,
    /// A second address serving `/metrics` without a key (optional).
    pub metrics_listen: Option<String>,
    /// A file whose first line is the bootstrap API key (instead of `api_key`, which other
    /// users of the machine can read in the process list when given as a flag).
    pub api_key_file: Option<String>,
    /// Master keys (`kid:base64key`, comma separated; the first encrypts) of webhook secrets
    /// and header values.
    pub master_key: Option<Hidden>,
    /// A file of master keys, one `kid:base64key` a line (instead of `master_key`).
    pub master_key_file: Option<String>,
    /// Answer webhook `Headers` values in full instead of masked.
    pub reveal_headers: bool,
    /// Associate id of the bootstrap key.
    pub associate_id: i64,
    /// Tenant of the bootstrap key.
    pub tenant: String,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Days a soft-deleted contact stays in the recycle bin.
    pub recycle_bin_days: f64,
    /// Days events stay in the log.
    pub event_retention_days: f64,
    /// How often the recycle-bin purge and log retention run, in seconds.
    pub maintenance_interval_secs: f64,
    /// Test POST before saving an Active webhook.
    pub test_on_save: bool,
    /// Timeouts and the connection cap of the API's HTTP server.
    pub http: HttpConfig,
    /// Delivery settings.
    pub delivery: DeliveryConfig,
    /// SMTP for `ErrorsEmail`.
    pub smtp: Option<SmtpSection>,
    /// SQLite `synchronous=FULL`.
    pub sqlite_synchronous_full: bool,
    /// SQLite `wal_autocheckpoint`, in pages.
    pub sqlite_wal_autocheckpoint: u32,
    /// Connection pool size.
    pub pool_size: u32,
    /// IANA zone of .NET "local" dates (empty: `CRMHOOKS_TZ_OFFSET`, else UTC).
    pub time_zone: String,
    /// Label events and delivery attempts with their tenant in `/metrics`.
    pub metrics_tenant_label: bool,
    /// Label delivery attempts with their webhook's id in `/metrics`.
    pub metrics_per_webhook: bool,
}

/// `[http]`: what a client may take of the API's HTTP server.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Seconds from a request's first byte until its whole head has arrived.
    pub header_read_timeout_secs: f64,
    /// Seconds from a request's head until its whole body has arrived.
    pub request_timeout_secs: f64,
    /// Seconds a connection may wait for its next request.
    pub idle_timeout_secs: f64,
    /// Open connections at most.
    pub max_connections: usize,
}

/// `[delivery]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run the dispatcher on this node (false: an API-only node; events queue up).
    pub enabled: bool,
    /// Claimed per round.
    pub batch: i64,
    /// Lease length, seconds.
    pub lease_secs: f64,
    /// Polling fallback, milliseconds.
    pub poll_ms: u64,
    /// In flight in total.
    pub max_in_flight: usize,
    /// In flight per tenant.
    pub max_per_tenant: usize,
    /// In flight per webhook.
    pub max_per_webhook: usize,
    /// Connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Total timeout, milliseconds.
    pub timeout_ms: u64,
    /// Test and test-on-save timeout, milliseconds.
    pub test_timeout_ms: u64,
    /// "200" or "2xx".
    pub success_status: String,
    /// "superoffice" or "exponential".
    pub retry_policy: String,
    /// Delays between attempts of a superoffice cycle, milliseconds.
    pub superoffice_delays_ms: Vec<u64>,
    /// Consecutive failed attempts before TooManyErrors.
    pub max_consecutive_errors: i64,
    /// Exponential: first delay, milliseconds.
    pub exponential_base_ms: u64,
    /// Exponential: largest delay, milliseconds.
    pub exponential_max_ms: u64,
    /// Exponential: attempts per cycle.
    pub exponential_attempts: u32,
    /// Exponential: jitter fraction.
    pub exponential_jitter: f64,
    /// Seconds to let requests in flight finish at shutdown.
    pub shutdown_grace_secs: f64,
    /// The version in `User-Agent: NetServer-Webhook/<version>`; empty: crmhooks' own.
    pub user_agent_version: String,
}

/// `[smtp]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Sender.
    pub from: String,
}

/// A configuration value that is a secret: its `Debug` shows `***`, so that a config printed
/// for diagnosis does not carry it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Hidden(pub String);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Environment variables read into the config: `CRMHOOKS_<KEY>` for top-level keys and
/// `CRMHOOKS_<TABLE>_<KEY>` for the tables (`[http]`, `[delivery]`); values are parsed as TOML
/// (so numbers and booleans work) and fall back to strings.
fn env_overrides(defaults: &toml::Value) -> Result<toml::Value, ConfigError> {
    let mut out = toml::value::Table::new();
    let Some(table) = defaults.as_table() else {
        return Ok(toml::Value::Table(out));
    };
    let parse = |raw: String| -> toml::Value {
        toml::from_str::<toml::value::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw))
    };
    for (key, value) in table {
        if let toml::Value::Table(inner) = value {
            let mut sub = toml::value::Table::new();
            for k in inner.keys() {
                let var = format!("CRMHOOKS_{}_{}", key.to_uppercase(), k.to_uppercase());
                if let Ok(v) = std::env::var(&var) {
                    sub.insert(k.clone(), parse(v));
                }
            }
            if !sub.is_empty() {
                out.insert(key.clone(), toml::Value::Table(sub));
            }
        } else {
            let var = format!("CRMHOOKS_{}", key.to_uppercase());
            if let Ok(v) = std::env::var(&var) {
                let v = match value {
                    // Strings stay strings even when they look like TOML.
                    toml::Value::String(_) => toml::Value::String(v),
                    _ => parse(v),
                };
                out.insert(key.clone(), v);
            }
        }
    }
    // Optional keys that the defaults leave commented out.
    for (var, key) in [
        ("CRMHOOKS_API_KEY", "api_key"),
        ("CRMHOOKS_API_KEY_FILE", "api_key_file"),
        ("CRMHOOKS_MASTER_KEY", "master_key"),
        ("CRMHOOKS_MASTER_KEY_FILE", "master_key_file"),
    ] {
        if let Ok(v) = std::env::var(var) {
            out.insert(key.into(), toml::Value::String(v));
        }
    }
    if let Ok(v) = std::env::var("CRMHOOKS_METRICS_LISTEN") {
        out.insert("metrics_listen".into(), toml::Value::String(v));
    }
    Ok(toml::Value::Table(out))
}

/// A TOML syntax error in one line: where (line and column) and what.
fn parse_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// A value of the wrong type or an unknown key, in one line naming the key first
/// (`http.idle_timeout_secs: invalid type: …`). The layers are merged by then, so the key may
/// come from the file, the environment (`CRMHOOKS_…`) or a flag.
fn value_error(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let key = lines
        .iter()
        .find_map(|l| l.strip_prefix("in `").and_then(|k| k.strip_suffix('`')));
    let what = lines
        .iter()
        .filter(|l| !l.starts_with("in `"))
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    match key {
        Some(key) => format!("{key}: {what}"),
        None => what,
    }
}

impl Config {
    /// Defaults, then `file`, then the environment, then `overrides` (flags, as TOML values).
    pub fn load(
        file: Option<&std::path::Path>,
        overrides: toml::value::Table,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(DEFAULTS).map_err(|e| ConfigError(format!("embedded defaults: {e}")))?;
        let defaults = value.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let file_value: toml::Value = toml::from_str(&text).map_err(|e| {
                ConfigError(format!("{}: {}", path.display(), parse_error(&e, &text)))
            })?;
            merge(&mut value, file_value);
        }
        merge(&mut value, env_overrides(&defaults)?);
        merge(&mut value, toml::Value::Table(overrides));
        let cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError(value_error(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults alone (tests start from here).
    pub fn defaults() -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(DEFAULTS).map_err(|e| ConfigError(e.to_string()))?;
        Ok(cfg)
    }

    /// Checks values and their combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
        let fail = |m: String| Err(ConfigError(m));
        if !(self.database.starts_with("sqlite:") || self.database.starts_with("postgres")) {
            return fail(format!(
                "database {:?}: use sqlite://PATH or postgres://…",
                self.database
            ));
        }
        if SuccessRule::parse(&d.success_status).is_none() {
            return fail(format!(
                "delivery.success_status {:?}: use \"200\" or \"2xx\"",
                d.success_status
            ));
        }
        if !POLICY_NAMES.contains(&d.retry_policy.as_str()) {
            return fail(format!(
                "delivery.retry_policy {:?}: use one of {POLICY_NAMES:?}",
                d.retry_policy
            ));
        }
        if d.batch < 1
            || d.max_in_flight < 1
            || d.max_per_tenant < 1
            || d.max_per_webhook < 1
            || d.test_timeout_ms < 1
        {
            return fail(
                "delivery.batch, max_in_flight, max_per_tenant, max_per_webhook and test_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if d.max_consecutive_errors < 1 {
            return fail("delivery.max_consecutive_errors must be at least 1".into());
        }
        if !(self.recycle_bin_days >= 0.0
            && self.event_retention_days > 0.0
            && d.lease_secs > 0.0
            && self.maintenance_interval_secs > 0.0)
        {
            return fail("recycle_bin_days must be >= 0; event_retention_days, delivery.lease_secs and maintenance_interval_secs > 0".into());
        }
        if !(0.0..=1.0).contains(&d.exponential_jitter) {
            return fail("delivery.exponential_jitter must be between 0 and 1".into());
        }
        if self.sqlite_wal_autocheckpoint < 100 {
            return fail("sqlite_wal_autocheckpoint must be at least 100 (pages)".into());
        }
        if !d.user_agent_version.is_empty()
            && !crmhooks_dispatch::send::is_user_agent_version(&d.user_agent_version)
        {
            return fail(format!(
                "delivery.user_agent_version {:?}: use letters, digits and . - + _ (e.g. \"8.8.6684.1719\"), at most 64",
                d.user_agent_version
            ));
        }
        self.local_zone()?;
        if let Some(key) = self.api_key.as_deref().filter(|k| !k.is_empty()) {
            let n = key.chars().count();
            if n < crmhooks_store::MIN_BOOTSTRAP_KEY_LEN {
                return fail(format!(
                    "api_key (CRMHOOKS_API_KEY or --api-key) has {n} characters: a bootstrap key needs at least {}; make one with `openssl rand -hex 32`",
                    crmhooks_store::MIN_BOOTSTRAP_KEY_LEN
                ));
            }
        }
        if self.max_body_bytes < 1024 {
            return fail("max_body_bytes must be at least 1024".into());
        }
        let h = &self.http;
        for (key, secs) in [
            ("header_read_timeout_secs", h.header_read_timeout_secs),
            ("request_timeout_secs", h.request_timeout_secs),
            ("idle_timeout_secs", h.idle_timeout_secs),
        ] {
            // Duration::from_secs_f64 panics on what is not finite or too large.
            if !(secs > 0.0 && secs <= 86_400.0) {
                return fail(format!(
                    "http.{key} must be more than 0 and at most 86400 (seconds), not {secs}"
                ));
            }
        }
        if h.max_connections < 1 {
            return fail("http.max_connections must be at least 1".into());
        }
        Ok(())
    }

    /// The zone of .NET "local" dates: `time_zone` (an IANA name) when set, else the fixed
    /// offset `CRMHOOKS_TZ_OFFSET` (`+02:00`), else UTC.
    pub fn local_zone(&self) -> Result<crmhooks_store::LocalZone, ConfigError> {
        let name = self.time_zone.trim();
        if !name.is_empty() {
            return crmhooks_store::LocalZone::named(name)
                .map_err(|e| ConfigError(format!("time_zone: {e}")));
        }
        match std::env::var("CRMHOOKS_TZ_OFFSET") {
            Ok(text) if !text.trim().is_empty() => crmhooks_store::LocalZone::fixed(&text)
                .map_err(|e| ConfigError(format!("CRMHOOKS_TZ_OFFSET: {e}"))),
            _ => Ok(crmhooks_store::LocalZone::default()),
        }
    }

    /// The dispatcher settings.
    pub fn dispatch(&self) -> DispatchConfig {
        let d = &self.delivery;
        DispatchConfig {
            batch: d.batch,
            lease: Duration::from_secs_f64(d.lease_secs),
            poll_interval: Duration::from_millis(d.poll_ms.max(1)),
            max_in_flight: d.max_in_flight,
            max_per_tenant: d.max_per_tenant,
            max_per_webhook: d.max_per_webhook,
            test_timeout: Duration::from_millis(d.test_timeout_ms),
            max_consecutive_errors: d.max_consecutive_errors,
            success: SuccessRule::parse(&d.success_status).unwrap_or(SuccessRule::Exactly200),
            default_policy: RetryPolicy::parse(&d.retry_policy).unwrap_or_default(),
            policies: Policies {
                superoffice: SuperOfficePolicy {
                    delays: d
                        .superoffice_delays_ms
                        .iter()
                        .map(|ms| Duration::from_millis(*ms))
                        .collect(),
                    requeue_delay: Duration::ZERO,
                },
                exponential: ExponentialPolicy {
                    base: Duration::from_millis(d.exponential_base_ms),
                    max: Duration::from_millis(d.exponential_max_ms),
                    attempts_per_cycle: d.exponential_attempts.max(1),
                    jitter: d.exponential_jitter,
                },
            },
            target_policy: if self.dev {
                TargetPolicy::Dev
            } else {
                TargetPolicy::Strict
            },
            timeouts: Timeouts {
                connect: Duration::from_millis(d.connect_timeout_ms),
                total: Duration::from_millis(d.timeout_ms),
            },
            user_agent_version: if d.user_agent_version.is_empty() {
                crmhooks_dispatch::send::default_user_agent_version()
            } else {
                d.user_agent_version.clone()
            },
            metric_labels: crmhooks_dispatch::MetricLabels {
                tenant: self.metrics_tenant_label,
                webhook: self.metrics_per_webhook,
            },
            ..DispatchConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zone_takes_iana_names_and_refuses_others() {
        let mut flags = toml::value::Table::new();
        flags.insert("time_zone".into(), "Europe/Oslo".into());
        let cfg = Config::load(None, flags).expect("Europe/Oslo");
        assert_eq!(cfg.local_zone().expect("zone").to_string(), "Europe/Oslo");
        let mut flags = toml::value::Table::new();
        flags.insert("time_zone".into(), "Mars/Olympus".into());
        let err = Config::load(None, flags).expect_err("no such zone");
        assert!(err.to_string().contains("time_zone"), "{err}");
    }

    #[test]
    fn the_wal_checkpoint_default_is_the_stores_and_small_values_are_refused() {
        let cfg = Config::defaults().expect("defaults parse");
        assert_eq!(
            cfg.sqlite_wal_autocheckpoint,
            crmhooks_store::DEFAULT_WAL_AUTOCHECKPOINT
        );
        let mut flags = toml::value::Table::new();
        flags.insert("sqlite_wal_autocheckpoint".into(), 50.into());
        let err = Config::load(None, flags).expect_err("50 pages is refused");
        assert!(
            err.to_string().contains("sqlite_wal_autocheckpoint"),
            "{err}"
        );
    }

    fn load_err(file: Option<&str>, flags: toml::value::Table) -> String {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("c.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).expect("written");
        }
        match Config::load(file.map(|_| path.as_path()), flags) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string().replace(&path.display().to_string(), "c.toml"),
        }
    }

    /// An operator reads one line naming the key (or the place in the file) and the problem.
    #[test]
    fn configuration_errors_are_one_line_naming_the_key() {
        let mut flags = toml::value::Table::new();
        flags.insert("max_body_bytes".into(), "x".into());
        assert_eq!(
            load_err(None, flags),
            "configuration: max_body_bytes: invalid type: string \"x\", expected usize"
        );
        let mut flags = toml::value::Table::new();
        let mut http = toml::value::Table::new();
        http.insert("max_connections".into(), 0.into());
        flags.insert("http".into(), http.into());
        assert_eq!(
            load_err(None, flags),
            "configuration: http.max_connections must be at least 1"
        );
        assert_eq!(
            load_err(
                Some("listen = \"x\"\nmax_body_bytes = \n"),
                Default::default()
            ),
            "configuration: c.toml: line 2, column 18: invalid string expected `\"`, `'`"
        );
        let unknown = load_err(Some("[http]\nnope = 1\n"), Default::default());
        assert!(
            unknown.starts_with("configuration: http: unknown field `nope`, expected one of"),
            "{unknown}"
        );
        assert!(!unknown.contains('\n'), "{unknown}");
    }

    /// SuperOffice's schedule: a retry 1 s after the first attempt, the last 4 s after that.
    /// (The integration tests run the cycle with shorter delays; this holds the real ones.)
    #[test]
    fn the_superoffice_delays_default_to_1_s_then_4_s() {
        let cfg = Config::defaults().expect("defaults parse");
        assert_eq!(cfg.delivery.superoffice_delays_ms, [1000, 4000]);
        assert_eq!(
            cfg.dispatch().policies.superoffice.delays,
            [Duration::from_secs(1), Duration::from_secs(4)]
        );
    }
}
