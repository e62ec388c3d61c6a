//! Packaging and configuration, on the real binary: `--version` names the
//! Cargo version and the commit, `serve` takes every setting from an
//! environment variable (flags win), requests are summed up at INFO (one
//! line each only at DEBUG, a 5xx at WARN), the systemd unit in `deploy/`
//! verifies clean, and the LICENSE is the license `Cargo.toml` names.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common {
    pub mod raw_http;
}

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::raw_http::{call, Call};

const BINARY: &str = env!("CARGO_BIN_EXE_opledger");

/// How long the server may take to start answering, or to exit after SIGTERM.
const SERVER_WAIT: Duration = Duration::from_secs(60);

/// The bound on each request to the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Every environment variable the binary reads for its settings; the tests
/// clear them all so the caller's environment cannot leak in.
const SETTINGS: [&str; 6] = [
    "OPLEDGER_DATA",
    "OPLEDGER_LOG",
    "OPLEDGER_LISTEN",
    "OPLEDGER_DURABILITY",
    "OPLEDGER_CACHE_MIB",
    "OPLEDGER_LOG_FORMAT",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// `opledger ARGS` with none of [`SETTINGS`] set but `env`.
fn opledger(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args);
    for name in SETTINGS {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    opledger(args, env).stdin(Stdio::null()).output().unwrap()
}

fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn livez(address: SocketAddr) -> Option<u16> {
    let request = Call { method: "GET", path: "/livez", token: None, body: None };
    call(address, request, REQUEST_TIMEOUT).ok().map(|answer| answer.status)
}

/// A server child process, killed on drop if still running.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Spawns `command` with its stderr in `log`, then waits until
    /// `/livez` answers on `address`.
    fn start(mut command: Command, address: SocketAddr, log: PathBuf) -> Server {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server { child, log };
        let deadline = Instant::now() + SERVER_WAIT;
        while livez(address) != Some(200) {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("the server exited before answering on {address} ({status}): {}", server.log_text());
            }
            assert!(Instant::now() < deadline, "no answer on {address}: {}", server.log_text());
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the log once the server has exited.
    fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + SERVER_WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no exit after SIGTERM: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_text()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn version_names_the_cargo_version_and_the_commit() {
    let output = run(&["--version"], &[]);
    assert!(output.status.success(), "{output:?}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo_root())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or("unknown".to_owned(), |output| String::from_utf8(output.stdout).unwrap().trim().to_owned());
    let expected = format!("opledger {} (commit {commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8(output.stdout).unwrap(), expected);
}

/// The option names of a `--help` text, each with its lines (the option's
/// own and, in the long form, the description under it).
fn options_of(help: &str) -> Vec<(String, String)> {
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let starts_option = trimmed.starts_with("--") || (trimmed.starts_with('-') && trimmed.contains(", --"));
        if starts_option {
            let name = trimmed.split("--").nth(1).unwrap().split([' ', '<']).next().unwrap().to_owned();
            options.push((name, format!("{line}\n")));
        } else if let Some((_, block)) = options.last_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    options
}

#[test]
fn serve_help_names_an_environment_variable_for_every_setting() {
    let output = run(&["serve", "--help"], &[]);
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    for name in SETTINGS {
        assert!(help.contains(&format!("[env: {name}")), "serve --help does not name {name}:\n{help}");
    }
    let options = options_of(&help);
    let names: Vec<&str> = options.iter().map(|(name, _)| name.as_str()).collect();
    for flag in ["data", "listen", "durability", "cache-mib", "log-format"] {
        assert!(names.contains(&flag), "no --{flag} in serve --help: {names:?}\n{help}");
    }
    for (name, block) in &options {
        if name != "help" {
            assert!(block.contains("[env: OPLEDGER_"), "--{name} has no environment variable:\n{help}");
        }
    }
}

#[test]
fn serve_takes_every_setting_from_the_environment() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("from-env");
    let address = free_loopback_port();
    let listen = address.to_string();
    let env = [
        ("OPLEDGER_DATA", data.to_str().unwrap()),
        ("OPLEDGER_LISTEN", listen.as_str()),
        ("OPLEDGER_DURABILITY", "flush"),
        ("OPLEDGER_CACHE_MIB", "16"),
        ("OPLEDGER_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let mut command = opledger(&["serve"], &env);
    // Without the variables the server would create ./opledger-data here.
    command.current_dir(temp.path());
    let server = Server::start(command, address, temp.path().join("server.log"));
    assert_eq!(livez(address), Some(200));
    let log = server.terminate();
    assert!(data.is_dir(), "the data directory of OPLEDGER_DATA was not created");
    assert!(!temp.path().join("opledger-data").exists(), "the default data directory was used");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|line| line["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"serving"), "{log}");
    // Requests: no line each at INFO, a summary instead (the last one at shutdown).
    assert!(!messages.contains(&"served"), "a line per request at INFO: {log}");
    assert!(messages.iter().any(|m| m.contains(" requests: 2xx ")), "no request summary: {log}");
}

#[test]
fn serve_rejects_a_bad_setting_from_the_environment_by_its_name() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let cases = [("OPLEDGER_DURABILITY", "never"), ("OPLEDGER_CACHE_MIB", "1"), ("OPLEDGER_LISTEN", "nowhere")];
    for (name, value) in cases {
        let output = run(&["serve"], &[("OPLEDGER_DATA", data.to_str().unwrap()), (name, value)]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(value), "{name}={value}: {stderr}");
    }
    assert!(!data.exists(), "a rejected setting still opened the data directory");
}

#[test]
fn a_flag_wins_over_its_environment_variable() {
    let temp = tempfile::tempdir().unwrap();
    let from_env = free_loopback_port();
    let from_flag = free_loopback_port();
    let env_listen = from_env.to_string();
    let env_data = temp.path().join("env-data");
    let env = [("OPLEDGER_DATA", env_data.to_str().unwrap()), ("OPLEDGER_LISTEN", env_listen.as_str())];
    let data = temp.path().join("data");
    let args = ["serve", "--data", data.to_str().unwrap(), "--listen", &from_flag.to_string()];
    let server = Server::start(opledger(&args, &env), from_flag, temp.path().join("server.log"));
    assert_eq!(livez(from_env), None, "the server listens on the address of the environment");
    drop(server);
    assert!(data.is_dir(), "the data directory of --data was not used");
    assert!(!env_data.exists(), "the data directory of the environment was used");
}

/// The committed unit, with ExecStart pointing at the binary under test:
/// `systemd-analyze verify` checks that ExecStart's binary exists.
fn unit_for_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo_root().join("deploy/opledger.service")).unwrap();
    let exec_start = "ExecStart=/usr/local/bin/opledger serve";
    assert!(unit.lines().any(|line| line == exec_start), "the unit has no `{exec_start}`");
    let path = dir.join("opledger.service");
    std::fs::write(&path, unit.replace(exec_start, &format!("ExecStart={BINARY} serve"))).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_clean() {
    let temp = tempfile::tempdir().unwrap();
    let unit = unit_for_test(temp.path());
    let output = match Command::new("systemd-analyze").arg("verify").arg(&unit).output() {
        Ok(output) => output,
        Err(error) => {
            panic!("cannot run systemd-analyze ({error}); `bash scripts/test` installs it (Debian's systemd)")
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify failed: {stderr}");
    let about_the_unit: Vec<&str> = stderr.lines().filter(|line| line.contains("opledger")).collect();
    assert!(about_the_unit.is_empty(), "systemd-analyze verify warns about the unit:\n{}", about_the_unit.join("\n"));
}

#[test]
fn the_systemd_unit_is_sandboxed_and_configured_through_the_environment() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/opledger.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for setting in [
        "DynamicUser=yes",
        "StateDirectory=opledger",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "Environment=OPLEDGER_DATA=%S/opledger",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
    ] {
        assert!(lines.contains(&setting), "the unit lacks `{setting}`");
    }
    assert!(lines.iter().any(|line| line.starts_with("TimeoutStopSec=")), "the unit has no TimeoutStopSec");
}

#[test]
fn the_license_file_is_the_license_cargo_toml_names() {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    assert!(
        manifest.lines().any(|line| line.trim() == r#"license = "Apache-2.0""#),
        "Cargo.toml names another license"
    );
    let license = std::fs::read_to_string(repo_root().join("LICENSE")).expect("a LICENSE file at the root");
    let words: Vec<&str> = license.split_whitespace().collect();
    assert_eq!(&words[..4], ["Apache", "License", "Version", "2.0,"], "{}", &license[..200.min(license.len())]);
    assert!(license.contains("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION"));
    assert!(license.contains("END OF TERMS AND CONDITIONS"), "the license text is cut short");
}

#[test]
fn a_server_error_is_logged_at_warn_with_its_route() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    // A directory where the token file should be: every token check fails with a 500.
    std::fs::create_dir_all(data.join("tokens.json")).unwrap();
    let address = free_loopback_port();
    let listen = address.to_string();
    let env = [
        ("OPLEDGER_DATA", data.to_str().unwrap()),
        ("OPLEDGER_LISTEN", listen.as_str()),
        ("OPLEDGER_LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ];
    let server = Server::start(opledger(&["serve"], &env), address, temp.path().join("server.log"));
    let request = Call { method: "GET", path: "/v1/runs", token: Some("any"), body: None };
    let answer = call(address, request, REQUEST_TIMEOUT).unwrap();
    assert_eq!(answer.status, 500, "{}", answer.text());
    let log = server.terminate();
    let warned = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["fields"]["message"] == "served a server error");
    let warned = warned.unwrap_or_else(|| panic!("no line for the 500: {log}"));
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert_eq!(warned["fields"]["status"], 500, "{warned}");
    assert_eq!(warned["span"]["route"], "/v1/runs", "{warned}");
    assert!(log.contains("5xx 1"), "the summary does not count the 500: {log}");
}

#[test]
fn the_readme_lists_every_environment_variable_of_serve() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let start = readme.find("## Configuration").expect("a Configuration section in the README");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let help = String::from_utf8(run(&["serve", "--help"], &[]).stdout).unwrap();
    // `[env: NAME=value]`, or `[env: NAME]` for a setting whose value is hidden (it may hold a password).
    let named: Vec<&str> = help.split("[env: ").skip(1).filter_map(|rest| rest.split(['=', ']']).next()).collect();
    assert_eq!(named.len(), SETTINGS.len(), "serve --help names {named:?}; update SETTINGS");
    for name in named {
        assert!(section.contains(&format!("`{name}`")), "the README's Configuration does not list {name}");
    }
}
