//! A fuzz probe: one request, well formed at the HTTP level (sent with reqwest) or raw bytes
//! (sent on a socket), and what it must get back.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Who the request says it is.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Key,
    OtherTenant,
    /// An `Authorization` header as written.
    Raw(String),
}

/// One request.
#[derive(Clone, Debug)]
pub enum Probe {
    Http {
        method: String,
        /// Path and query, as sent.
        path: String,
        auth: Auth,
        content_type: Option<String>,
        body: Option<Vec<u8>>,
    },
    /// Bytes on a fresh connection (malformed HTTP; hyper answers or closes).
    Raw(Vec<u8>),
}

/// Where and as whom to send.
pub struct Target {
    pub base: String,
    pub key: String,
    pub other_key: String,
    pub http: reqwest::Client,
}

/// What a probe got, when it is a failure.
#[derive(Debug)]
pub struct Failure {
    pub probe: Probe,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.probe {
            Probe::Http {
                method,
                path,
                auth,
                content_type,
                body,
            } => {
                let body = body.as_deref().map(excerpt).unwrap_or_default();
                write!(
                    f,
                    "{method} {path} auth={auth:?} content-type={content_type:?} body={body}\n  → {}",
                    self.what
                )
            }
            Probe::Raw(bytes) => write!(f, "raw {}\n  → {}", excerpt(bytes), self.what),
        }
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(400).collect();
    if text.chars().count() > 400 {
        out.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    format!("{out:?}")
}

/// Why an answer is a failure: a 5xx that is not a database outage, or a refusal without the
/// JSON error body.
pub fn judge(status: u16, content_type: &str, body: &[u8], head: bool) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error_type = parsed
        .as_ref()
        .and_then(|v| v.get("ErrorType"))
        .and_then(Value::as_str);
    if status >= 500 && !(status == 503 && error_type == Some("DatabaseUnavailable")) {
        return Some(format!("{status}: {text}"));
    }
    if status >= 400 && !head {
        let shaped = parsed.as_ref().is_some_and(|v| {
            v.get("Error").is_some_and(Value::is_string)
                && v.get("ErrorType").is_some_and(Value::is_string)
                && v.get("Message").is_some_and(Value::is_string)
        });
        if !content_type.starts_with("application/json") || !shaped {
            return Some(format!(
                "{status} without the JSON error body ({content_type}): {text}"
            ));
        }
    }
    None
}

/// Sends `probe` and judges the answer: `Ok` with its status (`None` when reqwest cannot
/// express the request, an unparseable URL or header, or hyper closed a raw connection
/// without one), `Err` with why it is a failure.
pub async fn send(target: &Target, probe: &Probe) -> Result<Option<u16>, String> {
    match probe {
        Probe::Http {
            method,
            path,
            auth,
            content_type,
            body,
        } => {
            let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
                return Ok(None);
            };
            let Ok(url) = reqwest::Url::parse(&format!("{}{path}", target.base)) else {
                return Ok(None);
            };
            let head = method == reqwest::Method::HEAD;
            let mut req = target.http.request(method, url);
            match auth {
                Auth::None => {}
                Auth::Key => req = req.bearer_auth(&target.key),
                Auth::OtherTenant => req = req.bearer_auth(&target.other_key),
                Auth::Raw(v) => match reqwest::header::HeaderValue::from_str(v) {
                    Ok(v) => req = req.header(reqwest::header::AUTHORIZATION, v),
                    Err(_) => return Ok(None),
                },
            }
            if let Some(t) = content_type {
                match reqwest::header::HeaderValue::from_str(t) {
                    Ok(v) => req = req.header(reqwest::header::CONTENT_TYPE, v),
                    Err(_) => return Ok(None),
                }
            }
            if let Some(b) = body {
                req = req.body(b.clone());
            }
            let resp = req.send().await.map_err(|e| format!("no answer: {e:#}"))?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("{status}, then the body broke off: {e:#}"))?;
            match judge(status, &content_type, &body, head) {
                Some(why) => Err(why),
                None => Ok(Some(status)),
            }
        }
        Probe::Raw(bytes) => {
            let addr = target.base.trim_start_matches("http://");
            let mut tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let _ = tcp.write_all(bytes).await;
            let _ = tcp.shutdown().await;
            let mut out = Vec::new();
            // hyper answers malformed HTTP with its own bodiless 400, 414 or 431 and closes;
            // only a 5xx is a failure here.
            let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
            let text = String::from_utf8_lossy(&out);
            let status: u16 = text
                .strip_prefix("HTTP/1.1 ")
                .and_then(|r| r.get(..3))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if status >= 500 {
                return Err(format!("{status}: {text}"));
            }
            Ok((status > 0).then_some(status))
        }
    }
}
