//! The reader pool: read-only connections, each used by one blocking task at a time. Reads
//! never wait for the writer (WAL), and never write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::db::{sql_err, ReadConn};
use crate::{Result, StoreError};

/// Read-only connections to one SQLite file.
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Arc<Mutex<Vec<ReadConn>>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    /// A pool of at most `max` connections to `path`, opened when first needed.
    pub(super) fn new(path: &Path, max: u32) -> Self {
        ReadPool {
            path: path.to_owned(),
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(max.max(1) as usize)),
        }
    }

    /// Runs `read` on a connection of the pool, on a blocking thread.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut ReadConn) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite reader pool is closed".into()))?;
        let idle = self.idle.clone();
        let path = self.path.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let taken = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let mut conn = match taken {
                Some(c) => c,
                None => open(&path)?,
            };
            let result = read(&mut conn);
            idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            drop(permit);
            result
        })
        .await;
        joined.map_err(|e| StoreError::Unavailable(format!("a SQLite read failed: {e}")))?
    }
}

fn open(path: &Path) -> Result<ReadConn> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(sql_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(sql_err)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(ReadConn(conn))
}
