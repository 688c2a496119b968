//! The three databases the store runs on, and everything that differs between them: how a
//! connection is set up, which migrations apply, how a batch starts, how the relay locks, and how
//! a statement is spelled.
//!
//! Queries are written once, in the dialect SQLite and PostgreSQL share (`$N` placeholders in
//! order, `ON CONFLICT ... DO NOTHING`, `CAST(... AS BIGINT)`), and every one goes through
//! [`query`], [`query_as`] or [`query_scalar`]: the one place that respells it for MySQL and
//! MariaDB ([`Backend::sql`]), so a new query is portable without its author thinking of it.
//! Only the statements here are spelled per backend.

use super::{Durability, StoreError, Tuning};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::query::{Query, QueryAs, QueryScalar};
use sqlx::{Any, AnyConnection, AnyPool, Executor, FromRow};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");

/// The lock MySQL nodes take before migrating one database (see [`Backend::migrate`]).
const MIGRATION_LOCK: &str = "SELECT GET_LOCK(CONCAT('bazaar_migrations:', MD5(DATABASE())), $1)";
const MIGRATION_UNLOCK: &str = "SELECT RELEASE_LOCK(CONCAT('bazaar_migrations:', MD5(DATABASE())))";

/// How many connections serve reads.
const READ_CONNECTIONS: u32 = 8;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file, shared by the processes of one machine; one writer at a time.
    Sqlite,
    /// A server, possibly shared by every node of a cluster; row locks, READ COMMITTED.
    Postgres,
    /// A MySQL 8 or MariaDB 10.11 server, used like PostgreSQL: shared by the nodes of a cluster,
    /// row locks, READ COMMITTED (set per session; the server's default, REPEATABLE READ, would
    /// let a transaction's reads lag behind what it then locks).
    Mysql,
}

/// Something that knows which backend a statement is for: a [`Store`](super::Store), a
/// [`Tx`](super::Tx) or the [`Backend`] itself.
pub trait OnBackend {
    /// The backend statements are spelled for.
    fn backend(&self) -> Backend;
}

impl OnBackend for Backend {
    fn backend(&self) -> Backend {
        *self
    }
}

/// A statement of the common dialect, spelled for `on`'s backend (see [`Backend::sql`]).
pub fn query<'q>(on: &impl OnBackend, sql: &'static str) -> Query<'q, Any, AnyArguments<'q>> {
    sqlx::query(on.backend().sql(sql))
}

/// [`query`] whose rows map to `O`.
pub fn query_as<'q, O>(on: &impl OnBackend, sql: &'static str) -> QueryAs<'q, Any, O, AnyArguments<'q>>
where
    O: for<'r> FromRow<'r, AnyRow>,
{
    sqlx::query_as(on.backend().sql(sql))
}

/// [`query`] whose rows are one value of type `O`.
pub fn query_scalar<'q, O>(on: &impl OnBackend, sql: &'static str) -> QueryScalar<'q, Any, O, AnyArguments<'q>>
where
    (O,): for<'r> FromRow<'r, AnyRow>,
{
    sqlx::query_scalar(on.backend().sql(sql))
}

impl Backend {
    /// The backend a database URL names, by its scheme.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::Mysql),
            _ => Err(configuration(format!("database URL scheme {scheme:?}: use sqlite:, postgres: or mysql:"))),
        }
    }

    /// `sql`, written in the common dialect, as this backend reads it. SQLite and PostgreSQL read
    /// it as written; for MySQL and MariaDB it is respelled once per statement and kept (the
    /// statements are the program's own literals, so the cache is as large as the program's text).
    pub fn sql(self, sql: &'static str) -> &'static str {
        match self {
            Backend::Sqlite | Backend::Postgres => sql,
            Backend::Mysql => {
                static SPELLED: OnceLock<RwLock<HashMap<&'static str, &'static str>>> = OnceLock::new();
                let spelled = SPELLED.get_or_init(Default::default);
                if let Some(found) = spelled.read().unwrap_or_else(|e| e.into_inner()).get(sql) {
                    return found;
                }
                let text: &'static str = match self.spell(sql) {
                    Cow::Borrowed(same) => same,
                    Cow::Owned(new) => Box::leak(new.into_boxed_str()),
                };
                spelled.write().unwrap_or_else(|e| e.into_inner()).insert(sql, text);
                text
            }
        }
    }

    /// [`Backend::sql`] for a statement built at run time (a multi-row insert), not kept.
    pub fn spell(self, sql: &str) -> Cow<'_, str> {
        match self {
            Backend::Sqlite | Backend::Postgres => Cow::Borrowed(sql),
            Backend::Mysql => match to_mysql(sql) {
                Ok(spelled) => Cow::Owned(spelled),
                Err(reason) => {
                    // A statement of the program itself, not of a client: the server will refuse
                    // it with a syntax error, and the MariaDB pass of the suite fails on it.
                    tracing::error!(%reason, sql, "statement not portable to MySQL");
                    Cow::Borrowed(sql)
                }
            },
        }
    }

    /// Opens the pool the write connection is taken from and brings the schema up to date.
    pub(super) async fn open_writer(self, url: &str, tuning: Tuning) -> Result<AnyPool, StoreError> {
        let pool = self.connect_writer(url, tuning).await?;
        let migrator = match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Mysql => &MYSQL_MIGRATIONS,
        };
        self.migrate(&pool, migrator, tuning).await?;
        Ok(pool)
    }

    /// The write connection's pool (one connection, set up for writing), without migrating:
    /// what a writer whose connection broke opens again.
    pub(super) async fn connect_writer(self, url: &str, tuning: Tuning) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let url = match self {
            Backend::Sqlite => {
                if let Some(path) = sqlite_file(url) {
                    owner_only(path).map_err(|e| {
                        configuration(format!("making the database file {path} readable by its owner only: {e}"))
                    })?;
                }
                with_sqlite_mode(url, "rwc")
            }
            Backend::Postgres | Backend::Mysql => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| Box::pin(async move { self.prepare_writer(conn, tuning).await }))
            .connect(&url)
            .await?;
        Ok(pool)
    }

    /// Brings the schema up to date, one node at a time: nodes of a cluster start together on
    /// one database, and two running the same migration at once would fail it half-done (on
    /// MySQL a DDL statement commits by itself, so the migration stays marked partially applied).
    /// sqlx locks on its own, but on MariaDB its `GET_LOCK(name, -1)` returns NULL at once
    /// (MariaDB reads -1 as no wait, not as forever), so the lock is taken here, with a wait.
    async fn migrate(self, pool: &AnyPool, migrator: &Migrator, tuning: Tuning) -> Result<(), StoreError> {
        let mut conn = pool.acquire().await?;
        let wait_ms = tuning.migration_wait.as_millis().max(1);
        match self {
            Backend::Sqlite => {}
            // sqlx's `pg_advisory_lock` waits; this bounds that wait, then restores the session's.
            Backend::Postgres => {
                conn.execute(format!("SET lock_timeout = '{wait_ms}ms'").as_str()).await?;
            }
            Backend::Mysql => {
                let secs = tuning.migration_wait.as_secs().max(1) as i64;
                // Lock names are the server's, not a database's: the name carries the database's
                // (hashed: a name is at most 64 characters), so two databases of one server
                // migrate without waiting on each other.
                let got: Option<i64> = query_scalar(&self, MIGRATION_LOCK).bind(secs).fetch_one(&mut *conn).await?;
                if got != Some(1) {
                    return Err(configuration(format!(
                        "another node held the migration lock for over {secs} s (db_migration_wait_ms)"
                    )));
                }
            }
        }
        let outcome = migrator.run_direct(&mut *conn).await.map_err(|e| match self {
            Backend::Sqlite => StoreError::Database(e.into()),
            // On a server, a migration that failed (or waited past `db_migration_wait_ms` for
            // another node's) is final: `Store::open` must not start it, or the wait, again.
            Backend::Postgres | Backend::Mysql => configuration(format!("migrating the schema: {e}")),
        });
        let restored = match self {
            Backend::Sqlite => Ok(()),
            Backend::Postgres => {
                let lock_ms = tuning.lock_wait.as_millis().max(1);
                conn.execute(format!("SET lock_timeout = '{lock_ms}ms'").as_str()).await.map(drop)
            }
            Backend::Mysql => query(&self, MIGRATION_UNLOCK).execute(&mut *conn).await.map(drop),
        };
        // The migration's own error is the one to report, not a failure to tidy up after it.
        outcome?;
        Ok(restored?)
    }

    /// Opens the pool for reads; its connections refuse to write.
    pub(super) async fn open_reader(self, url: &str, tuning: Tuning) -> Result<AnyPool, StoreError> {
        let url = match self {
            Backend::Sqlite => with_sqlite_mode(url, "ro"),
            Backend::Postgres | Backend::Mysql => url.to_owned(),
        };
        Ok(AnyPoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| Box::pin(async move { self.prepare_reader(conn, tuning).await }))
            .connect(&url)
            .await?)
    }

    async fn prepare_writer(self, conn: &mut AnyConnection, tuning: Tuning) -> Result<(), sqlx::Error> {
        let durability = tuning.durability;
        match self {
            Backend::Sqlite => {
                // The `Any` options carry only the URL, so the settings `SqliteConnectOptions`
                // would have made are pragmas here. The busy timeout comes first: switching to
                // WAL needs the lock another process may hold.
                let synchronous = match durability {
                    Durability::Full => "FULL",
                    Durability::Normal => "NORMAL",
                };
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute(format!("PRAGMA synchronous = {synchronous}").as_str()).await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute(cache_size(tuning).as_str()).await?;
                // The commands' savepoints keep their sub-journal (the pages a command changed,
                // to undo it alone) in memory. In a temporary file it cost a write system call per
                // page, 8 % of the node's samples under order-place (benches/RESULTS.md,
                // 2026-12-04). Nothing in it is needed after a crash, since what it protects is
                // undone with the open transaction; it holds one command's pages at a time. The
                // temporary table of the version checks lives there too.
                conn.execute("PRAGMA temp_store = MEMORY").await?;
            }
            Backend::Postgres => {
                // `normal` is the session's own choice: commits acknowledged before the WAL
                // reaches disk (a server crash may lose the newest; nothing is torn).
                if durability == Durability::Normal {
                    conn.execute("SET synchronous_commit = off").await?;
                }
                // The one writer of a node holds its mutex while a statement waits on a lock;
                // another node's batch must not stall it without bound (55P03, decided again;
                // `db_lock_wait_ms`).
                let lock_ms = tuning.lock_wait.as_millis().max(1);
                conn.execute(format!("SET lock_timeout = '{lock_ms}ms'").as_str()).await?;
            }
            Backend::Mysql => {
                // A commit's durability is the server's global `innodb_flush_log_at_trx_commit`;
                // no session can lower it, so `normal` changes nothing here.
                mysql_session(conn).await?;
                // As on PostgreSQL: a lock wait ends (error 1205, decided again). The server
                // counts it in whole seconds.
                let lock_secs = tuning.lock_wait.as_secs().max(1);
                conn.execute(format!("SET SESSION innodb_lock_wait_timeout = {lock_secs}").as_str()).await?;
            }
        }
        Ok(())
    }

    async fn prepare_reader(self, conn: &mut AnyConnection, tuning: Tuning) -> Result<(), sqlx::Error> {
        match self {
            Backend::Sqlite => {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute(cache_size(tuning).as_str()).await?;
            }
            Backend::Postgres => {
                conn.execute("SET default_transaction_read_only = on").await?;
            }
            Backend::Mysql => {
                mysql_session(conn).await?;
                conn.execute("SET SESSION TRANSACTION READ ONLY").await?;
            }
        }
        Ok(())
    }

    /// The statement that opens a batch transaction.
    ///
    /// SQLite: `BEGIN IMMEDIATE` takes the write lock up front; when several processes share the
    /// file (a local cluster), a deferred transaction that read first would fail with
    /// `SQLITE_BUSY` on its first write instead of waiting for the lock. PostgreSQL locks rows as
    /// they are written, so a plain `BEGIN` lets several nodes write at once.
    pub(super) fn begin_batch(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres | Backend::Mysql => "BEGIN",
        }
    }

    /// The statement a relay runs first in its transaction so relays of several nodes take turns
    /// (see [`super::embedded_log::relay_batch`]); none on SQLite, whose `BEGIN IMMEDIATE` already excludes
    /// every other writer. MySQL's `LOCK TABLES` would commit the open batch, so a row of a table
    /// of its own is locked instead, held to the batch's `COMMIT` as PostgreSQL's table lock is.
    pub(super) fn relay_lock(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("LOCK TABLE event_log IN EXCLUSIVE MODE"),
            Backend::Mysql => Some("SELECT id FROM relay_turn WHERE id = 1 FOR UPDATE"),
        }
    }

    /// How relayed events enter the embedded log, once each: SQLite and PostgreSQL insert a
    /// relay batch in one statement that returns the positions; MySQL has no `RETURNING`, and the
    /// relay reads each position as its insert's `last_insert_id` (`INSERT IGNORE` affects no row
    /// when the log holds the event already).
    pub(super) fn log_append(self) -> LogAppend {
        match self {
            Backend::Sqlite | Backend::Postgres => LogAppend::Returning,
            Backend::Mysql => LogAppend::InsertId("INSERT IGNORE INTO event_log (topic, event_id) VALUES (?, ?)"),
        }
    }

    /// The upsert that moves a consumer's offset forward only (never back).
    pub(super) fn save_offset(self) -> &'static str {
        match self {
            Backend::Sqlite | Backend::Postgres => {
                "INSERT INTO consumer_offsets (consumer, position) VALUES ($1, $2)
                 ON CONFLICT (consumer) DO UPDATE SET position = excluded.position
                 WHERE excluded.position > consumer_offsets.position"
            }
            // `VALUES(col)` is deprecated in MySQL 8.0.20 in favour of a row alias MariaDB lacks;
            // both still read it.
            Backend::Mysql => {
                "INSERT INTO consumer_offsets (consumer, position) VALUES (?, ?)
                 ON DUPLICATE KEY UPDATE position = GREATEST(position, VALUES(position))"
            }
        }
    }
}

/// How [`Backend::log_append`] learns the position it appended at.
pub(super) enum LogAppend {
    /// One multi-row insert returns the position and id of each event it logged (none for an
    /// event the log held already).
    Returning,
    /// The statement affects one row and the position is its `last_insert_id`, or none.
    InsertId(&'static str),
}

/// Sets up a MySQL or MariaDB session like a PostgreSQL one: READ COMMITTED, `"` quoting
/// identifiers (the common dialect quotes the column named `key`, a reserved word in MySQL), and
/// strict mode whatever the server's default: a value that does not fit its column is an error,
/// never silently cut or zeroed.
async fn mysql_session(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
    conn.execute("SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES,STRICT_TRANS_TABLES')").await?;
    Ok(())
}

/// Whether a MySQL or MariaDB error is a lock wait that ran out (1205): the statement was undone,
/// and deciding again is the cure (deadlocks, 1213, carry SQLSTATE 40001 and are known already).
pub(super) fn is_mysql_lock_timeout(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|e| e.number() == 1205)
}

/// Whether a MySQL or MariaDB error is a deadlock (1213): the server rolled the whole
/// transaction back.
pub(super) fn is_mysql_deadlock(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|e| e.number() == 1213)
}

/// Respells a statement of the common dialect for MySQL and MariaDB:
/// - `$N` becomes `?`. MySQL binds by position, so the `$N` must appear in order, each once (a
///   value used twice is bound twice); anything else is refused rather than bound wrongly.
/// - `INSERT INTO ... ON CONFLICT [(columns)] DO NOTHING` becomes `INSERT IGNORE INTO ...`
///   (both servers' form; it also turns some other errors into warnings, harmless for rows whose
///   every column the program supplies).
/// - `CAST(... AS BIGINT)` becomes `CAST(... AS SIGNED)`, MySQL's 64-bit integer cast.
///
/// What has no portable respelling (`RETURNING`, `ON CONFLICT ... DO UPDATE`) is refused; such
/// statements are spelled per backend in this module.
pub fn to_mysql(sql: &str) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut next = 1;
    rewrite_placeholders(sql, &mut out, |digits, at, out| {
        let number: usize = digits.parse().map_err(|_| format!("a lone $ at byte {at}"))?;
        if number != next {
            return Err(format!("${number} where ${next} was due: MySQL binds by position"));
        }
        next += 1;
        out.push('?');
        Ok(())
    })?;
    let upper = out.to_ascii_uppercase();
    if upper.contains("RETURNING") {
        return Err("RETURNING: MySQL has none".into());
    }
    if let Some(conflict) = upper.find("ON CONFLICT") {
        let tail = upper[conflict..].trim_end().trim_end_matches(';');
        if !tail.ends_with("DO NOTHING") {
            return Err("ON CONFLICT ... DO UPDATE: spell it per backend".into());
        }
        let Some(insert) = upper.find("INSERT INTO") else {
            return Err("ON CONFLICT outside an INSERT".into());
        };
        out.truncate(conflict);
        let kept = out.trim_end().len();
        out.truncate(kept);
        out.replace_range(insert..insert + "INSERT INTO".len(), "INSERT IGNORE INTO");
    }
    Ok(out.replace(" AS BIGINT)", " AS SIGNED)"))
}

/// Copies `sql` into `out`, handing each `$` outside a string literal, with the digits after it
/// (none for a lone `$`) and its byte offset, to `each`, which writes what stands for it.
pub(super) fn rewrite_placeholders(
    sql: &str,
    out: &mut String,
    mut each: impl FnMut(&str, usize, &mut String) -> Result<(), String>,
) -> Result<(), String> {
    let mut chars = sql.char_indices().peekable();
    let mut in_string = false;
    while let Some((at, c)) = chars.next() {
        if in_string {
            out.push(c);
            in_string = c != '\'';
            continue;
        }
        match c {
            '\'' => {
                in_string = true;
                out.push(c);
            }
            '$' => {
                let digits: String =
                    std::iter::from_fn(|| chars.next_if(|(_, d)| d.is_ascii_digit()).map(|(_, d)| d)).collect();
                each(&digits, at, out)?;
            }
            _ => out.push(c),
        }
    }
    Ok(())
}

/// The pragma bounding a SQLite connection's page cache. Nine connections at SQLite's default
/// (2,000 KiB each) kept 18 MiB after a burst that an idle node no longer needed; pages not cached
/// are read from the kernel's page cache, a system call away.
fn cache_size(tuning: Tuning) -> String {
    format!("PRAGMA cache_size = -{}", tuning.sqlite_cache_kib.max(64))
}

fn configuration(message: String) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(message.into()))
}

/// The `host:port` of the server a PostgreSQL or MySQL URL names (the scheme's port when none is
/// written), never its user or password; `None` for SQLite and for what cannot be read as one
/// TCP server (a Unix socket, several hosts), which is then left to the driver to reach.
pub fn server_address(backend: Backend, url: &str) -> Option<String> {
    let default_port = match backend {
        Backend::Sqlite => return None,
        Backend::Postgres => 5432,
        Backend::Mysql => 3306,
    };
    let (_, rest) = url.split_once("://")?;
    // A socket, or a host or port given as a parameter, is the driver's to reach: no TCP check.
    if let Some((_, query)) = rest.split_once('?') {
        let named = |key: &str| query.split('&').any(|pair| pair.split('=').next() == Some(key));
        if ["host", "hostaddr", "port", "socket"].into_iter().any(named) {
            return None;
        }
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    // The user information ends at the last '@': a password may contain '@'.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host_port.is_empty() || host_port.contains(',') {
        return None;
    }
    let bracketed = host_port.starts_with('[');
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !bracketed || host.ends_with(']') => (host, port.parse::<u16>().ok()?),
        _ => (host_port, default_port),
    };
    (!host.is_empty()).then(|| format!("{host}:{port}"))
}

/// The file a SQLite URL names; `None` for an in-memory database.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.strip_prefix("//").unwrap_or(path);
    let in_memory = path.is_empty() || path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory");
    (!in_memory).then_some(path)
}

/// Creates the database file readable and writable by its owner only (it holds password and
/// refresh-token hashes), and narrows one left wider by an earlier version. SQLite creates the
/// `-wal` and `-shm` files with the database file's mode; those that exist already are narrowed
/// too. A file created by SQLite itself would follow the umask (0644 by default).
fn owner_only(path: &str) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        for file in [path.to_owned(), format!("{path}-wal"), format!("{path}-shm")] {
            let Ok(metadata) = std::fs::metadata(&file) else { continue };
            if metadata.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Adds `mode=...` to a SQLite URL unless the URL already chose one.
fn with_sqlite_mode(url: &str, mode: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode={mode}")
    } else {
        format!("{url}?mode={mode}")
    }
}

/// Creates the database `name` on the PostgreSQL, MySQL or MariaDB server `admin_url` points at,
/// and returns the URL of the new database. For tests and first-time setup; an existing database
/// is kept.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    sqlx::any::install_default_drivers();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(configuration(format!("database name {name:?}: only lowercase letters, digits and _")));
    }
    let backend = Backend::of_url(admin_url)?;
    let create = match backend {
        Backend::Sqlite => return Err(configuration("a SQLite file needs no server to create it".into())),
        Backend::Postgres => format!("CREATE DATABASE {name}"),
        // Byte-wise comparison, as SQLite's and the PostgreSQL schema's COLLATE "C".
        Backend::Mysql => format!("CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    };
    let mut admin = <AnyConnection as sqlx::Connection>::connect(admin_url).await?;
    match admin.execute(create.as_str()).await {
        Ok(_) => {}
        // 42P04 duplicate_database; two callers racing on one name may instead see the unique
        // index of pg_database refuse the second row.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") || e.is_unique_violation() => {}
        Err(e) => return Err(e.into()),
    }
    let _ = sqlx::Connection::close(admin).await;
    Ok(replace_database(admin_url, name))
}

/// Drops the database `name` of the server at `admin_url`; on PostgreSQL whoever still uses it is
/// disconnected.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    sqlx::any::install_default_drivers();
    let drop = match Backend::of_url(admin_url)? {
        Backend::Sqlite => return Ok(()),
        Backend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        Backend::Mysql => format!("DROP DATABASE IF EXISTS {name}"),
    };
    let mut admin = <AnyConnection as sqlx::Connection>::connect(admin_url).await?;
    admin.execute(drop.as_str()).await?;
    let _ = sqlx::Connection::close(admin).await;
    Ok(())
}

/// `url` with its path (the database name) replaced by `name`, keeping the query.
fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_database;
    use crate::store::{Durability, Store};

    #[test]
    fn the_server_of_a_url_is_its_host_and_port_without_the_credentials() {
        let server = |url: &str| server_address(Backend::of_url(url).unwrap(), url);
        assert_eq!(server("postgres://bazaar:p@ss@db:6543/bazaar").as_deref(), Some("db:6543"));
        assert_eq!(server("postgresql://db/bazaar?sslmode=disable").as_deref(), Some("db:5432"));
        assert_eq!(server("mysql://u:pw@127.0.0.1/bazaar").as_deref(), Some("127.0.0.1:3306"));
        assert_eq!(server("postgres://[::1]:5433/x").as_deref(), Some("[::1]:5433"));
        assert_eq!(server("postgres://[::1]/x").as_deref(), Some("[::1]:5432"));
        // A Unix socket, several hosts or SQLite: left to the driver.
        assert_eq!(server("postgres:///bazaar?host=/var/run/postgresql"), None);
        assert_eq!(server("postgres://u:pw@localhost/db?host=/var/run/postgresql"), None);
        assert_eq!(server("postgres://localhost/db?sslmode=disable&port=6543"), None);
        assert_eq!(server("mysql://u:pw@localhost/db?socket=/run/mysqld/mysqld.sock"), None);
        assert_eq!(server("postgres://a:5432,b:5432/x"), None);
        assert_eq!(server("sqlite://data/bazaar.db"), None);
    }

    /// The nodes of a cluster start together on one empty database: each must find the schema
    /// whole, whichever of them migrated it (MariaDB once left a migration half-done here).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_opening_one_empty_database_at_once_all_find_the_schema_whole() {
        let database = fresh_database().await;
        let opens = (0..4).map(|_| {
            let url = database.url().to_owned();
            tokio::spawn(async move { Store::open(&url, Durability::Normal).await })
        });
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().expect("every node opens the database"));
        }
        for store in &stores {
            let users: i64 = query_scalar(store, "SELECT COUNT(*) FROM users").fetch_one(store.reader()).await.unwrap();
            assert_eq!(users, 0);
        }
    }

    #[test]
    fn the_scheme_chooses_the_backend() {
        assert_eq!(Backend::of_url("sqlite:///tmp/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("mysql://u@h/db").unwrap(), Backend::Mysql);
        assert_eq!(Backend::of_url("mariadb://u@h/db").unwrap(), Backend::Mysql);
        assert!(Backend::of_url("mssql://u@h/db").is_err());
    }

    #[test]
    fn mysql_spelling_numbers_placeholders_by_position_and_keeps_text_literals() {
        assert_eq!(
            to_mysql("SELECT * FROM t WHERE a = $1 AND b = '$2 it''s' AND c = $2 LIMIT $3").unwrap(),
            "SELECT * FROM t WHERE a = ? AND b = '$2 it''s' AND c = ? LIMIT ?"
        );
        assert_eq!(to_mysql("SELECT CAST(SUM(q) AS BIGINT) FROM r").unwrap(), "SELECT CAST(SUM(q) AS SIGNED) FROM r");
        // Out of order, repeated or skipped: MySQL would bind the wrong values.
        assert!(to_mysql("UPDATE t SET a = $2 WHERE id = $1").is_err());
        assert!(to_mysql("SELECT $1 WHERE $1 IS NULL").is_err());
        assert!(to_mysql("SELECT $1, $3").is_err());
        assert!(to_mysql("SELECT $").is_err());
    }

    #[test]
    fn mysql_spelling_turns_do_nothing_into_insert_ignore_and_refuses_the_rest() {
        assert_eq!(
            to_mysql("INSERT INTO p (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING").unwrap(),
            "INSERT IGNORE INTO p (a, b) VALUES (?, ?)"
        );
        assert_eq!(
            to_mysql("INSERT INTO p (a) VALUES ($1)\n         ON CONFLICT (a) DO NOTHING").unwrap(),
            "INSERT IGNORE INTO p (a) VALUES (?)"
        );
        assert!(to_mysql("INSERT INTO p (a) VALUES ($1) ON CONFLICT (a) DO UPDATE SET a = excluded.a").is_err());
        assert!(to_mysql("UPDATE p SET a = 1 WHERE b = $1 RETURNING a").is_err());
        // The cached form is the spelled one, and the same text the second time.
        let first = Backend::Mysql.sql("SELECT $1");
        assert_eq!(first, "SELECT ?");
        assert!(std::ptr::eq(first, Backend::Mysql.sql("SELECT $1")));
        assert_eq!(Backend::Postgres.sql("SELECT $1"), "SELECT $1");
    }

    /// The string literals of a Rust source file (plain `"..."` ones, escapes undone roughly:
    /// enough to read SQL).
    fn string_literals(source: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '/' if chars.peek() == Some(&'/') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '\'' => {
                    // A char literal such as '"' or '\'' (a lifetime has no closing quote soon).
                    let ahead: String = chars.clone().take(3).collect();
                    if ahead.starts_with("\"'") {
                        chars.nth(1);
                    } else if ahead.starts_with("\\") {
                        chars.nth(2);
                    }
                }
                '"' => {
                    let mut literal = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => literal.push('\n'),
                                Some('\n') => while chars.next_if(|c| c.is_whitespace()).is_some() {},
                                Some(other) => literal.push(other),
                                None => {}
                            },
                            '"' => break,
                            c => literal.push(c),
                        }
                    }
                    found.push(literal);
                }
                _ => {}
            }
        }
        found
    }

    /// The net under the one choke point: every statement of the store (each file of this
    /// directory, new ones included) goes through `query`/`query_as`/`query_scalar` or
    /// `Backend::spell`, and every statement written with `$N` respells for MySQL.
    #[test]
    fn every_store_statement_goes_through_the_dialect_and_respells_for_mysql() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut statements = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".rs") || name == "backend.rs" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let compact: String = source.split_whitespace().collect();
            for direct in ["sqlx::query(\"", "sqlx::query_as(\"", "sqlx::query_scalar(\""] {
                assert!(!compact.contains(direct), "{name}: a statement passed to {direct} bypasses the dialect");
            }
            for literal in string_literals(&source) {
                let sql = literal.to_ascii_uppercase();
                let is_sql =
                    ["SELECT ", "INSERT ", "UPDATE ", "DELETE "].iter().any(|verb| sql.trim_start().starts_with(verb));
                if !is_sql {
                    continue;
                }
                statements += 1;
                if let Err(reason) = to_mysql(&literal) {
                    panic!("{name}: {reason}\n{literal}");
                }
            }
        }
        assert!(statements > 40, "the scan found {statements} statements: it reads the store's files");
    }

    #[test]
    fn a_database_name_replaces_the_path_and_keeps_the_query() {
        assert_eq!(replace_database("postgres://p@h:1/postgres", "t_1"), "postgres://p@h:1/t_1");
        assert_eq!(replace_database("postgres://p@h:1", "t_1"), "postgres://p@h:1/t_1");
        assert_eq!(
            replace_database("postgres://p@h:1/x?sslmode=disable", "t_1"),
            "postgres://p@h:1/t_1?sslmode=disable"
        );
    }

    #[test]
    fn the_sqlite_file_is_found_in_every_url_form() {
        assert_eq!(sqlite_file("sqlite:///tmp/a.db"), Some("/tmp/a.db"));
        assert_eq!(sqlite_file("sqlite://./data/bazaar.db"), Some("./data/bazaar.db"));
        assert_eq!(sqlite_file("sqlite:data/b.db?mode=rwc"), Some("data/b.db"));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory"), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_database_file_is_made_owner_only_new_or_old() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let new = dir.path().join("new.db");
        owner_only(new.to_str().unwrap()).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.db");
        let wal = dir.path().join("old.db-wal");
        for file in [&old, &wal] {
            std::fs::write(file, b"").unwrap();
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        owner_only(old.to_str().unwrap()).unwrap();
        assert_eq!((mode(&old), mode(&wal)), (0o600, 0o600));
    }

    #[test]
    fn the_sqlite_mode_is_added_once() {
        assert_eq!(with_sqlite_mode("sqlite:///a.db", "ro"), "sqlite:///a.db?mode=ro");
        assert_eq!(with_sqlite_mode("sqlite:///a.db?cache=shared", "ro"), "sqlite:///a.db?cache=shared&mode=ro");
        assert_eq!(with_sqlite_mode("sqlite:///a.db?mode=memory", "ro"), "sqlite:///a.db?mode=memory");
    }
}
