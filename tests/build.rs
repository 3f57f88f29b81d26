//! Turns on `cfg(crm_pg)` when `CRM_TEST_POSTGRES_URL` is set, so that without it the
//! PostgreSQL variants of the storage tests are reported as ignored (visible in every test
//! summary) instead of passing silently. The build script of crm-tests, crm-api and crm-cli.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(crm_pg)");
    println!("cargo::rerun-if-env-changed=CRM_TEST_POSTGRES_URL");
    if std::env::var_os("CRM_TEST_POSTGRES_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=crm_pg");
    }
}
