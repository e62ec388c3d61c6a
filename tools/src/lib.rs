//! The `opledger` tools: the command line (`cmd`), the HTTP server
//! (`server`) and the token store (`tokens`). The binary in `main.rs` only
//! parses arguments and dispatches here, so tests can drive the router and
//! the commands directly.

pub mod cmd;
pub mod server;
pub mod tokens;
