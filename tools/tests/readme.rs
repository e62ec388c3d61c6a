//! The README's quickstart, run as a user runs it: its shell blocks in
//! order, in one bash, against the built binary on a fresh data directory.
//! Every HTTP answer must be a success, every `# → …` claim of the README
//! must appear in what the commands printed, and the script must end well.
//! The only edits are the ones a test must make: the built binary instead
//! of `cargo run`, and a free port instead of 7878.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the whole quickstart may take before the test gives up.
const QUICKSTART_TIMEOUT: Duration = Duration::from_secs(180);

const README: &str = include_str!("../../README.md");

/// The shell blocks of the README between two headings, in order.
fn shell_blocks(from_heading: &str, to_heading: &str) -> Vec<String> {
    let start = README.find(from_heading).expect("the quickstart heading");
    let end = start + README[start..].find(to_heading).expect("the heading after the quickstart");
    let mut blocks = Vec::new();
    let mut rest = &README[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

fn replace_once(script: String, from: &str, to: &str) -> String {
    assert!(script.contains(from), "the README no longer has {from:?}: update this test with it");
    script.replace(from, to)
}

fn built(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_opledger"));
    match name {
        "opledger" => bin,
        example => bin.parent().unwrap().join("examples").join(example),
    }
}

/// `"key":value` fragments of the README's `# → ` answer lines (and their
/// `#    ` continuations).
fn claims(blocks: &[String]) -> Vec<String> {
    let fragment = regex::Regex::new(r#""[a-z_]+":("[^"…]*"|-?\d+|true|false|null)"#).unwrap();
    let mut claims = Vec::new();
    let mut in_answer = false;
    for line in blocks.iter().flat_map(|block| block.lines()) {
        in_answer = line.starts_with("# → ") || (in_answer && line.starts_with("#    "));
        if in_answer {
            claims.extend(fragment.find_iter(line).map(|m| m.as_str().to_owned()));
        }
    }
    claims
}

fn run_script(script: &str, dir: &Path) -> (bool, String, String) {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > QUICKSTART_TIMEOUT {
            let _ = child.kill();
            panic!("the quickstart did not finish within {QUICKSTART_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn the_quickstart_runs_as_written() {
    let blocks = shell_blocks("## Quickstart", "## Beyond");
    assert!(blocks.len() >= 3, "the quickstart, the worker and explain blocks");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut script = blocks.join("\n");
    script = replace_once(
        script,
        r#"B="cargo run -q --release -p opledger-tools --""#,
        &format!("B={:?}", built("opledger")),
    );
    script = replace_once(script, "$B serve &", &format!("$B serve --listen 127.0.0.1:{port} &"));
    script = replace_once(script, "127.0.0.1:7878", &format!("127.0.0.1:{port}"));
    script = replace_once(script, "cargo run -p opledger-tools --example worker --", &format!("{:?}", built("worker")));
    // The script runs in a temporary directory, not the checkout.
    let python_worker = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join("worker.py");
    script = replace_once(script, "tools/examples/worker.py", &format!("{python_worker:?}"));
    // Every curl reports its status on stderr, where the test reads it; a
    // server left behind by a failing script is stopped on exit.
    let prelude = "set -euo pipefail\n\
        trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
        curl() { command curl -w '%{stderr}HTTP %{http_code} %{url_effective}\\n' \"$@\"; }\n";
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run_script(&format!("{prelude}{script}"), dir.path());
    assert!(ok, "the quickstart failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");

    let answers: Vec<&str> =
        stderr.lines().filter(|line| line.starts_with("HTTP ") && !line.ends_with("/healthz")).collect();
    assert!(answers.len() >= 12, "every curl of the quickstart answered: {answers:?}");
    for answer in &answers {
        let status: u16 = answer.split(' ').nth(1).unwrap().parse().unwrap();
        assert!((200..300).contains(&status), "{answer}\n--- stdout\n{stdout}");
    }
    let claims = claims(&blocks);
    assert!(claims.len() >= 10, "the README shows its answers: {claims:?}");
    for claim in &claims {
        let shown = stdout.contains(&format!("{claim},")) || stdout.contains(&format!("{claim}}}"));
        assert!(shown, "the README claims {claim}, the binary did not print it\n--- stdout\n{stdout}");
    }
    assert!(stdout.contains("denied: capability_missing"), "explain names the broken rule\n{stdout}");
    assert!(stdout.contains("authority as of position 10"), "authority reads back\n{stdout}");
    let held_at_10 = regex::Regex::new(r"tenant t1 +u1 +tenant\.sync +5").unwrap();
    assert!(held_at_10.is_match(&stdout), "u1 held tenant.sync (granted at 5) at position 10\n{stdout}");
}

#[path = "../../tests/support/postgres_cluster.rs"]
mod postgres_cluster;

/// The README's two nodes over one PostgreSQL log, as written: against a
/// throwaway cluster instead of a local server, free ports instead of
/// 7878 and 7879, and the built binary for `opledger`.
#[test]
fn the_two_nodes_of_the_readme_run_as_written() {
    let cluster = postgres_cluster::Cluster::start(&[]);
    let blocks = shell_blocks("## Many nodes", "### What an acknowledgement guarantees on PostgreSQL");
    assert_eq!(blocks.len(), 1, "one block of commands");
    let ports: Vec<u16> =
        (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
    let mut script = blocks[0].clone();
    script = replace_once(
        script,
        "createdb opledger",
        &format!("createdb -h 127.0.0.1 -p {} -U postgres opledger", cluster.port),
    );
    script = replace_once(script, "127.0.0.1:5432", &format!("127.0.0.1:{}", cluster.port));
    script = script.replace("127.0.0.1:7878", &format!("127.0.0.1:{}", ports[0]));
    script = script.replace("127.0.0.1:7879", &format!("127.0.0.1:{}", ports[1]));
    // `opledger` on PATH is the built binary (a link, so a background
    // `opledger serve &` is the server's own process, which the trap stops).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(built("opledger"), bin.join("opledger")).unwrap();
    let prelude = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\nexport PATH={:?}:\"$PATH\"\n",
        bin
    );
    let (ok, stdout, stderr) = run_script(&format!("{prelude}{script}"), dir.path());
    assert!(ok, "the two nodes failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(stdout.to_ascii_lowercase().contains("opledger-position: 1"), "the write's position\n{stdout}");
    assert!(stdout.contains(r#""position":1,"#), "node b reads node a's write\n{stdout}");
    assert!(stdout.contains(r#""action":"workspace_registered""#), "node b reads node a's write\n{stdout}");
    assert!(stdout.contains("checked 1 events in 1 streams"), "verify walks the database's log\n{stdout}");
}
