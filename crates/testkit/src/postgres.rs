//! Where the PostgreSQL variants of the tests get a database.
//!
//! The admin URL (a role that may create databases) is `CRMHOOKS_TEST_DATABASE_URL` when it is
//! set. When it is not, a local server at [`LOCAL_URL`] is used if it answers, so that a plain
//! `cargo test --workspace --all-features` on a machine with PostgreSQL running tests on it
//! too. When neither is there, the PostgreSQL variants are skipped, and each skip is counted
//! ([`crate::skips`]). A URL that is set but does not work fails the tests: it was asked for.
//!
//! Each test gets its own fresh database ([`PgDatabase`]), dropped at its end.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::Connection as _;
use tokio::sync::OnceCell;

/// The environment variable that names the admin URL.
pub const ENV: &str = "CRMHOOKS_TEST_DATABASE_URL";

/// The server tried when [`ENV`] is unset (trust authentication, as a local test server has).
pub const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Every test database's name starts with this; [`drop_database_url`] drops no other.
const PREFIX: &str = "crmhooks_test_";

/// The admin URL, or why there is none. Found once per test binary: every PostgreSQL variant
/// of the binary asks, and a refused TCP connect or login need not be tried forty times.
static ADMIN: OnceCell<Result<String, String>> = OnceCell::const_new();

/// The admin URL: [`ENV`] when set, else [`LOCAL_URL`] when a server answers there; or why
/// there is none.
pub async fn admin_url() -> Result<String, String> {
    ADMIN.get_or_init(find_admin).await.clone()
}

async fn find_admin() -> Result<String, String> {
    if let Some(url) = std::env::var(ENV).ok().filter(|u| !u.trim().is_empty()) {
        return Ok(url);
    }
    // A quick TCP connect first: without a server the login below would wait for its own,
    // longer, timeout.
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    match tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("{ENV} is unset and nothing answers at {addr}: {e}")),
        Err(_) => return Err(format!("{ENV} is unset and {addr} does not answer")),
    }
    // Something listens there: it must also let us log in and create databases.
    match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::PgConnection::connect(LOCAL_URL),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(LOCAL_URL.to_owned())
        }
        Ok(Err(e)) => Err(format!(
            "{ENV} is unset and {LOCAL_URL} refused the login: {e}"
        )),
        Err(_) => Err(format!(
            "{ENV} is unset and {LOCAL_URL} did not answer the login"
        )),
    }
}

/// The admin URL for the PostgreSQL variant `test`, or `None` after recording its skip.
pub async fn admin_or_skip(test: &str) -> Option<String> {
    match admin_url().await {
        Ok(url) => Some(url),
        Err(why) => {
            crate::skips::record(test, &why);
            None
        }
    }
}

/// A fresh, empty database for one test, made through the admin URL.
pub struct PgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates the database. Panics when the server refuses: the admin URL was found working.
    pub async fn create(admin: &str) -> PgDatabase {
        let name = format!("{PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .unwrap_or_else(|e| panic!("connect to {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {admin}: {e}"));
        let _ = conn.close().await;
        PgDatabase {
            url: with_database(admin, &name),
            admin: admin.to_owned(),
            name,
        }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin URL it was made through.
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// Drops the database, ending the connections still open to it (best effort).
    pub async fn drop_database(self) {
        drop_named(&self.admin, &self.name).await;
    }
}

/// Drops a database made by [`PgDatabase::create`], known by its URL (best effort; other URLs
/// are left alone).
pub async fn drop_database_url(url: &str) {
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    let name = parsed.path().trim_start_matches('/');
    if !name.starts_with(PREFIX) {
        return;
    }
    if let Ok(admin) = admin_url().await {
        drop_named(&admin, name).await;
    }
}

async fn drop_named(admin: &str, name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// `admin` with its database replaced by `name` (user, host, port and query kept).
fn with_database(admin: &str, name: &str) -> String {
    match url::Url::parse(admin) {
        Ok(mut url) => {
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        // Not a URL the tests could have connected to; leave the error to the connect.
        Err(_) => format!("{admin}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_replaces_the_admin_database_only() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5432/postgres",
                "crmhooks_test_x"
            ),
            "postgres://postgres@127.0.0.1:5432/crmhooks_test_x"
        );
        assert_eq!(
            with_database("postgres://u:p@db/admin?sslmode=disable", "crmhooks_test_y"),
            "postgres://u:p@db/crmhooks_test_y?sslmode=disable"
        );
    }
}
