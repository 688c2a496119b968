//! Storage: the SQL truth behind every entity, the outbox, the embedded event log and the
//! idempotency records.
//!
//! One module per kind of row ([`users`], [`catalog`], [`orders`], [`payments`], [`chat`],
//! [`tokens`], [`carts`], [`idempotency`], [`webhooks`], [`history`] for reading events back) plus
//! [`embedded_log`] for the embedded event log and [`outbox`] for the relay to an outside log.
//! Reads use a pool of their own so they never queue behind writes.
//!
//! Three databases are supported, chosen by the URL's scheme ([`backend`]): SQLite for one
//! machine, PostgreSQL or MySQL/MariaDB for nodes on several. Queries are written once, in the
//! dialect SQLite and PostgreSQL share, and run through sqlx's `Any` driver by way of
//! [`query`]/[`query_as`]/[`query_scalar`], which respell them for MySQL; timestamps are stored as
//! fixed-width text ([`timestamp`]).
//!
//! Writes go through one connection per process (SQLite has one writer anyway) with group commit: each
//! command runs in a savepoint of a batch transaction, and one `COMMIT` (one fsync) makes every
//! command that finished meanwhile durable at once. A command is acknowledged only after the
//! `COMMIT` that carries it, so "committed before replying" holds while the fsync cost is shared
//! by every writer waiting at that moment. The writes a command does not read back are held in
//! its [`Tx`] and sent together ([`write`]): on SQLite, one call for its savepoint, all of them,
//! their version checks and the release.

pub mod backend;
pub mod carts;
pub mod catalog;
pub mod chat;
pub mod checkouts;
pub mod embedded_log;
pub mod history;
pub mod idempotency;
pub mod orders;
pub mod outbox;
pub mod payments;
pub mod timestamp;
pub mod tokens;
pub mod users;
pub mod webhooks;
mod write;

pub(crate) use backend::{query, query_as, query_scalar};
pub use backend::{Backend, OnBackend};
use bazaar_protocol::events::Envelope;
use sqlx::any::AnyQueryResult;
use sqlx::{AnyConnection, AnyPool, Executor};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Mutex, Notify, OwnedMutexGuard};
pub(crate) use write::Write;

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
            // PostgreSQL (and MySQL, for 40001): two nodes' batches waited on each other's rows (40P01), a
            // serializable check failed (40001) or a lock wait ran out (55P03). The statement
            // was undone; deciding again on fresh state is the same cure as for a stale version.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001" | "55P03")) => {
                StoreError::VersionConflict
            }
            // MySQL and MariaDB: the same lock wait running out, without a SQLSTATE of its own.
            sqlx::Error::Database(db) if backend::is_mysql_lock_timeout(&**db) => StoreError::VersionConflict,
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
    /// How long the writer waits on a row lock another node holds before the statement fails
    /// and its batch is decided again (PostgreSQL and MySQL; SQLite has one writer per file).
    pub lock_wait: Duration,
    /// How long a starting node waits for another node's schema migrations to finish
    /// (PostgreSQL and MySQL).
    pub migration_wait: Duration,
    /// How long a starting node waits for a PostgreSQL or MySQL server that does not accept
    /// connections (not started yet, or the wrong address) before it gives up.
    pub connect_wait: Duration,
}

impl Tuning {
    /// The page cache per connection when none is configured.
    pub const DEFAULT_SQLITE_CACHE_KIB: u32 = 512;
    /// The lock wait when none is configured.
    pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);
    /// The wait for another node's migrations when none is configured.
    pub const DEFAULT_MIGRATION_WAIT: Duration = Duration::from_secs(120);
    /// The wait for an unreachable database server when none is configured.
    pub const DEFAULT_CONNECT_WAIT: Duration = Duration::from_secs(60);
}

impl From<Durability> for Tuning {
    fn from(durability: Durability) -> Self {
        Self {
            durability,
            sqlite_cache_kib: Self::DEFAULT_SQLITE_CACHE_KIB,
            lock_wait: Self::DEFAULT_LOCK_WAIT,
            migration_wait: Self::DEFAULT_MIGRATION_WAIT,
            connect_wait: Self::DEFAULT_CONNECT_WAIT,
        }
    }
}

/// The one write connection and the batch it is building.
struct Writer {
    conn: AnyConnection,
    /// A batch transaction is open.
    open: bool,
    /// The last command's savepoint was neither released nor rolled back (its `Tx` was dropped,
    /// or the `begin` that was making it was given up).
    abandoned: bool,
    /// A `begin` was given up while its `BEGIN` ran (a caller's timeout): the connection may be in
    /// a transaction no batch knows of, and must roll it back before anything else.
    in_doubt: bool,
    /// The connection failed (the server restarted, the network dropped it): the next command
    /// opens a new one. A server rolls back what a lost connection had not committed.
    broken: bool,
    /// Where and how to open the connection again.
    url: String,
    tuning: Tuning,
    /// The database it writes to.
    backend: Backend,
    /// Commands in the open batch waiting for its `COMMIT`.
    waiting: Vec<oneshot::Sender<Result<(), BatchFailed>>>,
}

/// Why a batch a command was in did not commit.
#[derive(Debug, Clone)]
struct BatchFailed {
    reason: String,
    /// Nothing of the batch reached the database (it was rolled back, or the server refused its
    /// `COMMIT`): the command may be decided again. Otherwise the outcome is unknown.
    undone: bool,
}

/// Takes the write connection out of its pool (closed after), ready for [`Tx::defer`]'s calls.
async fn write_connection(backend: Backend, pool: &AnyPool) -> Result<AnyConnection, StoreError> {
    let mut conn = pool.acquire().await?.detach();
    pool.close().await;
    if backend == Backend::Sqlite {
        conn.execute(write::CREATE_VERSION_CHECK).await?;
    }
    Ok(conn)
}

/// Whether an error says the connection itself is gone, rather than a statement failed.
fn lost_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolClosed
        | sqlx::Error::PoolTimedOut => true,
        // SQLSTATE class 08 (connection exception) and 57P0x: PostgreSQL shutting down or
        // restarting (`pg_ctl restart` says 57P01 to every session before it closes them).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

impl Writer {
    /// Notes a failed statement; one that lost the connection marks the writer for a new one.
    fn note<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if let Err(e) = &result {
            if lost_connection(e) {
                self.broken = true;
            }
        }
        result
    }

    /// Opens the connection again after it broke. The batch it held is gone with it (its
    /// commands were told so by [`Writer::abort`]).
    async fn reconnect(&mut self) -> Result<(), StoreError> {
        let pool = self.backend.connect_writer(&self.url, self.tuning).await?;
        self.conn = write_connection(self.backend, &pool).await?;
        (self.broken, self.open, self.abandoned, self.in_doubt) = (false, false, false, false);
        tracing::info!("the database write connection was opened again");
        Ok(())
    }

    /// Undoes an abandoned command; if that fails the batch is beyond repair and is rolled back.
    ///
    /// Each flag is cleared only once its statement has returned: a `begin` given up midway
    /// leaves it set, and the next user of the writer undoes again rather than commit.
    async fn tidy(&mut self) {
        if self.in_doubt {
            // No batch was open, so nothing else is undone. Without this, every later BEGIN on
            // SQLite fails "cannot start a transaction within a transaction", for good.
            let rolled_back = self.conn.execute("ROLLBACK").await;
            self.in_doubt = false;
            let _ = self.note(rolled_back);
        }
        if !self.abandoned {
            return;
        }
        // Both spellings are valid in both dialects; on PostgreSQL the rollback also clears the
        // error state a failed statement leaves the whole transaction in.
        let undone = match self.conn.execute("ROLLBACK TO SAVEPOINT command").await {
            Ok(_) => self.conn.execute("RELEASE SAVEPOINT command").await.map(drop),
            Err(e) => Err(e),
        };
        self.abandoned = false;
        let undone = self.note(undone);
        // No COMMIT was sent: rolling the batch back undoes all of it. This is the path of a
        // MySQL deadlock (1213), which rolls back the server's whole transaction, savepoints
        // and all; the batch's other commands are then decided again, not failed.
        if let Err(e) = undone {
            self.abort(BatchFailed { reason: format!("the batch could not undo a failed command: {e}"), undone: true })
                .await;
        }
    }

    /// Rolls the whole batch back and fails everyone waiting for it.
    ///
    /// The batch is closed and its commands told before the `ROLLBACK` is sent, with the writer
    /// in doubt until it returns: given up midway, the next user rolls back again, and never
    /// commits the remains of a batch whose commands were told it failed.
    async fn abort(&mut self, failed: BatchFailed) {
        self.open = false;
        self.in_doubt = true;
        for waiting in self.waiting.drain(..) {
            let _ = waiting.send(Err(failed.clone()));
        }
        let rolled_back = self.conn.execute("ROLLBACK").await;
        self.in_doubt = false;
        let _ = self.note(rolled_back);
    }

    /// Commits the open batch and tells everyone in it.
    async fn flush(&mut self) {
        self.tidy().await;
        if !self.open {
            return;
        }
        if self.broken {
            // The server rolled back what the lost connection held; no COMMIT ever reached it.
            let lost = BatchFailed { reason: "the database connection was lost".into(), undone: true };
            self.abort(lost).await;
            return;
        }
        let committed = self.conn.execute("COMMIT").await;
        match self.note(committed) {
            Ok(_) => {
                self.open = false;
                metrics::histogram!("bazaar_store_batch_commands").record(self.waiting.len() as f64);
                for waiting in self.waiting.drain(..) {
                    let _ = waiting.send(Ok(()));
                }
            }
            // A refused COMMIT of the rollback kind (SQLSTATE class 40: serialization, deadlock;
            // MySQL's 1213) stored nothing. Anything else (a server shutting down, a broken
            // connection) may have committed or not.
            Err(e) => {
                let undone = match &e {
                    sqlx::Error::Database(db) => {
                        db.code().is_some_and(|code| code.starts_with("40")) || backend::is_mysql_deadlock(&**db)
                    }
                    _ => false,
                };
                self.abort(BatchFailed { reason: e.to_string(), undone }).await
            }
        }
    }
}

/// A command's write transaction: a savepoint in the current batch, holding the write connection
/// until [`Store::commit`] (or until dropped, which undoes it).
pub struct Tx {
    writer: OwnedMutexGuard<Writer>,
    released: bool,
    /// The command's savepoint was sent (it is opened with the first statement that writes).
    savepoint: bool,
    /// Writes not sent yet ([`Tx::defer`]).
    writes: Vec<Write>,
    flush: Arc<Notify>,
    /// The command queued events in the outbox: only then does its commit wake the relay. A
    /// commit that woke it unconditionally made the relay's own commits wake it again, a busy
    /// loop of empty write transactions on an idle node.
    queued_events: bool,
}

impl OnBackend for Tx {
    fn backend(&self) -> Backend {
        self.writer.backend
    }
}

impl Deref for Tx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.writer.conn
    }
}

impl Tx {
    /// Holds `write` until the command commits or next uses the connection; a failed version
    /// check or constraint of it fails the command then.
    pub(crate) fn defer(&mut self, write: Write) {
        let write = write.spelled_for(self.writer.backend);
        self.writes.push(write);
    }

    /// The write connection for a statement that writes and reads its outcome: the savepoint is
    /// open and every deferred write was sent before it.
    pub async fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        if !self.savepoint || !self.writes.is_empty() {
            self.send(false).await?;
        }
        Ok(&mut self.writer.conn)
    }

    /// The write connection for a read that must see the command's own writes (and the batch's):
    /// the deferred writes are sent first, and a command that has written nothing yet opens no
    /// savepoint for it.
    pub async fn read(&mut self) -> Result<&mut AnyConnection, StoreError> {
        if !self.writes.is_empty() {
            self.send(false).await?;
        }
        Ok(&mut self.writer.conn)
    }

    /// Sends the deferred writes, opening the savepoint first if it is not, and releasing it after
    /// them when `release`.
    async fn send(&mut self, release: bool) -> Result<(), StoreError> {
        let writes = std::mem::take(&mut self.writes);
        let open = !self.savepoint;
        // Set before anything is sent: a call that fails or is given up midway may have opened
        // it, and then dropping this `Tx` undoes it.
        self.savepoint = true;
        let writer = &mut *self.writer;
        if writer.backend == Backend::Sqlite {
            let (sql, params) = write::sqlite_call(&writes, open, release);
            let sent = write::bind_all(sqlx::query(&sql), &params).execute(&mut writer.conn).await;
            return writer.note(sent).map(drop).map_err(write::sqlite_error);
        }
        if open {
            let opened = writer.conn.execute("SAVEPOINT command").await;
            writer.note(opened)?;
        }
        for write in &writes {
            let done = write.query().execute(&mut writer.conn).await;
            let done = writer.note(done)?;
            if write.expects_one() {
                expect_one(done)?;
            }
        }
        if release {
            let released = writer.conn.execute("RELEASE SAVEPOINT command").await;
            writer.note(released)?;
        }
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Undone by whoever takes the connection next (undoing needs an await). A command that
        // sent nothing has nothing to undo (and a rollback to a savepoint never opened would fail
        // and take the whole batch with it).
        if self.savepoint {
            self.writer.abandoned = true;
        }
        // Either way the flusher is woken: the batch this command may have begun holds the
        // database's write lock (SQLite's `BEGIN IMMEDIATE`, which other nodes on the same file
        // wait for) until it is committed, and no one else may be coming to commit it.
        self.flush.notify_one();
    }
}

/// A released command waiting for its batch's `COMMIT` ([`Store::release`]).
pub struct Committing {
    committed: oneshot::Receiver<Result<(), BatchFailed>>,
    queued_events: bool,
    relay: Arc<Notify>,
}

impl std::future::Future for Committing {
    type Output = Result<(), StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let outcome = std::task::ready!(std::pin::Pin::new(&mut self.committed).poll(cx));
        std::task::Poll::Ready(match outcome {
            Ok(Ok(())) => {
                if self.queued_events {
                    self.relay.notify_one();
                }
                Ok(())
            }
            // Decided again on fresh state, like a lost race.
            Ok(Err(BatchFailed { undone: true, .. })) => Err(StoreError::VersionConflict),
            Ok(Err(BatchFailed { reason, undone: false })) => {
                Err(StoreError::Corrupt(format!("batch commit failed: {reason}")))
            }
            Err(_) => Err(StoreError::Corrupt("the writer stopped".into())),
        })
    }
}

/// Wakes the flusher when a `begin` is given up mid-statement, so it tidies the writer at once.
struct WakeIfGivenUp<'a> {
    flush: &'a Notify,
    armed: bool,
}

impl Drop for WakeIfGivenUp<'_> {
    fn drop(&mut self) {
        if self.armed {
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

impl OnBackend for Store {
    fn backend(&self) -> Backend {
        self.backend
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite:` creating the file if missing, `postgres:` or `mysql:`) and
    /// runs the embedded migrations of its backend.
    pub async fn open(url: &str, tuning: impl Into<Tuning>) -> Result<Self, StoreError> {
        let tuning = tuning.into();
        // The nodes of a local cluster start together on one file: one may find it locked while
        // another switches it to WAL or migrates it (the losers' migrations roll back, and a
        // second look finds them applied). Opening is retried for a few seconds.
        // A server that accepts connections but no session yet (PostgreSQL starting up, too
        // many clients) is retried, with a warning each time, until `db_connect_wait_ms` has
        // passed since the start: one deadline for both waits.
        let backend = Backend::of_url(url)?;
        let started = tokio::time::Instant::now();
        let server = backend::server_address(backend, url);
        if let Some(server) = &server {
            Self::wait_for_server(server, tuning.connect_wait).await?;
        }
        let mut attempt: u64 = 0;
        loop {
            let retry = match Self::try_open(backend, url, tuning).await {
                Ok(store) => return Ok(store),
                // A configuration error (a bad URL, a migration that failed or waited past
                // `db_migration_wait_ms` on a server) is not mended by trying again.
                Err(e @ StoreError::Database(sqlx::Error::Configuration(_))) => return Err(e),
                Err(e) => match &server {
                    None if attempt < 20 => e,
                    Some(_) if started.elapsed() < tuning.connect_wait => e,
                    _ => return Err(e),
                },
            };
            attempt += 1;
            match &server {
                Some(server) => {
                    tracing::warn!(database = %server, attempt, reason = %retry, "database not ready; retrying")
                }
                None => tracing::debug!(attempt, reason = %retry, "database not ready; retrying"),
            }
            tokio::time::sleep(Duration::from_millis((50 * attempt).min(500))).await;
        }
    }

    /// Waits until `server` (`host:port`) accepts a TCP connection, saying so at warn level on
    /// every failed attempt, for at most `wait`. Without this, sqlx's pool retries a refused
    /// connection silently for its whole acquire timeout, and the retries here multiply that
    /// into minutes of silence before a node says its database is not there.
    async fn wait_for_server(server: &str, wait: Duration) -> Result<(), StoreError> {
        let started = tokio::time::Instant::now();
        // An attempt (a TCP connect to a host that never answers) and a pause are each cut at a
        // quarter of the wait, a second at least: a line every few seconds, and no timing of its
        // own besides the one setting.
        let slice = (wait / 4).max(Duration::from_secs(1));
        let mut delay = Duration::from_secs(1);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let remaining = wait.saturating_sub(started.elapsed());
            let reason = match tokio::time::timeout(remaining.min(slice), tokio::net::TcpStream::connect(server)).await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer".to_owned(),
            };
            let remaining = wait.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                let message = format!(
                    "database at {server} unreachable after {} s ({attempt} attempts): {reason}",
                    wait.as_secs_f64().round()
                );
                return Err(StoreError::Database(sqlx::Error::Io(std::io::Error::other(message))));
            }
            let pause = delay.min(remaining);
            tracing::warn!(
                database = %server,
                attempt,
                %reason,
                "database at {server} unreachable, retrying in {:.1} s (attempt {attempt})",
                pause.as_secs_f64()
            );
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(slice);
        }
    }

    async fn try_open(backend: Backend, url: &str, tuning: Tuning) -> Result<Self, StoreError> {
        let write = backend.open_writer(url, tuning).await?;
        let read = backend.open_reader(url, tuning).await?;
        let conn = write_connection(backend, &write).await?;
        let writer = Arc::new(Mutex::new(Writer {
            conn,
            open: false,
            abandoned: false,
            in_doubt: false,
            broken: false,
            url: url.to_owned(),
            tuning,
            backend,
            waiting: Vec::new(),
        }));
        let flush = Arc::new(Notify::new());
        tokio::spawn(flusher(Arc::downgrade(&writer), flush.clone()));
        Ok(Self { writer, flush, read, committed: Arc::new(Notify::new()), backend })
    }

    /// Starts a command's write transaction (a savepoint in the current batch, which starts as
    /// [`Backend::begin_batch`] says).
    ///
    /// Safe to give up (a caller's timeout drops it): a statement already sent still runs, so the
    /// writer is marked for the next user to undo whatever it may have started, and the flusher
    /// is woken to do so at once rather than leave the database locked.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let mut writer = self.writer.clone().lock_owned().await;
        let mut wake = WakeIfGivenUp { flush: &self.flush, armed: true };
        writer.tidy().await;
        if writer.broken {
            if writer.open {
                writer.abort(BatchFailed { reason: "the database connection was lost".into(), undone: true }).await;
            }
            writer.reconnect().await?;
        }
        if !writer.open {
            writer.in_doubt = true;
            let mut begun = writer.conn.execute(self.backend.begin_batch()).await.map(drop);
            writer.in_doubt = false;
            // An idle connection the server dropped (a restart) is found here; nothing was in
            // it, so one new connection and a second BEGIN keep the command from failing.
            if begun.as_ref().is_err_and(lost_connection) {
                writer.reconnect().await?;
                writer.in_doubt = true;
                begun = writer.conn.execute(self.backend.begin_batch()).await.map(drop);
                writer.in_doubt = false;
            }
            writer.note(begun)?;
            writer.open = true;
        }
        wake.armed = false;
        Ok(Tx {
            writer,
            released: false,
            savepoint: false,
            writes: Vec::new(),
            flush: self.flush.clone(),
            queued_events: false,
        })
    }

    /// Makes a command's writes durable: waits for the `COMMIT` of the batch that carries them,
    /// then wakes the outbox relay if the command queued events.
    pub async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        self.release(tx).await?.await
    }

    /// Puts a command's writes in the open batch and hands the write connection to the next
    /// command at once; the returned [`Committing`] says when the batch's `COMMIT` has made them
    /// durable. A writer that must not wait for one command's commit before deciding the next
    /// (a chat room, whose posts follow one another) keeps the answers in order and gives each
    /// only once its `Committing` has resolved.
    pub async fn release(&self, mut tx: Tx) -> Result<Committing, StoreError> {
        // A command that wrote nothing opened no savepoint: there is nothing to send.
        if tx.savepoint || !tx.writes.is_empty() {
            tx.send(true).await?;
        }
        tx.released = true;
        let queued_events = tx.queued_events;
        let (done, committed) = oneshot::channel();
        tx.writer.waiting.push(done);
        drop(tx);
        self.flush.notify_one();
        Ok(Committing { committed, queued_events, relay: self.committed.clone() })
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Wakes when a transaction that queued events has committed (the outbox holds new rows).
    pub fn commit_signal(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        query(self, "SELECT 1").execute(&self.read).await.is_ok()
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

/// Every stored event's entity, version and id, by entity and version: what a fault run reads to
/// show that no version of an entity was committed twice (two nodes that both believed they
/// owned it). Chat events are left out: a room numbers them by message seq, not by version
/// (its opening and its first message are both 1).
pub async fn event_versions(store: &Store) -> Result<Vec<(String, i64, String)>, StoreError> {
    Ok(query_as(store, "SELECT entity_id, seq, id FROM events WHERE topic <> $1 ORDER BY entity_id, seq, id")
        .bind(bazaar_protocol::events::topics::CHAT)
        .fetch_all(store.reader())
        .await?)
}

/// Records `events` and queues them in the outbox, inside the caller's transaction.
pub fn append_events(tx: &mut Tx, events: &[Envelope]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        rows.push((event, serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?));
    }
    // One statement for all of a command's events; a trigger queues each in the outbox. Written
    // by hand because sqlx's QueryBuilder numbers no placeholders for `Any` (PostgreSQL needs $N),
    // and respelled for the backend like every other statement.
    const COLUMNS: usize = 7;
    let mut sql = String::from("INSERT INTO events (id, topic, entity_id, seq, type, at, body) VALUES ");
    for index in 0..rows.len() {
        sql.push_str(if index == 0 { "(" } else { ", (" });
        push_placeholders(&mut sql, index * COLUMNS + 1, COLUMNS);
        sql.push(')');
    }
    let mut insert = Write::new(sql);
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
    tx.defer(insert);
    tx.queued_events = true;
    Ok(())
}

/// Whether a command looks for a row that a unique key also guards (an earlier use of its
/// idempotency key, an event it applied before) or assumes it absent and leaves the key to refuse
/// its writes if it is there. A first try assumes: the row is almost never there, and the read is
/// a round trip to the write connection saved on every command. The key's refusal
/// ([`StoreError::Duplicate`]) makes the command decide again ([`crate::with_retries`]), and
/// that try reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Assume the row is absent; the unique key refuses the command if it is not.
    Assume,
    /// Read first.
    Read,
}

/// Marks an event as applied by a consumer; returns false when it already was (a redelivery,
/// found when `lookup` reads: assumed, a redelivery fails the command with
/// [`StoreError::Duplicate`] at its commit instead).
///
/// A read (which opens no savepoint) and a deferred insert rather than one `INSERT ... ON
/// CONFLICT DO NOTHING` whose row count is read back: the command's writes then go in one call.
/// Two owners of an entity both finding the event new cannot both apply it: the second insert
/// breaks the unique key, and its command is decided again ([`StoreError::Duplicate`]), this time
/// finding the mark.
pub async fn mark_processed(tx: &mut Tx, consumer: &str, event_id: &str, lookup: Lookup) -> Result<bool, StoreError> {
    if lookup == Lookup::Read && processed(tx.backend(), tx.read().await?, consumer, event_id).await? {
        return Ok(false);
    }
    tx.defer(
        Write::new("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)").bind(consumer).bind(event_id),
    );
    Ok(true)
}

/// Whether a consumer already applied an event (for steps whose side effect lies outside the
/// database, which must be checked before it is done and marked after).
pub async fn is_processed(store: &Store, consumer: &str, event_id: &str) -> Result<bool, StoreError> {
    processed(store.backend(), store.reader(), consumer, event_id).await
}

/// Whether `executor` (a command's write connection, or the read pool) sees the consumer's mark.
async fn processed<'e>(
    backend: Backend,
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    consumer: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> =
        query_scalar(&backend, "SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
            .bind(consumer)
            .bind(event_id)
            .fetch_optional(executor)
            .await?;
    Ok(found.is_some())
}

/// Appends `$first, $first+1, ...` (`count` of them): sqlx's QueryBuilder numbers no
/// placeholders for the `Any` driver, and PostgreSQL needs them numbered (the statement is then
/// respelled for its backend with [`Backend::spell`]).
pub(crate) fn push_placeholders(sql: &mut String, first: usize, count: usize) {
    use std::fmt::Write;
    for n in first..first + count {
        let _ = write!(sql, "{}${n}", if n == first { "" } else { ", " });
    }
}

/// A long text column (an event's body): MySQL and MariaDB report `TEXT` as a blob, which the
/// `Any` driver will not read as a `String`; this reads either.
pub(crate) struct LongText(pub String);

impl sqlx::Type<sqlx::Any> for LongText {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }

    fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
        matches!(ty.kind(), sqlx::any::AnyTypeInfoKind::Text | sqlx::any::AnyTypeInfoKind::Blob)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for LongText {
    fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        match <String as sqlx::Decode<sqlx::Any>>::decode(value.clone()) {
            Ok(text) => Ok(LongText(text)),
            Err(_) => Ok(LongText(String::from_utf8(<Vec<u8> as sqlx::Decode<sqlx::Any>>::decode(value)?)?)),
        }
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
    async fn placeholders_in_order_bind_in_order_on_every_backend() {
        let (store, _db) = fresh_store().await;
        let (first, second): (i64, String) =
            query_as(&store, "SELECT $1, $2").bind(7_i64).bind("two").fetch_one(store.reader()).await.unwrap();
        assert_eq!((first, second.as_str()), (7, "two"));
        // A value used twice is bound twice; `'$9'` is text, not a placeholder.
        let repeated: String = query_scalar(&store, "SELECT CASE WHEN $1 IS NULL THEN '$9' ELSE $2 END")
            .bind("x")
            .bind("x")
            .fetch_one(store.reader())
            .await
            .unwrap();
        assert_eq!(repeated, "x");
    }

    #[tokio::test]
    async fn idempotency_records_expire_by_age_only() {
        let (store, _db) = fresh_store().await;
        let now = chrono::Utc::now();
        for (user, age) in [("old", 3_600), ("young", 1)] {
            let mut tx = store.begin().await.unwrap();
            idempotency::insert(&mut tx, (user, "k", "h"), "r", now - chrono::Duration::seconds(age)).unwrap();
            store.commit(tx).await.unwrap();
        }
        let expired = idempotency::delete_before(&store, now - chrono::Duration::seconds(60)).await.unwrap();
        assert_eq!(expired, 1);
        assert!(idempotency::find(&store, "old", "k").await.unwrap().is_none());
        assert!(idempotency::find(&store, "young", "k").await.unwrap().is_some());
    }

    async fn count(store: &Store) -> i64 {
        query_scalar(store, "SELECT COUNT(*) FROM consumer_offsets").fetch_one(store.reader()).await.unwrap()
    }

    async fn insert(store: &Store, name: &str) -> Result<(), StoreError> {
        let mut tx = store.begin().await?;
        query(&tx, "INSERT INTO consumer_offsets (consumer, position) VALUES ($1, 1)")
            .bind(name)
            .execute(tx.conn().await?)
            .await?;
        store.commit(tx).await
    }

    /// A command whose failure ends the server's whole transaction (a MySQL deadlock rolls back
    /// every savepoint; here the command ends it itself) takes the batch's other commands with it:
    /// they must be told to decide again, not that storage is broken.
    #[tokio::test]
    async fn commands_of_a_batch_undone_by_another_command_are_told_to_decide_again() {
        let (store, _db) = fresh_store().await;
        let mut first = store.begin().await.unwrap();
        query(&first, "INSERT INTO consumer_offsets (consumer, position) VALUES ($1, 1)")
            .bind("undone")
            .execute(first.conn().await.unwrap())
            .await
            .unwrap();
        // The breaking command queues for the writer now, so the writer's fair lock hands it
        // over before the flusher that the first command's commit wakes.
        let breaker = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await.unwrap();
                tx.conn().await.unwrap().execute("ROLLBACK").await.unwrap();
                drop(tx);
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let outcome = store.commit(first).await;
        breaker.await.unwrap();
        assert!(matches!(outcome, Err(StoreError::VersionConflict)), "{outcome:?}");
        assert_eq!(count(&store).await, 0);
        insert(&store, "after").await.unwrap();
        assert_eq!(count(&store).await, 1);
    }

    #[tokio::test]
    async fn a_begin_given_up_while_another_node_holds_the_database_leaves_the_writer_usable() {
        // The simulated gateway's charge runs under the payment's timeout; on a shared SQLite
        // file, a node paused while holding the write lock made that timeout drop a `begin`
        // waiting in BEGIN IMMEDIATE. The BEGIN still ran once the lock came free, and every
        // later write of that node failed "cannot start a transaction within a transaction".
        let (store, db) = fresh_store().await;
        let other = Store::open(db.url(), Durability::Normal).await.unwrap();
        let held = other.begin().await.unwrap();
        // On SQLite this waits for the lock and is given up; a server begins at once.
        if let Ok(Ok(tx)) = tokio::time::timeout(Duration::from_millis(300), store.begin()).await {
            drop(tx);
        }
        drop(held);
        other.close().await;
        insert(&store, "after").await.unwrap();
        insert(&store, "again").await.unwrap();
        assert_eq!(count(&store).await, 2);
    }

    #[tokio::test]
    async fn a_write_connection_the_server_dropped_is_opened_again() {
        // A PostgreSQL restart (the fault runner's) dropped the one write connection, and every
        // later write of the node failed "expected to read 5 bytes, got 0 bytes at EOF".
        let (store, _db) = fresh_store().await;
        insert(&store, "before").await.unwrap();
        let mut conn = store.reader().acquire().await.unwrap();
        match store.backend {
            // One file and no server: nothing can drop the connection.
            Backend::Sqlite => return,
            Backend::Postgres => {
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .await
                .unwrap();
            }
            Backend::Mysql => {
                let ids: Vec<i64> = query_scalar(
                    &store,
                    "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
                     WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
                )
                .fetch_all(&mut *conn)
                .await
                .unwrap();
                for id in ids {
                    let _ = conn.execute(format!("KILL {id}").as_str()).await;
                }
            }
        }
        drop(conn);
        insert(&store, "after").await.unwrap();
        insert(&store, "again").await.unwrap();
        assert_eq!(count(&store).await, 3);
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

    fn offset_row(name: &str, position: i64) -> Write {
        Write::new("INSERT INTO consumer_offsets (consumer, position) VALUES ($1, $2)").bind(name).bind(position)
    }

    fn move_offset(name: &str, from: i64, to: i64) -> Write {
        Write::new("UPDATE consumer_offsets SET position = $1 WHERE consumer = $2 AND position = $3")
            .bind(to)
            .bind(name)
            .bind(from)
            .expect_one()
    }

    async fn offsets(store: &Store) -> Vec<(String, i64)> {
        query_as(store, "SELECT consumer, position FROM consumer_offsets ORDER BY consumer")
            .fetch_all(store.reader())
            .await
            .unwrap()
    }

    /// Deferred writes are sent with the commit; a version check among them that finds no row
    /// fails its command alone, with every write of that command undone.
    #[tokio::test]
    async fn a_deferred_version_check_that_misses_undoes_its_command_only() {
        let (store, _db) = fresh_store().await;
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("a", 1));
        store.commit(tx).await.unwrap();
        // Two commands in one batch: the first moves a from 1 to 2, the second expects a at 1
        // (a stale version) after writing a row of its own.
        let mut first = store.begin().await.unwrap();
        first.defer(move_offset("a", 1, 2));
        let stale = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                tx.defer(offset_row("b", 1));
                tx.defer(move_offset("a", 1, 3));
                store.commit(tx).await
            }
        });
        store.commit(first).await.unwrap();
        assert!(matches!(stale.await.unwrap(), Err(StoreError::VersionConflict)));
        assert_eq!(offsets(&store).await, [("a".to_owned(), 2)]);
    }

    /// An assumed mark costs no read; for an event applied before, its unique key refuses the
    /// command at the commit, with the command's other writes, and a read then finds the mark.
    #[tokio::test]
    async fn an_assumed_processed_mark_is_refused_by_its_key_and_a_read_finds_it() {
        let (store, _db) = fresh_store().await;
        let mut tx = store.begin().await.unwrap();
        assert!(mark_processed(&mut tx, "order", "e1", Lookup::Assume).await.unwrap());
        store.commit(tx).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        assert!(mark_processed(&mut tx, "order", "e1", Lookup::Assume).await.unwrap());
        tx.defer(offset_row("applied twice", 1));
        assert!(matches!(store.commit(tx).await, Err(StoreError::Duplicate)));
        let mut tx = store.begin().await.unwrap();
        assert!(!mark_processed(&mut tx, "order", "e1", Lookup::Read).await.unwrap());
        assert!(mark_processed(&mut tx, "order", "e2", Lookup::Read).await.unwrap());
        store.commit(tx).await.unwrap();
        assert!(offsets(&store).await.is_empty());
        assert!(is_processed(&store, "order", "e2").await.unwrap());
    }

    /// Commands that commit while the writer is busy share its batch; a refused one among them
    /// fails alone with its own error, and a later command's read sees the others' writes.
    #[tokio::test]
    async fn commands_of_one_batch_fail_alone_and_a_later_read_sees_the_others() {
        let (store, _db) = fresh_store().await;
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("a", 1));
        store.commit(tx).await.unwrap();
        let busy = store.begin().await.unwrap();
        let command = |writes: Vec<Write>| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut tx = store.begin().await?;
                for write in writes {
                    tx.defer(write);
                }
                store.commit(tx).await
            })
        };
        let kept = command(vec![offset_row("b", 1)]);
        let stale = command(vec![offset_row("c", 1), move_offset("a", 5, 6)]);
        let duplicate = command(vec![offset_row("d", 1), offset_row("a", 9)]);
        let moved = command(vec![move_offset("a", 1, 2)]);
        // Each waits for the writer in that order (tokio's mutex is fair), the reader last.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reader = tokio::spawn({
            let store = store.clone();
            async move {
                let mut tx = store.begin().await?;
                let seen: Vec<(String, i64)> =
                    query_as(&tx, "SELECT consumer, position FROM consumer_offsets ORDER BY consumer")
                        .fetch_all(tx.read().await?)
                        .await?;
                store.commit(tx).await?;
                Ok::<_, StoreError>(seen)
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(busy);
        kept.await.unwrap().unwrap();
        assert!(matches!(stale.await.unwrap(), Err(StoreError::VersionConflict)));
        assert!(matches!(duplicate.await.unwrap(), Err(StoreError::Duplicate)));
        moved.await.unwrap().unwrap();
        let expected = [("a".to_owned(), 2), ("b".to_owned(), 1)];
        assert_eq!(reader.await.unwrap().unwrap(), expected);
        assert_eq!(offsets(&store).await, expected);
    }

    #[tokio::test]
    async fn a_deferred_unique_violation_fails_its_command_at_commit_and_undoes_its_other_writes() {
        let (store, _db) = fresh_store().await;
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("a", 1));
        store.commit(tx).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("b", 1));
        tx.defer(offset_row("a", 5));
        assert!(matches!(store.commit(tx).await, Err(StoreError::Duplicate)));
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("c", 1));
        store.commit(tx).await.unwrap();
        assert_eq!(offsets(&store).await, [("a".to_owned(), 1), ("c".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_read_in_a_command_sees_its_deferred_writes_and_a_dropped_command_leaves_nothing() {
        let (store, _db) = fresh_store().await;
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("seen", 7));
        let read: Option<i64> = query_scalar(&tx, "SELECT position FROM consumer_offsets WHERE consumer = $1")
            .bind("seen")
            .fetch_optional(tx.read().await.unwrap())
            .await
            .unwrap();
        assert_eq!(read, Some(7));
        // Given up after its writes were sent: undone.
        drop(tx);
        // Given up before anything was sent: nothing to undo, and the batch goes on.
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("never", 1));
        drop(tx);
        let mut tx = store.begin().await.unwrap();
        tx.defer(offset_row("kept", 1));
        store.commit(tx).await.unwrap();
        // A command that wrote nothing commits without a savepoint.
        let tx = store.begin().await.unwrap();
        store.commit(tx).await.unwrap();
        assert_eq!(offsets(&store).await, [("kept".to_owned(), 1)]);
    }

    /// A command that began the batch and was given up before it wrote (an idempotent retry
    /// answered from its record) must not leave the batch open: on a SQLite file that other
    /// nodes share, the open batch holds the write lock they wait for.
    #[tokio::test]
    async fn a_command_given_up_before_writing_does_not_keep_the_database_locked() {
        let (store, db) = fresh_store().await;
        let other = Store::open(db.url(), Durability::Normal).await.unwrap();
        let tx = store.begin().await.unwrap();
        drop(tx);
        let write = async {
            let mut tx = other.begin().await?;
            tx.defer(offset_row("other", 1));
            other.commit(tx).await
        };
        tokio::time::timeout(Duration::from_secs(3), write).await.expect("the other store waited on the lock").unwrap();
        assert_eq!(offsets(&store).await, [("other".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_dropped_or_failed_command_leaves_its_batch_neighbours_intact() {
        let (store, _dir) = fresh_store().await;
        insert(&store, "kept").await.unwrap();
        // Dropped without commit: undone.
        let mut tx = store.begin().await.unwrap();
        query(&tx, "INSERT INTO consumer_offsets (consumer, position) VALUES ('dropped', 1)")
            .execute(tx.conn().await.unwrap())
            .await
            .unwrap();
        drop(tx);
        // A unique violation fails only its own command.
        assert!(matches!(insert(&store, "kept").await, Err(StoreError::Duplicate)));
        insert(&store, "after").await.unwrap();
        let names: Vec<String> = query_scalar(&store, "SELECT consumer FROM consumer_offsets ORDER BY consumer")
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
    /// The admin URL of a MySQL or MariaDB server to test against (before PostgreSQL's).
    pub const MYSQL_URL_VAR: &str = "TEST_MYSQL_URL";

    /// The admin URL of the database server the tests run on, if one is named: MySQL's variable
    /// first, then PostgreSQL's; none means SQLite.
    pub fn server_url() -> Option<String> {
        [MYSQL_URL_VAR, POSTGRES_URL_VAR].iter().find_map(|var| std::env::var(var).ok().filter(|url| !url.is_empty()))
    }

    /// Where a test's database lives; dropping it removes the database.
    pub enum TestDatabase {
        /// A SQLite file in a temporary directory, removed when the directory is dropped.
        Sqlite { url: String, _dir: tempfile::TempDir },
        /// A database of its own on the server at `admin_url`.
        Server { admin_url: String, name: String, url: String },
    }

    impl TestDatabase {
        /// The URL another store (another node, in effect) opens the same database with.
        pub fn url(&self) -> &str {
            match self {
                TestDatabase::Sqlite { url, .. } | TestDatabase::Server { url, .. } => url,
            }
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let TestDatabase::Server { admin_url, name, .. } = self else { return };
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop cannot await, and the test's runtime may be single-threaded: a runtime of
            // its own on a thread of its own does the dropping. A failure only leaves a database
            // behind on a throwaway server.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(backend::drop_database(&admin_url, &name)).ok()
            });
            let _ = dropped.join();
        }
    }

    /// Opens a fresh database: a SQLite file, or a new database on the server `TEST_MYSQL_URL`
    /// or `TEST_POSTGRES_URL` names. It lives as long as the returned guard.
    pub async fn fresh_store() -> (Store, TestDatabase) {
        let database = fresh_database().await;
        let store = Store::open(database.url(), Durability::Normal).await.expect("open store");
        (store, database)
    }

    /// A fresh database no store has opened yet: no schema.
    pub async fn fresh_database() -> TestDatabase {
        match server_url() {
            Some(admin_url) => {
                let name = format!("t_{}", uuid::Uuid::new_v4().simple());
                let url = backend::create_database(&admin_url, &name).await.expect("create test database");
                TestDatabase::Server { admin_url, name, url }
            }
            None => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                TestDatabase::Sqlite { url, _dir: dir }
            }
        }
    }
}
