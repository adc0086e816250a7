//! Statements run through the connection's statement cache.
//!
//! `Connection::execute` and `Connection::query_row` parse and plan their
//! SQL on every call. The record pass runs the same few statements for
//! every record (the run's facts, the guarded park and its event): in a
//! 3,000-record backlog, preparing them anew was over a fifth of the
//! daemon's CPU (perf, kw-bench section 3d). These two keep each prepared
//! statement for the connection's life ([`STATEMENT_CACHE`] of them).

use rusqlite::{Connection, Params, Row};

/// Prepared statements kept per connection: every distinct statement the
/// watchdog runs on a board, with room to spare (rusqlite's default is 16).
pub(crate) const STATEMENT_CACHE: usize = 64;

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
