//! Integration tests of the log against the processes and files around it:
//! a killed writer process (`crash`) and damaged or tampered store files
//! (`corruption`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod corruption;
mod crash;
mod support;
