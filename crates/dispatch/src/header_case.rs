//! Header names on the wire spelled as SuperOffice spells them, and custom headers spelled as
//! their definition gave them.
//!
//! `http::HeaderMap` keeps names in lower case. hyper's HTTP/1 client writes them in title case
//! when asked ([`title_case_headers`]), which is exactly the seed's spelling for every standard
//! header (`X-Superoffice-Eventid`, `Content-Type`, `Host`, `Content-Length`). A custom header
//! such as `X-API-key` would come out as `X-Api-Key`, though: its own case needs hyper's
//! header-case map, an extension that hyper keeps private. hyper fills that map itself when it
//! parses a message on a connection with [`preserve_header_case`], and writes a request with
//! the spellings of a map found in the request's extensions (the "forward the cases in a
//! proxy-like fashion" of its docs); names the map does not hold fall back to title case.
//!
//! So [`case_extensions`] lets hyper parse, in memory, a response head that carries the custom
//! names as the definition spells them, and keeps the parsed message's extensions (which hold
//! the map) to put on each outgoing request. Only names that title case would change need it,
//! and the result is cached per set of names: a delivery normally pays nothing for it.
//!
//! [`title_case_headers`]: hyper::client::conn::http1::Builder::title_case_headers
//! [`preserve_header_case`]: hyper::client::conn::http1::Builder::preserve_header_case

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `name` as hyper's title case writes it: the first letter and each one after a `-` upper
/// case, the others as given (hyper lowercases names before, so: lower case).
pub fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut after_dash = true;
    for c in name.chars() {
        out.push(if after_dash {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        after_dash = c == '-';
    }
    out
}

/// The custom header names whose spelling title case would change (they need the case map).
pub fn own_case_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .filter(|n| title_case(n) != *n)
        .map(str::to_owned)
        .collect()
}

/// Sets of names whose extensions were made, at most this many kept.
const CACHED_MAX: usize = 1024;

static CACHE: LazyLock<Mutex<HashMap<Vec<String>, Arc<http::Extensions>>>> =
    LazyLock::new(Mutex::default);

/// Request extensions that make hyper write each of `names` exactly as given (the rest in
/// title case); `None` when hyper could not be made to record them (the request then goes out
/// in title case, which header lookups that ignore case, as HTTP says they should, still
/// find).
pub async fn case_extensions(names: &[String]) -> Option<Arc<http::Extensions>> {
    if names.is_empty() {
        return None;
    }
    let cached = CACHE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(names)
        .cloned();
    if let Some(ext) = cached {
        return Some(ext);
    }
    let ext = Arc::new(parse_spellings(names).await?);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHED_MAX {
        cache.clear();
    }
    cache.insert(names.to_vec(), ext.clone());
    Some(ext)
}

/// hyper parses a response head holding `names` on an in-memory connection that preserves
/// header case; the response's extensions then hold hyper's case map of them.
async fn parse_spellings(names: &[String]) -> Option<http::Extensions> {
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for name in names {
        // The names were checked as header names when the definition was saved and again when
        // the request was built: no CR, LF or colon can be in them.
        head.push_str(name);
        head.push_str(": x\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let answer = tokio::spawn(async move {
        let mut theirs = theirs;
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match theirs.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = theirs.write_all(head.as_bytes()).await;
        let _ = theirs.flush().await;
        // Held open until the client has read the answer and dropped its end.
        let _ = theirs.read(&mut buf).await;
    });
    let io = hyper_util::rt::TokioIo::new(ours);
    let (mut sender, conn) = http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Empty<Bytes>>(io)
        .await
        .ok()?;
    let driver = tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/")
        .header(http::header::HOST, "case")
        .body(Empty::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok();
    drop(sender);
    let _ = driver.await;
    let _ = answer.await;
    let (parts, _) = resp?.into_parts();
    Some(parts.extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_case_is_hypers() {
        assert_eq!(title_case("x-superoffice-eventid"), "X-Superoffice-Eventid");
        assert_eq!(title_case("content-type"), "Content-Type");
        assert_eq!(
            own_case_names(["X-Api-Key", "X-API-key", "x-lower"].into_iter()),
            ["X-API-key", "x-lower"]
        );
    }

    #[tokio::test]
    async fn the_extensions_are_made_once_per_set_of_names() {
        let names = vec!["X-API-key".to_owned()];
        let a = case_extensions(&names).await;
        let b = case_extensions(&names).await;
        assert!(a.is_some());
        assert!(matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b)));
        assert!(case_extensions(&[]).await.is_none());
    }
}
