//! Browser sessions for the Monitoring pages.
//!
//! A browser cannot send a bearer header, so `/admin/login` takes a token
//! once and hands the browser a session instead: a random id in an
//! HttpOnly cookie, never the token itself. The server keeps, per session,
//! only the id's hash, the id of the token it was opened with and an
//! expiry. Each use looks the token up again by its id, so revoking the
//! token (`opledger token revoke`, even from another process on the data
//! directory) ends its sessions at their next use.
//!
//! Sessions live in memory: a restart signs every browser out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use rand::RngCore;
use uuid::Uuid;

use crate::tokens::{Grant, TokenStore};

/// How long a session lasts after sign-in: a working day, after which the
/// operator pastes the token again.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Most sessions held at once. Each sign-in with a valid token adds one,
/// so the bound keeps a token holder from growing the server's memory
/// without end; at the bound the session closest to its expiry goes first.
pub const SESSIONS_MAX: usize = 10_000;

/// Bytes of OS randomness in a session id: 256 bits, unguessable.
const SESSION_ID_BYTES: usize = 32;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "opledger_session";

/// The time source of expiries; tests pass one they can move forward.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

#[derive(Debug, Clone, Copy)]
struct Session {
    token_id: Uuid,
    expires_at: Instant,
}

/// The live sessions, keyed by the SHA-256 of their id.
pub struct SessionStore {
    sessions: Mutex<HashMap<String, Session>>,
    clock: Clock,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").field("sessions", &self.lock().len()).finish()
    }
}

impl Default for SessionStore {
    fn default() -> SessionStore {
        SessionStore::with_clock(Arc::new(Instant::now))
    }
}

fn key(id: &str) -> String {
    opledger::Hash::of(id.as_bytes()).to_hex()
}

impl SessionStore {
    pub fn with_clock(clock: Clock) -> SessionStore {
        SessionStore { sessions: Mutex::new(HashMap::new()), clock }
    }

    /// The map; a poisoned lock still holds whole entries (each insert or
    /// removal is one map operation).
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for the token with `token_id`; returns its id, the
    /// only time it is seen.
    pub fn open(&self, token_id: Uuid) -> String {
        let mut secret = [0u8; SESSION_ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex::encode(secret);
        let now = (self.clock)();
        let mut sessions = self.lock();
        if sessions.len() >= SESSIONS_MAX {
            sessions.retain(|_, session| session.expires_at > now);
        }
        if sessions.len() >= SESSIONS_MAX {
            let oldest = sessions.iter().min_by_key(|(_, session)| session.expires_at).map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(key(&id), Session { token_id, expires_at: now + SESSION_LIFETIME });
        id
    }

    /// The grant behind session `id`: `None` when it is unknown, expired,
    /// or its token is revoked (an expired or orphaned session is dropped).
    pub fn resolve(&self, id: &str, tokens: &TokenStore) -> anyhow::Result<Option<Grant>> {
        let key = key(id);
        let Some(session) = self.lock().get(&key).copied() else { return Ok(None) };
        if session.expires_at <= (self.clock)() {
            self.lock().remove(&key);
            return Ok(None);
        }
        let grant = tokens.live_grant(session.token_id)?;
        if grant.is_none() {
            self.lock().remove(&key);
        }
        Ok(grant)
    }

    /// Ends session `id` (sign-out); an unknown id is already ended.
    pub fn close(&self, id: &str) {
        self.lock().remove(&key(id));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id a request's `Cookie` header carries, if any.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == SESSION_COOKIE && !value.is_empty()).then_some(value))
}

/// The `Set-Cookie` value that hands a browser session `id`. HttpOnly keeps
/// it from scripts, SameSite=Strict off cross-site requests, Path=/admin
/// off the JSON API. There is no `Secure`: the server speaks plain HTTP
/// (loopback, or behind a TLS-terminating proxy), where a browser would
/// drop a `Secure` cookie.
pub fn set_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={}", SESSION_LIFETIME.as_secs())
}

/// The `Set-Cookie` value that makes a browser forget its session.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn moving_clock() -> (Clock, Arc<AtomicU64>) {
        let start = Instant::now();
        let seconds = Arc::new(AtomicU64::new(0));
        let passed = Arc::clone(&seconds);
        (Arc::new(move || start + Duration::from_secs(passed.load(Ordering::SeqCst))), seconds)
    }

    #[test]
    fn a_session_lasts_its_lifetime_and_ends_with_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = TokenStore::new(dir.path());
        let (_, record) = tokens.create(Grant::Actor { actor_id: "u1".into() }).unwrap();
        let (clock, seconds) = moving_clock();
        let store = SessionStore::with_clock(clock);
        let id = store.open(record.id);
        assert_eq!(id.len(), 2 * SESSION_ID_BYTES);
        assert_eq!(store.resolve(&id, &tokens).unwrap(), Some(record.grant.clone()));
        assert_eq!(store.resolve("0000", &tokens).unwrap(), None);
        seconds.store(SESSION_LIFETIME.as_secs() - 1, Ordering::SeqCst);
        assert_eq!(store.resolve(&id, &tokens).unwrap(), Some(record.grant.clone()));
        seconds.store(SESSION_LIFETIME.as_secs(), Ordering::SeqCst);
        assert_eq!(store.resolve(&id, &tokens).unwrap(), None, "expired");
        assert!(store.is_empty(), "an expired session is dropped");

        let id = store.open(record.id);
        tokens.revoke(record.id).unwrap();
        assert_eq!(store.resolve(&id, &tokens).unwrap(), None, "revoked");
        assert!(store.is_empty(), "a revoked token's session is dropped");
    }

    #[test]
    fn the_store_holds_at_most_its_bound() {
        let (clock, seconds) = moving_clock();
        let store = SessionStore::with_clock(clock);
        for second in 0..SESSIONS_MAX as u64 + 5 {
            seconds.store(second, Ordering::SeqCst);
            store.open(Uuid::now_v7());
        }
        assert_eq!(store.len(), SESSIONS_MAX);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; opledger_session=abc; other=1".parse().unwrap());
        assert_eq!(session_id(&headers), Some("abc"));
        headers.insert(header::COOKIE, "opledger_token=opl_x".parse().unwrap());
        assert_eq!(session_id(&headers), None);
    }
}
