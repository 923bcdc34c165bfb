//! Errors of the store.

use crate::entity::FieldError;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The row does not exist (or belongs to another tenant).
    #[error("not found")]
    NotFound,
    /// A value does not fit its column.
    #[error("invalid value: {0}")]
    Invalid(#[from] FieldError),
    /// A precondition of the change failed (e.g. a JSON Patch `test`).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A change function refused the change with an error of its caller's own (e.g. the API's
    /// error, answered as it is); nothing was written.
    #[error("{0}")]
    Rejected(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The database cannot be reached right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database cannot be opened, with what to do about it (a missing directory, a file
    /// another server holds).
    #[error("{0}")]
    Open(String),
    /// Anything else the database said.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else SQLite said on the writer thread.
    #[error("database error: {0}")]
    Engine(String),
    /// A stored secret that the configured master keys cannot decrypt (names the webhook and
    /// the key id).
    #[error("master key: {0}")]
    Secret(String),
    /// Stored data that cannot be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Classifies a sqlx error: lost connections, pool timeouts and a server that is shutting
    /// down or starting up (SQLSTATE class 08, 57P01..57P03, 53300) are `Unavailable`.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            sqlx::Error::Database(ref d) if d.code().is_some_and(|c| connection_lost(&c)) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

/// SQLSTATEs that say the connection is gone or the server cannot take one now: class 08
/// (connection exception), 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect
/// now, 53300 too many connections.
pub(crate) fn connection_lost(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") || matches!(sqlstate, "57P01" | "57P02" | "57P03" | "53300")
}

impl StoreError {
    /// A change function's refusal, carried out of the store unchanged (see
    /// [`StoreError::Rejected`]).
    pub fn rejected(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Rejected(Box::new(e))
    }
}
