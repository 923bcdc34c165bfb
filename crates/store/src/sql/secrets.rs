//! Encrypting the secrets already stored: plain-text rows when a keyring is first given, and
//! every value again under a new first key (a rotation). One transaction; nothing is written
//! unless every stored value decrypts.

use serde_json::Value as Json;

use super::columns::{json_text, parse_json_map, secret_error};
use super::{args, Db};
use crate::secrets::{Keyring, ResealReport};
use crate::Result;
use crate::WebhookId;

/// One stored value, as it should be written: `None` when it stays as it is.
fn reseal_value(
    keys: &Keyring,
    stored: &str,
    rotate: bool,
    report: &mut ResealReport,
    fail: impl Fn(&crate::secrets::SecretError) -> crate::StoreError,
) -> Result<Option<String>> {
    match Keyring::kid_of(stored) {
        None => {
            report.sealed += 1;
            Ok(Some(keys.seal(stored)))
        }
        Some(kid) => {
            // Every value is opened, so that a wrong key is found before anything is written.
            let plain = keys.open(stored).map_err(|e| fail(&e))?;
            if rotate && Some(kid) != keys.primary_kid() {
                report.rotated += 1;
                Ok(Some(keys.seal(&plain)))
            } else {
                Ok(None)
            }
        }
    }
}

/// See [`crate::Store::reseal_secrets`]; runs in the transaction `db`. With an empty keyring
/// nothing is done.
pub(crate) async fn reseal(db: &mut impl Db, keys: &Keyring, rotate: bool) -> Result<ResealReport> {
    let mut report = ResealReport::default();
    if keys.is_empty() {
        return Ok(report);
    }
    let lock = db.lock_for_update();
    let rows = db
        .rows(
            &format!("SELECT webhook_id, secret, headers FROM webhook ORDER BY webhook_id{lock}"),
            args![],
            |r| Ok((WebhookId::new(r.int(0)?), r.opt_text(1)?, r.opt_text(2)?)),
        )
        .await?;
    let mut updates = Vec::new();
    for (id, secret, headers) in rows {
        report.webhooks += 1;
        let mut changed = false;
        let mut new_secret = secret.clone();
        if let Some(s) = &secret {
            if let Some(v) = reseal_value(keys, s, rotate, &mut report, |e| {
                secret_error(id, "Secret", e)
            })? {
                new_secret = Some(v);
                changed = true;
            }
        }
        let mut new_headers = parse_json_map(headers.clone())?;
        if let Some(map) = new_headers.as_mut() {
            for (name, v) in map.iter_mut() {
                let Json::String(s) = v else { continue };
                if let Some(sealed) = reseal_value(keys, s, rotate, &mut report, |e| {
                    secret_error(id, &format!("Headers.{name}"), e)
                })? {
                    *s = sealed;
                    changed = true;
                }
            }
        }
        if changed {
            updates.push((id, new_secret, new_headers.as_ref().map(json_text)));
        }
    }
    for (id, secret, headers) in updates {
        db.exec(
            "UPDATE webhook SET secret = $1, headers = $2 WHERE webhook_id = $3",
            args![secret, headers, id],
        )
        .await?;
    }
    Ok(report)
}
