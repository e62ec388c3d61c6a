//! The file's own rules: schema version and owner marks, the checkpoint,
//! readers beside a writer, and the swap that refuses while the old file
//! is open elsewhere.

use super::*;

struct Nothing;

impl Projection for Nothing {
    fn name(&self) -> &'static str {
        "nothing"
    }
    fn tables(&self) -> &'static str {
        "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL) STRICT;"
    }
    fn indexes(&self) -> &'static str {
        "CREATE INDEX things_by_name ON things (name);"
    }
    fn batch<'c>(&self, _db: &'c Connection) -> Box<dyn crate::ProjectionBatch + 'c> {
        unreachable!("the store tests apply nothing")
    }
}

fn created(mode: Mode) -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = path_in(dir.path());
    let db = open_writer(&path, mode).unwrap();
    let projections: Vec<Arc<dyn Projection>> = vec![Arc::new(Nothing)];
    create_schema(&db, &projections, true).unwrap();
    (dir, path, db)
}

#[test]
fn a_created_file_fits_at_the_start() {
    let (_dir, _path, db) = created(Mode::Live);
    assert_eq!(fitting_checkpoint(&db).unwrap(), Ok(Checkpoint::START));
}

#[test]
fn another_schema_version_or_owner_does_not_fit() {
    let (_dir, _path, db) = created(Mode::Live);
    db.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    assert_eq!(fitting_checkpoint(&db).unwrap(), Err(Unfit::OtherVersion { found: SCHEMA_VERSION + 1 }));
    db.pragma_update(None, "application_id", 7).unwrap();
    assert_eq!(fitting_checkpoint(&db).unwrap(), Err(Unfit::NotOurs { application_id: 7 }));
}

#[test]
fn the_checkpoint_moves_with_its_transaction_only() {
    let (_dir, path, db) = created(Mode::Live);
    let moved = Checkpoint { position: 9, log_hash: Hash::of(b"nine") };
    let tx = db.unchecked_transaction().unwrap();
    write_checkpoint(&tx, moved).unwrap();
    tx.execute("INSERT INTO things (id, name) VALUES (1, 'a')", []).unwrap();
    drop(tx);
    assert_eq!(read_checkpoint(&db).unwrap(), Some(Checkpoint::START), "a rolled back page moves nothing");
    let tx = db.unchecked_transaction().unwrap();
    write_checkpoint(&tx, moved).unwrap();
    tx.commit().unwrap();
    let reader = open_reader(&path).unwrap().unwrap();
    assert_eq!(read_checkpoint(&reader).unwrap(), Some(moved));
}

#[test]
fn a_reader_refuses_to_write_and_sees_committed_rows() {
    let (_dir, path, db) = created(Mode::Live);
    let reader = open_reader(&path).unwrap().unwrap();
    db.execute("INSERT INTO things (id, name) VALUES (1, 'a')", []).unwrap();
    let count: i64 = reader.query_row("SELECT count(*) FROM things", [], |row| row.get(0)).unwrap();
    assert_eq!(count, 1);
    assert!(reader.execute("DELETE FROM things", []).is_err(), "readers are read-only");
    assert!(open_reader(&path.with_file_name("missing.db")).unwrap().is_none());
}

#[test]
fn dumps_are_equal_exactly_when_the_rows_are() {
    let (_a_dir, _a, a) = created(Mode::Live);
    let (_b_dir, _b, b) = created(Mode::Bulk);
    a.execute("INSERT INTO things (id, name) VALUES (2, 'b'), (1, 'a')", []).unwrap();
    b.execute("INSERT INTO things (id, name) VALUES (1, 'a'), (2, 'b')", []).unwrap();
    assert_eq!(dump(&a).unwrap(), dump(&b).unwrap(), "insertion order does not matter");
    b.execute("UPDATE things SET name = 'c' WHERE id = 2", []).unwrap();
    assert_ne!(dump(&a).unwrap(), dump(&b).unwrap());
}

#[test]
fn the_old_file_is_not_swapped_while_another_connection_holds_it() {
    let (dir, path, db) = created(Mode::Live);
    drop(db);
    let live = Live::open(&path).unwrap();
    let elsewhere = open_reader(&path).unwrap().unwrap();
    let _: i64 = elsewhere.query_row("SELECT count(*) FROM things", [], |row| row.get(0)).unwrap();
    // Hold a read transaction open, as a slow reader in another process would.
    elsewhere.execute_batch("BEGIN; SELECT count(*) FROM things;").unwrap();
    assert!(!swap::leave_wal_for_tests(&live), "a held file stays in WAL mode");
    elsewhere.execute_batch("COMMIT;").unwrap();
    drop(elsewhere);
    quiesce(&live).unwrap();
    let fresh = dir.path().join(REBUILD_FILE_NAME);
    let new = open_writer(&fresh, Mode::Live).unwrap();
    create_schema(&new, &[Arc::new(Nothing) as Arc<dyn Projection>], true).unwrap();
    new.execute("INSERT INTO things (id, name) VALUES (5, 'new')", []).unwrap();
    new.close().unwrap();
    install(&fresh, &path).unwrap();
    let reader = open_reader(&path).unwrap().unwrap();
    let name: String = reader.query_row("SELECT name FROM things", [], |row| row.get(0)).unwrap();
    assert_eq!(name, "new");
    assert!(!fresh.exists());
}
