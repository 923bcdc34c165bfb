//! `ErrorsEmail`: a mail over SMTP when a webhook becomes TooManyErrors.

use crmhooks_store::StateChange;
use lettre::message::Mailbox;
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Message, Tokio1Executor};

/// SMTP settings.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Sender address.
    pub from: String,
}

/// Sends errors mails; without SMTP configured it says so in the log once.
pub struct Mailer {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    warned: std::sync::atomic::AtomicBool,
}

impl Mailer {
    /// A mailer; `None` disables mail. Plain SMTP without TLS (a local relay); an invalid sender
    /// address is an error.
    pub fn new(cfg: Option<&SmtpConfig>) -> Result<Self, String> {
        let smtp = match cfg {
            None => None,
            Some(c) => {
                let from: Mailbox = c
                    .from
                    .parse()
                    .map_err(|e| format!("smtp.from {:?} is not a mail address: {e}", c.from))?;
                let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
                    .port(c.port)
                    .build();
                Some((t, from))
            }
        };
        Ok(Mailer {
            smtp,
            warned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Mails the webhook's `ErrorsEmail`, if it has one.
    pub async fn notify(&self, change: &StateChange) {
        let Some(to) = change
            .webhook
            .errors_email
            .as_deref()
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        let Some((transport, from)) = &self.smtp else {
            if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("ErrorsEmail is set on webhook {} but no SMTP server is configured ([smtp] in the config); no mail is sent", change.webhook.id);
            }
            return;
        };
        let to: Mailbox = match to.parse() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    webhook = change.webhook.id.get(),
                    "ErrorsEmail {to:?} is not a mail address: {e}"
                );
                return;
            }
        };
        let hook = &change.webhook;
        let body = format!(
            "Webhook {} ({:?}) was disabled: state {} after {}.\n\nTarget: {}\nReason: {}\n",
            hook.id,
            hook.name,
            hook.state.name(),
            change.from.name(),
            hook.target_url,
            change.reason.as_deref().unwrap_or("too many errors"),
        );
        let msg = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(format!(
                "crmhooks: webhook {} \"{}\" disabled (TooManyErrors)",
                hook.id, hook.name
            ))
            .body(body);
        match msg {
            Ok(m) => {
                if let Err(e) = transport.send(m).await {
                    tracing::warn!(
                        webhook = hook.id.get(),
                        "sending the errors mail failed: {e}"
                    );
                }
            }
            Err(e) => tracing::warn!(
                webhook = hook.id.get(),
                "building the errors mail failed: {e}"
            ),
        }
    }
}
