//! Writes a command makes without reading their outcome, held in its [`super::Tx`] until it
//! commits (or next reads) and then sent together.
//!
//! Every statement sent to SQLite is a round trip to sqlx's worker thread: a handoff there and a
//! wake-up back, which under load cost more than the statement itself (issue 10's profile: half
//! of the node's samples in the kernel's task switching). A command's writes rarely need an
//! answer, so they are kept as [`Write`]s and sent as one multi-statement call: its savepoint,
//! every write, a version check after each write that must change one row, and the release.
//! PostgreSQL and MySQL take one statement per call with parameters (their extended protocols), so
//! there the same writes are sent one by one, as before.

use super::{Backend, StoreError};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;
use std::borrow::Cow;

/// A parameter of a [`Write`], owned so that the write can outlive the values it was made from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Param {
    fn from(value: &str) -> Self {
        Param::Text(Some(value.to_owned()))
    }
}

impl From<String> for Param {
    fn from(value: String) -> Self {
        Param::Text(Some(value))
    }
}

impl From<&String> for Param {
    fn from(value: &String) -> Self {
        Param::Text(Some(value.clone()))
    }
}

impl From<&Option<String>> for Param {
    fn from(value: &Option<String>) -> Self {
        Param::Text(value.clone())
    }
}

impl From<Option<&str>> for Param {
    fn from(value: Option<&str>) -> Self {
        Param::Text(value.map(str::to_owned))
    }
}

impl From<Option<String>> for Param {
    fn from(value: Option<String>) -> Self {
        Param::Text(value)
    }
}

impl From<i64> for Param {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

/// One statement and its parameters, numbered `$1..$N` in the order they appear (the rule every
/// statement here keeps for MySQL, which binds by position).
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// As written (`$N`), or once deferred on MySQL, as spelled for it.
    sql: Cow<'static, str>,
    params: Vec<Param>,
    /// The statement must change exactly one row (a version check), or the command is decided
    /// again ([`StoreError::VersionConflict`]).
    expect_one: bool,
}

impl Write {
    pub(crate) fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self { sql: sql.into(), params: Vec::new(), expect_one: false }
    }

    /// Adds the next parameter.
    pub(crate) fn bind(mut self, value: impl Into<Param>) -> Self {
        self.params.push(value.into());
        self
    }

    /// Fails the command with a version conflict unless the statement changes exactly one row.
    pub(crate) fn expect_one(mut self) -> Self {
        self.expect_one = true;
        self
    }

    /// The statement as `backend` spells it (placeholders stay `$N` for SQLite, whose calls
    /// renumber them, and for PostgreSQL).
    pub(super) fn spelled_for(mut self, backend: Backend) -> Self {
        if backend == Backend::Mysql {
            self.sql = match self.sql {
                Cow::Borrowed(sql) => Cow::Borrowed(backend.sql(sql)),
                Cow::Owned(sql) => Cow::Owned(backend.spell(&sql).into_owned()),
            };
        }
        self
    }

    /// The statement with its parameters bound: what is sent one by one to a server.
    pub(super) fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        bind_all(sqlx::query(&self.sql), &self.params)
    }

    pub(super) fn expects_one(&self) -> bool {
        self.expect_one
    }
}

/// The constraint the SQLite version check trips: a row is inserted into the connection's
/// temporary table only when the write before it did not change exactly one row, and the check
/// refuses it, which stops the call there with an error that names the constraint.
pub(super) const VERSION_CHECK: &str = "version_check";

/// Made once per SQLite write connection (a temporary table is the connection's own).
pub(super) const CREATE_VERSION_CHECK: &str =
    "CREATE TEMP TABLE IF NOT EXISTS version_checks (changed INTEGER NOT NULL CONSTRAINT version_check CHECK (changed = 1))";

/// Whether a SQLite error is the version check's refusal.
pub(super) fn is_version_check(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.message().contains(VERSION_CHECK))
}

/// One SQLite call for `writes`: the savepoint first unless it is open already, each write (its
/// placeholders renumbered to follow the ones before it), a version check after each write that
/// expects one row, and the release when the command is committing. SQLite runs the statements of
/// one call in order and stops at the first error; the savepoint is still open then, so the
/// command's writes are undone with it like any failed command's.
pub(super) fn sqlite_call(writes: &[Write], open_savepoint: bool, release: bool) -> (String, Vec<Param>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    if open_savepoint {
        sql.push_str("SAVEPOINT command;\n");
    }
    for write in writes {
        renumber(&write.sql, params.len(), &mut sql);
        sql.push_str(";\n");
        params.extend(write.params.iter().cloned());
        if write.expect_one {
            sql.push_str("INSERT INTO temp.version_checks (changed) SELECT changes() WHERE changes() <> 1;\n");
        }
    }
    if release {
        sql.push_str("RELEASE SAVEPOINT command;\n");
    }
    (sql, params)
}

/// Binds `params` in order.
pub(super) fn bind_all<'q>(
    mut query: Query<'q, Any, AnyArguments<'q>>,
    params: &'q [Param],
) -> Query<'q, Any, AnyArguments<'q>> {
    for param in params {
        query = match param {
            Param::Text(value) => query.bind(value.as_deref()),
            Param::Int(value) => query.bind(*value),
        };
    }
    query
}

/// Appends `sql` with each `$N` outside string literals written as `$(N + offset)`.
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let renumbered = super::backend::rewrite_placeholders(sql, out, |digits, _, out| {
        out.push('$');
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(digits),
        }
        Ok(())
    });
    // Nothing above refuses a placeholder.
    debug_assert!(renumbered.is_ok());
}

/// Maps an error of a SQLite call: the version check's refusal is a lost race, decided again.
pub(super) fn sqlite_error(error: sqlx::Error) -> StoreError {
    if is_version_check(&error) {
        StoreError::VersionConflict
    } else {
        error.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_ones_before_them_and_literals_are_left_alone() {
        let writes = [
            Write::new("UPDATE t SET a = $1 WHERE id = $2 AND note = '$1'").bind(1_i64).bind("x").expect_one(),
            Write::new("INSERT INTO u (a, b) VALUES ($1, $2)").bind("y").bind(None::<i64>),
        ];
        let (sql, params) = sqlite_call(&writes, true, true);
        assert_eq!(
            sql,
            "SAVEPOINT command;\n\
             UPDATE t SET a = $1 WHERE id = $2 AND note = '$1';\n\
             INSERT INTO temp.version_checks (changed) SELECT changes() WHERE changes() <> 1;\n\
             INSERT INTO u (a, b) VALUES ($3, $4);\n\
             RELEASE SAVEPOINT command;\n"
        );
        assert_eq!(
            params,
            [Param::Int(Some(1)), Param::Text(Some("x".into())), Param::Text(Some("y".into())), Param::Int(None)]
        );
        let (sql, _) = sqlite_call(&writes[1..], false, false);
        assert_eq!(sql, "INSERT INTO u (a, b) VALUES ($1, $2);\n");
    }
}
