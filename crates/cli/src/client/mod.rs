//! Client subcommands: `crmhooks contact ...` and `crmhooks webhook ...` call a running crmhooks
//! server over its REST API (`/api/v1/Contact`, `/api/v1/Webhook`), through `crmhooks_client`.

mod args;
mod output;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use crmhooks_client::{routes, ApiKey, ContactBody, HttpApi, NewWebhook, Replay, Transport as _};
use serde_json::{Map, Value};

pub use args::{Conn, ContactCmd, ContactFields, IdArgs, WebhookCmd, WebhookCreate};
use output::{cell, print_json, print_table};

/// Runs a `crmhooks contact ...` subcommand.
pub async fn run_contact(cmd: ContactCmd) -> Result<()> {
    match cmd {
        ContactCmd::List {
            conn,
            top,
            skip,
            order_by,
            filter,
            json,
        } => {
            let v = conn
                .api()?
                .json(&routes::list_contacts(top, skip, order_by, filter))
                .await?;
            if json {
                return print_json(&v);
            }
            let cols = [
                &["contactId"][..],
                &["name"],
                &["department"],
                &["updatedDate"],
            ];
            print_table(
                &["ID", "NAME", "DEPARTMENT", "UPDATED"],
                &cols,
                &v["value"],
                "contacts",
            )?;
            if v.get("odata.nextLink").is_some() {
                println!("(more: --skip {})", u64::from(skip) + u64::from(top));
            }
            Ok(())
        }
        ContactCmd::Get(t) => print_json(&t.conn.api()?.json(&routes::get_contact(t.id())).await?),
        ContactCmd::Create { conn, fields } => {
            let body = contact_body(&fields)?;
            if body
                .get("Name")
                .and_then(Value::as_str)
                .is_none_or(|n| n.trim().is_empty())
            {
                bail!("a contact needs a name: pass --name or put \"Name\" in --json");
            }
            print_json(&conn.api()?.json(&routes::create_contact(&body)?).await?)
        }
        ContactCmd::Update { target: t, fields } => {
            let patch = contact_body(&fields)?;
            if patch.as_object().is_some_and(Map::is_empty) {
                bail!("nothing to change: pass at least one field flag or --json");
            }
            let call = routes::change_contact(t.id(), &patch)?;
            print_json(&t.conn.api()?.json(&call).await?)
        }
        ContactCmd::Delete {
            target: t,
            permanent,
        } => {
            let call = routes::delete_contact(t.id(), permanent);
            t.conn.api()?.call(&call).await?;
            println!(
                "{} contact {}",
                if permanent {
                    "permanently deleted"
                } else {
                    "deleted"
                },
                t.id
            );
            Ok(())
        }
        ContactCmd::Restore(t) => {
            let v = t.conn.api()?.json(&routes::restore_contact(t.id())).await?;
            if v.is_null() {
                println!("restored contact {}", t.id);
                return Ok(());
            }
            print_json(&v)
        }
    }
}

/// Runs a `crmhooks webhook ...` subcommand.
pub async fn run_webhook(cmd: WebhookCmd) -> Result<()> {
    match cmd {
        WebhookCmd::List {
            conn,
            name,
            event,
            status,
        } => {
            let v = conn
                .api()?
                .json(&routes::list_webhooks(name, event, status))
                .await?;
            let cols = [
                &["WebhookId"][..],
                &["State"],
                &["Name"],
                &["Events"],
                &["TargetUrl"],
            ];
            print_table(
                &["ID", "STATE", "NAME", "EVENTS", "TARGET"],
                &cols,
                &v,
                "webhooks",
            )
        }
        WebhookCmd::Get(t) => print_json(&t.conn.api()?.json(&routes::get_webhook(t.id())).await?),
        WebhookCmd::Create(c) => {
            let call = routes::create_webhook(&webhook_body(&c))?;
            print_json(&c.conn.api()?.json(&call).await?)
        }
        WebhookCmd::Start(t) => set_state(&t, "Active").await,
        WebhookCmd::Stop(t) => set_state(&t, "Stopped").await,
        WebhookCmd::Delete(t) => {
            t.conn.api()?.call(&routes::delete_webhook(t.id())).await?;
            println!("deleted webhook {}", t.id);
            Ok(())
        }
        WebhookCmd::LastError(t) => {
            let call = routes::webhook_last_error(t.id());
            match t.conn.api()?.json(&call).await? {
                Value::String(s) if !s.trim().is_empty() => println!("{s}"),
                Value::Null | Value::String(_) => println!("(no error recorded)"),
                other => print_json(&other)?,
            }
            Ok(())
        }
        WebhookCmd::Usage(t) => {
            print_json(&t.conn.api()?.json(&routes::webhook_usage(t.id())).await?)
        }
        WebhookCmd::Deliveries {
            target: t,
            status,
            limit,
        } => {
            let call = routes::webhook_deliveries(t.id(), status, limit);
            let v = t.conn.api()?.json(&call).await?;
            let cols = [
                &["delivery_id", "DeliveryId"][..],
                &["status", "Status"],
                &["event", "Event"],
                &["primary_key", "PrimaryKey"],
                &["attempts", "Attempts"],
                &["last_status", "LastStatus"],
                &["created", "Created"],
                &["last_error", "LastError"],
            ];
            let head = [
                "ID",
                "STATUS",
                "EVENT",
                "KEY",
                "ATTEMPTS",
                "HTTP",
                "CREATED",
                "LAST ERROR",
            ];
            print_table(&head, &cols, &v, "deliveries")
        }
        WebhookCmd::Replay {
            target: t,
            since,
            until,
            only_failed,
        } => {
            let replay = Replay {
                since,
                until,
                only_failed,
            };
            let call = routes::replay(t.id(), &replay)?;
            let mut api = t.conn.api()?;
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message(format!("replaying events to webhook {}...", t.id));
            spinner.enable_steady_tick(Duration::from_millis(100));
            // A large replay runs as a job in the background: its progress is read until it
            // ends.
            let mut v = api.json(&call).await;
            while let Ok(job) = &v {
                if job["status"] != "Running" {
                    break;
                }
                spinner.set_message(format!(
                    "replaying events to webhook {}: {} matched, {} queued so far...",
                    t.id,
                    cell(&job["matched"]),
                    cell(&job["queued"])
                ));
                let Some(replay_id) = job["replayId"].as_i64() else {
                    break;
                };
                tokio::time::sleep(Duration::from_millis(500)).await;
                v = api.json(&routes::replay_progress(t.id(), replay_id)).await;
            }
            spinner.finish_and_clear();
            let v = v?;
            println!(
                "{} replay {}: matched {}, queued {}, skipped {}{}",
                cell(&v["status"]),
                cell(&v["replayId"]),
                cell(&v["matched"]),
                cell(&v["queued"]),
                cell(&v["skipped"]),
                v["error"]
                    .as_str()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}

/// PATCHes the webhook's `State` and reports the state the server answers with.
async fn set_state(t: &IdArgs, state: &str) -> Result<()> {
    let call = routes::set_webhook_state(t.id(), state)?;
    let v = t.conn.api()?.json(&call).await?;
    println!(
        "webhook {}: {}",
        t.id,
        if v["State"].is_null() {
            state.to_owned()
        } else {
            cell(&v["State"])
        }
    );
    Ok(())
}

impl Conn {
    /// The server these flags name, with their key.
    fn api(&self) -> Result<HttpApi> {
        let key = (self.api_key.as_deref())
            .filter(|k| !k.trim().is_empty())
            .context("no API key: pass --api-key or set CRMHOOKS_API_KEY")?;
        Ok(HttpApi::new(&self.url, ApiKey::new(key)?)?)
    }
}

impl IdArgs {
    fn id(&self) -> i64 {
        i64::from(self.id)
    }
}

/// The ContactEntity (create) or merge patch (update) the flags describe, with `--json` laid over it.
fn contact_body(f: &ContactFields) -> Result<Value> {
    let flags = ContactBody {
        name: f.name.as_deref(),
        department: f.department.as_deref(),
        org_nr: f.org_nr.as_deref(),
        number1: f.number1.as_deref(),
        business: f.business,
        category: f.category,
        country: f.country,
        associate: f.associate,
    };
    let mut body = serde_json::to_value(&flags)?;
    if let Some(raw) = &f.json {
        overlay(&mut body, parse_json_arg(raw)?);
    }
    Ok(body)
}

/// Parses `--json`: inline JSON, or `@FILE`; must be an object.
fn parse_json_arg(raw: &str) -> Result<Value> {
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --json file {path}"))?,
        None => raw.to_owned(),
    };
    let v: Value = serde_json::from_str(&text).context("--json is not valid JSON")?;
    if !v.is_object() {
        bail!("--json must be a JSON object");
    }
    Ok(v)
}

/// Lays `top` over `base`: objects merge key by key (recursively), anything else replaces.
/// `null`s are kept, so a merge patch can still clear a field.
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k).filter(|s| s.is_object() && v.is_object()) {
                    Some(slot) => overlay(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// The `Webhook` body of `webhook create`.
fn webhook_body(c: &WebhookCreate) -> NewWebhook {
    let mut hook = NewWebhook::new(&c.name, c.events.clone(), &c.target_url);
    if c.stopped {
        hook.state = "Stopped";
    }
    hook.secret.clone_from(&c.secret);
    hook.headers.clone_from(&c.headers);
    hook.errors_email.clone_from(&c.errors_email);
    hook.retry_policy.clone_from(&c.retry_policy);
    hook.success_status.clone_from(&c.success_status);
    hook
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Top,
    }

    #[derive(Subcommand)]
    enum Top {
        #[command(subcommand)]
        Contact(ContactCmd),
        #[command(subcommand)]
        Webhook(WebhookCmd),
    }

    #[test]
    fn clap_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn update_flags_make_a_merge_patch() -> Result<()> {
        let json = r#"{"OrgNr": null, "Business": {"Value": "IT"}, "Department": "Ops"}"#;
        let args =
            "x contact update 7 --api-key k --department Sales --business 2 --country 578 --json"
                .split(' ');
        let cli = Cli::try_parse_from(args.chain([json]))?;
        let Top::Contact(ContactCmd::Update { target, fields }) = cli.cmd else {
            bail!("wrong subcommand")
        };
        assert_eq!(target.id, 7);
        let patch = contact_body(&fields)?;
        let want = json!({"Department": "Ops", "Business": {"Id": 2, "Value": "IT"}, "Country": {"CountryId": 578}, "OrgNr": null});
        assert_eq!(patch, want);
        assert_eq!(contact_body(&ContactFields::default())?, json!({}));
        let f = ContactFields {
            json: Some("[1]".into()),
            ..ContactFields::default()
        };
        assert!(contact_body(&f).is_err());
        Ok(())
    }

    #[test]
    fn create_flags_make_a_contact_entity() -> Result<()> {
        let f = ContactFields {
            name: Some("Acme".into()),
            associate: Some(5),
            org_nr: Some("123".into()),
            ..Default::default()
        };
        assert_eq!(
            contact_body(&f)?,
            json!({"Name": "Acme", "OrgNr": "123", "Associate": {"AssociateId": 5}})
        );
        Ok(())
    }

    #[test]
    fn webhook_create_body() -> Result<()> {
        let args = "x webhook create --name n --target-url https://example.com/hook --stopped --success-status 2xx";
        let cli = Cli::try_parse_from(args.split(' ').chain(["--header", "X-A = b=c"]))?;
        let Top::Webhook(WebhookCmd::Create(c)) = cli.cmd else {
            bail!("wrong subcommand")
        };
        let events = [
            "contact.created",
            "contact.changed",
            "contact.softdeleted",
            "contact.deleted",
        ];
        let want = json!({"Name": "n", "Events": events, "TargetUrl": "https://example.com/hook", "State": "Stopped",
            "Type": "webhook", "Headers": {"X-A": "b=c"}, "SuccessStatus": "2xx"});
        assert_eq!(serde_json::to_value(webhook_body(&c))?, want);
        let cli = Cli::try_parse_from(
            "x webhook create --name n --target u --event a,b --event c".split(' '),
        )?;
        let Top::Webhook(WebhookCmd::Create(c)) = cli.cmd else {
            bail!("wrong subcommand")
        };
        assert_eq!(c.events, ["a", "b", "c"]);
        assert!(
            Cli::try_parse_from("x webhook create --name n --target u --header =v".split(' '))
                .is_err()
        );
        assert!(Cli::try_parse_from("x webhook replay 3 --since 5q".split(' ')).is_err());
        assert!(Cli::try_parse_from(
            "x webhook replay 3 --since 5m --until 2024-05-01T00:00:00Z".split(' ')
        )
        .is_ok());
        Ok(())
    }

    #[test]
    fn a_key_is_needed() -> Result<()> {
        let conn = Conn {
            url: "http://h:1/Acme/".into(),
            api_key: Some("k".into()),
        };
        assert!(conn.api().is_ok());
        for key in [None, Some(" ".to_owned())] {
            let conn = Conn {
                url: "http://h:1".into(),
                api_key: key,
            };
            let err = conn.api().err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("no API key: pass --api-key or set CRMHOOKS_API_KEY")
            );
        }
        let conn = Conn {
            url: "ftp://h".into(),
            api_key: Some("k".into()),
        };
        assert!(conn.api().is_err());
        Ok(())
    }
}
