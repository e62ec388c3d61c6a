//! Slow and idle clients against `serve_on` over real loopback sockets,
//! with a small [`ServeConfig`]: headers that never finish close the
//! connection, a stalled body is answered 408, and at the connection bound
//! `/livez` still answers while other routes answer 503 with `Retry-After`.

use std::net::SocketAddr;
use std::time::Duration;

use opledger::{Durability, LogOptions};
use opledger_tools::server::{serve_on, ServeConfig};
use opledger_tools::tokens::Grant;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a client waits for the server before the test fails (never
/// reached when the server applies its bounds, which are far shorter).
const CLIENT_WAIT: Duration = Duration::from_secs(20);

/// A server on 127.0.0.1:0 on its own data directory (and log:
/// `backend.rs`), stopped on drop.
struct Served {
    address: SocketAddr,
    service: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _log: crate::backend::TestLog,
}

impl Served {
    async fn start(config: ServeConfig) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions { durability: Durability::Flush, cache_capacity_bytes: 4 << 20, ..Default::default() };
        let log = crate::backend::TestLog::fresh();
        let state = log.open_state(dir.path(), options);
        let (service, _) = state.tokens.create(Grant::Service { name: "tests".into() }).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(state, listener, config, async move {
            let _ = stopped.await;
        }));
        Served { address, service, stop: Some(stop), task: Some(task), _dir: dir, _log: log }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(CLIENT_WAIT, task).await.expect("the server stops").unwrap().unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One answer read off a connection: status, head and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response (its `Content-Length` body), failing past [`CLIENT_WAIT`].
async fn read_answer(stream: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let length = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            if raw.len() >= split + 4 + length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = raw[split + 4..split + 4 + length].to_vec();
                return Answer { status, head, body };
            }
        }
        let read = tokio::time::timeout(CLIENT_WAIT, stream.read(&mut buffer)).await.expect("an answer in time");
        let count = read.unwrap();
        assert!(count > 0, "the connection closed before a whole answer: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buffer[..count]);
    }
}

/// Whether the server closed the connection (EOF or reset) before [`CLIENT_WAIT`].
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(CLIENT_WAIT, stream.read(&mut buffer))
            .await
            .expect("the server closes a connection whose request does not arrive");
        match read {
            Ok(0) | Err(_) => return received,
            Ok(count) => received.extend_from_slice(&buffer[..count]),
        }
    }
}

fn get(path: &str, token: Option<&str>, keep_alive: bool) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: {connection}\r\n\r\n")
}

fn short(header_timeout_ms: u64, body_timeout_ms: u64) -> ServeConfig {
    ServeConfig {
        header_timeout: Duration::from_millis(header_timeout_ms),
        body_timeout: Duration::from_millis(body_timeout_ms),
        ..ServeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_finish_close_the_connection() {
    let served = Served::start(short(300, 10_000)).await;
    let mut partial = served.connect().await;
    partial.write_all(b"GET /v1/runs HTTP/1.1\r\nHost: test\r\nX-Slow: ").await.unwrap();
    closed_by_server(&mut partial).await;
    // A connection that sends nothing at all is closed the same way.
    let mut silent = served.connect().await;
    closed_by_server(&mut silent).await;
    // So is an idle keep-alive connection after its answer.
    let mut idle = served.connect().await;
    idle.write_all(get("/livez", None, true).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut idle).await.status, 200);
    closed_by_server(&mut idle).await;
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_answered_408_and_closed() {
    let served = Served::start(short(10_000, 300)).await;
    let mut slow = served.connect().await;
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{",
        served.service
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    closed_by_server(&mut slow).await;
    served.shutdown().await;
}

/// The sign-in form needs no token: its body is bounded the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_body_that_stalls_is_answered_408_too() {
    let served = Served::start(short(10_000, 300)).await;
    let mut slow = served.connect().await;
    let head = "POST /admin/login HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 100000\r\n\r\ntoken=";
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_answer(&mut slow).await;
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    closed_by_server(&mut slow).await;
    served.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_bound_livez_still_answers_and_others_get_503() {
    let config = ServeConfig { connections_max: 2, overflow_connections_max: 4, ..short(30_000, 30_000) };
    let served = Served::start(config).await;
    // Two keep-alive connections, each answered once, hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = served.connect().await;
        stream.write_all(get("/livez", None, true).as_bytes()).await.unwrap();
        assert_eq!(read_answer(&mut stream).await.status, 200);
        held.push(stream);
    }
    let mut probe = served.connect().await;
    probe.write_all(get("/livez", None, true).as_bytes()).await.unwrap();
    let live = read_answer(&mut probe).await;
    assert_eq!(live.status, 200, "{live:?}");
    assert_eq!(live.json()["status"], "ok");
    // One request per overflow connection: it is closed after the answer.
    closed_by_server(&mut probe).await;

    let mut ready = served.connect().await;
    ready.write_all(get("/readyz", None, false).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut ready).await.status, 200);

    let mut busy = served.connect().await;
    busy.write_all(get("/v1/runs", Some(&served.service), false).as_bytes()).await.unwrap();
    let refused = read_answer(&mut busy).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["error"]["code"], "too_many_connections");
    assert!(refused.head.to_ascii_lowercase().contains("retry-after: 1"), "{}", refused.head);

    // A slot freed is served in full again.
    drop(held.pop());
    let mut served_again = None;
    for _ in 0..200 {
        let mut stream = served.connect().await;
        stream.write_all(get("/v1/runs", Some(&served.service), false).as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        if answer.status == 200 {
            served_again = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answer = served_again.expect("a freed slot serves /v1/runs again");
    assert!(answer.json()["runs"].is_array());
    drop(held);
    served.shutdown().await;
}

/// The overflow is bounded too: past both bounds a new connection is
/// closed as it is accepted, and a freed overflow slot answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_both_bounds_a_connection_is_closed_at_once() {
    let config = ServeConfig {
        connections_max: 1,
        overflow_connections_max: 1,
        overflow_connection_wait: Duration::from_secs(30),
        ..short(30_000, 30_000)
    };
    let served = Served::start(config).await;
    let mut held = served.connect().await;
    held.write_all(get("/livez", None, true).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut held).await.status, 200);
    // The overflow slot, held by headers that do not finish.
    let mut overflow = served.connect().await;
    overflow.write_all(b"GET /livez HTTP/1.1\r\nHost: test\r\n").await.unwrap();
    let mut closed = None;
    for _ in 0..200 {
        let mut beyond = served.connect().await;
        let _ = beyond.write_all(get("/livez", None, false).as_bytes()).await;
        let received = closed_by_server(&mut beyond).await;
        if received.is_empty() {
            closed = Some(());
            break;
        }
        // The overflow task had not started yet: the probe took the slot.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(closed.is_some(), "a connection past both bounds is closed without an answer");
    overflow.write_all(b"\r\n").await.unwrap();
    assert_eq!(read_answer(&mut overflow).await.status, 200);
    drop(overflow);
    drop(held);
    // Counted in /metrics, once a slot is free again to ask.
    let mut metrics = String::new();
    for _ in 0..200 {
        let mut stream = served.connect().await;
        stream.write_all(get("/metrics", Some(&served.service), false).as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        if answer.status == 200 {
            metrics = String::from_utf8_lossy(&answer.body).into_owned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let refused = metrics.lines().find_map(|line| line.strip_prefix("opledger_connections_refused_total "));
    assert!(refused.is_some_and(|count| count.trim() != "0"), "{metrics}");
    served.shutdown().await;
}
