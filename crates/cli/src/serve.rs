//! `crmhooks serve`.

use std::path::PathBuf;

use crmhooks_server::{Config, Server};

/// Flags of `serve`; each overrides the config file and the environment.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// sqlite://PATH (default sqlite://crmhooks.db) or postgres://…
    #[arg(long)]
    pub database: Option<String>,
    /// TOML config file (see config.default.toml for every key).
    #[arg(long, env = "CRMHOOKS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Development mode: allow http:// and loopback/private targets.
    #[arg(long)]
    pub dev: bool,
    /// Bootstrap API key for the default tenant (env CRMHOOKS_API_KEY). Other users of the
    /// machine can read it in the process list: prefer --api-key-file.
    #[arg(long)]
    pub api_key: Option<String>,
    /// A file whose first line is the bootstrap API key (env CRMHOOKS_API_KEY_FILE).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// A file of master keys, one kid:base64key a line, the first encrypting (env
    /// CRMHOOKS_MASTER_KEY_FILE; or the list itself in CRMHOOKS_MASTER_KEY).
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
    /// Associate id of the bootstrap key (default 1).
    #[arg(long)]
    pub associate_id: Option<i64>,
    /// Also serve /metrics, without a key, on this address (env CRMHOOKS_METRICS_LISTEN).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log lines as text, or as one JSON object a line (time, level, target, message, fields
    /// such as request_id, webhook and delivery).
    #[arg(long, env = "CRMHOOKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (to standard error).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// For a log pipeline: one JSON object per line.
    Json,
}

/// Installs the log subscriber (`RUST_LOG`, else `info`) writing `format` to standard error.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // Each line: timestamp, level, target, the event's fields (its message among them)
        // flattened, and the current span's fields (the request id of an API request).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Runs the server until SIGTERM or ctrl-c.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let mut flags = toml::value::Table::new();
    if let Some(v) = args.listen {
        flags.insert("listen".into(), v.into());
    }
    if let Some(v) = args.database {
        flags.insert("database".into(), v.into());
    }
    if args.dev {
        flags.insert("dev".into(), true.into());
    }
    if let Some(v) = args.api_key {
        flags.insert("api_key".into(), v.into());
    }
    if let Some(v) = args.metrics_listen {
        flags.insert("metrics_listen".into(), v.into());
    }
    if let Some(v) = args.api_key_file {
        flags.insert("api_key_file".into(), v.display().to_string().into());
    }
    if let Some(v) = args.master_key_file {
        flags.insert("master_key_file".into(), v.display().to_string().into());
    }
    if let Some(v) = args.associate_id {
        flags.insert("associate_id".into(), v.into());
    }
    let config = Config::load(args.config.as_deref(), flags)?;
    let (dev, no_key) = (
        config.dev,
        config.api_key.is_none() && config.api_key_file.is_none(),
    );
    let server = Server::build(config, None).await?;
    // Warnings once the server is up: a server that cannot start says only why.
    if dev {
        tracing::warn!(
            "--dev: http:// and private/loopback targets are allowed; do not use in production"
        );
    }
    if no_key {
        tracing::warn!("no API key configured (CRMHOOKS_API_KEY or --api-key): every API call will be refused with 401");
    }
    println!("crmhooks listening on http://{}", server.addr());
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing deliveries in flight");
        let _ = tx.send(true);
    });
    server.run(rx).await
}
