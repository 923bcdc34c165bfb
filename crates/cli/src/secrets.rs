//! `crmhooks secrets`: make a master key, and re-encrypt every stored webhook secret and
//! header value under a new one (a rotation). Works on the database directly, with or without
//! a server running.

use std::path::PathBuf;

use anyhow::Context as _;
use crmhooks_server::secrets::master_keyring;
use crmhooks_server::Config;
use crmhooks_store::{MasterKey, OpenOptions};

/// `crmhooks secrets …`.
#[derive(clap::Subcommand, Debug)]
pub enum SecretsCmd {
    /// Print a new random master key line, `kid:base64key` (32 bytes).
    GenerateKey {
        /// The key id (letters, digits, '.', '_', '-'); by default `k` and today's date.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Re-encrypt every webhook secret and header value under `--new-key` (or, without it,
    /// under the first configured key). The current keys are given as for `serve`
    /// (CRMHOOKS_MASTER_KEY or --master-key-file).
    Rotate {
        /// The new key, `kid:base64key` (env CRMHOOKS_NEW_MASTER_KEY, which other users of the
        /// machine cannot read in the process list).
        #[arg(long, env = "CRMHOOKS_NEW_MASTER_KEY", hide_env_values = true)]
        new_key: Option<String>,
        /// sqlite://PATH or postgres://… (env CRMHOOKS_DATABASE).
        #[arg(long)]
        database: Option<String>,
        /// TOML config file, as for `serve`.
        #[arg(long, env = "CRMHOOKS_CONFIG")]
        config: Option<PathBuf>,
        /// A file of the current master keys (env CRMHOOKS_MASTER_KEY_FILE).
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
}

/// Runs a `secrets` subcommand.
pub async fn run(cmd: SecretsCmd) -> anyhow::Result<()> {
    match cmd {
        SecretsCmd::GenerateKey { kid } => {
            let kid = kid.unwrap_or_else(default_kid);
            let (_, line) = MasterKey::generate(&kid)?;
            println!("{line}");
            Ok(())
        }
        SecretsCmd::Rotate {
            new_key,
            database,
            config,
            master_key_file,
        } => rotate(new_key, database, config, master_key_file).await,
    }
}

/// `k` and today's date (`k20261205`): key ids that sort by age.
fn default_kid() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    format!(
        "k{:04}{:02}{:02}",
        today.year(),
        u8::from(today.month()),
        today.day()
    )
}

async fn rotate(
    new_key: Option<String>,
    database: Option<String>,
    config: Option<PathBuf>,
    master_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut flags = toml::value::Table::new();
    if let Some(v) = database {
        flags.insert("database".into(), v.into());
    }
    if let Some(v) = master_key_file {
        flags.insert("master_key_file".into(), v.display().to_string().into());
    }
    let config = Config::load(config.as_deref(), flags)?;
    let mut keys = if config.master_key.is_none() && config.master_key_file.is_none() {
        // A database written by a --dev server: its key file.
        let path = crmhooks_server::secrets::dev_key_path(&config.database);
        if !path.exists() {
            anyhow::bail!(
                "no master key: give the current key(s) as CRMHOOKS_MASTER_KEY or --master-key-file"
            );
        }
        crmhooks_server::secrets::read_key_file(&path)?
    } else {
        master_keyring(&config)?.0
    };
    let old = keys.kids().join(", ");
    if let Some(line) = new_key {
        let key = MasterKey::parse(&line).context("--new-key")?;
        keys = keys.with_primary(key).context("--new-key")?;
    }
    let primary = keys.primary_kid().unwrap_or_default().to_owned();
    let store = crmhooks_store::open(
        &config.database,
        &OpenOptions {
            serving: false,
            max_connections: 2,
            keyring: keys.clone(),
            time_zone: config.local_zone()?,
            ..OpenOptions::default()
        },
    )
    .await
    .context("nothing was changed")?;
    let report = store.reseal_secrets(true).await?;
    println!(
        "{} webhook(s): {} value(s) re-encrypted under master key {primary:?}, {} encrypted that were plain text.",
        report.webhooks, report.rotated, report.sealed
    );
    println!(
        "Next: give every node the keys {} (the new one first) and restart them; once every node runs with them, drop the old key(s) ({old}).",
        keys.kids().join(", ")
    );
    Ok(())
}
