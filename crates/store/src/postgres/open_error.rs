//! What an operator reads when a node cannot open its PostgreSQL database: one line naming
//! the server and the database (never the password), why, and what to do.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::StoreError;

/// How long a node waits for its first connection at start.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The deepest cause's words: sqlx's errors repeat their source's message in their own.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut at = e;
    while let Some(next) = at.source() {
        at = next;
    }
    at.to_string()
}

/// The URL does not parse.
pub(super) fn bad_url(e: &sqlx::Error) -> StoreError {
    StoreError::Open(format!(
        "the PostgreSQL URL does not parse ({}); write it as postgres://user:password@host:5432/database",
        innermost(e)
    ))
}

/// The first connection failed: `Unavailable` when the server cannot be reached (it may be
/// starting), `Open` when it answered no.
pub(super) fn cannot_connect(o: &PgConnectOptions, e: &sqlx::Error) -> StoreError {
    let (host, port, user) = (o.get_host(), o.get_port(), o.get_username());
    let database = o.get_database().unwrap_or(user);
    let at = format!("PostgreSQL at {host}:{port}");
    let unreachable = match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| crate::error::connection_lost(&c)),
        _ => false,
    };
    let message = match e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("3D000") => format!(
                "{at} has no database {database:?}: create it (createdb -h {host} -p {port} -U {user} {database}), or name another in --database"
            ),
            Some("28P01" | "28000") => format!(
                "{at} refused user {user:?}: {}; check the user and the password in --database",
                d.message()
            ),
            _ => format!("{at} refused the connection: {}", d.message()),
        },
        sqlx::Error::Io(io) => format!(
            "cannot connect to {at}: {io}; is PostgreSQL running there, and is --database (CRMHOOKS_DATABASE) right?"
        ),
        other => format!("cannot connect to {at}: {}", innermost(other)),
    };
    if unreachable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Open(message)
    }
}

/// The first connection did not complete within [`CONNECT_TIMEOUT`].
pub(super) fn no_answer(o: &PgConnectOptions) -> StoreError {
    StoreError::Unavailable(format!(
        "no answer from PostgreSQL at {}:{} within {} s; is the host right, and does a firewall let the port through?",
        o.get_host(),
        o.get_port(),
        CONNECT_TIMEOUT.as_secs()
    ))
}
