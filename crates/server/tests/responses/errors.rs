//! Every kind of error answer: authentication, routing, bodies, ids and queries, each
//! property of both carriers, patches, replay and signals.

use std::fmt::Write as _;

use reqwest::Method;

use crate::common::*;
use crate::transcript::{assert_transcript, Transcript};

pub async fn error_responses() {
    let app = TestApp::start_with(|t| {
        t.insert("max_body_bytes".into(), 4096.into());
    })
    .await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.note("authentication and routing");
    t.send_as(None, Method::GET, "/api/v1/Webhook", None).await;
    t.send_as(Some("wrong"), Method::GET, "/api/v1/Webhook", None)
        .await;
    t.send_as(Some("raw:Basic abc"), Method::GET, "/api/v1/Webhook", None)
        .await;
    t.send_as(Some("raw:Bearer  "), Method::GET, "/api/v1/Webhook", None)
        .await;
    let other = app.add_key("Cust2", 7).await;
    t.send_as(Some(&other), Method::GET, "/Default/api/v1/Webhook", None)
        .await;
    t.send(Method::GET, "/api/v2/nothing", None).await;
    t.send(Method::DELETE, "/api/v1/Contact", None).await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/notanumber", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?limit=many", None)
        .await;
    t.note("bodies");
    t.send(Method::POST, "/api/v1/Contact", Some("  ")).await;
    t.send(Method::POST, "/api/v1/Contact", Some("{not json"))
        .await;
    t.send(Method::POST, "/api/v1/Contact", Some("[1]")).await;
    t.send(Method::POST, "/api/v1/Webhook", Some("\"text\""))
        .await;
    let big = format!(r#"{{"Name":"{}"}}"#, "x".repeat(5000));
    let resp = app
        .http
        .post(format!("{}/api/v1/Contact", app.base))
        .bearer_auth(&app.key)
        .body(big)
        .send()
        .await
        .unwrap();
    let _ = writeln!(
        t.out,
        ">>> POST /api/v1/Contact (5 KB)\n<<< {}\n{}\n",
        resp.status(),
        resp.text().await.unwrap()
    );
    t.note("ids and queries");
    t.send(Method::GET, "/api/v1/Contact/abc", None).await;
    t.send(Method::GET, "/api/v1/Contact/3000000000", None)
        .await;
    t.send(Method::GET, "/api/v1/Contact/999", None).await;
    t.send(Method::GET, "/api/v1/Webhook/x", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999", None).await;
    t.send(Method::DELETE, "/api/v1/Webhook/999", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999/Usage", None).await;
    t.send(Method::GET, "/api/v1/Webhook/999/LastError", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/999/Deliveries", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook?statusFilter=Sleeping", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent=maybe", None)
        .await;
    t.note("contact fields");
    for body in [
        r#"{"Department":"no name"}"#,
        r#"{"Name":5}"#,
        r#"{"Name":"a","Source":"x"}"#,
        r#"{"Name":"a","Source":1.5}"#,
        r#"{"Name":"a","Xstop":1}"#,
        r#"{"Name":"a","DbiLastModified":5}"#,
        r#"{"Name":"a","DbiLastModified":"yesterday"}"#,
        r#"{"Name":"a","Business":{"Id":"two"}}"#,
        r#"{"Name":"a","Business":"two"}"#,
        r#"{"Name":"a","Country":{"countryid":1.5}}"#,
        r#"{"Name":"a","Associate":[1]}"#,
        r#"{"Name":"a","Associate":{"AssociateId":true}}"#,
        r#"{"Name":"a","Source":70000}"#,
        r#"{"Name":"a","OrgNr":"12345678901234567890123456789012345678901234567890"}"#,
        r#"{"Xstop":"no","Name":7,"Source":"x"}"#,
        r#"{"name":"first wins","Name":5}"#,
    ] {
        t.send(Method::POST, "/api/v1/Contact", Some(body)).await;
    }
    let c = app.create_contact("target").await;
    for body in [
        r#"{"Source":"x"}"#,
        r#"{"Source":null,"Xstop":"x"}"#,
        r#"[{"op":"move","from":"/Name","path":"/Department"}]"#,
        r#"[{"op":"replace","path":"/Name"}]"#,
        r#"[{"path":"/Name"}]"#,
        r#"[{"op":"replace","path":"//","value":1}]"#,
        r#"[{"op":"replace","path":"/Name/x","value":1}]"#,
        r#"[{"op":"replace","path":"/Country","value":"x"}]"#,
        r#"[{"op":"remove","path":"/Name"}]"#,
        r#""text""#,
        r#"[{"op":"replace","path":"/Name","value":["a"]}]"#,
    ] {
        t.send(Method::PATCH, &format!("/api/v1/Contact/{c}"), Some(body))
            .await;
    }
    t.send(
        Method::PUT,
        &format!("/api/v1/Contact/{c}"),
        Some(r#"{"Name":"a","MotherId":"x"}"#),
    )
    .await;
    t.send(Method::PUT, &format!("/api/v1/Contact/{c}"), Some("[]"))
        .await;
    t.send(Method::PUT, "/api/v1/Contact/999", Some(r#"{"Name":"a"}"#))
        .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/999",
        Some(r#"{"Name":"a"}"#),
    )
    .await;
    t.send(Method::DELETE, "/api/v1/Contact/999", None).await;
    t.send(Method::POST, "/api/v1/Contact/999/Restore", None)
        .await;
    t.note("webhook fields");
    for body in [
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"ftp://x"}"#,
        r#"{"Name":"h","Events":"contact.created","TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[5],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":["a,b"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[" "],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":[],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"","Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":5,"Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Events":["contact.created"],"TargetUrl":"{rx}/"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Sleeping"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":0}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Unknown"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":true}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Type":"email"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-SuperOffice-Event":"x"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-A":5}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"bad name":"v"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":[]}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Properties":"x"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","ErrorsEmail":"nobody"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","RetryPolicy":"never"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","SuccessStatus":"201"}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Secret":5}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":5}"#,
        format!(
            r#"{{"Name":"{}","Events":["contact.created"],"TargetUrl":"{{rx}}/"}}"#,
            "n".repeat(401)
        )
        .as_str(),
        format!(
            r#"{{"Name":"h","Events":["{}"],"TargetUrl":"{{rx}}/"}}"#,
            "e".repeat(256)
        )
        .as_str(),
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Headers":{"X-A":"line\nbreak"}}"#,
        r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","Type":null,"State":"Sleeping"}"#,
    ] {
        t.send(Method::POST, "/api/v1/Webhook", Some(body)).await;
    }
    rx.set_status(500);
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/"}"#),
    )
    .await;
    rx.set_status(200);
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"h","Events":["contact.created"],"TargetUrl":"{rx}/","State":"Stopped"}"#),
    )
    .await;
    for body in [
        r#"[{"op":"replace","path":"/Events","value":"x"}]"#,
        r#"{"Name":null}"#,
        r#"7"#,
    ] {
        t.send(Method::PATCH, "/api/v1/Webhook/1", Some(body)).await;
    }
    t.send(Method::PUT, "/api/v1/Webhook/1", Some(r#"{"Name":"h"}"#))
        .await;
    for body in [
        r#"{}"#,
        r#"{"since":"yesterday"}"#,
        r#"{"since":"2000-01-01T00:00:00Z","until":"later"}"#,
        r#"{"since":"2000-01-01T00:00:00Z","extra":1}"#,
    ] {
        t.send(Method::POST, "/api/v1/Webhook/1/Replay", Some(body))
            .await;
    }
    t.send(
        Method::GET,
        "/api/v1/Webhook/1/Deliveries?status=lost",
        None,
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries?since=soon", None)
        .await;
    t.send(Method::GET, "/api/v1/Webhook/1/Deliveries/999", None)
        .await;
    t.note("input rules: NUL characters, nesting, patch caps");
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(r#"{"Name":"a\u0000b"}"#),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Webhook",
        Some(r#"{"Name":"h","Events":["contact.created","x\u0000"],"TargetUrl":"{rx}/"}"#),
    )
    .await;
    t.send(Method::GET, "/api/v1/Webhook?nameFilter=%00", None)
        .await;
    t.send(Method::POST, "/api/v1/Webhook/a%00b/1", None).await;
    let deep = format!("{}1{}", "[".repeat(65), "]".repeat(65));
    t.send_long(Method::POST, "/api/v1/Contact", &deep, "65 nested arrays")
        .await;
    let long_path = format!("/{}", vec!["a"; 33].join("/"));
    t.send(
        Method::PATCH,
        &format!("/api/v1/Contact/{c}"),
        Some(&format!(
            r#"[{{"op":"add","path":"{long_path}","value":1}}]"#
        )),
    )
    .await;
    let ops = vec!["{}"; 257].join(",");
    t.send_long(
        Method::PATCH,
        &format!("/api/v1/Contact/{c}"),
        &format!("[{ops}]"),
        "257 operations",
    )
    .await;
    t.send(
        Method::PATCH,
        &format!("/api/v1/Contact/{c}"),
        Some(r#"[{"op":"add","path":"/Nothing/x","value":1}]"#),
    )
    .await;
    t.send(Method::GET, "/api/v1/Nothing", None).await;
    t.note("signal");
    t.send(Method::POST, "/api/v1/Webhook/a,b/1", None).await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/abc", None).await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/1", Some("{bad"))
        .await;
    t.send(Method::POST, "/api/v1/Webhook/x.y/1", Some("[1]"))
        .await;
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(5000));
    t.send_long(Method::POST, "/api/v1/Webhook/x.y/1", &big, "5 KB")
        .await;
    assert_transcript("errors", &t.out);
    app.stop().await;
}
