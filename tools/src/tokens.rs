//! API tokens: `opl_` + 64 hex digits from the OS random source, printed
//! once; only their SHA-256 is kept, never in the immutable log (a revoked
//! token must be deletable):
//! - beside a log kept in a directory, in `DIR/tokens.json`. The file is
//!   replaced atomically (write to a temporary file, fsync, rename) so the
//!   CLI can create or revoke tokens while a server runs; the server
//!   re-reads it when its [`FileVersion`] changes;
//! - with a log kept in PostgreSQL, in the database (the log's document
//!   `tokens`), so every node accepts the same tokens. A change is a
//!   compare-and-swap on the document's version; a node re-reads it at
//!   most [`SHARED_TOKENS_REFRESH`] after its last read, so a revoke on one
//!   node holds on every node within that time. While the database cannot
//!   be read (restarting, failing over, silent) a node authenticates from
//!   the copy it read last, up to [`SHARED_TOKENS_STALE_MAX`] old: requests
//!   keep being answered, and a revoke the node could not read yet holds
//!   at most that late. The reads run off the request path, one at a time
//!   (`shared.rs`): a request waits for one at most
//!   [`SHARED_TOKENS_READ_WAIT`] ([`SHARED_TOKENS_FIRST_READ_WAIT`] with no
//!   copy to fall back on).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use opledger::Log;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod shared;

use shared::SharedTokens;
pub use shared::{SHARED_TOKENS_FIRST_READ_WAIT, SHARED_TOKENS_READ_RETRY_INTERVAL, SHARED_TOKENS_READ_WAIT};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Grant {
    /// Workers and the host application: append and read everything.
    Service { name: String },
    /// One actor: read-only, under the access rule.
    Actor { actor_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: Uuid,
    #[serde(flatten)]
    pub grant: Grant,
    /// SHA-256 of the token, hex.
    pub hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What tells one version of the token file from the next. The
/// modification time alone does not: it ticks at the kernel's coarse
/// clock, so a revoke landing in the same tick as the previous write
/// would go unseen. Each write is a new file renamed into place (a new
/// inode on unix), and a revoke or a new record changes the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileVersion {
    fn of(path: &Path) -> Option<FileVersion> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileVersion { modified: metadata.modified().ok(), len: metadata.len(), inode })
    }
}

/// Longest a node serves tokens from its cache of the shared document.
pub const SHARED_TOKENS_REFRESH: Duration = Duration::from_secs(1);

/// Oldest copy of the shared document a node authenticates from when the
/// database cannot be read; past it, requests fail with the read's error.
pub const SHARED_TOKENS_STALE_MAX: Duration = Duration::from_secs(30);

/// Attempts at a compare-and-swap of the shared document before giving up
/// (each loss means another node changed the tokens meanwhile).
const SHARED_WRITE_ATTEMPTS_MAX: u32 = 16;

/// The name of the tokens' document in a shared log.
const TOKENS_DOCUMENT: &str = "tokens";

#[derive(Debug)]
pub struct TokenStore {
    place: TokenPlace,
}

#[derive(Debug)]
enum TokenPlace {
    File { path: PathBuf, cache: RwLock<(Option<FileVersion>, Vec<TokenRecord>)> },
    Shared(Arc<SharedTokens>),
}

fn hash(token: &str) -> String {
    opledger::Hash::of(token.as_bytes()).to_hex()
}

impl TokenStore {
    /// Tokens in `DIR/tokens.json`, beside a log kept in `DIR`.
    pub fn new(data_dir: &Path) -> TokenStore {
        let path = data_dir.join("tokens.json");
        TokenStore { place: TokenPlace::File { path, cache: RwLock::new((None, Vec::new())) } }
    }

    /// Tokens in the database of a shared log, for every node.
    pub fn in_log(log: Arc<Log>) -> TokenStore {
        TokenStore { place: TokenPlace::Shared(SharedTokens::new(log)) }
    }

    /// Where the tokens store was opened, for the log of a server: the
    /// shared log's database when the log is shared, else `DIR`.
    pub fn for_log(data_dir: &Path, log: &Arc<Log>) -> TokenStore {
        match log.shared() {
            true => TokenStore::in_log(Arc::clone(log)),
            false => TokenStore::new(data_dir),
        }
    }

    /// The records, and the version a change must start from.
    fn read(&self) -> anyhow::Result<(Vec<TokenRecord>, Option<u64>)> {
        match &self.place {
            TokenPlace::File { path, .. } => match std::fs::read(path) {
                Ok(bytes) => {
                    Ok((serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?, None))
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), None)),
                Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
            },
            TokenPlace::Shared(shared) => read_document(shared.log()),
        }
    }

    /// Writes the records; `false` when the shared document changed since
    /// `version` was read (a file is replaced whole: always `true`).
    fn write(&self, records: &[TokenRecord], version: Option<u64>) -> anyhow::Result<bool> {
        let written = match &self.place {
            TokenPlace::File { path, .. } => {
                write_file(path, records)?;
                true
            }
            TokenPlace::Shared(shared) => {
                shared.log().replace_document(TOKENS_DOCUMENT, &serde_json::to_vec_pretty(records)?, version)?
            }
        };
        // The next look-up re-reads, even when the file system's
        // modification time is too coarse to show this write.
        self.forget_cache();
        Ok(written)
    }

    fn forget_cache(&self) {
        match &self.place {
            TokenPlace::File { cache, .. } => {
                if let Ok(mut cache) = cache.write() {
                    cache.0 = None;
                }
            }
            TokenPlace::Shared(shared) => shared.changed(),
        }
    }

    /// Reads, changes and writes the records, again from a fresh read when
    /// another node changed them meanwhile.
    fn change<T>(&self, change: impl Fn(&mut Vec<TokenRecord>) -> anyhow::Result<T>) -> anyhow::Result<T> {
        for _ in 0..SHARED_WRITE_ATTEMPTS_MAX {
            let (mut records, version) = self.read()?;
            let answer = change(&mut records)?;
            if self.write(&records, version)? {
                return Ok(answer);
            }
        }
        bail!("the tokens changed on other nodes {SHARED_WRITE_ATTEMPTS_MAX} times while this change was tried; retry")
    }

    /// Mints a token; returns it (the only time it is seen) and its record.
    pub fn create(&self, grant: Grant) -> anyhow::Result<(String, TokenRecord)> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!("opl_{}", hex::encode(secret));
        let record =
            TokenRecord { id: Uuid::now_v7(), grant, hash: hash(&token), created_at: Utc::now(), revoked_at: None };
        self.change(|records| {
            records.push(record.clone());
            Ok(())
        })?;
        Ok((token, record))
    }

    pub fn list(&self) -> anyhow::Result<Vec<TokenRecord>> {
        Ok(self.read()?.0)
    }

    /// Revokes the token with `id`; an unknown id is an error.
    pub fn revoke(&self, id: Uuid) -> anyhow::Result<TokenRecord> {
        self.change(|records| {
            let Some(record) = records.iter_mut().find(|r| r.id == id) else { bail!("no token with id {id}") };
            if record.revoked_at.is_none() {
                record.revoked_at = Some(Utc::now());
            }
            Ok(record.clone())
        })
    }

    /// The grant of a live token, re-reading the file when it changed.
    pub fn authenticate(&self, token: &str) -> anyhow::Result<Option<Grant>> {
        Ok(self.authenticate_record(token)?.map(|record| record.grant))
    }

    /// The record of a live token (its id names it to a browser session).
    pub fn authenticate_record(&self, token: &str) -> anyhow::Result<Option<TokenRecord>> {
        let wanted = hash(token);
        self.find_live(|record| record.hash == wanted)
    }

    /// The grant of the token with `id` while it is live: `None` once it is
    /// revoked (by this process or by `opledger token revoke` beside it).
    pub fn live_grant(&self, id: Uuid) -> anyhow::Result<Option<Grant>> {
        Ok(self.find_live(|record| record.id == id)?.map(|record| record.grant))
    }

    /// The first unrevoked record matching `wanted`, re-reading the file
    /// when its version changed (the shared document when it is older than
    /// [`SHARED_TOKENS_REFRESH`]).
    fn find_live(&self, wanted: impl Fn(&TokenRecord) -> bool) -> anyhow::Result<Option<TokenRecord>> {
        let live = |records: &[TokenRecord]| records.iter().find(|r| r.revoked_at.is_none() && wanted(r)).cloned();
        match &self.place {
            TokenPlace::File { path, cache } => {
                let version = FileVersion::of(path);
                let fresh = cache.read().map(|cache| cache.0 == version && version.is_some()).unwrap_or(false);
                if !fresh {
                    let (records, _) = self.read()?;
                    if let Ok(mut cache) = cache.write() {
                        *cache = (version, records);
                    }
                }
                let cache = cache.read().map_err(|_| anyhow::anyhow!("token cache poisoned"))?;
                Ok(live(&cache.1))
            }
            TokenPlace::Shared(shared) => Ok(live(&shared.records()?)),
        }
    }
}

/// The shared document's records, and the version a change must start
/// from.
fn read_document(log: &Log) -> anyhow::Result<(Vec<TokenRecord>, Option<u64>)> {
    match log.document(TOKENS_DOCUMENT)? {
        Some((bytes, version)) => {
            Ok((serde_json::from_slice(&bytes).context("reading the tokens in the database")?, Some(version)))
        }
        None => Ok((Vec::new(), None)),
    }
}

fn write_file(path: &Path, records: &[TokenRecord]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(records)?;
    let file = std::fs::File::create(&temporary)?;
    std::io::Write::write_all(&mut &file, &bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (token, record) = store.create(Grant::Actor { actor_id: "u1".into() }).unwrap();
        assert!(token.starts_with("opl_") && token.len() == 68);
        assert_eq!(store.authenticate(&token).unwrap(), Some(Grant::Actor { actor_id: "u1".into() }));
        assert_eq!(store.authenticate("opl_wrong").unwrap(), None);
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&token), "the token itself is never stored");
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.revoke(record.id).unwrap();
        assert_eq!(store.authenticate(&token).unwrap(), None);
        assert!(store.revoke(Uuid::now_v7()).is_err());
    }

    #[test]
    fn a_live_token_names_its_id_and_a_revoke_by_this_store_is_seen_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (token, record) = store.create(Grant::Service { name: "host".into() }).unwrap();
        let found = store.authenticate_record(&token).unwrap().unwrap();
        assert_eq!(found.id, record.id);
        assert_eq!(store.live_grant(record.id).unwrap(), Some(record.grant.clone()));
        store.revoke(record.id).unwrap();
        assert_eq!(store.live_grant(record.id).unwrap(), None, "no stale cache after this store's own write");
        assert_eq!(store.authenticate_record(&token).unwrap(), None);
    }

    #[test]
    fn a_revoke_by_another_process_is_seen_even_within_one_clock_tick() {
        let dir = tempfile::tempdir().unwrap();
        let server = TokenStore::new(dir.path());
        let (token, record) = server.create(Grant::Actor { actor_id: "u1".into() }).unwrap();
        assert!(server.authenticate(&token).unwrap().is_some());
        let path = dir.path().join("tokens.json");
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        // `opledger token revoke` is another process with its own store.
        TokenStore::new(dir.path()).revoke(record.id).unwrap();
        // The file system's clock may not have ticked since the last write.
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(before).unwrap();
        assert_eq!(server.authenticate(&token).unwrap(), None);
        assert_eq!(server.live_grant(record.id).unwrap(), None);
    }
}
