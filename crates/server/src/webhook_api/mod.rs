//! `/api/v1/Webhook`: definitions (spec 5), test and signal, and our additions: usage,
//! the delivery log, and replay.
//!
//! - [`definition`]: the `default` carrier, list, create, read, replace, patch, delete;
//! - [`signal`]: `Test` (a test event to a definition not saved) and signalling an event;
//! - [`log`]: usage and the delivery log;
//! - [`replay`]: replay of past events, as a job.
//!
//! `Secret` is write-only: accepted on POST, PUT and PATCH, never returned (responses carry
//! `"Secret": null`). A PUT or PATCH without `Secret` or with `"Secret": null` keeps the stored
//! one (so SuperOffice's GetWebhook → SaveWebhook round trip keeps deliveries signed); only
//! `""`, or a JSON Patch `remove` of `/Secret`, removes it.

pub(crate) mod definition;
pub(crate) mod log;
mod replay;
pub(crate) mod signal;

use axum::routing::{get, post};
use axum::Router;
use crmhooks_store::{Webhook, WebhookId};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

pub use replay::REPLAY_MAX;

pub(crate) const NOT_A_WEBHOOK: &str = "the body must be a Webhook JSON object";

fn parse_id(raw: &str) -> ApiResult<WebhookId> {
    raw.parse::<i32>()
        .map(|n| WebhookId::new(i64::from(n)))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidId,
                format!("webhook id {raw:?} is not an int32"),
            )
        })
}

/// The webhook `id` (as in the path) of the caller's tenant.
async fn load(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Webhook> {
    let id = parse_id(id)?;
    state
        .store
        .get_webhook(auth.actor.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id} not found")))
}

/// The webhook routes' operations (nested under `/api/v1` in [`crate::openapi`]): one
/// handler of [`router`] a line.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    definition::list,
    definition::create,
    definition::get_default,
    signal::test,
    definition::get_one,
    definition::put,
    definition::patch_one,
    definition::delete,
    log::last_error,
    log::usage,
    log::deliveries,
    log::delivery,
    log::resend,
    replay::replay,
    replay::replay_progress,
    signal::signal,
))]
pub struct Doc;

/// The webhook routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    use definition::{create, delete, get_default, get_one, list, patch_one, put};
    use log::{deliveries, delivery, last_error, resend, usage};
    use replay::{replay, replay_progress};
    use signal::{signal, test};
    Router::new()
        .route("/Webhook", get(list).post(create))
        .route("/Webhook/default", get(get_default))
        .route("/Webhook/Test", post(test))
        .route(
            "/Webhook/{id}",
            get(get_one).put(put).patch(patch_one).delete(delete),
        )
        .route("/Webhook/{id}/LastError", get(last_error))
        .route("/Webhook/{id}/Usage", get(usage))
        .route("/Webhook/{id}/Deliveries", get(deliveries))
        .route("/Webhook/{id}/Deliveries/{delivery_id}", get(delivery))
        .route(
            "/Webhook/{id}/Deliveries/{delivery_id}/Resend",
            post(resend),
        )
        .route("/Webhook/{id}/Replay", post(replay))
        .route("/Webhook/{id}/Replay/{replay_id}", get(replay_progress))
        .route("/Webhook/{id}/{pk}", post(signal))
}
