//! The database of a run: a new SQLite file, or a new PostgreSQL database dropped at the end.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use sqlx::Connection as _;

use crate::BENCH_TENANT;

/// The database the server children use.
pub(crate) struct BenchDatabase {
    pub(crate) url: String,
    /// PostgreSQL: the admin URL and the created database, dropped at the end.
    postgres: Option<(String, String)>,
    /// A SQLite file the user named (kept); None for the temporary one.
    user_file: Option<PathBuf>,
}

impl BenchDatabase {
    /// The database `--database` names (a new SQLite file, or a new database created through a
    /// PostgreSQL admin URL), or a temporary SQLite file in `dir`.
    pub(crate) async fn prepare(url: Option<&str>, dir: &Path) -> anyhow::Result<Self> {
        let Some(url) = url else {
            return Ok(BenchDatabase {
                url: format!("sqlite://{}", dir.join("bench.db").display()),
                postgres: None,
                user_file: None,
            });
        };
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            let path = PathBuf::from(path.split('?').next().unwrap_or(path));
            if path.exists() {
                bail!(
                    "{} exists: bench needs a new database file (or none, for a temporary one)",
                    path.display()
                );
            }
            return Ok(BenchDatabase {
                url: url.to_owned(),
                postgres: None,
                user_file: Some(path),
            });
        }
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let name = format!("crmhooks_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .context("cannot connect to the PostgreSQL admin URL")?;
            if let Ok(backend) = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await
            {
                crate::machine::find_postmaster(u32::try_from(backend).unwrap_or(0));
            }
            sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("cannot create database {name}"))?;
            let _ = conn.close().await;
            let mut bench_url = url::Url::parse(url).context("not a valid postgres:// URL")?;
            bench_url.set_path(&format!("/{name}"));
            return Ok(BenchDatabase {
                url: bench_url.to_string(),
                postgres: Some((url.to_owned(), name)),
                user_file: None,
            });
        }
        bail!("unsupported --database {url:?}: use sqlite://PATH or postgres://…")
    }

    /// Stores `n` contacts of the benchmark's tenant (no events: this is data that was there
    /// before), through the store as a short command does beside a running server.
    pub(crate) async fn preload_contacts(&self, n: u64) -> anyhow::Result<()> {
        let n = i64::try_from(n).context("--preload-contacts is too large")?;
        let store = crmhooks_store::open(
            &self.url,
            &crmhooks_store::OpenOptions {
                serving: false,
                ..crmhooks_store::OpenOptions::default()
            },
        )
        .await
        .context("cannot open the database to store the preloaded contacts")?;
        store
            .preload_contacts(BENCH_TENANT, n)
            .await
            .context("cannot store the preloaded contacts")?;
        Ok(())
    }

    /// What the report calls this database.
    pub(crate) fn kind(&self) -> &'static str {
        match (&self.postgres, &self.user_file) {
            (Some(_), _) => "PostgreSQL",
            (None, Some(_)) => "SQLite",
            (None, None) => "SQLite (temporary file)",
        }
    }

    /// Drops the PostgreSQL database this run created, unless `CRMHOOKS_BENCH_KEEP_DATABASE`
    /// is set: then it stays, for a look at its delivery rows (each keeps when it was written
    /// and first attempted), and its name is printed.
    pub(crate) async fn cleanup(&self) -> anyhow::Result<()> {
        let Some((admin, name)) = &self.postgres else {
            return Ok(());
        };
        if std::env::var_os("CRMHOOKS_BENCH_KEEP_DATABASE").is_some() {
            eprintln!("kept database {name} (CRMHOOKS_BENCH_KEEP_DATABASE)");
            return Ok(());
        }
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("cannot connect to drop database {name}"))?;
        // FORCE (PostgreSQL 13+) ends connections a killed child may have left behind.
        let forced = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        if forced.is_err() {
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .execute(&mut conn)
                .await
                .with_context(|| format!("cannot drop database {name}"))?;
        }
        let _ = conn.close().await;
        Ok(())
    }
}
