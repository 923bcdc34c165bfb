//! The examples of the document: answers as the response snapshots record them
//! (`tests/snapshots/responses__*.snap`, with a fixed date, id and host in place of the
//! placeholders) and SuperOffice's own sample request (`tests/agent_samples/`). The webhook
//! bodies come from the payload crate's fixtures (see [`super::outgoing`]).

use serde_json::{json, Value};

/// The host the examples' `_Links` name.
const BASE: &str = "http://127.0.0.1:8080";

/// `GET /api/v1/Webhook/1` (`responses__webhook.snap`).
pub fn webhook_carrier() -> Value {
    json!({
        "WebhookId": 1, "Name": "Full", "Events": ["contact.created", "contact.changed"],
        "ErrorsEmail": "ops@example.com", "TargetUrl": "https://receiver.example.com/full",
        "Secret": null, "State": "Active", "Type": "webhook",
        "Headers": {"X-Custom": "v", "X-Other": "w"},
        "Properties": {"a": 1, "b": {"c": [true, null, 1.5]}},
        "Registered": "2026-12-05T08:00:00+00:00", "RegisteredAssociate": {"AssociateId": 1},
        "Updated": "0001-01-01T00:00:00", "UpdatedAssociate": null,
        "RetryPolicy": "superoffice", "SuccessStatus": "2xx"
    })
}

/// The webhook of [`webhook_carrier`] with its `_Links`.
pub fn webhook_with_links() -> Value {
    let mut v = webhook_carrier();
    v["_Links"] = json!({"Self": format!("{BASE}/api/v1/Webhook/1"), "Archive": format!("{BASE}/api/v1/Webhook")});
    v
}

/// `POST /api/v1/Webhook` with every property (`responses__webhook.snap`).
pub fn webhook_input() -> Value {
    json!({
        "Name": "Full", "Events": ["contact.created", "contact.changed"],
        "TargetUrl": "https://receiver.example.com/full", "Secret": "s3cret", "State": "Active",
        "Type": "webhook", "Headers": {"X-Custom": "v", "X-Other": "w"},
        "Properties": {"a": 1, "b": {"c": [true, null, 1.5]}}, "ErrorsEmail": "ops@example.com",
        "RetryPolicy": "superoffice", "SuccessStatus": "2xx"
    })
}

/// `GET /api/v1/Contact/1` without `_Links` (`responses__contact.snap`).
pub fn contact_entity() -> Value {
    json!({
        "ContactId": 1, "Name": "Full AS", "Department": "Sales", "OrgNr": "123",
        "Number1": "n1", "Number2": "n2", "Kananame": "kana",
        "CreatedDate": "2026-12-05T08:00:00+00:00", "UpdatedDate": "2026-12-05T08:00:00+00:00",
        "CreatedBy": {"AssociateId": 1, "Name": "", "FullName": ""},
        "UpdatedBy": {"AssociateId": 1, "Name": "", "FullName": ""},
        "Associate": {"AssociateId": 7, "Name": "", "FullName": ""},
        "Business": {"Id": 3, "Value": "", "Tooltip": ""},
        "Category": {"Id": 4, "Value": "", "Tooltip": ""},
        "Country": {"CountryId": 578, "Name": ""},
        "NoMailing": true, "Xstop": false, "GroupId": 2, "Deleted": 0, "DeletedDate": null,
        "Source": 9, "ActiveInterests": 1, "ActiveErpLinks": 2, "DbiAgentId": 3, "DbiKey": "k",
        "DbiLastSyncronized": "2024-02-29T13:45:10.1234567+00:00",
        "DbiLastModified": "2024-02-29T11:45:10+00:00", "SupportAssociateId": 4,
        "SupportPersonId": 5, "SupportLanguageId": 6, "TicketPriorityId": 7, "TzLocationId": 8,
        "MotherId": 9, "UserdefId": 10, "Userdef2Id": 11
    })
}

/// [`contact_entity`] with its `_Links`.
pub fn contact_with_links() -> Value {
    let mut v = contact_entity();
    v["_Links"] = json!({"Self": format!("{BASE}/api/v1/Contact/1"), "Archive": format!("{BASE}/api/v1/Contact")});
    v
}

/// SuperOffice's sample request of `SaveContactEntity` (`tests/agent_samples/`), which the
/// REST routes take as well.
pub fn contact_input() -> Value {
    serde_json::from_str(include_str!(
        "../../tests/agent_samples/save_contact_entity.json"
    ))
    .unwrap_or_else(|_| json!({"Name": "Full AS", "Department": "Sales"}))
}

/// A page of `GET /api/v1/Contact?$top=1`.
pub fn contact_list() -> Value {
    json!({
        "odata.metadata": format!("{BASE}/api/v1/archive$metadata"),
        "odata.nextLink": format!("{BASE}/api/v1/Contact?$top=1&$skip=1"),
        "value": [{"PrimaryKey": 1, "EntityName": "contact", "contactId": 1, "name": "Full AS"}]
    })
}

/// A delivery that succeeded on its second attempt (`responses__delivery_log.snap`).
pub fn delivery() -> Value {
    json!({
        "DeliveryId": 3, "WebhookId": 2, "EventSeq": 2, "Event": "contact.changed",
        "PrimaryKey": 1, "EventId": "8337ae4a-1dd6-40fd-8dc7-a050664a0af7",
        "Status": "delivered", "Attempts": 2, "FailedCycles": 0,
        "Created": "2026-12-05T08:00:00+00:00", "NextAttemptAt": null,
        "Completed": "2026-12-05T08:00:01+00:00", "LastStatus": 200, "LastError": null,
        "ReplayOf": null
    })
}

/// [`delivery`] with its attempts.
pub fn delivery_with_attempts() -> Value {
    let mut v = delivery();
    v["AttemptLog"] = json!([
        {"AttemptId": 3, "EventId": "8337ae4a-1dd6-40fd-8dc7-a050664a0af7", "Retry": 0,
         "AttemptedAt": "2026-12-05T08:00:00+00:00", "DurationMs": 2.5, "StatusCode": 500,
         "Error": "receiver answered 500",
         "Response": "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 45\r\n\r\ncrmhooks listen: answering 500 as configured\n"},
        {"AttemptId": 4, "EventId": "8337ae4a-1dd6-40fd-8dc7-a050664a0af7", "Retry": 1,
         "AttemptedAt": "2026-12-05T08:00:01+00:00", "DurationMs": 1.8, "StatusCode": 200,
         "Error": null, "Response": null}
    ]);
    v
}

/// `POST /api/v1/Webhook/Test` (`responses__webhook.snap`).
pub fn webhook_result() -> Value {
    json!({
        "Success": true,
        "Message": "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 08:00:00 GMT\r\n\r\n",
        "TableRight": null,
        "FieldProperties": {}
    })
}
