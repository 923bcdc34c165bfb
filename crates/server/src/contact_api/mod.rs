//! `/api/v1/Contact`: the ContactEntity of spec 8 (see [`crate::carriers::contact`]) read,
//! created, replaced, patched, soft-deleted, restored and deleted, each change in one store
//! transaction with its events.
//!
//! A missing or null property means its default (empty string, 0, no date), so a PUT
//! replaces the entity and a GET → edit → PUT changes only the edit. Wrong types and
//! over-long strings are refused with 400 naming the property.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crmhooks_store::contact::{soundex, CONTACT};
use crmhooks_store::{
    now_ticks, Change, ChangeFn, ChangeOutcome, ChangeVerb, ContactId, Row, StoreError, Value,
};
use serde::Deserialize;

use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery, JsonBody};
use crate::carriers::contact::{Absent, ContactEntity, ContactInput};
use crate::carriers::field::{read_object, Spelling};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::{patch, AppState};

pub mod list;
#[cfg(test)]
mod tests;

pub(crate) const NOT_AN_ENTITY: &str = "the body must be a ContactEntity JSON object";

/// `soundEx` follows the name.
fn set_soundex(row: &mut Row) {
    let name = row
        .get(&CONTACT, "name")
        .as_str()
        .unwrap_or_default()
        .to_owned();
    row.set(&CONTACT, "soundEx", Value::Text(soundex(&name)));
}

/// Writes `input` over `row` (absent properties as `absent` says), then what follows from it.
fn apply(input: &ContactInput, row: &mut Row, absent: Absent) -> ApiResult<()> {
    input.apply_to(row, absent)?;
    set_soundex(row);
    Ok(())
}

/// A Merge Patch whose values are all strings, numbers or booleans (the usual one: "set these
/// fields"). It changes exactly the fields it names, so it is applied to the row directly,
/// without rendering the whole entity as JSON, merging, and reading it back (the same result;
/// `scalar_merge_patch_matches_the_document_route` checks it).
fn is_scalar_merge(patch: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match patch {
        J::Object(m) => m
            .values()
            .all(|v| matches!(v, J::String(_) | J::Number(_) | J::Bool(_))),
        _ => false,
    }
}

/// A new contact row with defaults: zeros, empty strings, no dates.
pub(crate) fn default_row() -> Row {
    let mut row = Row::empty(&CONTACT);
    for (i, c) in CONTACT.columns.iter().enumerate() {
        row.values[i] = match c.kind {
            crmhooks_store::ColumnKind::Text { .. } => Value::Text(String::new()),
            crmhooks_store::ColumnKind::Date | crmhooks_store::ColumnKind::Key => Value::Null,
            _ => Value::Int(0),
        };
    }
    row
}

/// Why a change function refuses the change: an answer for the client, or a store error
/// (the contact is not there).
enum Refused {
    Api(ApiError),
    Store(StoreError),
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Api(e)
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

/// Runs `change` on contact `pk` (a new contact for `None`) in one store transaction, then
/// wakes the dispatcher for what it queued. An [`ApiError`] the change decides on leaves the
/// store as [`StoreError::Rejected`] and is answered as it was made.
async fn change_contact(
    state: &AppState,
    auth: &Auth,
    pk: Option<ContactId>,
    mut change: impl FnMut(Option<&Row>) -> Result<Change, Refused> + Send + 'static,
) -> ApiResult<ChangeOutcome> {
    let change: ChangeFn = Box::new(move |current| {
        change(current).map_err(|refused| match refused {
            Refused::Store(e) => e,
            Refused::Api(e) => StoreError::rejected(e),
        })
    });
    let out = state
        .store
        .apply_change(&auth.actor, &CONTACT, pk, change)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("contact not found"),
            other => ApiError::from(other),
        })?;
    state.committed(&auth.actor, &out.committed);
    Ok(out)
}

/// The row of a contact that is not in the recycle bin.
fn live(current: Option<&Row>) -> Result<&Row, StoreError> {
    match current {
        Some(r) if r.get(&CONTACT, "deleted").as_i64() == 0 => Ok(r),
        _ => Err(StoreError::NotFound),
    }
}

fn respond(state: &AppState, row: Option<Row>) -> ApiResult<Response> {
    let row = row.ok_or_else(|| ApiError::not_found("contact not found"))?;
    Ok(Json(ContactEntity::of(&row, &state.zone, &state.base_url)).into_response())
}

pub(crate) fn parse_id(raw: &str) -> ApiResult<ContactId> {
    raw.parse::<i32>()
        .map(|n| ContactId::new(i64::from(n)))
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidId,
                format!("contact id {raw:?} is not an int32"),
            )
        })
}

#[utoipa::path(get, path = "/Contact/default", tag = "Contact", operation_id = "GetDefaultContact",
    summary = "A new contact's defaults",
    responses((status = 200, description = "A new contact's defaults (not saved).", body = ContactEntity)))]
async fn get_default(State(state): State<AppState>, _auth: Auth) -> Response {
    let row = default_row();
    Json(ContactEntity::of(&row, &state.zone, &state.base_url)).into_response()
}

#[utoipa::path(get, path = "/Contact/{id}", tag = "Contact", operation_id = "GetContact",
    summary = "Get a contact",
    params(("id" = i32, Path, description = "The contact.")), responses((status = 200, description = "The contact (not one in the recycle bin).", body = ContactEntity)))]
async fn get_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let row = state
        .store
        .get_row(auth.actor.tenant_id, &CONTACT, id, false)
        .await?;
    respond(&state, row)
}

#[utoipa::path(post, path = "/Contact", tag = "Contact", operation_id = "CreateContact",
    summary = "Create a contact",
    request_body = ContactInput,
    responses((status = 200, description = "The new contact (`Name` is required); fires `contact.created`.", body = ContactEntity)))]
async fn create(
    State(state): State<AppState>,
    auth: Auth,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let input: ContactInput = read_object(body, Spelling::FirstWins, NOT_AN_ENTITY)?;
    let row = create_row(&state, &auth, &input).await?;
    respond(&state, row)
}

/// A new contact from `input` (`POST /Contact`, the agent's SaveContactEntity with id 0);
/// the stored row.
pub(crate) async fn create_row(
    state: &AppState,
    auth: &Auth,
    input: &ContactInput,
) -> ApiResult<Option<Row>> {
    if input.name.is_absent() {
        return Err(ApiError::invalid_field("Name", "is required"));
    }
    let mut row = default_row();
    apply(input, &mut row, Absent::IsDefault)?;
    let out = change_contact(state, auth, None, move |_| Ok(Change::Create(row.clone()))).await?;
    Ok(out.row)
}

/// Live contact `id` replaced by `input` (`PUT /Contact/{id}`, the agent's
/// SaveContactEntity); the stored row.
pub(crate) async fn replace_row(
    state: &AppState,
    auth: &Auth,
    id: ContactId,
    input: ContactInput,
) -> ApiResult<Option<Row>> {
    let out = change_contact(state, auth, Some(id), move |current| {
        let current = live(current)?;
        let mut row = current.clone();
        apply(&input, &mut row, Absent::IsDefault)?;
        Ok(Change::Update {
            row,
            verb: ChangeVerb::Changed,
        })
    })
    .await?;
    Ok(out.row)
}

/// Edits the live contact `id` in one store transaction: `edit` gets the stored row and a
/// copy to change; the answer is the row after the change.
async fn edit_live(
    state: &AppState,
    auth: &Auth,
    id: ContactId,
    mut edit: impl FnMut(&Row, &mut Row) -> ApiResult<()> + Send + 'static,
) -> ApiResult<Response> {
    let out = change_contact(state, auth, Some(id), move |current| {
        let current = live(current)?;
        let mut row = current.clone();
        edit(current, &mut row)?;
        Ok(Change::Update {
            row,
            verb: ChangeVerb::Changed,
        })
    })
    .await?;
    respond(state, out.row)
}

#[utoipa::path(put, path = "/Contact/{id}", tag = "Contact", operation_id = "ReplaceContact",
    summary = "Replace a contact",
    params(("id" = i32, Path, description = "The contact.")), request_body = ContactInput,
    responses((status = 200, description = "The contact; fires `contact.changed` when something changed.", body = ContactEntity)))]
async fn put(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let input: ContactInput = read_object(body, Spelling::FirstWins, NOT_AN_ENTITY)?;
    let row = replace_row(&state, &auth, id, input).await?;
    respond(&state, row)
}

#[utoipa::path(patch, path = "/Contact/{id}", tag = "Contact", operation_id = "PatchContact",
    summary = "Patch a contact",
    params(("id" = i32, Path, description = "The contact.")), request_body = crate::openapi::schemas::PatchBody,
    responses(
        (status = 200, description = "The contact; fires `contact.changed` when something changed.", body = ContactEntity),
        (status = 409, description = "A JSON Patch `test` failed.", body = crate::error::ErrorBody),
    ))]
async fn patch_one(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let (zone, base) = (state.zone.clone(), state.base_url.clone());
    let fields: Option<ContactInput> = if is_scalar_merge(&body) {
        Some(read_object(
            body.clone(),
            Spelling::LastWins,
            NOT_AN_ENTITY,
        )?)
    } else {
        None
    };
    edit_live(&state, &auth, id, move |current, row| match &fields {
        Some(fields) => apply(fields, row, Absent::Keeps),
        None => apply(
            &patched(current, &zone, &base, &body)?,
            row,
            Absent::IsDefault,
        ),
    })
    .await
}

/// The entity of `current` with `patch` (JSON Patch or Merge Patch) applied, read back.
fn patched(
    current: &Row,
    zone: &crmhooks_store::LocalZone,
    base_url: &str,
    patch: &serde_json::Value,
) -> ApiResult<ContactInput> {
    let mut doc = serde_json::to_value(ContactEntity::of(current, zone, base_url))
        .map_err(ApiError::internal)?;
    patch::apply(&mut doc, patch).map_err(patch::PatchError::into_api)?;
    read_object(doc, Spelling::FirstWins, NOT_AN_ENTITY)
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    permanent: Option<String>,
}

#[utoipa::path(delete, path = "/Contact/{id}", tag = "Contact", operation_id = "DeleteContact",
    summary = "Delete a contact",
    params(("id" = i32, Path, description = "The contact."), ("permanent" = Option<bool>, Query, description = "`true`: remove at once (`contact.deleted`), even from the recycle bin; else into the recycle bin (`contact.softdeleted`).")),
    responses((status = 204, description = "Deleted.")))]
async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    let permanent = match q
        .permanent
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("permanent={other:?}: use true or false"),
            ))
        }
    };
    delete_row(&state, &auth, id, permanent).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Contact `id` into the recycle bin (`contact.softdeleted`), or removed for good when
/// `permanent` (`contact.deleted`).
pub(crate) async fn delete_row(
    state: &AppState,
    auth: &Auth,
    id: ContactId,
    permanent: bool,
) -> ApiResult<()> {
    change_contact(state, auth, Some(id), move |current| {
        if permanent {
            return current
                .map(|_| Change::Delete)
                .ok_or_else(|| StoreError::NotFound.into());
        }
        let mut row = live(current)?.clone();
        row.set(&CONTACT, "deleted", Value::Int(1));
        row.set(&CONTACT, "DeletedDate", Value::Date(now_ticks()));
        Ok(Change::Update {
            row,
            verb: ChangeVerb::SoftDeleted,
        })
    })
    .await?;
    Ok(())
}

#[utoipa::path(post, path = "/Contact/{id}/Restore", tag = "Contact", operation_id = "RestoreContact",
    summary = "Restore a contact from the recycle bin",
    params(("id" = i32, Path, description = "The contact.")),
    responses(
        (status = 200, description = "The contact, out of the recycle bin; fires `contact.changed`.", body = ContactEntity),
        (status = 409, description = "The contact is not in the recycle bin.", body = crate::error::ErrorBody),
    ))]
async fn restore(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let out = change_contact(&state, &auth, Some(id), |current| {
        let row = current.ok_or(StoreError::NotFound)?;
        if row.get(&CONTACT, "deleted").as_i64() == 0 {
            return Err(ApiError::conflict("the contact is not in the recycle bin").into());
        }
        let mut row = row.clone();
        row.set(&CONTACT, "deleted", Value::Int(0));
        row.set(&CONTACT, "DeletedDate", Value::Null);
        Ok(Change::Update {
            row,
            verb: ChangeVerb::Changed,
        })
    })
    .await?;
    respond(&state, out.row)
}

/// The contact routes' operations (nested under `/api/v1` in [`crate::openapi`]): one
/// handler of [`router`] a line.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list::list,
    create,
    get_default,
    get_one,
    put,
    patch_one,
    delete,
    restore
))]
pub struct Doc;

/// The contact routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Contact", get(list::list).post(create))
        .route("/Contact/default", get(get_default))
        .route(
            "/Contact/{id}",
            get(get_one).put(put).patch(patch_one).delete(delete),
        )
        .route("/Contact/{id}/Restore", post(restore))
}
