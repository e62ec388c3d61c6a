//! Health: `/livez` (the process runs and answers) and `/readyz` (the
//! ledger takes writes and the projections are close to the head and can
//! read the log);
//! `/healthz` is `/readyz`.
//!
//! Readiness is a pure function of what the server observes, so every
//! reason to be unready is tested without breaking a disk.

use std::sync::Mutex;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use opledger_projections::projector::Progress;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::state::AppState;

/// Most events the projections may be behind the head for the server to
/// be ready: further behind, reads would wait (and may time out).
pub const READY_PROJECTION_LAG_EVENTS_MAX: u64 = 10_000;

/// Why the server is not ready. `code` is the `reason` of the 503 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The store is closed and being reopened after a storage error.
    Reopening(String),
    /// The ledger refuses writes after a failed append (a reopen follows).
    LedgerStopped(String),
    /// A projection met an event it cannot apply.
    ProjectionsStopped { position: u64, detail: String },
    /// The projections cannot read the shared log (the database restarting
    /// or failing over) and retry; reads answer what they applied.
    LogUnreachable { applied: u64, head: u64, why: String },
    /// The log's database refused this node's latest append while up
    /// (read-only, a full disk), lately: it answers reads, but no write
    /// commits until the cause is gone.
    LogRefusesWrites(String),
    /// The projections are more than [`READY_PROJECTION_LAG_EVENTS_MAX`] behind.
    ProjectionsBehind { head: u64, applied: u64 },
}

impl NotReady {
    pub fn code(&self) -> &'static str {
        match self {
            NotReady::Reopening(_) => "store_reopening",
            NotReady::LedgerStopped(_) => "ledger_stopped",
            NotReady::ProjectionsStopped { .. } => "projections_stopped",
            NotReady::ProjectionsBehind { .. } => "projections_behind",
            NotReady::LogUnreachable { .. } => "log_unreachable",
            NotReady::LogRefusesWrites(_) => "log_refuses_writes",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            NotReady::Reopening(why) => format!("the store is being reopened after: {why}"),
            NotReady::LedgerStopped(why) => why.clone(),
            NotReady::ProjectionsStopped { position, detail } => {
                format!("projections stopped at position {position}: {detail}")
            }
            NotReady::ProjectionsBehind { head, applied } => format!(
                "projections applied position {applied}, {} behind the head {head} (at most \
                 {READY_PROJECTION_LAG_EVENTS_MAX})",
                head - applied
            ),
            NotReady::LogUnreachable { applied, head, why } => format!(
                "writes fail until the log can be read again, and reads answer what was applied (applied \
                 position {applied}, head {head}): {why}"
            ),
            NotReady::LogRefusesWrites(why) => format!(
                "the log's database refused this node's latest append (nothing of it was appended; writes \
                 fail until the cause is gone, reads are served): {why}"
            ),
        }
    }
}

/// What readiness is decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Set while the supervisor reopens the store (no core meanwhile).
    pub reopening: Option<String>,
    /// `None` when there is no open core.
    pub core: Option<CoreObserved>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreObserved {
    pub ledger_stopped: Option<String>,
    pub head: u64,
    pub projections: Progress,
    /// Why the projections cannot read the log, while they retry.
    pub log_unreachable: Option<String>,
    /// Why the log's database refuses this node's writes, lately.
    pub writes_refused: Option<String>,
}

/// Ready, or the first reason not to be, in the order an operator fixes them.
pub fn readiness(observed: &Observed) -> Result<(), NotReady> {
    if let Some(why) = &observed.reopening {
        return Err(NotReady::Reopening(why.clone()));
    }
    let Some(core) = &observed.core else {
        return Err(NotReady::Reopening("the store is closed".to_owned()));
    };
    if let Some(why) = &core.ledger_stopped {
        return Err(NotReady::LedgerStopped(why.clone()));
    }
    if let (Progress::Applied(applied), Some(why)) = (&core.projections, &core.log_unreachable) {
        return Err(NotReady::LogUnreachable { applied: *applied, head: core.head, why: why.clone() });
    }
    if let Some(why) = &core.writes_refused {
        return Err(NotReady::LogRefusesWrites(why.clone()));
    }
    match &core.projections {
        Progress::Stopped { position, detail } => {
            Err(NotReady::ProjectionsStopped { position: *position, detail: detail.clone() })
        }
        Progress::Applied(applied) if core.head.saturating_sub(*applied) > READY_PROJECTION_LAG_EVENTS_MAX => {
            Err(NotReady::ProjectionsBehind { head: core.head, applied: *applied })
        }
        Progress::Applied(_) => Ok(()),
    }
}

/// The reason the server is reopening its store, while it is. Set and
/// cleared by the supervisor; read by `/readyz`.
#[derive(Debug, Default)]
pub struct Reopening(Mutex<Option<String>>);

impl Reopening {
    pub fn begin(&self, why: &str) {
        self.set(Some(why.to_owned()));
    }

    pub fn end(&self) {
        self.set(None);
    }

    pub fn reason(&self) -> Option<String> {
        match self.0.lock() {
            Ok(reason) => reason.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, reason: Option<String>) {
        match self.0.lock() {
            Ok(mut current) => *current = reason,
            Err(poisoned) => *poisoned.into_inner() = reason,
        }
    }
}

/// What the server observes now.
pub fn observe(state: &AppState) -> Observed {
    let core = state.core().ok().map(|core| CoreObserved {
        ledger_stopped: core.ledger.stopped(),
        head: core.ledger.log().head().position,
        projections: core.projector.progress(),
        // The projections find out when they read; the log's follower
        // within a second, even when nothing is appended.
        log_unreachable: core.projector.log_unreachable().or_else(|| core.ledger.log().unreachable()),
        // Only refused appends tell: the database answers reads meanwhile.
        writes_refused: core.ledger.log().writes_refused(),
    });
    Observed { reopening: state.reopening.reason(), core }
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: String,
}

/// `GET /livez`: 200 while the process answers at all.
#[utoipa::path(get, path = "/livez", tag = "health",
    responses((status = 200, description = "The process answers.", body = Live)))]
pub async fn livez() -> Json<Live> {
    Json(Live { status: "ok".to_owned() })
}

/// The 200 answer of `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ok`.
    pub status: String,
    /// The head digest, `POSITION:HASH`.
    #[schema(required = true)]
    pub head: Option<String>,
}

/// Why a server is not ready, as `reason` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotReadyReason {
    StoreReopening,
    LedgerStopped,
    ProjectionsStopped,
    ProjectionsBehind,
    LogUnreachable,
    LogRefusesWrites,
}

/// The 503 answer of `/readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Unready {
    /// `unavailable`.
    pub status: String,
    pub reason: NotReadyReason,
    /// For people.
    pub detail: String,
}

impl NotReady {
    fn reason(&self) -> NotReadyReason {
        match self {
            NotReady::Reopening(_) => NotReadyReason::StoreReopening,
            NotReady::LedgerStopped(_) => NotReadyReason::LedgerStopped,
            NotReady::ProjectionsStopped { .. } => NotReadyReason::ProjectionsStopped,
            NotReady::ProjectionsBehind { .. } => NotReadyReason::ProjectionsBehind,
            NotReady::LogUnreachable { .. } => NotReadyReason::LogUnreachable,
            NotReady::LogRefusesWrites(_) => NotReadyReason::LogRefusesWrites,
        }
    }
}

/// `GET /readyz` (and `/healthz`): 200 `{"status": "ok", "head": …}` when
/// ready, 503 `{"status": "unavailable", "reason": …, "detail": …}` otherwise.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "The ledger takes writes and the projections are at most 10,000 events behind.", body = Ready),
        (status = 503, description = "Not ready: take the server out of rotation.", body = Unready),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let observed = observe(&state);
    match readiness(&observed) {
        Ok(()) => {
            let head = state.core().map(|core| core.ledger.log().head().digest()).ok();
            Json(Ready { status: "ok".to_owned(), head }).into_response()
        }
        Err(not_ready) => {
            let body =
                Unready { status: "unavailable".to_owned(), reason: not_ready.reason(), detail: not_ready.detail() };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(stopped: Option<&str>, head: u64, projections: Progress) -> Option<CoreObserved> {
        Some(CoreObserved {
            ledger_stopped: stopped.map(str::to_owned),
            head,
            projections,
            log_unreachable: None,
            writes_refused: None,
        })
    }

    #[test]
    fn the_documented_reason_is_the_code() {
        let all = [
            NotReady::Reopening("x".into()),
            NotReady::LedgerStopped("x".into()),
            NotReady::ProjectionsStopped { position: 1, detail: "x".into() },
            NotReady::ProjectionsBehind { head: 2, applied: 1 },
            NotReady::LogUnreachable { applied: 1, head: 2, why: "x".into() },
            NotReady::LogRefusesWrites("x".into()),
        ];
        for not_ready in all {
            assert_eq!(serde_json::to_value(not_ready.reason()).ok(), Some(serde_json::json!(not_ready.code())));
        }
    }

    #[test]
    fn a_running_ledger_with_projections_at_the_head_is_ready() {
        let observed = Observed { reopening: None, core: core(None, 40, Progress::Applied(40)) };
        assert_eq!(readiness(&observed), Ok(()));
    }

    #[test]
    fn projections_behind_within_the_bound_are_ready_and_beyond_it_are_not() {
        let at_bound =
            Observed { reopening: None, core: core(None, READY_PROJECTION_LAG_EVENTS_MAX + 5, Progress::Applied(5)) };
        assert_eq!(readiness(&at_bound), Ok(()));
        let beyond =
            Observed { reopening: None, core: core(None, READY_PROJECTION_LAG_EVENTS_MAX + 6, Progress::Applied(5)) };
        let not_ready = readiness(&beyond).unwrap_err();
        assert_eq!(not_ready.code(), "projections_behind");
        assert!(not_ready.detail().contains("applied position 5"), "{}", not_ready.detail());
    }

    #[test]
    fn a_stopped_ledger_is_not_ready_and_says_why() {
        let observed = Observed { reopening: None, core: core(Some("disk full"), 7, Progress::Applied(7)) };
        let not_ready = readiness(&observed).unwrap_err();
        assert_eq!(not_ready, NotReady::LedgerStopped("disk full".into()));
        assert_eq!(not_ready.code(), "ledger_stopped");
    }

    #[test]
    fn projections_that_cannot_read_the_log_are_not_ready_and_say_how_far_they_got() {
        let mut observed = Observed { reopening: None, core: core(None, 12, Progress::Applied(9)) };
        if let Some(core) = observed.core.as_mut() {
            core.log_unreachable = Some("connection refused".into());
        }
        let not_ready = readiness(&observed).unwrap_err();
        assert_eq!(not_ready.code(), "log_unreachable");
        let detail = not_ready.detail();
        assert!(detail.contains("applied position 9, head 12") && detail.contains("connection refused"), "{detail}");
    }

    #[test]
    fn given_the_database_refused_the_latest_append_then_the_node_is_not_ready_and_says_why() {
        let mut observed = Observed { reopening: None, core: core(None, 12, Progress::Applied(12)) };
        let full = "PostgreSQL: could not extend file \"base/16384/16394\": No space left on device (53100)";
        if let Some(core) = observed.core.as_mut() {
            core.writes_refused = Some(full.into());
        }
        let not_ready = readiness(&observed).unwrap_err();
        assert_eq!(not_ready, NotReady::LogRefusesWrites(full.into()));
        assert_eq!(not_ready.code(), "log_refuses_writes");
        assert!(not_ready.detail().contains("No space left on device (53100)"), "{}", not_ready.detail());
    }

    #[test]
    fn given_the_database_unreachable_and_refusing_then_unreachable_is_said_first() {
        let mut observed = Observed { reopening: None, core: core(None, 12, Progress::Applied(12)) };
        if let Some(core) = observed.core.as_mut() {
            core.log_unreachable = Some("connection refused".into());
            core.writes_refused = Some("No space left on device (53100)".into());
        }
        assert_eq!(readiness(&observed).unwrap_err().code(), "log_unreachable");
    }

    #[test]
    fn stopped_projections_are_not_ready() {
        let stopped = Progress::Stopped { position: 9, detail: "bad event".into() };
        let observed = Observed { reopening: None, core: core(None, 9, stopped) };
        assert_eq!(readiness(&observed).unwrap_err().code(), "projections_stopped");
    }

    #[test]
    fn a_reopen_in_progress_or_a_missing_core_is_not_ready() {
        let reopening = Observed { reopening: Some("disk full".into()), core: None };
        assert_eq!(readiness(&reopening), Err(NotReady::Reopening("disk full".into())));
        let closed = Observed { reopening: None, core: None };
        assert_eq!(readiness(&closed).unwrap_err().code(), "store_reopening");
        let stopped_and_reopening =
            Observed { reopening: Some("x".into()), core: core(Some("y"), 1, Progress::Applied(1)) };
        assert_eq!(readiness(&stopped_and_reopening).unwrap_err().code(), "store_reopening");
    }
}
