//! One call of the API, and the key it is made with.

use std::fmt;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method};
use serde::Serialize;

use crate::ClientError;

/// One call of the API: method, path (`/api/v1/…`), query and JSON body. Made by the functions
/// of [`routes`](crate::routes); displayed as `METHOD /path`.
#[derive(Clone, Debug)]
pub struct ApiCall {
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Bytes>,
}

impl ApiCall {
    /// A call of `path` under `/api/v1` (e.g. `Contact/5`), without body or query.
    pub(crate) fn new(method: Method, path: std::fmt::Arguments<'_>) -> Self {
        ApiCall {
            method,
            path: format!("/api/v1/{path}"),
            query: Vec::new(),
            body: None,
        }
    }

    /// The call with `body` as its JSON body.
    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(ClientError::Encode)?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// The call with `key=value` in its query when there is a value.
    pub(crate) fn query(mut self, key: &'static str, value: Option<String>) -> Self {
        if let Some(v) = value {
            self.query.push((key, v));
        }
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, `/api/v1/…`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The HTTP request of this call to the server at `base` (`http://HOST:PORT[/TENANT]`, or
    /// empty for a request that carries only its path), with `key` in `Authorization` and, with
    /// a body, `Content-Type: application/json`.
    pub fn request(&self, base: &str, key: &ApiKey) -> Result<http::Request<Bytes>, ClientError> {
        let mut uri = String::with_capacity(base.len() + self.path.len());
        uri.push_str(base);
        uri.push_str(&self.path);
        if !self.query.is_empty() {
            uri.push('?');
            uri.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&self.query)
                    .finish(),
            );
        }
        let mut request = http::Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .header(AUTHORIZATION, key.0.clone());
        if self.body.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        request
            .body(self.body.clone().unwrap_or_default())
            .map_err(|source| ClientError::Request {
                call: self.to_string(),
                source,
            })
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// An API key, sent as `Authorization: Bearer KEY` (and kept out of `Debug` output).
#[derive(Clone)]
pub struct ApiKey(HeaderValue);

impl ApiKey {
    /// The key, without surrounding whitespace; refused when empty or not sendable in a header.
    pub fn new(key: &str) -> Result<Self, ClientError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(ClientError::Key("is empty"));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ClientError::Key("is not a valid header value"))?;
        value.set_sensitive(true);
        Ok(ApiKey(value))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes;

    #[test]
    fn requests_carry_the_path_query_key_and_body() -> Result<(), ClientError> {
        let key = ApiKey::new(" k1 ")?;
        let call = routes::delete_contact(5, true);
        let req = call.request("http://h:1/Acme", &key)?;
        assert_eq!(req.method(), Method::DELETE);
        assert_eq!(
            req.uri().to_string(),
            "http://h:1/Acme/api/v1/Contact/5?permanent=true"
        );
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer k1");
        assert!(req.headers().get(CONTENT_TYPE).is_none());
        assert!(req.body().is_empty());
        assert_eq!(call.to_string(), "DELETE /api/v1/Contact/5");

        let call = routes::list_webhooks(Some("a b&c".into()), None, Some("Active".into()));
        let req = call.request("", &key)?;
        assert_eq!(
            req.uri().to_string(),
            "/api/v1/Webhook?nameFilter=a+b%26c&statusFilter=Active"
        );

        let patch = crate::ContactBody {
            department: Some("Ops"),
            ..Default::default()
        };
        let req = routes::change_contact(7, &patch)?.request("", &key)?;
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(req.uri(), "/api/v1/Contact/7");
        assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(&req.body()[..], br#"{"Department":"Ops"}"#);

        assert!(matches!(ApiKey::new("  "), Err(ClientError::Key(_))));
        assert!(matches!(ApiKey::new("a\nb"), Err(ClientError::Key(_))));
        assert_eq!(format!("{key:?}"), "ApiKey(…)");
        Ok(())
    }
}
