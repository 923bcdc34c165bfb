//! The axum extractor, driven in-process.
#![allow(clippy::unwrap_used)]
#![cfg(feature = "axum")]

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::Router;
use crmhooks_payload::extract::{SignedPayload, WebhookSecret};
use crmhooks_payload::{headers, sign};
use tower::ServiceExt;

const SECRET: &str = "s3cret";
const BODY: &[u8] = include_bytes!("fixtures/contact-changed.json");

async fn hook(webhook: SignedPayload) -> String {
    format!(
        "{} {} retry={:?} test={} header={:?} len={}",
        webhook.payload.event,
        webhook.payload.primary_key,
        webhook.retry,
        webhook.is_test,
        webhook.event_id_header,
        webhook.body.len()
    )
}

fn app(secret: Option<&str>) -> Router {
    Router::new()
        .route("/hook", post(hook))
        .layer(DefaultBodyLimit::max(4096))
        .with_state(WebhookSecret(secret.map(str::to_owned)))
}

fn request(body: &[u8], signature: Option<&str>) -> Request<Body> {
    let mut b = Request::post("/hook")
        .header("content-type", headers::CONTENT_TYPE_JSON)
        .header(headers::EVENT_ID, "8337ae4a-1dd6-40fd-8dc7-a050664a0af7")
        .header(headers::RETRY, "1");
    if let Some(sig) = signature {
        b = b.header(headers::SIGNATURE, sig);
    }
    b.body(Body::from(body.to_vec())).unwrap()
}

async fn send(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let res = app.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

fn error_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    for key in ["Error", "ErrorType", "Message"] {
        assert!(v[key].is_string(), "{key} missing in {body}");
    }
    v["ErrorType"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn good_signature_is_accepted() {
    let (status, body) = send(app(Some(SECRET)), request(BODY, Some(&sign(SECRET, BODY)))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        format!(
            "contact.changed 994863 retry=Some(1) test=false header=Some(\"8337ae4a-1dd6-40fd-8dc7-a050664a0af7\") len={}",
            BODY.len()
        )
    );
}

#[tokio::test]
async fn tampered_body_is_401() {
    let sig = sign(SECRET, BODY);
    let tampered = String::from_utf8(BODY.to_vec())
        .unwrap()
        .replace("994863", "994864");
    let (status, body) = send(app(Some(SECRET)), request(tampered.as_bytes(), Some(&sig))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "SignatureMismatch");
}

#[tokio::test]
async fn missing_and_malformed_signatures_are_401() {
    let (status, body) = send(app(Some(SECRET)), request(BODY, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "SignatureMissing");
    let (status, body) = send(app(Some(SECRET)), request(BODY, Some("%%%"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_type(&body), "SignatureMalformed");
}

#[tokio::test]
async fn bad_json_is_400() {
    let bad = b"{\"EventId\": oops";
    let (status, body) = send(app(Some(SECRET)), request(bad, Some(&sign(SECRET, bad)))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_type(&body), "InvalidPayload");
    let not_a_payload = b"{\"hello\":1}";
    let (status, _) = send(app(None), request(not_a_payload, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn without_a_secret_nothing_is_checked() {
    let (status, _) = send(app(None), request(BODY, None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(app(Some("")), request(BODY, Some("garbage"))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let big = vec![b' '; 5000];
    let (status, body) = send(app(None), request(&big, None)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_type(&body), "PayloadTooLarge");
}

#[tokio::test]
async fn hook_test_header_is_recognised() {
    let body = include_bytes!("fixtures/test.json");
    let mut req = request(body, None);
    req.headers_mut()
        .insert(headers::HOOK_TEST, "true".parse().unwrap());
    let (status, text) = send(app(None), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("test 0 retry=Some(1) test=true"), "{text}");
}
