//! One operator-readable line per run event, in the words of SPEC 8
//! (`queued`, `running`, `blocked`, `scope busy`, `partially succeeded` …).
//! Reason codes stay as codes: the operator message and next step of a code
//! come from the one registry (`reason.rs`) wherever they are shown.

use opledger::domain::legitimacy::Decision;
use opledger::domain::reason::ReasonCode;
use opledger::domain::run::{Failure, RequeueCause, RunEvent};
use opledger::domain::sanitize::SummaryCounts;

pub fn summary(event: &RunEvent) -> String {
    match event {
        RunEvent::RunQueued { .. } => "queued".to_owned(),
        RunEvent::RunStartBlocked { start_decision, .. } => match start_decision.reason_code {
            Some(code) => format!("blocked at start: {code}"),
            None => "blocked at start".to_owned(),
        },
        RunEvent::RunStartDeduped { requested_by, .. } => {
            format!("deduped: a start by {requested_by} was answered with this run")
        }
        RunEvent::RunStartRejectedScopeBusy { requested_by, operation_type, .. } => {
            format!("scope busy: a start of {operation_type} by {requested_by} waits for this run")
        }
        RunEvent::FollowUpsRetained { operation_types, .. } => {
            format!("follow-ups retained: {}", operation_types.join(", "))
        }
        RunEvent::FollowUpAdmitted { operation_type, result, .. } => {
            format!("follow-up {operation_type}: {}", result.replace('_', " "))
        }
        RunEvent::LegitimacyEvaluated { decision, .. } => decision_summary(decision),
        RunEvent::RunStarted { attempt } => format!("started attempt {attempt}"),
        RunEvent::RunProgressed { summary_counts, .. } => progress_summary(summary_counts),
        RunEvent::RunRequeued { next_attempt, cause, reason_code, failure, .. } => {
            requeued_summary(*next_attempt, *cause, *reason_code, failure.as_ref())
        }
        RunEvent::RunBlocked { reason_code, .. } => format!("blocked: {reason_code}"),
        RunEvent::RunCompleted { outcome, failure, .. } => {
            let word = outcome.outcome().operator_word();
            match failure.as_ref().and_then(|f| f.code.as_deref()) {
                Some(code) => format!("completed: {word} ({code})"),
                None => format!("completed: {word}"),
            }
        }
        RunEvent::LeaseRenewed { attempt } => format!("lease of attempt {attempt} renewed"),
        RunEvent::AttemptAbandoned { attempt, .. } => {
            format!("attempt {attempt} abandoned: worker lost, lease expired")
        }
        RunEvent::RunCancelled { cancelled_by, reason, .. } => match reason {
            Some(reason) => format!("cancelled by {cancelled_by}: {reason}"),
            None => format!("cancelled by {cancelled_by}"),
        },
    }
}

fn decision_summary(decision: &Decision) -> String {
    match (decision.allowed(), decision.reason_code) {
        (true, _) => "legitimacy evaluated: allowed".to_owned(),
        (false, Some(code)) if decision.retryable => format!("legitimacy evaluated: denied ({code}, retryable)"),
        (false, Some(code)) => format!("legitimacy evaluated: denied ({code})"),
        (false, None) => "legitimacy evaluated: denied".to_owned(),
    }
}

fn progress_summary(counts: &SummaryCounts) -> String {
    let reported: Vec<String> =
        SummaryCounts::KEYS.iter().filter_map(|key| counts.get(key).map(|n| format!("{key} {n}"))).collect();
    match reported.is_empty() {
        true => "progress reported".to_owned(),
        false => format!("progress: {}", reported.join(", ")),
    }
}

fn requeued_summary(
    next_attempt: u32,
    cause: RequeueCause,
    reason: Option<ReasonCode>,
    failure: Option<&Failure>,
) -> String {
    let why = match (cause, reason, failure.and_then(|f| f.code.as_deref())) {
        (RequeueCause::RetryableDenial, Some(code), _) => code.as_str().to_owned(),
        (RequeueCause::RetryableDenial, None, _) => "retryable denial".to_owned(),
        (RequeueCause::RetryableFailure, _, Some(code)) => format!("retryable failure ({code})"),
        (RequeueCause::RetryableFailure, _, None) => "retryable failure".to_owned(),
        (RequeueCause::LeaseExpired, _, _) => "worker lost (lease expired)".to_owned(),
    };
    format!("queued for attempt {next_attempt}: {why}")
}
