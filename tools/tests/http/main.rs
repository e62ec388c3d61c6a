//! The HTTP surface of API.md: every route through the router (`oneshot`),
//! the access rule of SPEC section 6 over JSON and HTML, and the real
//! binary end to end (SIGKILL under load, restart, SIGTERM, verify).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod e2e;
mod errors;
mod integrity;
mod lease_e2e;
mod leases;
mod routes;
mod support;
