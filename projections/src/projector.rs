//! The projection mechanism: projections consume envelopes in log order and
//! keep their state in views (sled trees) together with their checkpoint.
//!
//! - On open, every projection catches up from its own checkpoint: a
//!   restart applies only what the views have not seen.
//! - [`Projector::follow`] applies new events as group commits are
//!   acknowledged.
//! - [`Projector::wait_for`] lets a read wait until every projection has
//!   applied a position, so reads see the writes acknowledged before them.
//! - [`Projector::rebuild`] recomputes every projection from position 1
//!   into fresh views and swaps them in once caught up; reads keep using
//!   the old views meanwhile.
//! - An event a projection cannot apply stops the projector with an error
//!   naming the position. Nothing is skipped.

use std::sync::{Arc, Mutex, RwLock};

use opledger::domain::authority::AuthorityState;
use opledger::domain::events::DomainEvent;
use opledger::log::views::{Pending, View, Views};
use opledger::{Envelope, Log};
use tokio::sync::watch;

use crate::error::ProjectionError;

/// Events applied per view commit. Larger batches coalesce more writes (a
/// run's record, an index block) into one sled write during a catch-up or
/// a rebuild; a live follow commits whatever arrived, usually far fewer.
pub const APPLY_BATCH_EVENTS_MAX: usize = 4096;

/// A fold of the log into a view.
pub trait Projection: Send + Sync {
    /// Stable name; the view's trees are named after it.
    fn name(&self) -> &'static str;

    /// The version of the view's key and value layout. Bump it with any
    /// change to what the projection writes: a view written under another
    /// version is rebuilt from the log when the projector opens, never read
    /// with the wrong layout.
    fn layout_version(&self) -> u32;

    /// Applies one event. `authority` is the authority state as of the
    /// event's position (the event itself already folded in).
    fn apply(
        &self,
        pending: &mut Pending<'_>,
        envelope: &Envelope,
        event: &DomainEvent,
        authority: &AuthorityState,
    ) -> Result<(), String>;
}

struct Slot {
    projection: Arc<dyn Projection>,
    view: View,
}

/// Where the projector stands: applied up to `position`, or stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Applied(u64),
    Stopped { position: u64, detail: String },
}

pub struct Projector {
    log: Arc<Log>,
    views: Views,
    slots: RwLock<Vec<Slot>>,
    /// The authority state as of the applied position, for access checks.
    authority: RwLock<AuthorityState>,
    /// Serializes applying (the follower, catch-up and the end of a rebuild).
    apply_lock: Mutex<()>,
    progress: watch::Sender<Progress>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector").field("progress", &*self.progress.borrow()).finish_non_exhaustive()
    }
}

impl Projector {
    /// Opens the current view of every projection and catches up.
    pub fn open(log: Arc<Log>, projections: Vec<Arc<dyn Projection>>) -> Result<Projector, ProjectionError> {
        let projector = Projector::open_without_catch_up(log, projections)?;
        projector.catch_up()?;
        Ok(projector)
    }

    /// Opens the views as they are, without applying what they have not
    /// seen: for a rebuild, which replaces every view anyway (and must work
    /// even when a view cannot catch up).
    pub fn open_without_catch_up(
        log: Arc<Log>,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Projector, ProjectionError> {
        let views = log.views()?;
        let mut slots = Vec::new();
        for projection in projections {
            let view = view_in_layout(&views, projection.as_ref())?;
            slots.push(Slot { projection, view });
        }
        let floor = authority_floor(&slots)?;
        let authority = authority_as_of(&log, floor)?;
        let projector = Projector {
            log,
            views,
            slots: RwLock::new(slots),
            authority: RwLock::new(authority),
            apply_lock: Mutex::new(()),
            progress: watch::channel(Progress::Applied(floor)).0,
        };
        Ok(projector)
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The current view of projection `name`.
    pub fn view(&self, name: &str) -> Result<View, ProjectionError> {
        let slots = self.slots.read().map_err(|_| ProjectionError::Poisoned)?;
        let slot = slots.iter().find(|slot| slot.projection.name() == name);
        slot.map(|slot| slot.view.clone()).ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }

    /// Runs `read` on the authority state as of the applied position.
    pub fn with_authority<T>(&self, read: impl FnOnce(&AuthorityState) -> T) -> Result<T, ProjectionError> {
        let authority = self.authority.read().map_err(|_| ProjectionError::Poisoned)?;
        Ok(read(&authority))
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Applies every acknowledged event the projections have not seen.
    /// Returns the position applied.
    pub fn catch_up(&self) -> Result<u64, ProjectionError> {
        let _guard = self.apply_lock.lock().map_err(|_| ProjectionError::Poisoned)?;
        if let Progress::Stopped { position, detail } = self.progress() {
            return Err(ProjectionError::Stopped { position, detail });
        }
        let result = self.apply_until(self.log.head().position);
        if let Err(ProjectionError::Stopped { position, detail }) = &result {
            tracing::error!(position, %detail, "a projection cannot apply an event; projections stopped");
            self.progress.send_replace(Progress::Stopped { position: *position, detail: detail.clone() });
        }
        result
    }

    fn apply_until(&self, head: u64) -> Result<u64, ProjectionError> {
        let slots = self.slots.read().map_err(|_| ProjectionError::Poisoned)?;
        let mut authority = self.authority.write().map_err(|_| ProjectionError::Poisoned)?;
        let mut applied = authority_floor(&slots)?;
        while applied < head {
            let page = self.log.read(applied + 1, APPLY_BATCH_EVENTS_MAX)?;
            let Some(last) = page.last().map(|e| e.position) else { break };
            apply_page(&slots, &mut authority, &page)?;
            applied = last;
            self.progress.send_replace(Progress::Applied(applied));
        }
        Ok(applied)
    }

    /// Waits until every projection has applied `position`.
    pub async fn wait_for(&self, position: u64) -> Result<(), ProjectionError> {
        let mut progress = self.progress.subscribe();
        let reached = progress
            .wait_for(|p| {
                matches!(p, Progress::Applied(at) if *at >= position) || matches!(p, Progress::Stopped { .. })
            })
            .await
            .map_err(|_| ProjectionError::Poisoned)?
            .clone();
        match reached {
            Progress::Applied(_) => Ok(()),
            Progress::Stopped { position, detail } => Err(ProjectionError::Stopped { position, detail }),
        }
    }

    /// Follows the log until it closes, applying each acknowledged commit.
    /// Runs the blocking work on the blocking pool.
    pub async fn follow(self: Arc<Self>) -> Result<(), ProjectionError> {
        let mut head = self.log.head_watch();
        loop {
            let projector = Arc::clone(&self);
            tokio::task::spawn_blocking(move || projector.catch_up())
                .await
                .map_err(|_| ProjectionError::Poisoned)??;
            if head.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Recomputes every projection from position 1 into fresh views, then
    /// swaps them in. Reads use the old views until the swap.
    pub fn rebuild(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, ProjectionError> {
        let mut fresh = Vec::new();
        for name in self.names()? {
            let projection = self.projection(name)?;
            let view = self.views.fresh(name)?;
            view.set_layout(projection.layout_version())?;
            fresh.push(Slot { projection, view });
        }
        let mut authority = AuthorityState::default();
        let mut applied = 0;
        loop {
            let head = self.log.head().position;
            while applied < head {
                let page = self.log.read(applied + 1, APPLY_BATCH_EVENTS_MAX)?;
                let Some(last) = page.last().map(|e| e.position) else { break };
                apply_page(&fresh, &mut authority, &page)?;
                applied = last;
                progress(applied, head);
            }
            let _guard = self.apply_lock.lock().map_err(|_| ProjectionError::Poisoned)?;
            if applied < self.log.head().position {
                continue;
            }
            self.swap_in(fresh, authority)?;
            return Ok(applied);
        }
    }

    fn swap_in(&self, fresh: Vec<Slot>, authority: AuthorityState) -> Result<(), ProjectionError> {
        let mut slots = self.slots.write().map_err(|_| ProjectionError::Poisoned)?;
        for slot in &fresh {
            self.views.promote(slot.projection.name(), &slot.view)?;
        }
        *slots = fresh;
        *self.authority.write().map_err(|_| ProjectionError::Poisoned)? = authority;
        Ok(())
    }

    fn names(&self) -> Result<Vec<&'static str>, ProjectionError> {
        let slots = self.slots.read().map_err(|_| ProjectionError::Poisoned)?;
        Ok(slots.iter().map(|slot| slot.projection.name()).collect())
    }

    fn projection(&self, name: &str) -> Result<Arc<dyn Projection>, ProjectionError> {
        let slots = self.slots.read().map_err(|_| ProjectionError::Poisoned)?;
        let slot = slots.iter().find(|slot| slot.projection.name() == name);
        slot.map(|slot| Arc::clone(&slot.projection)).ok_or_else(|| ProjectionError::UnknownProjection(name.to_owned()))
    }
}

/// The current view of `projection` if it was written in the projection's
/// layout; otherwise a fresh, empty one (promoted at once), which the
/// catch-up then fills from position 1. Bytes of another layout are never
/// read: a reader would misinterpret them.
fn view_in_layout(views: &Views, projection: &dyn Projection) -> Result<View, ProjectionError> {
    let name = projection.name();
    let wanted = projection.layout_version();
    let view = views.current(name)?;
    let found = view.layout()?;
    if found == Some(wanted) {
        return Ok(view);
    }
    if found.is_none() && view.checkpoint()? == 0 && view.is_empty() {
        view.set_layout(wanted)?;
        return Ok(view);
    }
    tracing::warn!(
        projection = name,
        ?found,
        wanted,
        "the view was written in another layout; rebuilding it from the log"
    );
    let fresh = views.fresh(name)?;
    fresh.set_layout(wanted)?;
    views.promote(name, &fresh)?;
    Ok(fresh)
}

/// The lowest checkpoint: where the shared authority state stands.
fn authority_floor(slots: &[Slot]) -> Result<u64, ProjectionError> {
    let checkpoints: Vec<u64> = slots.iter().map(|slot| slot.view.checkpoint()).collect::<Result<_, _>>()?;
    Ok(checkpoints.into_iter().min().unwrap_or(0))
}

/// Applies one page to every projection that has not seen it, one view
/// commit per projection (state and checkpoint together).
fn apply_page(slots: &[Slot], authority: &mut AuthorityState, page: &[Envelope]) -> Result<(), ProjectionError> {
    let checkpoints: Vec<u64> = slots.iter().map(|slot| slot.view.checkpoint()).collect::<Result<_, _>>()?;
    let mut pendings: Vec<Pending<'_>> = slots.iter().map(|slot| slot.view.pending()).collect();
    for envelope in page {
        let stopped = |detail: String| ProjectionError::Stopped { position: envelope.position, detail };
        let event = DomainEvent::from_envelope(envelope).map_err(stopped)?;
        if let DomainEvent::Authority(changed) = &event {
            if envelope.position > authority.position {
                authority.apply(envelope.position, &changed.change).map_err(stopped)?;
            }
        }
        for ((slot, pending), checkpoint) in slots.iter().zip(pendings.iter_mut()).zip(&checkpoints) {
            if envelope.position > *checkpoint {
                let name = slot.projection.name();
                slot.projection
                    .apply(pending, envelope, &event, authority)
                    .map_err(|detail| stopped(format!("projection {name}: {detail}")))?;
            }
        }
    }
    let Some(last) = page.last().map(|e| e.position) else { return Ok(()) };
    for ((slot, pending), checkpoint) in slots.iter().zip(pendings).zip(checkpoints) {
        if last > checkpoint {
            slot.view.commit(pending, last)?;
        }
    }
    Ok(())
}

/// The authority state folded from the authority stream up to `position`.
pub(crate) fn authority_as_of(log: &Log, position: u64) -> Result<AuthorityState, ProjectionError> {
    let mut state = AuthorityState::default();
    let stream = opledger::domain::events::authority_stream();
    let mut version = 1;
    loop {
        let page = log.read_stream(&stream, version, APPLY_BATCH_EVENTS_MAX)?;
        for envelope in &page {
            if envelope.position > position {
                return Ok(state);
            }
            let stopped = |detail: String| ProjectionError::Stopped { position: envelope.position, detail };
            let DomainEvent::Authority(changed) = DomainEvent::from_envelope(envelope).map_err(stopped)? else {
                return Err(stopped("a non-authority event in the authority stream".into()));
            };
            state.apply(envelope.position, &changed.change).map_err(stopped)?;
        }
        if page.len() < APPLY_BATCH_EVENTS_MAX {
            return Ok(state);
        }
        version += page.len() as u64;
    }
}

#[cfg(test)]
#[path = "projector_tests.rs"]
mod tests;
