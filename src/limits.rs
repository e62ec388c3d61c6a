//! Every bound of the core in one place. Nothing the ledger keeps in memory or
//! accepts from a caller is unbounded; each limit has a name and a reason.

/// Largest encoded event (envelope and payload). Audit events are small;
/// large blobs belong elsewhere. Keeping events far below sled's blob
/// threshold keeps every byte of the log in sled's segment files.
pub const EVENT_BYTES_MAX: usize = 64 * 1024;

/// Most events in one append request (one atomic unit).
pub const APPEND_EVENTS_MAX: usize = 256;

/// Most events the writer packs into one group commit (one sled batch, one flush).
pub const GROUP_COMMIT_EVENTS_MAX: usize = 4096;

/// Most bytes the writer packs into one group commit.
pub const GROUP_COMMIT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Append requests waiting for the writer. A full queue makes callers wait
/// (backpressure) instead of growing memory.
pub const APPEND_QUEUE_DEPTH_MAX: usize = 4096;

/// Longest stream id, in bytes.
pub const STREAM_ID_BYTES_MAX: usize = 160;

/// Longest event type name, in bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 96;

/// Most events one read call returns.
pub const READ_PAGE_EVENTS_MAX: usize = 10_000;

/// Longest wait, at open, for sled to release the files of a store this
/// process has just closed (its background threads hold them a moment: as
/// long as their last writes take, which on a disk busy with other
/// writers' flushes took more than 5 s), and for the directory's own lock
/// of such a store (a child process being spawned holds a copy of it until
/// its `exec`). Another process holding the directory is refused at once,
/// not waited for, unless this process had it open before.
pub const STORE_LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Events at the tail whose chain is re-verified every time the log opens.
pub const OPEN_TAIL_CHECK_EVENTS: u64 = 1024;

/// Events a subscription reads from the store per refill.
pub const SUBSCRIPTION_REFILL_EVENTS: usize = 512;

/// Groups applied to sled but not yet flushed. The writer stages the next
/// group while the syncer flushes; past this many it waits.
pub const GROUPS_IN_FLIGHT_MAX: usize = 8;
