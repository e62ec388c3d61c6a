//! The domain: authority, runs, the start gate and the legitimacy gate.
//!
//! Decide / evolve: the gates ([`start_gate`], [`legitimacy`],
//! [`lifecycle`]) are pure functions of the state returning events or a
//! refusal; state changes only by applying events ([`state`], [`run`],
//! [`authority`]). The [`sequencer`] is the single serialized step that
//! decides and applies; the [`ledger`] facade adds the clock, ids and I/O.

pub mod authority;
pub mod cancel;
pub mod events;
pub mod ids;
pub mod lease;
pub mod ledger;
pub mod legitimacy;
pub mod lifecycle;
pub mod model;
pub mod reason;
pub mod replay;
pub mod run;
pub mod sanitize;
pub mod sequencer;
pub mod snapshot;
pub mod start_gate;
pub mod state;
