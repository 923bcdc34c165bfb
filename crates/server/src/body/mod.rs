//! The extractors of client input whose rejections are [`ApiError`]s: a JSON body (400 bad
//! JSON, 413 too large, 408 too slow), a query string and path parameters (400), each checked
//! for what no client string may hold ([`checks`]).

pub mod checks;
mod read;

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde_json::Value;

pub use read::{read_body, BodyLimit, BodyTimedOut};

use crate::error::{ApiError, ErrorCode};

/// Any JSON value, nested at most [`checks::MAX_DEPTH`] levels, without NUL characters; the
/// request body limit applies.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match OptionalJsonBody::read(req).await? {
            Some(v) => Ok(JsonBody(v)),
            None => Err(ApiError::new(
                ErrorCode::MissingBody,
                "the request needs a JSON body",
            )),
        }
    }
}

/// As [`JsonBody`], for routes where the body may be left out (`None`: empty or blank).
pub struct OptionalJsonBody(pub Option<Value>);

impl OptionalJsonBody {
    async fn read(req: Request) -> Result<Option<Value>, ApiError> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|t| !t.to_ascii_lowercase().contains("json"))
            .map(str::to_owned);
        let bytes = read_body(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            // The Content-Type is not checked (clients send JSON under many), but named when
            // it may explain the refusal.
            let sent_as = content_type
                .map(|t| format!(" (it was sent as {t:?})"))
                .unwrap_or_default();
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("the body is not valid JSON{sent_as}: {e}"),
            )
        })?;
        checks::check_json(&value)?;
        Ok(Some(value))
    }
}

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        Self::read(req).await.map(OptionalJsonBody)
    }
}

/// `Query<T>` whose rejection is a JSON [`ApiError`] naming the problem.
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        {
            checks::check_params(
                ErrorCode::InvalidQuery,
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
    }
}

/// `Path<T>` whose rejection is a JSON [`ApiError`].
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if let Ok(axum::extract::Path(params)) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state).await
        {
            checks::check_params(
                ErrorCode::InvalidPath,
                params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::new(ErrorCode::InvalidPath, e.body_text()))
    }
}
