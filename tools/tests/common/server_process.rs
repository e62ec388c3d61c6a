//! `opledger serve` as a child process on a free loopback port, for the
//! tests that drive the real binary (`tools/tests/http/e2e.rs`,
//! `tools/tests/disk.rs`); its stderr goes to a log file the failures
//! quote, and it is killed on drop if still running.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::raw_http::{call, Answer, Call};

/// How long the server may take to start answering, or to exit after SIGTERM.
pub const SERVER_WAIT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
    /// The bound on each request to it.
    request_timeout: Duration,
}

fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

impl ServerProcess {
    /// `BINARY serve --data DATA --listen ADDRESS EXTRA…`, then waits until
    /// `/livez` answers.
    pub fn start(binary: &str, data: &Path, extra: &[&str], log: PathBuf, request_timeout: Duration) -> ServerProcess {
        let address = free_loopback_port();
        let child = Command::new(binary)
            .args(["serve", "--data"])
            .arg(data)
            .args(["--listen", &address.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = ServerProcess { child, address, log, request_timeout };
        let deadline = Instant::now() + SERVER_WAIT;
        while server.try_call("GET", "/livez", None, None).map(|a| a.status).ok() != Some(200) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the server exited before answering ({status}): {}", server.log_text());
            }
            assert!(Instant::now() < deadline, "the server did not start: {}", server.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn try_call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> std::io::Result<Answer> {
        call(self.address, Call { method, path, token, body }, self.request_timeout)
    }

    /// One request; no answer within the bound fails the test with the server's log.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        self.try_call(method, path, token, body)
            .unwrap_or_else(|error| panic!("{method} {path}: no answer ({error}); server log: {}", self.log_text()))
    }

    pub fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(token), Some(body))
    }

    /// The server's process id (to SIGKILL it while clients still hold it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill(mut self) -> ExitStatus {
        // `Child::kill` sends SIGKILL on unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM {}", self.child.id());
        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
