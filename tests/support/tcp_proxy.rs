//! A TCP fault proxy for tests: listens on a free loopback port, forwards
//! every connection to a PostgreSQL server, and can be armed to cut a
//! connection at one precise point of the wire protocol, the next `COMMIT`:
//!
//! - [`Cut::AfterCommit`]: the `COMMIT` reaches the server, the answers to
//!   statements pipelined before it go through, the `COMMIT`'s own answer
//!   is swallowed and the client is cut (it committed; the client never
//!   hears);
//! - [`Cut::WhileCommitting`]: the `COMMIT` reaches the server, followed by
//!   the end of the stream, and the client is cut at once, while the server
//!   may still be committing;
//! - [`Cut::BeforeCommit`]: both sides are cut instead of forwarding the
//!   `COMMIT` (the server rolls the transaction back).
//!
//! [`Proxy::cut_queries`] cuts, while set, every connection that sends a
//! statement containing a given text (a Parse or a simple Query message):
//! the database away for one kind of read only.
//!
//! [`Proxy::break_open_connections`] cuts every connection open at that
//! moment at the next message its client sends, unforwarded: connections
//! that died while idle (a restart, a failover, a silent network), which
//! their client learns of only when it uses them. New ones are forwarded.
//!
//! [`Admission`] says what happens to new connections (forwarded, refused,
//! or accepted and never answered), to keep a client from reconnecting.
//!
//! After the startup phase a frontend message is one type byte and a
//! 4-byte big-endian length (which counts itself); tokio-postgres commits
//! with a simple Query message: `Q`, then `COMMIT` and a NUL. The log's
//! speculative groups commit without one: a call of
//! `opledger_log_append_speculative_v1` outside `BEGIN` commits at the
//! `Sync` behind it, so that `Sync` is the proxy's `COMMIT` too (the
//! statement is recognised by its name, learnt from its Parse message),
//! and its answer is the call's CommandComplete (`SELECT 1`).
//!
//! Shared by the core's log tests and, if needed, the tools' tests (`#[path]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The startup packet codes that are not a StartupMessage: the server
/// answers each with one byte and the client goes on with its startup.
const SSL_REQUEST_CODE: u32 = 80_877_103;
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Largest frontend message the proxy accepts (a bound on its buffer; the
/// log's appends are far smaller).
const MESSAGE_BYTES_MAX: usize = 256 << 20;
/// The body of the simple Query message that commits.
const COMMIT_QUERY: &[u8] = b"COMMIT\0";
/// What the statement text of a call that commits at its `Sync` holds.
const COMMITTING_CALL: &[u8] = b"opledger_log_append_speculative_v1";

/// Where an armed proxy cuts the next `COMMIT`'s connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward the `COMMIT`, swallow the answer, cut both sides.
    AfterCommit,
    /// Forward the `COMMIT`, then cut both sides without waiting.
    WhileCommitting,
    /// Cut both sides instead of forwarding the `COMMIT`.
    BeforeCommit,
}

/// What the proxy does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Forward,
    /// Closed as soon as it is accepted.
    Refuse,
    /// Accepted and never answered (kept open until admission changes).
    Stall,
}

struct Shared {
    upstream_port: u16,
    /// The cuts armed, for the next `COMMIT`s in turn.
    armed: Mutex<VecDeque<Cut>>,
    cut_queries: Mutex<Option<&'static str>>,
    admission: Mutex<Admission>,
    stalled: Mutex<Vec<TcpStream>>,
    cuts: AtomicUsize,
    closing: AtomicBool,
    /// Connections forwarded so far: the next one's number.
    forwarded: AtomicUsize,
    /// Connections numbered below this are cut at their next message.
    broken_below: AtomicUsize,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// A proxy to the server on `upstream_port` of loopback, accepting.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream_port,
            armed: Mutex::new(VecDeque::new()),
            cut_queries: Mutex::new(None),
            admission: Mutex::new(Admission::Forward),
            stalled: Mutex::new(Vec::new()),
            cuts: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            forwarded: AtomicUsize::new(0),
            broken_below: AtomicUsize::new(0),
        });
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new().name("tcp-proxy".into()).spawn(move || accept(&listener, &accepting)).unwrap();
        Proxy { port, shared }
    }

    /// A connection URL for `database` through the proxy.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Cuts the connection of the next `COMMIT` any client sends (once).
    /// Armed again before that `COMMIT` came, the one after it too.
    pub fn arm(&self, cut: Cut) {
        self.shared.armed.lock().unwrap().push_back(cut);
    }

    /// While `Some(text)`, cuts every connection that sends a statement
    /// containing `text`, before forwarding it.
    pub fn cut_queries(&self, containing: Option<&'static str>) {
        *self.shared.cut_queries.lock().unwrap() = containing;
    }

    /// Cuts every connection open now when its client next sends a
    /// message (not forwarded), counted in [`Proxy::cuts`]; connections
    /// made from now on are forwarded.
    pub fn break_open_connections(&self) {
        self.shared.broken_below.store(self.shared.forwarded.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Whether an armed cut is still waiting for its `COMMIT`.
    pub fn armed(&self) -> bool {
        !self.shared.armed.lock().unwrap().is_empty()
    }

    /// How many connections an armed cut has cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// What to do with connections from now on (open ones are untouched;
    /// leaving [`Admission::Stall`] closes the stalled ones).
    pub fn admit(&self, admission: Admission) {
        *self.shared.admission.lock().unwrap() = admission;
        if admission != Admission::Stall {
            for stream in self.shared.stalled.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.admit(Admission::Refuse);
        // Wakes the accepting thread so it sees `closing`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        let admission = *shared.admission.lock().unwrap();
        match admission {
            Admission::Refuse => {
                let _ = client.shutdown(Shutdown::Both);
            }
            Admission::Stall => shared.stalled.lock().unwrap().push(client),
            Admission::Forward => {
                let shared = Arc::clone(shared);
                std::thread::spawn(move || forward(client, &shared));
            }
        }
    }
}

/// Both sides of one connection, cut together.
struct Pair {
    client: TcpStream,
    server: TcpStream,
    /// Set once the client side is cut while the server finishes.
    draining: AtomicBool,
    /// The answer of the commit armed with `AfterCommit`: the one the
    /// client never gets.
    commit_answer: Mutex<&'static [u8]>,
}

impl Pair {
    fn cut(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

fn forward(client: TcpStream, shared: &Arc<Shared>) {
    let number = shared.forwarded.fetch_add(1, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(("127.0.0.1", shared.upstream_port)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let pair =
        Arc::new(Pair { client, server, draining: AtomicBool::new(false), commit_answer: Mutex::new(COMMIT_COMPLETE) });
    // Set before a COMMIT armed with `AfterCommit` is forwarded: whatever
    // the server sends next is its answer, which the client never gets.
    let swallow = Arc::new(AtomicBool::new(false));
    let answers = {
        let (pair, swallow, shared) = (Arc::clone(&pair), Arc::clone(&swallow), Arc::clone(shared));
        std::thread::spawn(move || backend_to_client(&pair, &swallow, &shared))
    };
    frontend_to_server(&pair, &swallow, shared, number);
    let _ = answers.join();
}

/// The server's answer to a `COMMIT` that committed: CommandComplete
/// (`C`, length 11) with the tag `COMMIT`.
const COMMIT_COMPLETE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";
/// The server's answer to a committing call: CommandComplete (`C`, length
/// 13) with the tag `SELECT 1` (its `Sync` then commits it).
const CALL_COMPLETE: &[u8] = b"C\0\0\0\x0dSELECT 1\0";

fn backend_to_client(pair: &Pair, swallow: &AtomicBool, shared: &Shared) {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut from = &pair.server;
    let mut to = &pair.client;
    // Bytes not yet forwarded while a swallowed COMMIT's answer is awaited:
    // its pattern may straddle two reads.
    let mut held: Vec<u8> = Vec::new();
    let mut draining = false;
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let _ = pair.client.shutdown(Shutdown::Write);
                return;
            }
            Ok(read) => read,
        };
        // Cut off from the client: read the server to its end, so that it
        // finishes what it received (a socket closed with unread data would
        // reset the connection under it).
        if draining || shared_draining(pair) {
            draining = true;
            continue;
        }
        if !swallow.load(Ordering::SeqCst) {
            if to.write_all(&buffer[..read]).is_err() {
                pair.cut();
                return;
            }
            continue;
        }
        // The answers to statements sent before the COMMIT (pipelined with
        // it) go through; the COMMIT's own answer never does.
        held.extend_from_slice(&buffer[..read]);
        let answer = *pair.commit_answer.lock().unwrap();
        if let Some(at) = held.windows(answer.len()).position(|window| window == answer) {
            let _ = to.write_all(&held[..at]);
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = pair.client.shutdown(Shutdown::Both);
            draining = true;
            continue;
        }
        let keep = answer.len() - 1;
        if held.len() > keep {
            let forward = held.len() - keep;
            if to.write_all(&held[..forward]).is_err() {
                pair.cut();
                return;
            }
            held.drain(..forward);
        }
    }
}

/// Whether the client side was cut while the server finishes (see
/// `Cut::WhileCommitting`).
fn shared_draining(pair: &Pair) -> bool {
    pair.draining.load(Ordering::SeqCst)
}

/// Forwards the client's messages one by one, cutting at an armed COMMIT.
/// A cut is counted before it is made: a test that learns of the broken
/// connection from the client may read the count at once.
fn frontend_to_server(pair: &Pair, swallow: &AtomicBool, shared: &Shared, number: usize) {
    let mut from = &pair.client;
    let mut to = &pair.server;
    let mut starting = true;
    // Names of this connection's prepared committing calls, and whether
    // one was bound since the last `Sync`.
    let mut calls: Vec<Vec<u8>> = Vec::new();
    let mut call_bound = false;
    loop {
        let message = if starting { read_startup(&mut from) } else { read_typed(&mut from) };
        let Some(message) = message else {
            let _ = pair.server.shutdown(Shutdown::Write);
            return;
        };
        if starting {
            let code = message.get(4..8).map_or(0, |code| u32::from_be_bytes(code.try_into().unwrap()));
            starting = code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE;
        } else if number < shared.broken_below.load(Ordering::SeqCst) || cuts_query(shared, &message) {
            shared.cuts.fetch_add(1, Ordering::SeqCst);
            pair.cut();
            return;
        } else if let Some(name) = committing_call_prepared(&message) {
            calls.push(name);
        } else if message[0] == b'B' && bound_statement(&message).is_some_and(|name| calls.contains(&name)) {
            call_bound = true;
        } else if (message[0] == b'Q' && &message[5..] == COMMIT_QUERY) || (message[0] == b'S' && call_bound) {
            let answer = if message[0] == b'S' { CALL_COMPLETE } else { COMMIT_COMPLETE };
            call_bound = false;
            *pair.commit_answer.lock().unwrap() = answer;
            match shared.armed.lock().unwrap().pop_front() {
                Some(Cut::BeforeCommit) => {
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    pair.cut();
                    return;
                }
                Some(Cut::AfterCommit) => swallow.store(true, Ordering::SeqCst),
                Some(Cut::WhileCommitting) => {
                    // The server gets the COMMIT and then the end of the
                    // stream (not a reset, which could drop the COMMIT
                    // still unread behind statements pipelined before it);
                    // the client is cut at once.
                    pair.draining.store(true, Ordering::SeqCst);
                    let _ = to.write_all(&message);
                    let _ = pair.server.shutdown(Shutdown::Write);
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    let _ = pair.client.shutdown(Shutdown::Both);
                    return;
                }
                None => {}
            }
        }
        if to.write_all(&message).is_err() {
            pair.cut();
            return;
        }
    }
}

/// The name of the statement a Parse message prepares, if its text is a
/// committing call. Parse: `P`, length, name NUL, text NUL, ….
fn committing_call_prepared(message: &[u8]) -> Option<Vec<u8>> {
    if message[0] != b'P' {
        return None;
    }
    let mut fields = message[5..].split(|byte| *byte == 0);
    let name = fields.next()?;
    let text = fields.next()?;
    text.windows(COMMITTING_CALL.len()).any(|window| window == COMMITTING_CALL).then(|| name.to_vec())
}

/// The statement a Bind message binds. Bind: `B`, length, portal NUL,
/// statement NUL, ….
fn bound_statement(message: &[u8]) -> Option<Vec<u8>> {
    let mut fields = message[5..].split(|byte| *byte == 0);
    fields.next()?;
    fields.next().map(<[u8]>::to_vec)
}

/// Whether `message` is a statement [`Proxy::cut_queries`] cuts.
fn cuts_query(shared: &Shared, message: &[u8]) -> bool {
    let Some(text) = *shared.cut_queries.lock().unwrap() else { return false };
    (message[0] == b'P' || message[0] == b'Q') && message.windows(text.len()).any(|window| window == text.as_bytes())
}

/// A startup-phase packet: a 4-byte length (counting itself), then the body.
fn read_startup(from: &mut impl Read) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length).ok()?;
    read_rest(from, length.to_vec(), u32::from_be_bytes(length) as usize, 4)
}

/// A typed message: the type byte, a 4-byte length (counting itself, not
/// the type byte), then the body.
fn read_typed(from: &mut impl Read) -> Option<Vec<u8>> {
    let mut header = [0u8; 5];
    from.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
    read_rest(from, header.to_vec(), length, 4)
}

fn read_rest(from: &mut impl Read, mut message: Vec<u8>, length: usize, counted: usize) -> Option<Vec<u8>> {
    if length < counted || length > MESSAGE_BYTES_MAX {
        return None;
    }
    let start = message.len();
    message.resize(start + length - counted, 0);
    from.read_exact(&mut message[start..]).ok()?;
    Some(message)
}
