//! The two databases the store runs on, and everything that differs between them: how a
//! connection is set up, which migrations apply, how a batch starts, how the relay locks.
//!
//! Queries themselves are written once, in the dialect both accept (`$N` placeholders, `ON
//! CONFLICT`, `RETURNING`), and run through sqlx's `Any` driver; only the statements here are
//! spelled per backend.

use super::{Durability, StoreError, Tuning};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Executor};
use std::time::Duration;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How many connections serve reads.
const READ_CONNECTIONS: u32 = 8;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A file, shared by the processes of one machine; one writer at a time.
    Sqlite,
    /// A server, possibly shared by every node of a cluster; row locks, READ COMMITTED.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, by its scheme.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(configuration(format!("database URL scheme {scheme:?}: use sqlite: or postgres:"))),
        }
    }

    /// Opens the pool the write connection is taken from and brings the schema up to date.
    pub(super) async fn open_writer(self, url: &str, tuning: Tuning) -> Result<AnyPool, StoreError> {
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
            Backend::Postgres => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| Box::pin(async move { self.prepare_writer(conn, tuning).await }))
            .connect(&url)
            .await?;
        let migrator = match self {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(|e| StoreError::Database(e.into()))?;
        Ok(pool)
    }

    /// Opens the pool for reads; its connections refuse to write.
    pub(super) async fn open_reader(self, url: &str, tuning: Tuning) -> Result<AnyPool, StoreError> {
        let url = match self {
            Backend::Sqlite => with_sqlite_mode(url, "ro"),
            Backend::Postgres => url.to_owned(),
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
            }
            Backend::Postgres => {
                // `normal` is the session's own choice: commits acknowledged before the WAL
                // reaches disk (a server crash may lose the newest; nothing is torn).
                if durability == Durability::Normal {
                    conn.execute("SET synchronous_commit = off").await?;
                }
                // The one writer of a node holds its mutex while a statement waits on a lock;
                // another node's batch must not stall it without bound (55P03, decided again).
                conn.execute("SET lock_timeout = '5s'").await?;
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
            Backend::Postgres => "BEGIN",
        }
    }
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

/// Creates the PostgreSQL database `name` through the server `admin_url` points at, and returns
/// the URL of the new database. For tests and first-time setup; an existing database is kept.
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    sqlx::any::install_default_drivers();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(configuration(format!("database name {name:?}: only lowercase letters, digits and _")));
    }
    let mut admin = <AnyConnection as sqlx::Connection>::connect(admin_url).await?;
    match admin.execute(format!("CREATE DATABASE {name}").as_str()).await {
        Ok(_) => {}
        // 42P04 duplicate_database; two callers racing on one name may instead see the unique
        // index of pg_database refuse the second row.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") || e.is_unique_violation() => {}
        Err(e) => return Err(e.into()),
    }
    let _ = sqlx::Connection::close(admin).await;
    Ok(replace_database(admin_url, name))
}

/// Drops the PostgreSQL database `name`, disconnecting whoever still uses it.
pub async fn drop_postgres_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    sqlx::any::install_default_drivers();
    let mut admin = <AnyConnection as sqlx::Connection>::connect(admin_url).await?;
    admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await?;
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

    #[test]
    fn the_scheme_chooses_the_backend() {
        assert_eq!(Backend::of_url("sqlite:///tmp/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        assert!(Backend::of_url("mysql://u@h/db").is_err());
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
