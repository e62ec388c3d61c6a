//! The domain: authority, runs, the start gate and the legitimacy gate.

pub mod reason;
pub mod sanitize;
