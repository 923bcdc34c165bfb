//! The Contact agent: CreateDefaultContactEntity, GetContactEntity, SaveContactEntity,
//! DeleteContactEntity. DeleteContactEntity puts the contact into the recycle bin
//! (`contact.softdeleted`), as `DELETE /api/v1/Contact/{id}` does.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crmhooks_store::contact::CONTACT;
use crmhooks_store::{ContactId, Row};
use serde_json::Value;

use super::{selected, Call};
use crate::auth::Auth;
use crate::carriers::contact::{ContactEntity, ContactInput};
use crate::carriers::field::{read_object, Spelling};
use crate::contact_api::{create_row, default_row, delete_row, replace_row, NOT_AN_ENTITY};
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The id parameter of GetContactEntity and DeleteContactEntity.
const ID: &str = "contactEntityId";

/// The entity of `row` as the agent answers it: without `_Links`.
fn entity(state: &AppState, row: &Row) -> ApiResult<Value> {
    let mut e = ContactEntity::of(row, &state.zone, &state.base_url);
    e.links = None;
    serde_json::to_value(e).map_err(ApiError::internal)
}

/// Runs method `method` of the Contact agent; `None` when it has no such method.
pub(super) async fn call(
    state: &AppState,
    auth: &Auth,
    method: &str,
    call: &Call,
) -> ApiResult<Option<Response>> {
    let select = call.select();
    let answer = |v: Value| Json(selected(v, select.as_deref())).into_response();
    let m = method.to_ascii_lowercase();
    Ok(Some(match m.as_str() {
        "createdefaultcontactentity" => answer(entity(state, &default_row())?),
        "getcontactentity" => {
            let id = ContactId::new(call.id(ID)?);
            match state
                .store
                .get_row(auth.actor.tenant_id, &CONTACT, id, false)
                .await?
            {
                Some(row) => answer(entity(state, &row)?),
                None => Json(Value::Null).into_response(),
            }
        }
        "savecontactentity" => {
            let body = call.entity("SaveContactEntity", "ContactEntity")?;
            let id = call.body_int("ContactId")?;
            let input: ContactInput = read_object(body, Spelling::FirstWins, NOT_AN_ENTITY)?;
            let row = if id == 0 {
                create_row(state, auth, &input).await?
            } else {
                replace_row(state, auth, ContactId::new(id), input).await?
            };
            let row = row.ok_or_else(|| ApiError::not_found("contact not found"))?;
            answer(entity(state, &row)?)
        }
        "deletecontactentity" => {
            let id = ContactId::new(call.id(ID)?);
            delete_row(state, auth, id, false).await?;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => return Ok(None),
    }))
}
