//! `crmhooks demo`: the whole loop on one machine, printed readably.

use std::time::Duration;

use crmhooks_client::{routes, ApiKey, ContactBody, HttpApi, NewWebhook, Transport as _};
use crmhooks_listen::{Receiver, ReceiverConfig};
use crmhooks_server::{Config, Server};

/// Flags of `demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Print the full JSON body of every delivery.
    #[arg(long)]
    pub bodies: bool,
    /// Seconds to wait for each delivery before giving up.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

fn step(n: u32, what: &str) {
    println!("\n── {n}. {what}");
}

/// Runs the demo; fails when a delivery does not arrive or does not verify.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = "demo-secret-change-me";
    let key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let receiver = Receiver::start(
        ([127, 0, 0, 1], 0).into(),
        ReceiverConfig {
            secret: Some(secret.into()),
            ..ReceiverConfig::default()
        },
    )
    .await?;
    let mut flags = toml::value::Table::new();
    flags.insert(
        "database".into(),
        format!("sqlite://{}", dir.path().join("demo.db").display()).into(),
    );
    flags.insert("dev".into(), true.into());
    flags.insert("api_key".into(), key.clone().into());
    // A recycle bin of two seconds, checked twice a second, so the purge shows up in the demo.
    flags.insert("recycle_bin_days".into(), (2.0 / 86_400.0).into());
    flags.insert("maintenance_interval_secs".into(), 0.5.into());
    let config = Config::load(None, flags)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::build(config, Some(listener)).await?;
    let base = format!("http://{}", server.addr());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server_task = tokio::spawn(server.run(stop_rx));
    println!("crmhooks demo");
    println!(
        "  server    {base}   (SQLite in {}, dev mode)",
        dir.path().display()
    );
    println!(
        "  receiver  {}   (secret {secret:?})",
        receiver.url("/hook")
    );
    let mut api = HttpApi::new(&base, ApiKey::new(&key)?)?;
    let timeout = Duration::from_secs(args.timeout);
    let mut seen = 0usize;

    step(
        1,
        "create a webhook for the four contact events (the server first POSTs a test event)",
    );
    let mut hook = NewWebhook::new(
        "Demo receiver",
        crmhooks_payload::ContactEvent::ALL
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        receiver.url("/hook"),
    );
    hook.secret = Some(secret.to_owned());
    let hook = api.json(&routes::create_webhook(&hook)?).await?;
    println!("   webhook {} saved: {}", hook["WebhookId"], hook["Name"]);
    seen = show(&receiver, seen, 1, timeout, args.bodies).await?;

    step(2, "create a contact");
    let contact = ContactBody {
        name: Some("Acme Inc"),
        department: Some("Sales"),
        business: Some(2),
        category: Some(4),
        country: Some(578),
        ..ContactBody::default()
    };
    let id = api.create_contact(&contact).await?;
    println!("   contact {id} created");
    seen = show(&receiver, seen, 1, timeout, args.bodies).await?;

    step(3, "change its department (PATCH)");
    api.change_contact(id, &ContactBody::department("Key accounts"))
        .await?;
    seen = show(&receiver, seen, 1, timeout, args.bodies).await?;

    step(4, "delete it (soft: into the recycle bin)");
    api.call(&routes::delete_contact(id, false)).await?;
    seen = show(&receiver, seen, 1, timeout, args.bodies).await?;

    step(
        5,
        "wait for the recycle-bin purge (2 s in this demo, 14 days by default)",
    );
    seen = show(&receiver, seen, 1, timeout, args.bodies).await?;

    let bad = receiver
        .received()
        .iter()
        .filter(|r| !r.verdict.is_valid())
        .count();
    println!("\n{seen} requests received, {bad} with a bad signature.");
    let _ = stop_tx.send(true);
    let _ = server_task.await;
    receiver.shutdown().await;
    if bad > 0 {
        anyhow::bail!("{bad} deliveries did not verify");
    }
    println!("Next: `crmhooks serve --dev` and the curl walk-through in README.md.");
    Ok(())
}

/// Waits for `n` more requests and prints them.
async fn show(
    receiver: &Receiver,
    seen: usize,
    n: usize,
    timeout: Duration,
    bodies: bool,
) -> anyhow::Result<usize> {
    let all = receiver.wait_for(seen + n, timeout).await;
    if all.len() < seen + n {
        anyhow::bail!("expected a delivery within {timeout:?}, none arrived");
    }
    for r in &all[seen..] {
        let p = r.payload.as_ref();
        println!(
            "   ← {:<20} EventId {}  PrimaryKey {}  retry {}  signature {}{}",
            p.map(|p| p.event.as_str()).unwrap_or("?"),
            p.map(|p| p.event_id.to_string()).unwrap_or_default(),
            p.map(|p| p.primary_key).unwrap_or_default(),
            r.header(crmhooks_payload::headers::RETRY).unwrap_or("-"),
            r.verdict,
            if r.is_test() { "  (X-Hook-Test)" } else { "" },
        );
        if let Some(p) = p {
            if !p.changes.is_empty() {
                println!("     Changes: {}", p.changes.join(", "));
            }
        }
        if bodies {
            println!("     {}", r.body_text());
        }
    }
    Ok(all.len())
}
