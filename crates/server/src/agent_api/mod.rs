//! `/api/v1/Agents/...`: SuperOffice's RPC-style agent API over the same store, events and
//! tenant rules as the REST routes. Every method is a POST (a GET of one is 405, where
//! SuperOffice answers a description); method names match in any case.
//!
//! Request and response shapes follow SuperOffice's reference pages: the entity of a
//! `Save…` method is the whole body, bare; `Get…`/`Delete…` take the id in the query string
//! (`?webhookId=`, `?contactEntityId=`, any case), and also, harmlessly, as the same property
//! of a JSON body; the other methods take a request object (`{"WebhookId": 5}`,
//! `{"NameFilter": …}`, `{"Webhook": {…}}`, `{"EventName", "PrimaryKey", "Data"}`).
//!
//! Choices where SuperOffice's docs are silent or say "a failed call returns NULL": a `Get…`
//! of an id that does not exist answers 200 with `null`, as documented; a missing or
//! malformed parameter, a refused entity and a `Delete…`, `Save…` or `GetLastError` of an id
//! that does not exist answer 4xx with the JSON error body of the REST API (nothing is
//! saved half). Entities come back without `_Links` (the agent carriers have none).
//! `$select` nulls out the properties it does not name, as SuperOffice's pages describe.

mod contact;
mod webhook;

use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{Map, Value};

use crate::auth::Auth;
use crate::body::{ApiPath, ApiQuery, OptionalJsonBody};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::AppState;

/// What an agent method gets: the query string's pairs and the body, if any.
pub(crate) struct Call {
    query: Vec<(String, String)>,
    body: Option<Value>,
}

impl Call {
    /// The query parameter `name`, any case.
    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The property `name` of the body object, any case (`null` counts as absent).
    fn body_property(&self, name: &str) -> Option<&Value> {
        self.body
            .as_ref()?
            .as_object()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    /// The whole body: the entity a `Save…` method saves.
    fn entity(&self, method: &str, entity: &str) -> ApiResult<Value> {
        self.body.clone().ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingBody,
                format!("{method} needs a {entity} as the body"),
            )
        })
    }

    /// The int32 property `name` of the body; 0 (SuperOffice's "none", "new") when absent.
    fn body_int(&self, name: &str) -> ApiResult<i64> {
        match self.body_property(name) {
            None => Ok(0),
            Some(v) => v
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .ok_or_else(|| ApiError::invalid_field(name, "must be an int32")),
        }
    }

    /// The body as a request object: `{}` when there is none; an error for a body that is not
    /// an object.
    fn request(&self) -> ApiResult<Map<String, Value>> {
        match &self.body {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidBody,
                "the body must be a JSON object",
            )),
        }
    }

    /// The int32 parameter `name`: from the query string, else from the body.
    fn id(&self, name: &str) -> ApiResult<i64> {
        let raw = match (self.query(name), self.body_property(name)) {
            (Some(q), _) => q.trim().to_owned(),
            (None, Some(Value::Number(n))) => n.to_string(),
            (None, Some(Value::String(s))) => s.trim().to_owned(),
            (None, Some(other)) => other.to_string(),
            (None, None) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("the parameter {name} is missing (?{name}=123)"),
                ))
            }
        };
        raw.parse::<i32>().map(i64::from).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidId,
                format!("{name} {raw:?} is not an int32"),
            )
        })
    }

    /// `$select`, if given: the property names to keep.
    fn select(&self) -> Option<Vec<String>> {
        self.query("$select").map(|s| {
            s.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect()
        })
    }
}

/// `value` (an entity, or an array of them) with the properties `$select` does not name set
/// to `null`; names match in any case, and `a/b` keeps property `a`.
fn selected(mut value: Value, select: Option<&[String]>) -> Value {
    let Some(select) = select else {
        return value;
    };
    let keep = |k: &str| {
        select.iter().any(|s| {
            s.split('/')
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case(k))
        })
    };
    let null_out = |m: &mut Map<String, Value>| {
        for (k, v) in m.iter_mut() {
            if !keep(k) {
                *v = Value::Null;
            }
        }
    };
    match &mut value {
        Value::Object(m) => null_out(m),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(m) = item {
                    null_out(m);
                }
            }
        }
        _ => {}
    }
    value
}

fn no_such_method(agent: &str, method: &str) -> ApiError {
    ApiError::not_found(format!(
        "the {agent} agent has no method {method:?} (see README: coming from SuperOffice)"
    ))
}

async fn dispatch(
    State(state): State<AppState>,
    auth: Auth,
    ApiPath((agent, method)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Response> {
    // The same body checks as the REST routes (limit, depth, no NUL character).
    let call = Call { query, body };
    if agent.eq_ignore_ascii_case("Webhook") {
        webhook::call(&state, &auth, &method, &call)
            .await?
            .ok_or_else(|| no_such_method("Webhook", &method))
    } else if agent.eq_ignore_ascii_case("Contact") {
        contact::call(&state, &auth, &method, &call)
            .await?
            .ok_or_else(|| no_such_method("Contact", &method))
    } else {
        Err(ApiError::not_found(format!(
            "no agent {agent:?}; crmhooks has the Webhook and Contact agents"
        )))
    }
}

/// The agent routes (mounted under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/Agents/{agent}/{method}", post(dispatch))
}
