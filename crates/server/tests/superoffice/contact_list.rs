//! `GET /api/v1/Contact` (the OData list) and dates in the server's time zone.

use super::*;

both_backends!(contact_list, dates_in_the_time_zone,);

async fn list(app: &TestApp, query: &str) -> (StatusCode, Value) {
    app.call(Method::GET, &format!("/api/v1/Contact{query}"), None)
        .await
}

fn listed_names(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /api/v1/Contact`: SuperOffice's OData shape, paging, order, filters, $select; soft
/// deleted contacts are not listed; unknown names are 400 naming them.
async fn contact_list() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for name in ["Sigma", "alpha", "Beta", "Stark", "Omega"] {
        ids.push(app.create_contact(name).await);
    }
    let (s, v) = list(&app, "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["odata.metadata"],
        format!("{}/api/v1/archive$metadata", app.base)
    );
    assert!(v.get("odata.nextLink").is_none(), "one page only: {v}");
    let first = &v["value"][0];
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        &keys[..4],
        ["PrimaryKey", "EntityName", "contactId", "name"]
    );
    assert_eq!(first["EntityName"], "contact");
    assert_eq!(first["PrimaryKey"], ids[0]);
    assert_eq!(
        listed_names(&v),
        ["Sigma", "alpha", "Beta", "Stark", "Omega"]
    );
    // Paging: $top and $skip, and the next page's link.
    let (_, v) = list(&app, "?$top=2&$orderBy=name%20asc").await;
    assert_eq!(listed_names(&v), ["alpha", "Beta"]);
    let next = v["odata.nextLink"].as_str().unwrap().to_owned();
    assert!(next.contains("$skip=2"), "{next}");
    let v: Value = app
        .http
        .get(&next)
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed_names(&v), ["Omega", "Sigma"]);
    let (_, v) = list(&app, "?$orderBy=contactId%20desc&$top=1&$skip=1").await;
    assert_eq!(listed_names(&v), ["Stark"]);
    // Filters, joined by and; name begins is case-insensitive.
    let (_, v) = list(&app, "?$filter=name%20begins%20's'").await;
    assert_eq!(listed_names(&v), ["Sigma", "Stark"]);
    let q = format!("?$filter=name begins 'S' and contactId gt {}", ids[0]);
    let (_, v) = list(&app, &q.replace(' ', "%20")).await;
    assert_eq!(listed_names(&v), ["Stark"]);
    let (_, v) = list(
        &app,
        "?$filter=updated%20afterTime%20'2000-01-01T00:00:00'&$top=1",
    )
    .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 1);
    let (_, v) = list(&app, "?$filter=updated%20afterTime%20'2999-01-01'").await;
    assert_eq!(v["value"], json!([]));
    // $select picks and orders the columns.
    let (_, v) = list(&app, "?$select=OrgNr,name&$top=1").await;
    let keys: Vec<&str> = v["value"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["PrimaryKey", "EntityName", "orgnr", "name"]);
    // A soft-deleted contact is not listed; a restored one is again.
    app.ok(Method::DELETE, &format!("/api/v1/Contact/{}", ids[1]), None)
        .await;
    let (_, v) = list(&app, "").await;
    assert!(!listed_names(&v).contains(&"alpha".to_owned()));
    // Another tenant sees none of them.
    let other = app.add_key("Other", 3).await;
    let (_, v) = app
        .call_as(&other, Method::GET, "/api/v1/Contact", None)
        .await;
    assert_eq!(v["value"], json!([]));
    // Unknown fields, operators and columns are named.
    for (query, named) in [
        ("?$filter=city%20begins%20'x'", "city"),
        ("?$filter=name%20eq%20'x'", "eq"),
        ("?$orderBy=fax", "fax"),
        ("?$select=name,fax", "fax"),
        ("?$top=5000", "$top"),
    ] {
        let (s, v) = list(&app, query).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert_eq!(v["ErrorType"], "InvalidQuery");
        assert!(v["Message"].as_str().unwrap().contains(named), "{v}");
    }
    app.stop().await;
}

/// `time_zone = "Europe/Oslo"`: local dates carry the offset of their own instant, +01:00 in
/// winter and +02:00 in summer, in the REST carriers and in FieldValues.
async fn dates_in_the_time_zone() {
    let app = TestApp::start_with(|t| {
        t.insert("time_zone".into(), "Europe/Oslo".into());
    })
    .await;
    let rx = receiver(None).await;
    app.create_hook(&rx, &["contact.created"], None).await;
    let v = app
        .ok(
            Method::POST,
            "/api/v1/Contact",
            Some(
                json!({"Name": "Oslo", "DbiLastModified": "2025-01-15T09:30:00Z",
                "DbiLastSyncronized": "2025-07-15T09:30:00Z"}),
            ),
        )
        .await;
    assert_eq!(v["DbiLastModified"], "2025-01-15T10:30:00+01:00");
    assert_eq!(v["DbiLastSyncronized"], "2025-07-15T11:30:00+02:00");
    let got = wait_deliveries(&rx, 1, T).await;
    let fv = got[0]
        .payload
        .as_ref()
        .unwrap()
        .field_values
        .clone()
        .unwrap();
    let updated = fv["updated"].as_str().unwrap();
    let at = crmhooks_payload::NetDateTime::parse(updated)
        .unwrap()
        .to_offset_date_time()
        .unwrap();
    let oslo = crmhooks_store::LocalZone::named("Europe/Oslo").unwrap();
    assert_eq!(at.offset(), oslo.offset_at(at), "{updated}");
    assert!(
        updated.ends_with("+01:00") || updated.ends_with("+02:00"),
        "{updated}"
    );
    app.stop().await;
}
