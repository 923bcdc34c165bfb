//! Contacts: the `default` entity, POST, GET, PUT, the PATCH routes, soft delete, restore and
//! permanent delete.

use reqwest::Method;
use serde_json::Value;

use crate::common::*;
use crate::transcript::{assert_transcript, Transcript};

pub async fn contact_responses() {
    let app = TestApp::start().await;
    let rx = receiver(None).await;
    let mut t = Transcript::new(&app, &rx);
    t.send(Method::GET, "/api/v1/Contact/default", None).await;
    t.note("POST with every writable property (and some read-only and unknown ones)");
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(
            r#"{"ContactId":99,"Name":"Full AS","Department":"Sales","OrgNr":"123","Number1":"n1","Number2":"n2","Kananame":"kana","CreatedDate":"2001-01-01T00:00:00","Associate":{"AssociateId":7,"Name":"ignored"},"Business":{"Id":3,"Value":"x","Tooltip":"y"},"Category":4,"Country":{"CountryId":578},"NoMailing":true,"Xstop":false,"GroupId":2,"Deleted":1,"Source":9,"ActiveInterests":1,"ActiveErpLinks":2,"DbiAgentId":3,"DbiKey":"k","DbiLastSyncronized":"2024-02-29T13:45:10.1234567","DbiLastModified":"2024-02-29T13:45:10+02:00","SupportAssociateId":4,"SupportPersonId":5,"SupportLanguageId":6,"TicketPriorityId":7,"TzLocationId":8,"MotherId":9,"UserdefId":10,"Userdef2Id":11,"Emails":[{"Value":"a@b"}]}"#,
        ),
    )
    .await;
    t.send(
        Method::POST,
        "/api/v1/Contact",
        Some(r#"{"name":"minimal","associate":null,"business":{"id":null},"country":{},"dbiLastModified":"0001-01-01T00:00:00"}"#),
    )
    .await;
    t.send(Method::GET, "/api/v1/Contact/1", None).await;
    t.send(Method::GET, "/Default/api/v1/Contact/2", None).await;
    t.note("PUT replaces: absent or null properties take their defaults");
    t.send(
        Method::PUT,
        "/api/v1/Contact/1",
        Some(r#"{"Name":"Full, put","Department":null,"Associate":{"associateid":8},"Category":{"Id":5},"DbiLastModified":"2024-03-01T00:00:00Z"}"#),
    )
    .await;
    t.note("PATCH: scalar Merge Patch (the direct route), Merge Patch with null and carriers, JSON Patch, a failed test");
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"department":"Support","Source":3,"Xstop":true,"name":"first","NAME":"last"}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"{"Department":null,"Country":{"CountryId":47},"Business":{"Value":"kept id"}}"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"[{"op":"replace","path":"/OrgNr","value":"999"},{"op":"remove","path":"/Number1"},{"op":"test","path":"/country/countryid","value":47},{"op":"replace","path":"/Associate/AssociateId","value":9}]"#),
    )
    .await;
    t.send(
        Method::PATCH,
        "/api/v1/Contact/1",
        Some(r#"[{"op":"test","path":"/Name","value":"nope"}]"#),
    )
    .await;
    t.note("soft delete, restore, permanent delete");
    t.send(Method::DELETE, "/api/v1/Contact/2", None).await;
    t.send(Method::GET, "/api/v1/Contact/2", None).await;
    t.send(Method::PUT, "/api/v1/Contact/2", Some(r#"{"Name":"x"}"#))
        .await;
    t.send(Method::PATCH, "/api/v1/Contact/2", Some(r#"{"Name":"x"}"#))
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/2", None).await;
    let restored = t
        .send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    assert_eq!(restored["DeletedDate"], Value::Null);
    t.send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/2?permanent=true", None)
        .await;
    t.send(Method::POST, "/api/v1/Contact/2/Restore", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent", None)
        .await;
    t.send(Method::DELETE, "/api/v1/Contact/1?permanent=1", None)
        .await;
    assert_transcript("contact", &t.out);
    app.stop().await;
}
