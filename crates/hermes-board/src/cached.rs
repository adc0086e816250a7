//! Statements run through the connection's statement cache.
//!
//! `Connection::execute` and `Connection::query_row` parse and plan their
//! SQL on every call. The record pass runs the same few statements for
//! every record (the run's facts, the guarded park and its event): in a
//! 3,000-record backlog, preparing them anew was over a fifth of the
//! daemon's CPU (perf, kw-bench section 3d). These two keep each prepared
//! statement for the connection's life ([`STATEMENT_CACHE`] of them).
//!
//! A kept statement must also stay prepared: the bundled SQLite is built
//! with STAT4, and its planner marks a statement whose plan could depend on
//! a bound value (a `LIMIT`, a `LIKE`, an indexed comparison) to be parsed
//! and planned again whenever that value changes: every record, since each
//! binds its own task and run. [`configure`] turns on the query planner
//! stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`): one plan per
//! statement, chosen without the values. The record pass's statements are
//! lookups by key, whose plans do not depend on them; re-preparing one of
//! them was ~16% of the daemon's CPU in a backlog (perf, kw-bench 3d).

use rusqlite::config::DbConfig;
use rusqlite::{Connection, Params, Row};

/// Prepared statements kept per connection: every distinct statement the
/// watchdog runs on a board, with room to spare (rusqlite's default is 16).
pub(crate) const STATEMENT_CACHE: usize = 64;

/// Sets a board connection up for cached statements: [`STATEMENT_CACHE`]
/// of them, each planned once (see the module docs).
pub(crate) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// [`Connection::execute`] through the statement cache.
pub(crate) fn exec<P: Params>(conn: &Connection, sql: &str, params: P) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// [`Connection::query_row`] through the statement cache.
pub(crate) fn row<T, P, F>(conn: &Connection, sql: &str, params: P, f: F) -> rusqlite::Result<T>
where
    P: Params,
    F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
{
    conn.prepare_cached(sql)?.query_row(params, f)
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, StatementStatus, params};

    use super::*;

    /// Runs one of the record pass's statements for 20 different runs and
    /// returns how often SQLite had to prepare it again.
    fn reprepares(conn: &Connection) -> i32 {
        conn.execute_batch(include_str!("../schemas/hermes-0.19-schema.sql"))
            .unwrap();
        for i in 0..40i64 {
            conn.execute(
                "INSERT INTO task_events (task_id, run_id, kind, payload, created_at) \
                 VALUES (?1, ?2, 'claimed', '{\"source_status\":\"ready\"}', ?2)",
                params![format!("t_{}", i % 7), i],
            )
            .unwrap();
        }
        let mut stmt = conn
            .prepare(
                "SELECT json_extract(payload, '$.source_status') FROM task_events \
                 WHERE task_id = ?1 AND run_id = ?2 AND kind = 'claimed' AND json_valid(payload) \
                 ORDER BY id DESC LIMIT 1",
            )
            .unwrap();
        for i in 0..20i64 {
            let _: Option<String> = stmt
                .query_row(params![format!("t_{}", i % 7), i], |r| r.get(0))
                .ok();
        }
        stmt.get_status(StatementStatus::RePrepare)
    }

    #[test]
    fn a_configured_connection_plans_each_statement_once() {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        assert_eq!(reprepares(&conn), 0);
        // Without it the same statement is prepared again as its values change.
        let plain = Connection::open_in_memory().unwrap();
        assert!(reprepares(&plain) > 0);
    }
}
