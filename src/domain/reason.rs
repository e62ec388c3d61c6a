//! Reason codes and the operator next-step registry (SPEC 8).
//!
//! This module is the one registry of operator words for refusals: every
//! surface (the JSON API, the HTML pages, the audit summaries, the initiator
//! notifications) takes the message and the next step of a reason code from
//! here, so the same refusal reads the same everywhere. The names of the
//! legitimacy checks those codes come from are shown in its words too
//! ([`Check::operator_word`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::legitimacy::Check;

/// Why the legitimacy gate (or the start gate, which runs the same checks) refused.
///
/// Declared in check order (SPEC 4): the derived `Ord` follows the order in
/// which the checks run, and [`ReasonCode::ALL`] lists the codes in that order.
/// The wire form (serde) is the snake_case name, identical to [`ReasonCode::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(
    description = "Why the legitimacy gate (or the start gate, which runs the same checks) refused; pinned words."
)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Check 1: no actor initiated the run and the type is not on the system-authority allowlist.
    SystemAuthorityNotAllowed,
    /// Check 2: the initiating actor is no longer a member of the workspace.
    ActorNotInWorkspace,
    /// Check 2: the initiating actor is no longer a member of the tenant.
    ActorNotInTenant,
    /// Check 3: the initiating actor no longer holds the required capability on the tenant.
    CapabilityMissing,
    /// Check 4: the tenant is archived.
    TenantArchived,
    /// Check 4: the tenant is discarded.
    TenantDiscarded,
    /// Check 4: the tenant is not operable for another reason (e.g. still onboarding).
    TenantNotOperable,
    /// Check 5: the pinned provider connection does not exist (or not for this tenant).
    ProviderConnectionMissing,
    /// Check 5: the provider connection needs consent.
    ProviderConsentRequired,
    /// Check 5: the provider connection's credentials are invalid.
    ProviderCredentialsInvalid,
    /// Check 5: the provider connection is disabled.
    ProviderConnectionDisabled,
    /// Check 5: the provider could not be reached. The only retryable denial.
    ProviderConnectionUnreachable,
    /// Check 5: a writing operation type met a closed write gate.
    WriteGateClosed,
}

/// The class of a denial: which of the checks of SPEC 4 refused.
///
/// Declared in check order; the wire form is the snake_case name, identical to
/// [`DenialClass::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "The class of a denial: which of the checks refused.")]
#[serde(rename_all = "snake_case")]
pub enum DenialClass {
    /// Check 1: authority mode.
    Authority,
    /// Check 2: membership of the workspace and the tenant.
    Scope,
    /// Check 3: the required capability.
    Capability,
    /// Check 4: the tenant lifecycle.
    Operability,
    /// Check 5: provider connection and write gate.
    Prerequisite,
}

impl ReasonCode {
    /// Every reason code, in declaration (check) order.
    pub const ALL: [ReasonCode; 13] = [
        ReasonCode::SystemAuthorityNotAllowed,
        ReasonCode::ActorNotInWorkspace,
        ReasonCode::ActorNotInTenant,
        ReasonCode::CapabilityMissing,
        ReasonCode::TenantArchived,
        ReasonCode::TenantDiscarded,
        ReasonCode::TenantNotOperable,
        ReasonCode::ProviderConnectionMissing,
        ReasonCode::ProviderConsentRequired,
        ReasonCode::ProviderCredentialsInvalid,
        ReasonCode::ProviderConnectionDisabled,
        ReasonCode::ProviderConnectionUnreachable,
        ReasonCode::WriteGateClosed,
    ];

    /// The snake_case name, the same string serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::SystemAuthorityNotAllowed => "system_authority_not_allowed",
            ReasonCode::ActorNotInWorkspace => "actor_not_in_workspace",
            ReasonCode::ActorNotInTenant => "actor_not_in_tenant",
            ReasonCode::CapabilityMissing => "capability_missing",
            ReasonCode::TenantArchived => "tenant_archived",
            ReasonCode::TenantDiscarded => "tenant_discarded",
            ReasonCode::TenantNotOperable => "tenant_not_operable",
            ReasonCode::ProviderConnectionMissing => "provider_connection_missing",
            ReasonCode::ProviderConsentRequired => "provider_consent_required",
            ReasonCode::ProviderCredentialsInvalid => "provider_credentials_invalid",
            ReasonCode::ProviderConnectionDisabled => "provider_connection_disabled",
            ReasonCode::ProviderConnectionUnreachable => "provider_connection_unreachable",
            ReasonCode::WriteGateClosed => "write_gate_closed",
        }
    }

    /// The code whose snake_case name is exactly `text` (case-sensitive, no
    /// trimming: the wire form is exact).
    pub fn parse(text: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// The denial class of the check that produces this code (SPEC 4 table).
    pub fn denial_class(self) -> DenialClass {
        match self {
            ReasonCode::SystemAuthorityNotAllowed => DenialClass::Authority,
            ReasonCode::ActorNotInWorkspace | ReasonCode::ActorNotInTenant => DenialClass::Scope,
            ReasonCode::CapabilityMissing => DenialClass::Capability,
            ReasonCode::TenantArchived | ReasonCode::TenantDiscarded | ReasonCode::TenantNotOperable => {
                DenialClass::Operability
            }
            ReasonCode::ProviderConnectionMissing
            | ReasonCode::ProviderConsentRequired
            | ReasonCode::ProviderCredentialsInvalid
            | ReasonCode::ProviderConnectionDisabled
            | ReasonCode::ProviderConnectionUnreachable
            | ReasonCode::WriteGateClosed => DenialClass::Prerequisite,
        }
    }

    /// Whether a denial with this code may be retried by a later attempt.
    /// A fixed mapping (SPEC 4): only an unreachable provider is transient;
    /// every other denial is terminal until the authority state changes.
    pub fn retryable(self) -> bool {
        matches!(self, ReasonCode::ProviderConnectionUnreachable)
    }

    /// What happened, in operator language: one sentence, no codes.
    pub fn operator_message(self) -> &'static str {
        match self {
            ReasonCode::SystemAuthorityNotAllowed => {
                "This operation cannot run on a schedule: a person has to start it."
            }
            ReasonCode::ActorNotInWorkspace => {
                "The person who started this operation is no longer a member of the workspace."
            }
            ReasonCode::ActorNotInTenant => {
                "The person who started this operation no longer has access to this tenant."
            }
            ReasonCode::CapabilityMissing => {
                "The person who started this operation no longer holds the capability it needs."
            }
            ReasonCode::TenantArchived => "The tenant is archived, so operations cannot run on it.",
            ReasonCode::TenantDiscarded => "The tenant has been discarded, so operations can no longer run on it.",
            ReasonCode::TenantNotOperable => "The tenant is not active yet, so operations cannot run on it.",
            ReasonCode::ProviderConnectionMissing => "The tenant has no usable provider connection for this operation.",
            ReasonCode::ProviderConsentRequired => "The provider connection is waiting for admin consent.",
            ReasonCode::ProviderCredentialsInvalid => {
                "The provider rejected the credentials of the provider connection."
            }
            ReasonCode::ProviderConnectionDisabled => "The provider connection is disabled.",
            ReasonCode::ProviderConnectionUnreachable => "The provider could not be reached.",
            ReasonCode::WriteGateClosed => "Changes to this tenant are paused: its write gate is closed.",
        }
    }

    /// What the operator can do about it: one short imperative step.
    pub fn next_step(self) -> &'static str {
        match self {
            ReasonCode::SystemAuthorityNotAllowed => {
                "Start the operation yourself, or ask an administrator to allow it for scheduled runs"
            }
            ReasonCode::ActorNotInWorkspace => {
                "Ask a workspace owner to restore the membership, or have a current member start the operation again"
            }
            ReasonCode::ActorNotInTenant => {
                "Ask a tenant owner to restore access to the tenant, then start the operation again"
            }
            ReasonCode::CapabilityMissing => {
                "Ask a tenant owner to grant the capability, then start the operation again"
            }
            ReasonCode::TenantArchived => "Restore the tenant, then start the operation again",
            ReasonCode::TenantDiscarded => "Run the operation on an active tenant instead",
            ReasonCode::TenantNotOperable => "Finish onboarding the tenant, then start the operation again",
            ReasonCode::ProviderConnectionMissing => {
                "Connect a provider for this tenant or choose its default connection, then start the operation again"
            }
            ReasonCode::ProviderConsentRequired => {
                "Grant admin consent for the provider connection, then start the operation again"
            }
            ReasonCode::ProviderCredentialsInvalid => {
                "Update the credentials of the provider connection, then start the operation again"
            }
            ReasonCode::ProviderConnectionDisabled => "Enable the provider connection, then start the operation again",
            ReasonCode::ProviderConnectionUnreachable => {
                "Check the provider's status; the operation is retried automatically while attempts remain"
            }
            ReasonCode::WriteGateClosed => "Ask a tenant owner to open the write gate, then start the operation again",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DenialClass {
    /// Every denial class, in check order.
    pub const ALL: [DenialClass; 5] = [
        DenialClass::Authority,
        DenialClass::Scope,
        DenialClass::Capability,
        DenialClass::Operability,
        DenialClass::Prerequisite,
    ];

    /// The snake_case name, the same string serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialClass::Authority => "authority",
            DenialClass::Scope => "scope",
            DenialClass::Capability => "capability",
            DenialClass::Operability => "operability",
            DenialClass::Prerequisite => "prerequisite",
        }
    }

    /// The class whose snake_case name is exactly `text`.
    pub fn parse(text: &str) -> Option<DenialClass> {
        DenialClass::ALL.into_iter().find(|class| class.as_str() == text)
    }
}

impl fmt::Display for DenialClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answers of the start gate (SPEC 3) that are neither an acceptance nor a
/// denial: nothing new is queued, and the operator is pointed at another run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartNotice {
    /// A non-terminal run with the same identity exists; the answer is that run.
    Deduped,
    /// Another non-terminal provider-backed run holds the protected scope; the answer is that run.
    ScopeBusy,
}

impl StartNotice {
    /// Every notice, in declaration order.
    pub const ALL: [StartNotice; 2] = [StartNotice::Deduped, StartNotice::ScopeBusy];

    /// The snake_case name, the same string serde writes.
    pub fn as_str(self) -> &'static str {
        match self {
            StartNotice::Deduped => "deduped",
            StartNotice::ScopeBusy => "scope_busy",
        }
    }

    /// The notice whose snake_case name is exactly `text`.
    pub fn parse(text: &str) -> Option<StartNotice> {
        StartNotice::ALL.into_iter().find(|notice| notice.as_str() == text)
    }

    /// What happened, in operator language.
    pub fn operator_message(self) -> &'static str {
        match self {
            StartNotice::Deduped => "An identical operation is already queued or running.",
            StartNotice::ScopeBusy => "Another operation is already running on this provider connection.",
        }
    }

    /// What the operator can do about it.
    pub fn next_step(self) -> &'static str {
        match self {
            StartNotice::Deduped => "View run",
            StartNotice::ScopeBusy => "Wait for it to finish, then start again",
        }
    }
}

impl Check {
    /// The check's name as people read it (SPEC 4 table), never the Rust
    /// or wire name: "write gate", not `WriteGate` or `write_gate`.
    pub fn operator_word(self) -> &'static str {
        match self {
            Check::AuthorityMode => "authority mode",
            Check::WorkspaceMembership => "workspace membership",
            Check::TenantMembership => "tenant membership",
            Check::Capability => "capability",
            Check::TenantOperability => "tenant operability",
            Check::ProviderConnection => "provider connection",
            Check::WriteGate => "write gate",
        }
    }
}

impl fmt::Display for StartNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn all_is_complete_and_in_declaration_order() {
        // Declaration order is the derived Ord; ALL must be strictly increasing in it.
        for pair in ReasonCode::ALL.windows(2) {
            assert!(pair[0] < pair[1], "{:?} must come before {:?}", pair[0], pair[1]);
        }
        // Complete: every variant's discriminant appears, 0..13 in order.
        for (index, code) in ReasonCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, index, "{code:?}");
        }
        // A match without a wildcard: adding a variant breaks this test until ALL is updated.
        let count = ReasonCode::ALL
            .iter()
            .filter(|code| match code {
                ReasonCode::SystemAuthorityNotAllowed
                | ReasonCode::ActorNotInWorkspace
                | ReasonCode::ActorNotInTenant
                | ReasonCode::CapabilityMissing
                | ReasonCode::TenantArchived
                | ReasonCode::TenantDiscarded
                | ReasonCode::TenantNotOperable
                | ReasonCode::ProviderConnectionMissing
                | ReasonCode::ProviderConsentRequired
                | ReasonCode::ProviderCredentialsInvalid
                | ReasonCode::ProviderConnectionDisabled
                | ReasonCode::ProviderConnectionUnreachable
                | ReasonCode::WriteGateClosed => true,
            })
            .count();
        assert_eq!(count, 13);
    }

    #[test]
    fn every_code_round_trips_through_serde_and_parse() {
        for code in ReasonCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ReasonCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
            assert_eq!(ReasonCode::parse(code.as_str()), Some(code));
            assert_eq!(code.to_string(), code.as_str());
        }
    }

    #[test]
    fn parse_rejects_anything_but_the_exact_name() {
        for text in ["", "CapabilityMissing", "CAPABILITY_MISSING", " capability_missing", "capability-missing", "x"] {
            assert_eq!(ReasonCode::parse(text), None, "{text:?}");
        }
        assert!(serde_json::from_str::<ReasonCode>("\"CapabilityMissing\"").is_err());
    }

    #[test]
    fn wire_names_match_the_spec() {
        let expected = [
            "system_authority_not_allowed",
            "actor_not_in_workspace",
            "actor_not_in_tenant",
            "capability_missing",
            "tenant_archived",
            "tenant_discarded",
            "tenant_not_operable",
            "provider_connection_missing",
            "provider_consent_required",
            "provider_credentials_invalid",
            "provider_connection_disabled",
            "provider_connection_unreachable",
            "write_gate_closed",
        ];
        let names: Vec<&str> = ReasonCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn denial_classes_follow_the_spec_table() {
        use DenialClass::*;
        use ReasonCode::*;
        let table = [
            (SystemAuthorityNotAllowed, Authority),
            (ActorNotInWorkspace, Scope),
            (ActorNotInTenant, Scope),
            (CapabilityMissing, Capability),
            (TenantArchived, Operability),
            (TenantDiscarded, Operability),
            (TenantNotOperable, Operability),
            (ProviderConnectionMissing, Prerequisite),
            (ProviderConsentRequired, Prerequisite),
            (ProviderCredentialsInvalid, Prerequisite),
            (ProviderConnectionDisabled, Prerequisite),
            (ProviderConnectionUnreachable, Prerequisite),
            (WriteGateClosed, Prerequisite),
        ];
        assert_eq!(table.len(), ReasonCode::ALL.len());
        for (code, class) in table {
            assert_eq!(code.denial_class(), class, "{code:?}");
        }
        // Check order is preserved: classes never go backwards along ALL.
        for pair in ReasonCode::ALL.windows(2) {
            assert!(pair[0].denial_class() <= pair[1].denial_class());
        }
    }

    #[test]
    fn denial_classes_round_trip() {
        let names: Vec<&str> = DenialClass::ALL.iter().map(|class| class.as_str()).collect();
        assert_eq!(names, ["authority", "scope", "capability", "operability", "prerequisite"]);
        for class in DenialClass::ALL {
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            assert_eq!(serde_json::from_str::<DenialClass>(&json).unwrap(), class);
            assert_eq!(DenialClass::parse(class.as_str()), Some(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert_eq!(DenialClass::parse("Scope"), None);
    }

    #[test]
    fn only_an_unreachable_provider_is_retryable() {
        let retryable: Vec<ReasonCode> = ReasonCode::ALL.into_iter().filter(|code| code.retryable()).collect();
        assert_eq!(retryable, [ReasonCode::ProviderConnectionUnreachable]);
    }

    #[test]
    fn messages_and_next_steps_are_present_distinct_and_plain() {
        let mut texts = HashSet::new();
        let mut all: Vec<&str> = Vec::new();
        for code in ReasonCode::ALL {
            all.push(code.operator_message());
            all.push(code.next_step());
        }
        for notice in StartNotice::ALL {
            all.push(notice.operator_message());
            all.push(notice.next_step());
        }
        for text in &all {
            assert!(!text.trim().is_empty());
            assert_eq!(text.trim(), *text, "no surrounding whitespace: {text:?}");
            assert!(text.len() <= 120, "short: {text:?}");
            assert!(!text.contains('_'), "operator language, not codes: {text:?}");
            assert!(texts.insert(*text), "duplicate operator text: {text:?}");
        }
        for code in ReasonCode::ALL {
            assert!(code.operator_message().ends_with('.'), "{code:?}");
            assert!(!code.next_step().ends_with('.'), "{code:?}");
        }
    }

    #[test]
    fn checks_have_distinct_operator_words_and_keep_their_wire_names() {
        let mut words = HashSet::new();
        for check in Check::ALL {
            let word = check.operator_word();
            assert!(words.insert(word), "duplicate word {word:?}");
            assert!(word.chars().all(|c| c.is_ascii_lowercase() || c == ' '), "operator words: {word:?}");
            assert_eq!(word.replace(' ', "_"), check.as_str(), "the same name, in words");
            assert_eq!(serde_json::to_string(&check).unwrap(), format!("\"{}\"", check.as_str()), "pinned");
        }
        assert_eq!(Check::WriteGate.operator_word(), "write gate");
        assert_eq!(Check::AuthorityMode.operator_word(), "authority mode");
    }

    #[test]
    fn the_spec_example_is_kept_verbatim() {
        assert_eq!(
            ReasonCode::CapabilityMissing.next_step(),
            "Ask a tenant owner to grant the capability, then start the operation again"
        );
        assert_eq!(
            ReasonCode::CapabilityMissing.operator_message(),
            "The person who started this operation no longer holds the capability it needs."
        );
    }

    #[test]
    fn start_notices_round_trip_and_read_as_specified() {
        for notice in StartNotice::ALL {
            let json = serde_json::to_string(&notice).unwrap();
            assert_eq!(json, format!("\"{}\"", notice.as_str()));
            assert_eq!(serde_json::from_str::<StartNotice>(&json).unwrap(), notice);
            assert_eq!(StartNotice::parse(notice.as_str()), Some(notice));
        }
        assert_eq!(StartNotice::Deduped.as_str(), "deduped");
        assert_eq!(StartNotice::ScopeBusy.as_str(), "scope_busy");
        assert_eq!(StartNotice::Deduped.operator_message(), "An identical operation is already queued or running.");
        assert_eq!(StartNotice::Deduped.next_step(), "View run");
        assert_eq!(
            StartNotice::ScopeBusy.operator_message(),
            "Another operation is already running on this provider connection."
        );
        assert_eq!(StartNotice::ScopeBusy.next_step(), "Wait for it to finish, then start again");
    }
}
