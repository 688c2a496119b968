//! Storage: the SQL truth behind every entity, the outbox, the embedded event log and the
//! idempotency records.
//!
//! One module per kind of row ([`users`], [`catalog`], [`orders`], [`payments`], [`chat`],
//! [`tokens`]) plus [`log`] for the outbox and the embedded event log. Reads use a pool of their
//! own so they never queue behind writes.
//!
//! Two databases are supported, chosen by the URL's scheme ([`backend`]): SQLite for one machine,
//! PostgreSQL for nodes on several. Queries are written once, in the dialect both accept, and run
//! through sqlx's `Any` driver; timestamps are stored as fixed-width text ([`timestamp`]).
//!
//! Writes go through one connection per process (SQLite has one writer anyway) with group commit: each
//! command runs in a savepoint of a batch transaction, and one `COMMIT` (one fsync) makes every
//! command that finished meanwhile durable at once. A command is acknowledged only after the
//! `COMMIT` that carries it, so "committed before replying" holds while the fsync cost is shared
//! by every writer waiting at that moment.

pub mod backend;
pub mod catalog;
pub mod chat;
pub mod log;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod timestamp;
pub mod tokens;
pub mod users;

pub use backend::Backend;
use bazaar_protocol::events::Envelope;
use chrono::{DateTime, Utc};
use sqlx::any::AnyQueryResult;
use sqlx::{AnyConnection, AnyPool, Executor};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex, Notify, OwnedMutexGuard};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row changed since it was read: reload and decide again.
    #[error("version conflict")]
    VersionConflict,
    /// A unique constraint refused the row.
    #[error("duplicate row")]
    Duplicate,
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored row could not be read back (corrupt JSON, unknown enum spelling).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
            // PostgreSQL only: two nodes' batches waited on each other's rows (40P01), a
            // serializable check failed (40001) or a lock wait ran out (55P03). The statement
            // was undone; deciding again on fresh state is the same cure as for a stale version.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001" | "55P03")) => {
                StoreError::VersionConflict
            }
            _ => StoreError::Database(error),
        }
    }
}

/// How durable a commit is before it is acknowledged (SQLite `synchronous`; a PostgreSQL server
/// decides this itself with `synchronous_commit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on every commit: survives power loss.
    Full,
    /// fsync at checkpoints: survives a process crash, may lose the newest commits on power loss.
    Normal,
}

/// How a store is opened: its durability, and how much page cache each SQLite connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// How durable a commit is before it is acknowledged.
    pub durability: Durability,
    /// The page cache of each SQLite connection (the writer and every reader), in KiB; SQLite's
    /// own default is 2,000. Unused on PostgreSQL.
    pub sqlite_cache_kib: u32,
}

impl Tuning {
    /// The page cache per connection when none is configured.
    pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 512;
}

impl From<Durability> for Tuning {
    fn from(durability: Durability) -> Self {
        Self { durability, sqlite_cache_kib: Self::DEFAULT_SQLITE_CACHE_KIB }
    }
}

/// A record that a request with an idempotency key was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The hash of the request body it answered.
    pub request_hash: String,
    /// The id of the entity it created.
    pub result_id: String,
}

/// An idempotency key as the caller sent it, scoped to the caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyKey {
    /// The calling user.
    pub user_id: String,
    /// The `Idempotency-Key` header.
    pub key: String,
    /// A hash of the request body, to tell a retry from a different request.
    pub request_hash: String,
}

/// The one write connection and the batch it is building.
struct Writer {
    conn: AnyConnection,
    /// A batch transaction is open.
    open: bool,
    /// The last command's savepoint was neither released nor rolled back (its `Tx` was dropped).
    abandoned: bool,
    /// Commands in the open batch waiting for its `COMMIT`.
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Writer {
    /// Undoes an abandoned command; if that fails the batch is beyond repair and is rolled back.
    async fn tidy(&mut self) {
        if !self.abandoned {
            return;
        }
        self.abandoned = false;
        // Both spellings are valid in both dialects; on PostgreSQL the rollback also clears the
        // error state a failed statement leaves the whole transaction in.
        let undone = match self.conn.execute("ROLLBACK TO SAVEPOINT command").await {
            Ok(_) => self.conn.execute("RELEASE SAVEPOINT command").await.map(drop),
            Err(e) => Err(e),
        };
        if undone.is_err() {
            self.abort("the batch could not undo a failed command").await;
        }
    }

    /// Rolls the whole batch back and fails everyone waiting for it.
    async fn abort(&mut self, reason: &str) {
        let _ = self.conn.execute("ROLLBACK").await;
        self.open = false;
        for waiting in self.waiting.drain(..) {
            let _ = waiting.send(Err(reason.to_owned()));
        }
    }

    /// Commits the open batch and tells everyone in it.
    async fn flush(&mut self) {
        self.tidy().await;
        if !self.open {
            return;
        }
        match self.conn.execute("COMMIT").await {
            Ok(_) => {
                self.open = false;
                metrics::histogram!("bazaar_store_batch_commands").record(self.waiting.len() as f64);
                for waiting in self.waiting.drain(..) {
                    let _ = waiting.send(Ok(()));
                }
            }
            Err(e) => self.abort(&e.to_string()).await,
        }
    }
}

/// A command's write transaction: a savepoint in the current batch, holding the write connection
/// until [`Store::commit`] (or until dropped, which undoes it).
pub struct Tx {
    writer: OwnedMutexGuard<Writer>,
    released: bool,
    flush: Arc<Notify>,
    /// The command queued events in the outbox: only then does its commit wake the relay. A
    /// commit that woke it unconditionally made the relay's own commits wake it again, a busy
    /// loop of empty write transactions on an idle node.
    queued_events: bool,
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.writer.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.writer.conn
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.released {
            // Undone by whoever takes the connection next (undoing needs an await); the flusher
            // is woken so an otherwise idle batch does not keep the database locked.
            self.writer.abandoned = true;
            self.flush.notify_one();
        }
    }
}

/// The handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: Arc<Mutex<Writer>>,
    flush: Arc<Notify>,
    read: AnyPool,
    committed: Arc<Notify>,
    backend: Backend,
}

impl Store {
    /// Opens the database at `url` (`sqlite:` creating the file if missing, or `postgres:`) and
    /// runs the embedded migrations of its backend.
    pub async fn open(url: &str, tuning: impl Into<Tuning>) -> Result<Self, StoreError> {
        let tuning = tuning.into();
        // The nodes of a local cluster start together on one file: one may find it locked while
        // another switches it to WAL or migrates it (the losers' migrations roll back, and a
        // second look finds them applied). Opening is retried for a few seconds.
        let backend = Backend::of_url(url)?;
        let mut attempt: u64 = 0;
        loop {
            match Self::try_open(backend, url, tuning).await {
                Ok(store) => return Ok(store),
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(attempt, reason = %e, "database not ready; retrying");
                    tokio::time::sleep(Duration::from_millis((50 * attempt).min(500))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_open(backend: Backend, url: &str, tuning: Tuning) -> Result<Self, StoreError> {
        let write = backend.open_writer(url, tuning).await?;
        let read = backend.open_reader(url, tuning).await?;
        let conn = write.acquire().await?.detach();
        write.close().await;
        let writer = Arc::new(Mutex::new(Writer { conn, open: false, abandoned: false, waiting: Vec::new() }));
        let flush = Arc::new(Notify::new());
        tokio::spawn(flusher(Arc::downgrade(&writer), flush.clone()));
        Ok(Self { writer, flush, read, committed: Arc::new(Notify::new()), backend })
    }

    /// Starts a command's write transaction (a savepoint in the current batch, which starts as
    /// [`Backend::begin_batch`] says).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.tidy().await;
        if !writer.open {
            writer.conn.execute(self.backend.begin_batch()).await?;
            writer.open = true;
        }
        writer.conn.execute("SAVEPOINT command").await?;
        Ok(Tx { writer, released: false, flush: self.flush.clone(), queued_events: false })
    }

    /// Makes a command's writes durable: waits for the `COMMIT` of the batch that carries them,
    /// then wakes the outbox relay if the command queued events.
    pub async fn commit(&self, mut tx: Tx) -> Result<(), StoreError> {
        tx.writer.conn.execute("RELEASE SAVEPOINT command").await?;
        tx.released = true;
        let queued_events = tx.queued_events;
        let (done, committed) = oneshot::channel();
        tx.writer.waiting.push(done);
        drop(tx);
        self.flush.notify_one();
        match committed.await {
            Ok(Ok(())) => {
                if queued_events {
                    self.committed.notify_one();
                }
                Ok(())
            }
            Ok(Err(reason)) => Err(StoreError::Corrupt(format!("batch commit failed: {reason}"))),
            Err(_) => Err(StoreError::Corrupt("the writer stopped".into())),
        }
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Wakes when a transaction that queued events has committed (the outbox holds new rows).
    pub fn commit_signal(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    /// Commits what is pending and closes the read pool (the write connection closes with the
    /// last handle).
    pub async fn close(&self) {
        self.writer.lock().await.flush().await;
        self.read.close().await;
    }
}

/// Commits batches: woken after each command is released, it takes the write connection once
/// the commands already queued for it have run, so everything that finished meanwhile shares one
/// `COMMIT`.
async fn flusher(writer: std::sync::Weak<Mutex<Writer>>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        let Some(writer) = writer.upgrade() else { return };
        writer.lock().await.flush().await;
    }
}

/// Records `events` and queues them in the outbox, inside the caller's transaction.
pub async fn append_events(tx: &mut Tx, events: &[Envelope]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        rows.push((event, serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    }
    // One statement for all of a command's events; a trigger queues each in the outbox. Written
    // by hand because sqlx's QueryBuilder numbers no placeholders for `Any` (PostgreSQL needs $N).
    const COLUMNS: usize = 7;
    let mut sql = String::from("INSERT INTO events (id, topic, entity_id, seq, type, at, body) VALUES ");
    for index in 0..rows.len() {
        sql.push_str(if index == 0 { "(" } else { ", (" });
        push_placeholders(&mut sql, index * COLUMNS + 1, COLUMNS);
        sql.push(')');
    }
    let mut insert = sqlx::query(&sql);
    for (event, body) in rows {
        insert = insert
            .bind(event.id.as_str())
            .bind(event.event.topic())
            .bind(&event.entity_id)
            .bind(event.seq)
            .bind(event.event.type_name())
            .bind(timestamp::encode(event.at))
            .bind(body);
    }
    insert.execute(&mut **tx).await?;
    tx.queued_events = true;
    Ok(())
}

/// Looks up an idempotency record inside the caller's transaction.
pub async fn find_idempotency(tx: &mut Tx, user_id: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    idempotency_record(&mut **tx, user_id, key).await
}

/// Looks up an idempotency record outside any transaction (the fast path for retries).
pub async fn peek_idempotency(
    store: &Store,
    user_id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    idempotency_record(store.reader(), user_id, key).await
}

async fn idempotency_record<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    user_id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT request_hash, result_id FROM idempotency WHERE user_id = $1 AND key = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(request_hash, result_id)| IdempotencyRecord { request_hash, result_id }))
}

/// Stores an idempotency record inside the caller's transaction.
pub async fn save_idempotency(
    tx: &mut Tx,
    key: &IdempotencyKey,
    result_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO idempotency (user_id, key, request_hash, result_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&key.user_id)
    .bind(&key.key)
    .bind(&key.request_hash)
    .bind(result_id)
    .bind(timestamp::encode(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets idempotency records older than `cutoff`; returns how many.
pub async fn expire_idempotency(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    // Looked at through the read pool first: an idle node writes nothing when nothing expired.
    let due: Option<i64> = sqlx::query_scalar("SELECT 1 FROM idempotency WHERE created_at < $1 LIMIT 1")
        .bind(timestamp::encode(cutoff))
        .fetch_optional(store.reader())
        .await?;
    if due.is_none() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM idempotency WHERE created_at < $1")
        .bind(timestamp::encode(cutoff))
        .execute(&mut *tx)
        .await?;
    store.commit(tx).await?;
    Ok(done.rows_affected())
}

/// Marks an event as applied by a consumer; returns false when it already was (a redelivery).
pub async fn mark_processed(tx: &mut Tx, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a consumer already applied an event (for steps whose side effect lies outside the
/// database, which must be checked before it is done and marked after).
pub async fn is_processed(store: &Store, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
        .bind(consumer)
        .bind(event_id)
        .fetch_optional(store.reader())
        .await?;
    Ok(found.is_some())
}

/// Appends `$first, $first+1, ...` (`count` of them): sqlx's QueryBuilder numbers no
/// placeholders for the `Any` driver, and PostgreSQL needs them numbered.
pub(crate) fn push_placeholders(sql: &mut String, first: usize, count: usize) {
    use std::fmt::Write;
    for n in first..first + count {
        let _ = write!(sql, "{}${n}", if n == first { "" } else { ", " });
    }
}

/// Fails with [`StoreError::VersionConflict`] unless exactly one row was changed.
pub(crate) fn expect_one(done: AnyQueryResult) -> Result<(), StoreError> {
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::VersionConflict)
    }
}

pub(crate) fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value}"))
}

#[cfg(test)]
mod tests {
    use super::test_support::fresh_store;
    use super::*;

    #[tokio::test]
    async fn numbered_placeholders_bind_by_number_not_by_position() {
        let (store, _db) = fresh_store().await;
        let (second, first): (String, i64) =
            sqlx::query_as("SELECT $2, $1").bind(7_i64).bind("two").fetch_one(store.reader()).await.unwrap();
        assert_eq!((second.as_str(), first), ("two", 7));
        let repeated: Option<String> = sqlx::query_scalar("SELECT CASE WHEN $1 IS NULL THEN 'none' ELSE $1 END")
            .bind("x")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(repeated.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn idempotency_records_expire_by_age_only() {
        let (store, _db) = fresh_store().await;
        let now = Utc::now();
        for (user, age) in [("old", 3_600), ("young", 1)] {
            let key = IdempotencyKey { user_id: user.into(), key: "k".into(), request_hash: "h".into() };
            let mut tx = store.begin().await.unwrap();
            save_idempotency(&mut tx, &key, "r", now - chrono::Duration::seconds(age)).await.unwrap();
            store.commit(tx).await.unwrap();
        }
        let expired = expire_idempotency(&store, now - chrono::Duration::seconds(60)).await.unwrap();
        assert_eq!(expired, 1);
        assert!(peek_idempotency(&store, "old", "k").await.unwrap().is_none());
        assert!(peek_idempotency(&store, "young", "k").await.unwrap().is_some());
    }

    async fn count(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM consumer_offsets").fetch_one(store.reader()).await.unwrap()
    }

    async fn insert(store: &Store, name: &str) -> Result<(), StoreError> {
        let mut tx = store.begin().await?;
        sqlx::query("INSERT INTO consumer_offsets (consumer, position) VALUES ($1, 1)")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        store.commit(tx).await
    }

    #[tokio::test]
    async fn concurrent_commands_are_each_committed_once() {
        let (store, _dir) = fresh_store().await;
        let writes = (0..200).map(|n| {
            let store = store.clone();
            tokio::spawn(async move { insert(&store, &format!("c{n}")).await })
        });
        for write in futures_util::future::join_all(writes).await {
            write.unwrap().unwrap();
        }
        assert_eq!(count(&store).await, 200);
    }

    #[tokio::test]
    async fn a_dropped_or_failed_command_leaves_its_batch_neighbours_intact() {
        let (store, _dir) = fresh_store().await;
        insert(&store, "kept").await.unwrap();
        // Dropped without commit: undone.
        let mut tx = store.begin().await.unwrap();
        sqlx::query("INSERT INTO consumer_offsets (consumer, position) VALUES ('dropped', 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        // A unique violation fails only its own command.
        assert!(matches!(insert(&store, "kept").await, Err(StoreError::Duplicate)));
        insert(&store, "after").await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("SELECT consumer FROM consumer_offsets ORDER BY consumer")
            .fetch_all(store.reader())
            .await
            .unwrap();
        assert_eq!(names, ["after", "kept"]);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The admin URL of a PostgreSQL server to test against instead of SQLite.
    pub const POSTGRES_URL_VAR: &str = "TEST_POSTGRES_URL";

    /// Where a test's database lives; dropping it removes the database.
    pub enum TestDatabase {
        /// A SQLite file in a temporary directory, removed when the directory is dropped.
        Sqlite { url: String, _dir: tempfile::TempDir },
        /// A database of its own on the PostgreSQL server at `admin_url`.
        Postgres { admin_url: String, name: String, url: String },
    }

    impl TestDatabase {
        /// The URL another store (another node, in effect) opens the same database with.
        pub fn url(&self) -> &str {
            match self {
                TestDatabase::Sqlite { url, .. } | TestDatabase::Postgres { url, .. } => url,
            }
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let TestDatabase::Postgres { admin_url, name, .. } = self else { return };
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop cannot await, and the test's runtime may be single-threaded: a runtime of
            // its own on a thread of its own does the dropping. A failure only leaves a database
            // behind on a throwaway server.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(backend::drop_postgres_database(&admin_url, &name)).ok()
            });
            let _ = dropped.join();
        }
    }

    /// Opens a fresh database: a SQLite file, or a new PostgreSQL database when
    /// `TEST_POSTGRES_URL` names a server. It lives as long as the returned guard.
    pub async fn fresh_store() -> (Store, TestDatabase) {
        match std::env::var(POSTGRES_URL_VAR) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let url = backend::create_postgres_database(&admin_url, &name).await.expect("create test database");
                let store = Store::open(&url, Durability::Normal).await.expect("open store");
                (store, TestDatabase::Postgres { admin_url, name, url })
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                let store = Store::open(&url, Durability::Normal).await.expect("open store");
                (store, TestDatabase::Sqlite { url, _dir: dir })
            }
        }
    }
}
