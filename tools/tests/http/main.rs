//! The HTTP surface of API.md: every route through the router (`oneshot`),
//! the access rule of SPEC section 6 over JSON and HTML, and the real
//! binary end to end (SIGKILL under load, restart, SIGTERM, verify).
//!
//! On sled by default; with `OPLEDGER_TEST_LOG=postgres` every test's log is
//! a fresh database of one throwaway PostgreSQL cluster (`backend.rs`;
//! `scripts/test` runs the suite both ways).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod auth;
mod backend;
mod connections;
mod console_pages;
mod e2e;
mod errors;
mod health;
mod integrity;
mod lease_e2e;
mod leases;
mod metrics;
mod monitoring_pages;
mod openapi;
#[path = "../common/openapi_check.rs"]
mod openapi_check;
mod positions;
#[path = "../../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;
#[path = "../common/raw_http.rs"]
mod raw_http;
mod routes;
mod secrets;
#[path = "../common/server_process.rs"]
mod server_process;
mod summary;
mod support;
