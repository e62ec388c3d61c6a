//! `docs/projections.md` is an interface: every SQL example in it runs
//! against a real file, every table it names exists, and the schema
//! version it states is this build's.

use std::collections::BTreeSet;

use opledger::domain::model::{Principal, WorkerOutcome};

use crate::store;
use crate::test_world::World;

const DOC: &str = include_str!("../../docs/projections.md");

/// The statements of the document's ```sql blocks.
fn examples() -> Vec<String> {
    let mut statements = Vec::new();
    let mut rest = DOC;
    while let Some(open) = rest.find("```sql\n") {
        let body = &rest[open + 7..];
        let close = body.find("```").unwrap();
        let block: String =
            body[..close].lines().filter(|line| !line.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        statements.extend(block.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
        rest = &body[close + 3..];
    }
    statements
}

fn world_file() -> (World, crate::projector::Projector) {
    let world = World::new();
    let run = world.start("inventory_sync", "t1", Principal::actor("u1"), Some("c1"));
    world.begin(run);
    world.complete(run, WorkerOutcome::Failed, false);
    let projector = world.projector();
    (world, projector)
}

#[test]
fn every_sql_example_of_the_document_runs_on_a_real_file() {
    let (_world, projector) = world_file();
    let db = projector.reader().unwrap();
    let statements = examples();
    assert!(statements.len() >= 5, "the document lost its examples: {statements:?}");
    for sql in statements {
        let mut statement = db.prepare(&sql).unwrap_or_else(|e| panic!("{sql}\n{e}"));
        let mut rows = statement.query([]).unwrap_or_else(|e| panic!("{sql}\n{e}"));
        while rows.next().unwrap_or_else(|e| panic!("{sql}\n{e}")).is_some() {}
    }
}

#[test]
fn every_table_of_the_file_is_in_the_document_and_the_version_is_this_builds() {
    let (_world, projector) = world_file();
    let db = projector.reader().unwrap();
    let mut statement =
        db.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").unwrap();
    let tables: BTreeSet<String> = statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    for table in &tables {
        assert!(DOC.contains(&format!("`{table}`")), "docs/projections.md does not name the table {table}");
    }
    assert!(
        DOC.contains(&format!("(now **{}**)", store::SCHEMA_VERSION)),
        "docs/projections.md states another schema version than {}",
        store::SCHEMA_VERSION
    );
    assert!(DOC.contains(&store::APPLICATION_ID.to_string()), "the application id in the document is not this build's");
}
