//! The API's routes, one function per call (`/api/v1/Contact`, `/api/v1/Webhook`).

use http::Method;
use serde::Serialize;

use crate::{ApiCall, ClientError, NewWebhook, Replay};

/// `GET Contact`: a page of contacts, `top` of them after `skip`, optionally ordered
/// (`$orderBy`) and filtered (`$filter`).
pub fn list_contacts(
    top: u32,
    skip: u32,
    order_by: Option<String>,
    filter: Option<String>,
) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Contact"))
        .query("$top", Some(top.to_string()))
        .query("$skip", Some(skip.to_string()))
        .query("$orderBy", order_by)
        .query("$filter", filter)
}

/// `GET Contact/{id}`.
pub fn get_contact(id: i64) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Contact/{id}"))
}

/// `POST Contact`: `contact` is a ContactEntity (usually a [`ContactBody`](crate::ContactBody)).
pub fn create_contact(contact: &impl Serialize) -> Result<ApiCall, ClientError> {
    ApiCall::new(Method::POST, format_args!("Contact")).json(contact)
}

/// `PATCH Contact/{id}`: `patch` is a JSON merge patch.
pub fn change_contact(id: i64, patch: &impl Serialize) -> Result<ApiCall, ClientError> {
    ApiCall::new(Method::PATCH, format_args!("Contact/{id}")).json(patch)
}

/// `DELETE Contact/{id}`: into the recycle bin, or for good with `permanent`.
pub fn delete_contact(id: i64, permanent: bool) -> ApiCall {
    ApiCall::new(Method::DELETE, format_args!("Contact/{id}"))
        .query("permanent", permanent.then(|| "true".to_owned()))
}

/// `POST Contact/{id}/Restore`.
pub fn restore_contact(id: i64) -> ApiCall {
    ApiCall::new(Method::POST, format_args!("Contact/{id}/Restore"))
}

/// `GET Webhook`, filtered by exact name, subscribed event and state.
pub fn list_webhooks(
    name: Option<String>,
    event: Option<String>,
    state: Option<String>,
) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook"))
        .query("nameFilter", name)
        .query("eventFilter", event)
        .query("statusFilter", state)
}

/// `GET Webhook/{id}`.
pub fn get_webhook(id: i64) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook/{id}"))
}

/// `GET Webhook/{id}/LastError`.
pub fn webhook_last_error(id: i64) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook/{id}/LastError"))
}

/// `GET Webhook/{id}/Usage`.
pub fn webhook_usage(id: i64) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook/{id}/Usage"))
}

/// `POST Webhook`.
pub fn create_webhook(webhook: &NewWebhook) -> Result<ApiCall, ClientError> {
    ApiCall::new(Method::POST, format_args!("Webhook")).json(webhook)
}

/// `PATCH Webhook/{id}` of its `State` (`Active` or `Stopped`).
pub fn set_webhook_state(id: i64, state: &str) -> Result<ApiCall, ClientError> {
    #[derive(Serialize)]
    struct StatePatch<'a> {
        #[serde(rename = "State")]
        state: &'a str,
    }
    ApiCall::new(Method::PATCH, format_args!("Webhook/{id}")).json(&StatePatch { state })
}

/// `DELETE Webhook/{id}`.
pub fn delete_webhook(id: i64) -> ApiCall {
    ApiCall::new(Method::DELETE, format_args!("Webhook/{id}"))
}

/// `GET Webhook/{id}/Deliveries`, newest first, optionally of one status and at most `limit`.
pub fn webhook_deliveries(id: i64, status: Option<String>, limit: Option<u32>) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook/{id}/Deliveries"))
        .query("status", status)
        .query("limit", limit.map(|n| n.to_string()))
}

/// `POST Webhook/{id}/Replay`: starts a replay job (its result when it ends within a moment,
/// else its progress; see [`replay_progress`]).
pub fn replay(id: i64, replay: &Replay) -> Result<ApiCall, ClientError> {
    ApiCall::new(Method::POST, format_args!("Webhook/{id}/Replay")).json(replay)
}

/// `GET Webhook/{id}/Replay/{replay_id}`: a replay job's progress.
pub fn replay_progress(id: i64, replay_id: i64) -> ApiCall {
    ApiCall::new(Method::GET, format_args!("Webhook/{id}/Replay/{replay_id}"))
}
