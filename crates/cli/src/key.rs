//! `crmhooks key create|list|revoke`: key management straight on the database, with no
//! server running or beside running nodes (SQLite through its own locking, as a short
//! command; PostgreSQL as any node). Keys revoked here are refused by every node within
//! seconds (their key cache lives 2 s).

use anyhow::{bail, Context as _};
use crmhooks_server::admin_api::{parse_lifetime, KeyView};
use crmhooks_store::{
    generate_key, now_ticks, ticks_rfc3339, ApiKey, DynStore, KeyScope, NewKey, OpenOptions, Ticks,
};

/// Subcommands of `crmhooks key`.
#[derive(clap::Subcommand, Debug)]
pub enum KeyCmd {
    /// Make a key for a tenant (created if new); prints the key once, on stdout.
    Create(CreateArgs),
    /// List keys: id, tenant, associate, name, scope, created, last used, expires, revoked
    /// (never the key).
    List(ListArgs),
    /// Revoke a key by id: every node refuses it within seconds.
    Revoke(RevokeArgs),
}

/// The database the command works on.
#[derive(clap::Args, Debug)]
pub struct Database {
    /// sqlite://PATH or postgres://… (the server's database).
    #[arg(
        long,
        env = "CRMHOOKS_DATABASE",
        default_value = "sqlite://crmhooks.db",
        hide_env_values = true
    )]
    pub database: String,
}

/// Flags of `key create`.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    db: Database,
    /// Tenant (its ContextIdentifier); created if it does not exist.
    #[arg(long)]
    tenant: String,
    /// Associate id the key acts as (ChangedByAssociateId).
    #[arg(long)]
    associate: i64,
    /// A name for people (what the key is for).
    #[arg(long, default_value = "")]
    name: String,
    /// Lifetime: a number and s, m, h, d or w (e.g. 90d); default: no expiry.
    #[arg(long)]
    expires: Option<String>,
    /// `tenant` (default) or `admin` (key management and /metrics).
    #[arg(long, default_value = "tenant")]
    scope: String,
}

/// Flags of `key list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    db: Database,
    /// Only the keys of this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// A JSON array of objects instead of a table.
    #[arg(long)]
    json: bool,
}

/// Flags of `key revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    #[command(flatten)]
    db: Database,
    /// The key's id (from `key list`).
    id: i64,
}

async fn open(db: &Database) -> anyhow::Result<DynStore> {
    let options = OpenOptions {
        serving: false,
        max_connections: 2,
        ..OpenOptions::default()
    };
    Ok(crmhooks_store::open(&db.database, &options).await?)
}

/// Runs a `key` subcommand.
pub async fn run(cmd: KeyCmd) -> anyhow::Result<()> {
    match cmd {
        KeyCmd::Create(a) => {
            let scope = KeyScope::parse(&a.scope)
                .with_context(|| format!("--scope {:?}: use tenant or admin", a.scope))?;
            if a.tenant.trim().is_empty() {
                bail!("--tenant must name a tenant");
            }
            let expires = match &a.expires {
                Some(e) => {
                    Some(now_ticks() + parse_lifetime(e).map_err(|m| anyhow::anyhow!("--{m}"))?)
                }
                None => None,
            };
            let store = open(&a.db).await?;
            let plain = generate_key();
            let new = NewKey {
                tenant: a.tenant.trim().to_owned(),
                associate_id: a.associate,
                name: a.name,
                scope,
                expires,
            };
            let key = store.create_key(&new, &plain).await?;
            store
                .record_audit(&key.audit("key.created", None, 0))
                .await?;
            eprintln!(
                "key {} for tenant {:?} ({}): shown once, store it now",
                key.id,
                key.tenant,
                key.summary()
            );
            println!("{plain}");
        }
        KeyCmd::List(a) => {
            let store = open(&a.db).await?;
            let keys = store.list_keys(a.tenant.as_deref()).await?;
            if a.json {
                let list: Vec<_> = keys.iter().map(KeyView::of).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&keys);
            }
        }
        KeyCmd::Revoke(a) => {
            let store = open(&a.db).await?;
            let Some(key) = store.revoke_key(a.id).await? else {
                bail!("there is no key {} (see `crmhooks key list`)", a.id);
            };
            store
                .record_audit(&key.audit("key.revoked", None, 0))
                .await?;
            println!(
                "key {} of tenant {:?} revoked: every node refuses it within 5 s",
                key.id, key.tenant
            );
        }
    }
    Ok(())
}

fn print_table(keys: &[ApiKey]) {
    let time = |t: Option<Ticks>| t.map_or_else(|| "-".to_owned(), ticks_rfc3339);
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|k| {
            [
                k.id.to_string(),
                k.tenant.clone(),
                k.associate_id.to_string(),
                k.name.clone(),
                k.scope.name().to_owned(),
                ticks_rfc3339(k.created),
                time(k.last_used),
                time(k.expires),
                time(k.revoked),
            ]
        })
        .collect();
    let head = [
        "ID",
        "TENANT",
        "ASSOCIATE",
        "NAME",
        "SCOPE",
        "CREATED",
        "LAST USED",
        "EXPIRES",
        "REVOKED",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (c, w) in cells.iter().zip(widths) {
            out.push_str(&format!("{c:<w$}  "));
        }
        println!("{}", out.trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}
