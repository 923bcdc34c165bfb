//! Replay of past events for one webhook (our addition), as a job that runs in bounded
//! batches: `POST …/Replay` starts it and answers with its result when it ends within a moment
//! (200), else with its progress so far (202, `Location` of the job); `GET …/Replay/{replayId}`
//! reads its progress.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmhooks_store::{ReplayJob, ReplayRequest};
use serde::{Deserialize, Serialize};

use super::log::{parse_time, parse_times};
use super::{load, parse_id};
use crate::auth::Auth;
use crate::body::{ApiPath, JsonBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

/// Most events one replay request may queue.
pub const REPLAY_MAX: i64 = 100_000;

/// How long `POST …/Replay` waits for its job to end before it answers with the progress.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What to replay: the events of a time window the webhook subscribes to.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(examples(json!({"since": "2026-01-01T00:00:00Z", "onlyFailed": true})))]
pub(crate) struct ReplayBody {
    /// Start of the window (RFC 3339 or a .NET date).
    since: String,
    /// End of the window; now when absent.
    until: Option<String>,
    /// Only events whose delivery to this webhook failed.
    #[serde(default)]
    only_failed: bool,
    /// Most events to queue (at most 100,000, the default).
    limit: Option<i64>,
}

/// A replay job as clients see it (the names of the request's body, camelCase).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Replay, examples(json!({"replayId": 1, "status": "Done", "matched": 1, "queued": 1, "skipped": 0, "error": null})))]
pub struct ReplayCarrier {
    /// Its id, for `GET …/Replay/{replayId}`.
    pub replay_id: i64,
    /// `Running`, `Done` or `Failed`.
    #[schema(value_type = crate::openapi::schemas::ReplayStatusName)]
    pub status: &'static str,
    /// Events of the window the webhook subscribes to, handled so far.
    pub matched: u64,
    /// Deliveries queued.
    pub queued: u64,
    /// Events skipped: a delivery still open, or (with `onlyFailed`) delivered.
    pub skipped: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl ReplayCarrier {
    fn of(job: &ReplayJob) -> Self {
        ReplayCarrier {
            replay_id: job.id,
            status: job.status.name(),
            matched: job.report.matched,
            queued: job.report.queued,
            skipped: job.report.skipped,
            error: job.error.clone(),
        }
    }
}

#[utoipa::path(post, path = "/Webhook/{id}/Replay", tag = "Deliveries", operation_id = "ReplayWebhook",
    summary = "Replay past events to a webhook",
    params(("id" = i32, Path, description = "The webhook.")), request_body = ReplayBody,
    responses(
        (status = 200, description = "The job ended within a moment: its result.", body = ReplayCarrier),
        (status = 202, description = "Still running: its progress so far; `Location` names the job.", body = ReplayCarrier,
            headers(("Location" = String, description = "`/api/v1/Webhook/{id}/Replay/{replay_id}`"))),
    ))]
pub(super) async fn replay(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let hook = load(&state, &auth, &id).await?;
    let body: ReplayBody = serde_json::from_value(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("replay body: {e} (expected {{\"since\": RFC 3339, \"until\"?, \"onlyFailed\"?, \"limit\"?}})"),
        )
    })?;
    let req = ReplayRequest {
        since: parse_time("since", &body.since)?,
        until: parse_times("until", body.until.as_deref())?,
        only_failed: body.only_failed,
        limit: body.limit.unwrap_or(REPLAY_MAX).clamp(1, REPLAY_MAX),
    };
    let job = state
        .store
        .start_replay(auth.actor.tenant_id, hook.id, &req)
        .await?;
    crate::audit::by(
        &state,
        &auth,
        "webhook.replayed",
        format!("webhook/{}", hook.id),
        format!(
            "replay {}: since {}, until {}, onlyFailed {}, limit {}",
            job.id,
            body.since,
            body.until.as_deref().unwrap_or("now"),
            req.only_failed,
            req.limit
        ),
    )
    .await;
    let mut running = tokio::spawn(crate::replay::run(state.clone(), job.id));
    let finished = match tokio::time::timeout(ANSWER_WITHIN, &mut running).await {
        Ok(Ok(Ok(job))) => Some(job),
        Ok(Ok(Err(e))) => return Err(e.into()),
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(_) => None,
    };
    if let Some(job) = finished {
        return Ok(Json(ReplayCarrier::of(&job)).into_response());
    }
    // Still running (it goes on in the background): its progress so far, and where to watch.
    let job = state
        .store
        .get_replay(auth.actor.tenant_id, hook.id, job.id)
        .await?
        .unwrap_or(job);
    let location = format!("/api/v1/Webhook/{}/Replay/{}", hook.id, job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(ReplayCarrier::of(&job)),
    )
        .into_response())
}

#[utoipa::path(get, path = "/Webhook/{id}/Replay/{replay_id}", tag = "Deliveries", operation_id = "GetReplay",
    summary = "A replay job's progress",
    params(("id" = i32, Path, description = "The webhook."), ("replay_id" = i32, Path, description = "The replay job.")),
    responses((status = 200, description = "The job's progress.", body = ReplayCarrier)))]
pub(super) async fn replay_progress(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((id, replay_id)): ApiPath<(String, String)>,
) -> ApiResult<Json<ReplayCarrier>> {
    let hook = load(&state, &auth, &id).await?;
    let replay_id = parse_id(&replay_id)?.get();
    let job = state
        .store
        .get_replay(auth.actor.tenant_id, hook.id, replay_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "replay {replay_id} of webhook {} not found",
                hook.id
            ))
        })?;
    Ok(Json(ReplayCarrier::of(&job)))
}
