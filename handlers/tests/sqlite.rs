//! SqliteHandler end to end: schema, counts, keys, commit at flush, resume.

mod common;

use common::*;
use rusqlite::Connection;
use taskdist_handlers::{EventHandler, HandlerError, SqliteHandler};

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn schema_rows_and_commit_at_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.sqlite");
    let mut h = SqliteHandler::create(&path).unwrap();
    h.run_started(&run_info()).await.unwrap();
    for v in 0..3 {
        h.taskset_finished(&finished(v, 1, 3, 10)).await.unwrap();
    }
    h.taskset_bad(&bad(3, "target fault")).await.unwrap();

    let other = Connection::open(&path).unwrap();
    // Not committed yet: another connection sees nothing.
    assert_eq!(count(&other, "SELECT count(*) FROM variants"), 0);
    h.flush().await.unwrap();
    assert_eq!(count(&other, "SELECT count(*) FROM variants"), 4);
    assert_eq!(count(&other, "SELECT count(*) FROM events"), 3 * 63);
    assert_eq!(count(&other, "SELECT count(*) FROM jobs"), 3 * 30);
    assert_eq!(count(&other, "SELECT count(*) FROM tasks"), 3 * 3 + 2);
    assert_eq!(
        count(
            &other,
            "SELECT count(*) FROM variants WHERE outcome = 'bad'"
        ),
        1
    );
    assert_eq!(
        count(
            &other,
            "SELECT count(*) FROM jobs WHERE exit_type = 'EXIT_CRITICAL'"
        ),
        3
    );
    assert_eq!(
        count(
            &other,
            "SELECT job FROM events WHERE variant = 1 AND seq = 6"
        ),
        2
    );
    let mode: String = other
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(
        columns(&other, "events"),
        [
            "variant",
            "attempt",
            "seq",
            "target",
            "task_id",
            "job",
            "type",
            "target_time_ms",
            "host_time_us"
        ]
    );
    assert_eq!(columns(&other, "variants")[1], "outcome");
    let indexes = count(
        &other,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN \
         ('jobs_exit_type', 'variants_outcome')",
    );
    assert_eq!(indexes, 2);

    // The primary key refuses a second result for the same variant.
    let err = h.write_finished(&finished(1, 2, 3, 10)).unwrap_err();
    assert!(matches!(err, HandlerError::Sqlite(_)), "{err}");

    h.run_finished(&summary(3, 1, 189)).await.unwrap();
    let (spec, seed, json): (String, String, String) = other
        .query_row("SELECT spec_name, seed, json FROM run", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(spec, "hey");
    assert_eq!(seed, "42");
    assert!(json.contains("\"summary\":{\"done\":3"), "{json}");
}

#[tokio::test]
async fn resume_deletes_rows_of_variants_not_done() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.sqlite");
    {
        let mut h = SqliteHandler::create(&path).unwrap();
        h.run_started(&run_info()).await.unwrap();
        for v in 0..5 {
            h.taskset_finished(&finished(v, 1, 3, 10)).await.unwrap();
        }
        h.taskset_bad(&bad(5, "timeout")).await.unwrap();
        h.flush().await.unwrap();
        // Written but never committed: closing without a flush rolls it back, exactly as
        // SQLite does for a process killed in the middle of a transaction.
        h.taskset_finished(&finished(6, 1, 3, 10)).await.unwrap();
        drop(h);
    }
    let done = |v: u64| v != 3 && v != 5;
    let mut h = SqliteHandler::resume(&path, &done).unwrap();
    {
        let c = h.connection();
        assert_eq!(count(c, "SELECT count(*) FROM variants"), 4);
        assert_eq!(count(c, "SELECT count(*) FROM events"), 4 * 63);
        assert_eq!(count(c, "SELECT count(*) FROM jobs WHERE variant = 3"), 0);
        assert_eq!(count(c, "SELECT count(*) FROM tasks WHERE variant = 5"), 0);
    }
    h.run_started(&run_info()).await.unwrap();
    for v in [3, 6] {
        h.taskset_finished(&finished(v, 2, 3, 10)).await.unwrap();
    }
    h.taskset_bad(&bad(5, "timeout")).await.unwrap();
    h.run_finished(&summary(6, 1, 6 * 63)).await.unwrap();
    let c = h.connection();
    assert_eq!(count(c, "SELECT count(*) FROM variants"), 7);
    assert_eq!(count(c, "SELECT count(*) FROM events"), 6 * 63);
    assert_eq!(count(c, "SELECT count(DISTINCT variant) FROM events"), 6);
    assert_eq!(count(c, "SELECT resumed FROM run"), 1);
}

#[test]
fn create_refuses_an_existing_database_and_resume_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.sqlite");
    drop(SqliteHandler::create(&path).unwrap());
    assert!(matches!(
        SqliteHandler::create(&path),
        Err(HandlerError::Exists { .. })
    ));
    drop(SqliteHandler::create_overwrite(&path).unwrap());

    let foreign = dir.path().join("foreign.sqlite");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE events (a INTEGER);")
        .unwrap();
    let err = SqliteHandler::resume(&foreign, &|_| true).unwrap_err();
    assert!(
        matches!(&err, HandlerError::Format { reason, .. } if reason.contains("table events")),
        "{err}"
    );
}
