//! The vocabulary of SPEC section 1 as types, with pinned serialized names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id (workspace, tenant, actor, connection, capability, operation
/// type, dedupe key), in bytes.
pub const ID_BYTES_MAX: usize = 128;

/// Most attempts an operation type may allow.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// The lease of an attempt when the catalog names none: a worker that
/// neither heartbeats nor reports progress for this long is taken as lost.
pub const LEASE_SECONDS_DEFAULT: u32 = 300;

/// Shortest lease the catalog accepts: shorter would make the reaper's
/// own lateness (about a second) a large part of the lease.
pub const LEASE_SECONDS_MIN: u32 = 5;

/// Longest lease the catalog accepts (one day): a lost worker must free
/// its scope within a bounded time.
pub const LEASE_SECONDS_MAX: u32 = 86_400;

/// The serde default of `lease_seconds` (logs written before leases).
pub fn lease_seconds_default() -> u32 {
    LEASE_SECONDS_DEFAULT
}

/// Checks an opaque id: 1 to [`ID_BYTES_MAX`] bytes, no white space or
/// control characters. Ids are stored verbatim, never normalized.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(format!("{what} must be 1 to {ID_BYTES_MAX} bytes, got {}", id.len()));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{what} {id:?} must not contain white space or control characters"));
    }
    Ok(())
}

/// The word that stands for [`Principal::System`] wherever a principal is
/// one string (audit "who", actor filters): no actor may have it as id.
pub const SYSTEM_PRINCIPAL_WORD: &str = "system";

/// Checks an actor id: an id ([`check_id`]) other than the system's word,
/// so an actor can never be mistaken for the system in audit and filters.
pub fn check_actor_id(what: &str, id: &str) -> Result<(), String> {
    check_id(what, id)?;
    if id == SYSTEM_PRINCIPAL_WORD {
        return Err(format!("{what} {id:?} is reserved for the system principal"));
    }
    Ok(())
}

/// Who caused something: a human actor, or the system (the scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Principal {
    Actor { id: String },
    System,
}

impl Principal {
    pub fn actor(id: impl Into<String>) -> Principal {
        Principal::Actor { id: id.into() }
    }

    pub fn actor_id(&self) -> Option<&str> {
        match self {
            Principal::Actor { id } => Some(id),
            Principal::System => None,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        match self {
            Principal::Actor { id } => check_actor_id("actor id", id),
            Principal::System => Ok(()),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Actor { id } => write!(f, "actor {id}"),
            Principal::System => f.write_str(SYSTEM_PRINCIPAL_WORD),
        }
    }
}

/// Tenant lifecycle; only `active` is operable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Onboarding,
    Active,
    Archived,
    Discarded,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Onboarding => "onboarding",
            Lifecycle::Active => "active",
            Lifecycle::Archived => "archived",
            Lifecycle::Discarded => "discarded",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Ready,
    ConsentRequired,
    CredentialsInvalid,
    Disabled,
    Unreachable,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Ready => "ready",
            ConnectionStatus::ConsentRequired => "consent_required",
            ConnectionStatus::CredentialsInvalid => "credentials_invalid",
            ConnectionStatus::Disabled => "disabled",
            ConnectionStatus::Unreachable => "unreachable",
        }
    }
}

/// One entry of the operation catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationTypeSpec {
    pub operation_type: String,
    pub required_capability: String,
    pub provider_backed: bool,
    pub writes: bool,
    pub system_authority_allowed: bool,
    pub max_attempts: u32,
    /// How long an attempt may go without a heartbeat or progress before
    /// the ledger abandons it. Absent in logs older than leases: 300.
    #[serde(default = "lease_seconds_default")]
    pub lease_seconds: u32,
}

impl OperationTypeSpec {
    pub fn check(&self) -> Result<(), String> {
        check_id("operation type", &self.operation_type)?;
        check_id("required capability", &self.required_capability)?;
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(format!("max_attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, got {}", self.max_attempts));
        }
        if !(LEASE_SECONDS_MIN..=LEASE_SECONDS_MAX).contains(&self.lease_seconds) {
            let (min, max, got) = (LEASE_SECONDS_MIN, LEASE_SECONDS_MAX, self.lease_seconds);
            return Err(format!("lease_seconds must be {min} to {max}, got {got}"));
        }
        Ok(())
    }
}

/// Whose authority a run executes under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityMode {
    ActorBound,
    SystemAuthority,
}

impl AuthorityMode {
    pub fn of(initiator: &Principal) -> AuthorityMode {
        match initiator {
            Principal::Actor { .. } => AuthorityMode::ActorBound,
            Principal::System => AuthorityMode::SystemAuthority,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityMode::ActorBound => "actor_bound",
            AuthorityMode::SystemAuthority => "system_authority",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Pending,
    Succeeded,
    PartiallySucceeded,
    Failed,
    Blocked,
    /// Ended by a service on request (`run_cancelled`).
    Cancelled,
}

impl RunOutcome {
    /// Every outcome, in declaration order.
    pub const ALL: [RunOutcome; 6] = [
        RunOutcome::Pending,
        RunOutcome::Succeeded,
        RunOutcome::PartiallySucceeded,
        RunOutcome::Failed,
        RunOutcome::Blocked,
        RunOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Pending => "pending",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::PartiallySucceeded => "partially_succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Blocked => "blocked",
            RunOutcome::Cancelled => "cancelled",
        }
    }

    /// The word shown to people (SPEC 8).
    pub fn operator_word(self) -> &'static str {
        match self {
            RunOutcome::Pending => "pending",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::PartiallySucceeded => "partially succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::Blocked => "blocked",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// What a worker reports when an attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerOutcome {
    Succeeded,
    PartiallySucceeded,
    Failed,
}

impl WorkerOutcome {
    pub fn outcome(self) -> RunOutcome {
        match self {
            WorkerOutcome::Succeeded => RunOutcome::Succeeded,
            WorkerOutcome::PartiallySucceeded => RunOutcome::PartiallySucceeded,
            WorkerOutcome::Failed => RunOutcome::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals_serialize_as_the_api_says() {
        let actor = serde_json::to_value(Principal::actor("u1")).unwrap();
        assert_eq!(actor, serde_json::json!({"kind": "actor", "id": "u1"}));
        assert_eq!(serde_json::to_value(Principal::System).unwrap(), serde_json::json!({"kind": "system"}));
        assert!(serde_json::from_value::<Principal>(serde_json::json!({"kind": "robot"})).is_err());
    }

    #[test]
    fn ids_are_bounded_and_free_of_white_space() {
        assert!(check_id("tenant id", "t-1.a/b").is_ok());
        assert!(check_id("tenant id", "").is_err());
        assert!(check_id("tenant id", "t 1").is_err());
        assert!(check_id("tenant id", "t\n").is_err());
        assert!(check_id("tenant id", &"x".repeat(ID_BYTES_MAX + 1)).is_err());
        assert!(Principal::actor(SYSTEM_PRINCIPAL_WORD).check().is_err(), "the system's word is no actor id");
        assert!(Principal::actor("systems").check().is_ok());
    }

    #[test]
    fn a_catalog_entry_from_before_leases_decodes_with_the_default_and_leases_are_bounded() {
        let old = serde_json::json!({"operation_type": "inventory_sync", "required_capability": "tenant.sync",
            "provider_backed": true, "writes": false, "system_authority_allowed": true, "max_attempts": 3});
        let mut spec: OperationTypeSpec = serde_json::from_value(old).unwrap();
        assert_eq!(spec.lease_seconds, LEASE_SECONDS_DEFAULT);
        assert!(spec.check().is_ok());
        for (lease, ok) in [(LEASE_SECONDS_MIN - 1, false), (LEASE_SECONDS_MIN, true), (LEASE_SECONDS_MAX, true)] {
            spec.lease_seconds = lease;
            assert_eq!(spec.check().is_ok(), ok, "lease_seconds {lease}");
        }
        spec.lease_seconds = LEASE_SECONDS_MAX + 1;
        assert!(spec.check().is_err());
        assert_eq!(serde_json::to_value(RunOutcome::Cancelled).unwrap(), "cancelled");
    }

    #[test]
    fn serialized_names_are_pinned() {
        let names: Vec<String> = [RunOutcome::PartiallySucceeded, RunOutcome::Blocked]
            .iter()
            .map(|o| serde_json::to_value(o).unwrap().as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["partially_succeeded", "blocked"]);
        assert_eq!(serde_json::to_value(ConnectionStatus::ConsentRequired).unwrap(), "consent_required");
        assert_eq!(serde_json::to_value(AuthorityMode::SystemAuthority).unwrap(), "system_authority");
    }
}
