//! The transport of the commands: reqwest, to any server URL.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::{ApiKey, BoxError, ClientError, Transport};

/// A crmhooks server reached over reqwest (HTTP or HTTPS, a connection pool, timeouts, no
/// redirects followed).
#[derive(Clone, Debug)]
pub struct HttpApi {
    http: reqwest::Client,
    base: String,
    key: ApiKey,
    timeout: Duration,
}

/// The server could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the crmhooks server at {base}")]
struct Unreachable {
    base: String,
    #[source]
    source: reqwest::Error,
}

impl HttpApi {
    /// The server at `url` (`http(s)://HOST:PORT`, possibly followed by a tenant, e.g.
    /// `http://host:8080/Acme`), called with `key`; each call may take two minutes.
    pub fn new(url: &str, key: ApiKey) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let mut base = url::Url::parse(url.trim()).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(invalid("expected http(s)://HOST:PORT"));
        }
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crmhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| invalid(&format!("cannot set up the HTTP client: {e}")))?;
        Ok(HttpApi {
            http,
            base: base.as_str().trim_end_matches('/').to_owned(),
            key,
            timeout: Duration::from_secs(120),
        })
    }

    /// The same server, with calls that may take `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Transport for HttpApi {
    fn base(&self) -> &str {
        &self.base
    }

    fn key(&self) -> &ApiKey {
        &self.key
    }

    async fn send(
        &mut self,
        request: http::Request<Bytes>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        let mut request = reqwest::Request::try_from(request)?;
        *request.timeout_mut() = Some(self.timeout);
        let answer = self
            .http
            .execute(request)
            .await
            .map_err(|source| Unreachable {
                base: self.base.clone(),
                source,
            })?;
        let status = answer.status();
        Ok((status, answer.bytes().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_keeps_a_tenant_and_drops_the_rest() -> Result<(), ClientError> {
        let key = ApiKey::new("k")?;
        let api = HttpApi::new(" http://h:1/Acme/?x=1#f ", key.clone())?;
        assert_eq!(api.base(), "http://h:1/Acme");
        let req = crate::routes::get_contact(5).request(api.base(), api.key())?;
        assert_eq!(req.uri(), "http://h:1/Acme/api/v1/Contact/5");
        assert_eq!(HttpApi::new("https://h", key.clone())?.base(), "https://h");
        for bad in ["ftp://h", "mailto:x@y", "h:1", ""] {
            assert!(
                matches!(HttpApi::new(bad, key.clone()), Err(ClientError::Url { .. })),
                "{bad:?}"
            );
        }
        Ok(())
    }
}
