//! Committed artifacts stay in step with the code.

#[test]
fn schema_graphql_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let committed = std::fs::read_to_string(path).unwrap();
    let current = crm_api::graphql::sdl();
    assert!(
        committed == current,
        "schema.graphql is stale: run `cargo run -p crm-api --bin crm-server -- print-schema > schema.graphql`"
    );
}

#[test]
fn both_migration_trees_have_the_same_versions() {
    let (sqlite, postgres) = crm_store::embedded_migration_versions();
    assert!(!sqlite.is_empty());
    assert_eq!(
        sqlite, postgres,
        "migrations/sqlite and migrations/postgres must list the same versions"
    );
}
