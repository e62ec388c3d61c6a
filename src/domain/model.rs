//! The vocabulary of SPEC section 1 as types, with pinned serialized names.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::domain::ids::{check_actor_id, check_id, ID_BYTES_MAX, SYSTEM_PRINCIPAL_WORD};

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

/// Who caused something: a human actor, or the system (the scheduler).
///
/// Read through `PrincipalWire`, so that `{"kind": "system", "id": "u1"}`
/// is refused instead of silently losing its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[schema(
    description = "Who caused something: `{\"kind\": \"actor\", \"id\": …}` or `{\"kind\": \"system\"}` (which takes no `id`). The actor id `system` is reserved."
)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Principal {
    Actor { id: String },
    System,
}

/// The kinds of principal, as `kind` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PrincipalKind {
    Actor,
    System,
}

/// A principal as sent: every field it may carry, none other. Serde's
/// internally tagged enums ignore unknown fields of a unit variant, so the
/// system's `id` is checked here by hand.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalWire {
    kind: PrincipalKind,
    #[serde(default)]
    id: Option<String>,
}

impl TryFrom<PrincipalWire> for Principal {
    type Error = &'static str;

    fn try_from(wire: PrincipalWire) -> Result<Principal, &'static str> {
        match (wire.kind, wire.id) {
            (PrincipalKind::Actor, Some(id)) => Ok(Principal::Actor { id }),
            (PrincipalKind::Actor, None) => Err("an actor principal needs its `id`"),
            (PrincipalKind::System, None) => Ok(Principal::System),
            (PrincipalKind::System, Some(_)) => Err("the system principal takes no `id`"),
        }
    }
}

impl<'de> Deserialize<'de> for Principal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Principal, D::Error> {
        let wire = PrincipalWire::deserialize(deserializer)?;
        Principal::try_from(wire).map_err(serde::de::Error::custom)
    }
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

    /// Checks the actor id of this principal ([`check_actor_id`]); `field`
    /// names the principal in a refusal (`initiator`, `changed_by`).
    pub fn check(&self, field: &str) -> Result<(), String> {
        match self {
            Principal::Actor { id } => check_actor_id(&format!("{field}.id"), id),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
        check_id("operation_type", &self.operation_type)?;
        check_id("required_capability", &self.required_capability)?;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 3] = [RunStatus::Queued, RunStatus::Running, RunStatus::Completed];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    fn a_principal_reads_only_the_fields_of_its_kind() {
        let read = |value: serde_json::Value| serde_json::from_value::<Principal>(value).map_err(|e| e.to_string());
        assert_eq!(read(serde_json::json!({"kind": "actor", "id": "u1"})), Ok(Principal::actor("u1")));
        assert_eq!(read(serde_json::json!({"kind": "system"})), Ok(Principal::System));
        let system_with_id = read(serde_json::json!({"kind": "system", "id": "u1"})).unwrap_err();
        assert!(system_with_id.contains("the system principal takes no `id`"), "{system_with_id}");
        assert!(read(serde_json::json!({"kind": "actor"})).unwrap_err().contains("needs its `id`"));
        assert!(read(serde_json::json!({"kind": "actor", "id": "u1", "name": "Ada"})).is_err());
        assert!(read(serde_json::json!({"kind": "system", "name": "cron"})).is_err());
        assert!(read(serde_json::json!({"id": "u1"})).is_err());
        // What the log holds reads back as it was written.
        for principal in [Principal::actor("u1"), Principal::System] {
            let text = serde_json::to_string(&principal).unwrap();
            assert_eq!(serde_json::from_str::<Principal>(&text).unwrap(), principal);
        }
    }

    #[test]
    fn a_principal_check_names_its_field() {
        let refusal = Principal::actor("u1\u{200B}").check("initiator").unwrap_err();
        assert!(refusal.starts_with("initiator.id contains U+200B, a format character"), "{refusal}");
        assert_eq!(Principal::System.check("changed_by"), Ok(()));
    }

    #[test]
    fn ids_are_bounded_and_free_of_white_space() {
        assert!(check_id("tenant id", "t-1.a/b").is_ok());
        assert!(check_id("tenant id", "").is_err());
        assert!(check_id("tenant id", "t 1").is_err());
        assert!(check_id("tenant id", "t\n").is_err());
        assert!(check_id("tenant id", &"x".repeat(ID_BYTES_MAX + 1)).is_err());
        assert!(
            Principal::actor(SYSTEM_PRINCIPAL_WORD).check("initiator").is_err(),
            "the system's word is no actor id"
        );
        assert!(Principal::actor("systems").check("initiator").is_ok());
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
