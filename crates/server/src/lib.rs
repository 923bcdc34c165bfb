//! The crmhooks server: the HTTP API (axum) and the dispatcher, side by side.
//!
//! [`Server::build`] binds the listener (port 0 in tests), opens and migrates the store,
//! bootstraps the API key, and [`Server::run`] serves until the shutdown signal, then lets the
//! dispatcher finish or release what it has in flight.

pub mod admin_api;
pub mod agent_api;
pub mod audit;
pub mod auth;
pub mod body;
pub mod carriers;
pub mod config;
pub mod contact_api;
pub mod error;
pub mod http;
mod maintenance;
pub mod observe;
pub mod openapi;
pub mod patch;
pub mod replay;
pub mod secrets;
pub mod telemetry;
pub mod ui;
pub mod webhook_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use crmhooks_dispatch::mail::{Mailer, SmtpConfig};
use crmhooks_dispatch::Dispatcher;
use crmhooks_store::{Actor, Committed, DynStore, OpenOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
use error::{ApiError, ErrorCode};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: DynStore,
    /// The delivery engine.
    pub dispatcher: Arc<Dispatcher>,
    /// API key cache.
    pub keys: Arc<auth::KeyCache>,
    /// The zone of .NET Local-kind dates.
    pub zone: crmhooks_store::LocalZone,
    /// `http://host:port`, for `_Links`.
    pub base_url: Arc<str>,
    /// Test POST before saving an Active webhook.
    pub test_on_save: bool,
    /// What the HTTP server has done (connections open, cut off).
    pub http: Arc<http::Stats>,
    /// Answer webhook `Headers` values in full (`reveal_headers`) instead of masked.
    pub reveal_headers: bool,
    /// Events counted with their tenant's name (`metrics_tenant_label`).
    pub metrics_tenant_label: bool,
}

impl AppState {
    /// Counts a commit of `actor`'s (its event, its deliveries), and wakes the dispatcher
    /// when the commit queued deliveries it has to claim (those handed to it at commit need no
    /// wake-up).
    pub fn committed(&self, actor: &Actor, c: &Committed) {
        self.count_event(actor, &c.entity, &c.event, c);
        if c.deliveries > c.handed + c.behind {
            self.wake();
        }
    }

    /// Counts a committed event as `entity` and `event` (SignalEvent names its events
    /// freely: it is counted under one name, so that a caller cannot add series at will).
    pub fn count_event(&self, actor: &Actor, entity: &str, event: &str, c: &Committed) {
        if c.event_seq.is_some() {
            if self.metrics_tenant_label {
                metrics::counter!("crmhooks_events_total", "entity" => entity.to_owned(), "event" => event.to_owned(), "tenant" => actor.tenant.clone()).increment(1);
            } else {
                metrics::counter!("crmhooks_events_total", "entity" => entity.to_owned(), "event" => event.to_owned()).increment(1);
            }
        }
        self.dispatcher.queued(c.deliveries);
    }

    /// Wakes the dispatcher.
    pub fn wake(&self) {
        self.dispatcher.waker().notify_one();
    }
}

#[utoipa::path(get, path = "/healthz", tag = "Operations", operation_id = "Health",
    summary = "Health",
    responses((status = 200, description = "The server and its database answer.", body = openapi::schemas::HealthDoc)))]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // A cheap, index-driven read: proves the database answers without counting the log.
    match state.store.next_due().await {
        Ok(_) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The Prometheus text of the process's metrics: what the recorder holds (no query).
#[utoipa::path(get, path = "/metrics", tag = "Operations", operation_id = "Metrics",
    summary = "Prometheus metrics",
    description = "Needs a key with the `admin` scope (403 for a tenant key); on `--metrics-listen`, when set, it is served without a key.",
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method",
    )
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route; the API lives under /api/v1 (see README)")
}

/// The API router (without the tenant-prefix rewrite).
pub fn router(state: AppState, max_body: usize) -> Router {
    let api = Router::new()
        .merge(admin_api::router())
        .merge(audit::router())
        .merge(agent_api::router())
        .merge(contact_api::router())
        .merge(webhook_api::router());
    // /metrics tells about every tenant: admin keys only (or `metrics_listen`, unauthenticated).
    let admin_only = Router::new().route("/metrics", get(metrics)).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), auth::require_admin),
    );
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .merge(admin_only)
        .merge(ui::router())
        .route("/openapi.json", get(openapi::openapi_json))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(body::BodyLimit(max_body)))
        .layer(axum::middleware::from_fn(observe::request))
        .with_state(state)
}

/// The router of the `metrics_listen` address: `/metrics` without a key (that address is
/// meant for a private network only).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Rewrites `/{tenant}/api/v1/...` to `/api/v1/...`, remembering the tenant for [`auth::Auth`].
pub fn strip_tenant_prefix(mut req: Request) -> Request {
    let path = req.uri().path();
    let mut parts = path.splitn(3, '/').skip(1);
    let (Some(first), Some(rest)) = (parts.next(), parts.next()) else {
        return req;
    };
    if first.is_empty() || first == "api" || !(rest == "api/v1" || rest.starts_with("api/v1/")) {
        return req;
    }
    let tenant = first.to_owned();
    let new_path = format!("/{rest}");
    let pq = match req.uri().query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    if let Ok(uri) = pq.parse() {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(auth::PathTenant(tenant));
    }
    req
}

/// Why the API cannot listen on `addr`, and what to do, in one line.
fn listen_error(addr: &str, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process listens there: stop it, or choose another address with --listen (CRMHOOKS_LISTEN)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "ports below 1024 need privileges: choose another with --listen (CRMHOOKS_LISTEN)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address: use one of its own, or 0.0.0.0"
        }
        _ => "write it as HOST:PORT, e.g. 127.0.0.1:8080, with --listen (CRMHOOKS_LISTEN)",
    };
    format!("cannot listen on {addr}: {e}; {hint}")
}

/// A built server: listener bound, store open, dispatcher ready.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    config: Config,
    mail_rx: tokio::sync::mpsc::UnboundedReceiver<crmhooks_store::StateChange>,
    mailer: Arc<Mailer>,
}

impl Server {
    /// Opens the store, bootstraps the API key, binds `listener` (or `config.listen`).
    pub async fn build(config: Config, listener: Option<TcpListener>) -> anyhow::Result<Self> {
        let time_zone = config.local_zone()?;
        // Before anything registers a metric (the dispatcher keeps its handles).
        telemetry::install();
        let (keyring, key_warning) = secrets::master_keyring(&config)?;
        let bootstrap = secrets::bootstrap_key(&config)?;
        let store = crmhooks_store::open(
            &config.database,
            &OpenOptions {
                time_zone: time_zone.clone(),
                max_connections: config.pool_size,
                synchronous_full: config.sqlite_synchronous_full,
                wal_autocheckpoint: config.sqlite_wal_autocheckpoint,
                keyring,
                ..OpenOptions::default()
            },
        )
        .await
        .map_err(|e| match e {
            crmhooks_store::StoreError::Secret(_) => anyhow::anyhow!(
                "{e}. Nothing was changed: give the master key(s) this database was encrypted with (CRMHOOKS_MASTER_KEY or --master-key-file)"
            ),
            other => other.into(),
        })?;
        if let Some(w) = key_warning {
            tracing::warn!("{w}");
        }
        store.ensure_tenant(&config.tenant).await?;
        if let Some(key) = bootstrap.as_deref() {
            let done = store
                .bootstrap_key(&config.tenant, config.associate_id, key)
                .await?;
            if done.revoked {
                tracing::warn!(
                    key_id = done.id,
                    "the bootstrap key (CRMHOOKS_API_KEY) was revoked: it is refused; set another"
                );
            }
            if done.revoked_others > 0 {
                tracing::info!(
                    revoked = done.revoked_others,
                    "CRMHOOKS_API_KEY changed: the previous bootstrap key is revoked"
                );
            }
        }
        let listener = match listener {
            Some(l) => l,
            None => TcpListener::bind(&config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("{}", listen_error(&config.listen, &e)))?,
        };
        let metrics_listener = match config.metrics_listen.as_deref().filter(|a| !a.is_empty()) {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    listen_error(a, &e).replace(
                        "--listen (CRMHOOKS_LISTEN)",
                        "--metrics-listen (CRMHOOKS_METRICS_LISTEN)"
                    )
                )
            })?),
            None => None,
        };
        let addr = listener.local_addr()?;
        let dispatch = config.dispatch();
        // No delivery may reach this server's own API (a webhook calling its own SignalEvent
        // would loop for ever).
        dispatch.own_addresses.add(addr);
        let (dispatcher, mail_rx) = Dispatcher::new(store.clone(), dispatch)?;
        let smtp = config.smtp.as_ref().map(|s| SmtpConfig {
            host: s.host.clone(),
            port: s.port,
            from: s.from.clone(),
        });
        let mailer = Arc::new(Mailer::new(smtp.as_ref()).map_err(|e| anyhow::anyhow!(e))?);
        let state = AppState {
            store,
            dispatcher,
            keys: Arc::new(auth::KeyCache::default()),
            zone: time_zone.clone(),
            base_url: format!("http://{addr}").into(),
            test_on_save: config.test_on_save,
            http: Arc::default(),
            reveal_headers: config.reveal_headers,
            metrics_tenant_label: config.metrics_tenant_label,
        };
        Ok(Server {
            listener,
            metrics_listener,
            state,
            config,
            mail_rx,
            mailer,
        })
    }

    /// The bound address of `metrics_listen`, if set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The shared state (tests drive the dispatcher through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the API and runs the dispatcher and maintenance until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let Server {
            listener,
            metrics_listener,
            state,
            config,
            mut mail_rx,
            mailer,
        } = self;
        let app = router(state.clone(), config.max_body_bytes);
        let dispatcher = state.dispatcher.clone();
        let grace = Duration::from_secs_f64(config.delivery.shutdown_grace_secs);
        let dispatch_task = if config.delivery.enabled {
            Some(tokio::spawn(dispatcher.run(shutdown.clone(), grace)))
        } else {
            tracing::info!("delivery.enabled = false: this node stores and queues events but does not deliver them");
            None
        };
        let mail_task = tokio::spawn(async move {
            while let Some(change) = mail_rx.recv().await {
                mailer.notify(&change).await;
            }
        });
        let maintenance_task = tokio::spawn(maintenance::run(
            state.clone(),
            config.clone(),
            shutdown.clone(),
        ));
        let metrics_task = match metrics_listener {
            Some(l) => {
                tracing::info!(addr = %l.local_addr()?, "serving /metrics without a key");
                Some(tokio::spawn(http::serve(
                    l,
                    metrics_router(state.clone()),
                    http::Limits::of(&config),
                    Arc::default(),
                    shutdown.clone(),
                    grace,
                )))
            }
            None => None,
        };
        tracing::info!(addr = %listener.local_addr()?, database = %secrets::redact_url(&config.database), dev = config.dev, "crmhooks serving");
        http::serve(
            listener,
            app,
            http::Limits::of(&config),
            state.http.clone(),
            shutdown.clone(),
            grace,
        )
        .await;
        if let Some(t) = dispatch_task {
            let _ = t.await;
        }
        if let Some(t) = metrics_task {
            t.abort();
        }
        maintenance_task.abort();
        mail_task.abort();
        Ok(())
    }
}
