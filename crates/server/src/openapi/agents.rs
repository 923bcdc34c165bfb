//! The agent methods (`/api/v1/Agents/{agent}/{method}`, one route in
//! [`crate::agent_api`]) as one operation each, so that clients see each method's request and
//! answer. The functions below carry only the description; the route's handler dispatches on
//! the names (in any case).
// Doc-only operations: utoipa reads their attributes, nothing calls them.
#![allow(dead_code)]

use crate::carriers::contact::{ContactEntity, ContactInput};
use crate::carriers::webhook::{WebhookCarrier, WebhookInput, WebhookResult};
use crate::openapi::schemas::{
    GetAllWebhooksRequest, SignalEventRequest, TestWebhookRequest, WebhookIdRequest,
};

/// The agent operations (nested under `/api/v1`).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_default_webhook,
    save_webhook,
    delete_webhook,
    get_webhook,
    get_all_webhooks,
    test_webhook,
    signal_event,
    get_last_error,
    create_default_contact_entity,
    get_contact_entity,
    save_contact_entity,
    delete_contact_entity,
))]
pub struct Doc;

/// The Webhook agent's methods.
pub const WEBHOOK_METHODS: [&str; 8] = [
    "CreateDefaultWebhook",
    "SaveWebhook",
    "DeleteWebhook",
    "GetWebhook",
    "GetAllWebhooks",
    "TestWebhook",
    "SignalEvent",
    "GetLastError",
];

/// The Contact agent's methods.
pub const CONTACT_METHODS: [&str; 4] = [
    "CreateDefaultContactEntity",
    "GetContactEntity",
    "SaveContactEntity",
    "DeleteContactEntity",
];

/// A new webhook's defaults (not saved).
#[utoipa::path(post, path = "/Agents/Webhook/CreateDefaultWebhook", tag = "Agents",
    operation_id = "WebhookAgent.CreateDefaultWebhook",
    params(("$select" = Option<String>, Query, description = "Property names to keep; the others are `null`.")),
    responses((status = 200, description = "The default carrier.", body = WebhookCarrier)))]
fn create_default_webhook() {}

/// Creates (`WebhookId` 0) or replaces a webhook; the body is the Webhook itself.
#[utoipa::path(post, path = "/Agents/Webhook/SaveWebhook", tag = "Agents",
    operation_id = "WebhookAgent.SaveWebhook",
    request_body(content = WebhookInput, description = "The Webhook, bare; `WebhookId` 0 creates one."),
    responses((status = 200, description = "The saved webhook.", body = WebhookCarrier)))]
fn save_webhook() {}

/// Deletes a webhook.
#[utoipa::path(post, path = "/Agents/Webhook/DeleteWebhook", tag = "Agents",
    operation_id = "WebhookAgent.DeleteWebhook",
    params(("webhookId" = i32, Query, description = "The webhook (or `WebhookId` in a JSON body).")),
    responses((status = 204, description = "Deleted.")))]
fn delete_webhook() {}

/// One webhook.
#[utoipa::path(post, path = "/Agents/Webhook/GetWebhook", tag = "Agents",
    operation_id = "WebhookAgent.GetWebhook",
    params(
        ("webhookId" = i32, Query, description = "The webhook (or `WebhookId` in a JSON body)."),
        ("$select" = Option<String>, Query, description = "Property names to keep; the others are `null`."),
    ),
    responses((status = 200, description = "The webhook, or `null` when there is none (as SuperOffice documents).", body = Option<WebhookCarrier>)))]
fn get_webhook() {}

/// The webhooks of the caller's tenant, filtered.
#[utoipa::path(post, path = "/Agents/Webhook/GetAllWebhooks", tag = "Agents",
    operation_id = "WebhookAgent.GetAllWebhooks",
    request_body(content = Option<GetAllWebhooksRequest>, description = "Filters; none lists all."),
    responses((status = 200, description = "The webhooks.", body = Vec<WebhookCarrier>)))]
fn get_all_webhooks() {}

/// Sends a `test` event to a definition that is not saved.
#[utoipa::path(post, path = "/Agents/Webhook/TestWebhook", tag = "Agents",
    operation_id = "WebhookAgent.TestWebhook",
    request_body(content = TestWebhookRequest),
    responses((status = 200, description = "How the receiver answered.", body = WebhookResult)))]
fn test_webhook() {}

/// Fires an event of the caller's choosing to every subscribed webhook.
#[utoipa::path(post, path = "/Agents/Webhook/SignalEvent", tag = "Agents",
    operation_id = "WebhookAgent.SignalEvent",
    request_body(content = SignalEventRequest),
    responses((status = 204, description = "Committed; deliveries follow.")))]
fn signal_event() {}

/// The last error of a webhook.
#[utoipa::path(post, path = "/Agents/Webhook/GetLastError", tag = "Agents",
    operation_id = "WebhookAgent.GetLastError",
    request_body(content = WebhookIdRequest),
    responses((status = 200, description = "The last failure's text, `\"\"` when none.", content_type = "application/json", body = String)))]
fn get_last_error() {}

/// A new contact's defaults (not saved).
#[utoipa::path(post, path = "/Agents/Contact/CreateDefaultContactEntity", tag = "Agents",
    operation_id = "ContactAgent.CreateDefaultContactEntity",
    params(("$select" = Option<String>, Query, description = "Property names to keep; the others are `null`.")),
    responses((status = 200, description = "The default entity.", body = ContactEntity)))]
fn create_default_contact_entity() {}

/// One contact.
#[utoipa::path(post, path = "/Agents/Contact/GetContactEntity", tag = "Agents",
    operation_id = "ContactAgent.GetContactEntity",
    params(
        ("contactEntityId" = i32, Query, description = "The contact (or `ContactEntityId` in a JSON body)."),
        ("$select" = Option<String>, Query, description = "Property names to keep; the others are `null`."),
    ),
    responses((status = 200, description = "The contact, or `null` when there is none.", body = Option<ContactEntity>)))]
fn get_contact_entity() {}

/// Creates (`ContactId` 0) or replaces a contact; the body is the ContactEntity itself.
#[utoipa::path(post, path = "/Agents/Contact/SaveContactEntity", tag = "Agents",
    operation_id = "ContactAgent.SaveContactEntity",
    request_body(content = ContactInput, description = "The ContactEntity, bare; `ContactId` 0 creates one."),
    responses((status = 200, description = "The saved contact.", body = ContactEntity)))]
fn save_contact_entity() {}

/// Puts a contact into the recycle bin (`contact.softdeleted`).
#[utoipa::path(post, path = "/Agents/Contact/DeleteContactEntity", tag = "Agents",
    operation_id = "ContactAgent.DeleteContactEntity",
    params(("contactEntityId" = i32, Query, description = "The contact (or `ContactEntityId` in a JSON body).")),
    responses((status = 204, description = "Deleted.")))]
fn delete_contact_entity() {}
