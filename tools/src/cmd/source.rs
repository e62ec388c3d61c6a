//! Where the read commands get their answers: a data directory that no
//! server holds, or a running server (`--url` and `--token`). Also what
//! they share on the way out: JSON printing and a quiet end when the
//! reader of stdout goes away (`| head`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::ProgressBar;
use opledger::domain::ledger::LedgerError;
use opledger::{Log, LogOptions};
use opledger_projections::ProjectionError;

use super::remote::Remote;
use super::DataDir;

/// Logs at least this long get a spinner while their projections catch up.
const CATCH_UP_SPINNER_EVENTS_MIN: u64 = 100_000;

/// `--data DIR`, or `--url URL --token TOKEN`.
#[derive(Debug, Clone, clap::Args)]
pub struct Source {
    #[command(flatten)]
    pub data: DataDir,
    /// Ask the server running at this base URL (e.g. http://127.0.0.1:7878) instead of opening a data directory.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The bearer token for --url.
    #[arg(long, value_name = "TOKEN", env = "OPLEDGER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A resolved [`Source`].
#[derive(Debug)]
pub enum Target {
    Local(DataDir),
    Remote(Remote),
}

impl Source {
    pub fn target(&self) -> anyhow::Result<Target> {
        match (&self.url, &self.token) {
            (Some(url), Some(token)) => Ok(Target::Remote(Remote::new(url, token)?)),
            (Some(_), None) => bail!("--url needs --token (or OPLEDGER_TOKEN)"),
            (None, _) => Ok(Target::Local(self.data.clone())),
        }
    }
}

/// What to tell someone whose command met a data directory a server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// A read that `--url` and `--token` can send to the server instead.
    Query,
    /// A command that needs the directory itself (rebuild).
    StopServer,
}

/// The message for a data directory a running server holds.
pub fn in_use_message(dir: &Path, hint: Hint) -> String {
    let dir = dir.display();
    match hint {
        Hint::Query => {
            format!("the data directory {dir} is in use by a running server; pass --url and --token to query it")
        }
        Hint::StopServer => format!("the data directory {dir} is in use by a running server; stop the server first"),
    }
}

/// Whether `error` is (or wraps) the log's refusal of a directory another
/// process holds: `opledger::Error::Locked`, bare or inside a ledger or
/// projection error.
pub fn is_locked(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let locked = |e: &opledger::Error| matches!(e, opledger::Error::Locked { .. });
        cause.downcast_ref::<opledger::Error>().is_some_and(locked)
            || matches!(cause.downcast_ref::<LedgerError>(), Some(LedgerError::Log(e)) if locked(e))
            || matches!(cause.downcast_ref::<ProjectionError>(), Some(ProjectionError::Log(e)) if locked(e))
    })
}

impl DataDir {
    /// Opens the log of an existing data directory for a tool. A missing
    /// one is an error (a typo must not create an empty ledger), and one a
    /// server holds gets the message of [`in_use_message`].
    pub fn open_existing_log(&self, hint: Hint) -> anyhow::Result<Arc<Log>> {
        self.open_log().map_err(|error| match is_locked(&error) {
            true => anyhow!(in_use_message(&self.path, hint)),
            false => error,
        })
    }

    /// [`DataDir::open_existing_log`] with the lock refusal left as it is
    /// (for commands that can do without the log when a server holds it).
    pub fn open_log(&self) -> anyhow::Result<Arc<Log>> {
        if let Some(url) = &self.log {
            let log = Log::open_postgres(url, LogOptions::default())
                .with_context(|| format!("opening the log in {}", opledger::log::postgres::describe_url(url)))?;
            return Ok(Arc::new(log));
        }
        if !self.path.join("log").is_dir() {
            bail!("no ledger in {}: the data directory does not exist or holds no log", self.path.display());
        }
        match Log::open(self.path.join("log"), LogOptions::default()) {
            Ok(log) => Ok(Arc::new(log)),
            Err(error) if matches!(error, opledger::Error::Locked { .. }) => Err(anyhow!(error)),
            Err(error) => Err(anyhow!(error).context(format!("opening the log in {}", self.path.display()))),
        }
    }
}

impl DataDir {
    /// The directory of the read models: `DIR/log` whichever backend holds
    /// the log (beside the sled store, or alone when the log is in a database).
    pub fn read_models_dir(&self) -> std::path::PathBuf {
        self.path.join("log")
    }

    /// The API tokens: in the database when the log is, else `DIR/tokens.json`.
    pub fn tokens(&self) -> anyhow::Result<crate::tokens::TokenStore> {
        match &self.log {
            Some(_) => Ok(crate::tokens::TokenStore::in_log(self.open_log()?)),
            None => Ok(crate::tokens::TokenStore::new(&self.path)),
        }
    }
}

/// A spinner on a terminal while the projections of a long log catch up
/// (opening them applies whatever the read models have not seen); hidden otherwise.
pub fn catch_up_spinner(head: u64) -> ProgressBar {
    if head < CATCH_UP_SPINNER_EVENTS_MIN {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(format!("bringing the projections up to position {head}"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// Prints one JSON document (pretty) on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).context("writing JSON to stdout")?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Prints text on stdout.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// A command whose stdout reader went away (`| head`) has done its job.
pub fn quiet_on_closed_pipe(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error) if closed_pipe(&error) => Ok(()),
        other => other,
    }
}

fn closed_pipe(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        let json = cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind);
        io == Some(BrokenPipe) || json == Some(BrokenPipe)
    })
}

/// `{"kind": "actor", "id": "u1"}` → `actor u1`; `{"kind": "system"}` → `system`.
pub fn principal_text(value: &serde_json::Value) -> String {
    match (value.get("kind").and_then(|k| k.as_str()), value.get("id").and_then(|i| i.as_str())) {
        (Some("actor"), Some(id)) => format!("actor {id}"),
        (Some(kind), _) => kind.to_owned(),
        _ => text(value),
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The field `name` of `value` as a table cell.
pub fn field(value: &serde_json::Value, name: &str) -> String {
    text(value.get(name).unwrap_or(&serde_json::Value::Null))
}

/// Left-aligned columns, two spaces apart, the last column unpadded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            match index == last {
                true => out.push_str(cell),
                false => out.push_str(&format!("{cell:<width$}  ")),
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    #[test]
    fn locked_is_found_bare_or_wrapped() {
        let locked = || opledger::Error::Locked { path: PathBuf::from("/d/log") };
        assert!(is_locked(&anyhow!(locked())));
        assert!(is_locked(&anyhow!(locked()).context("opening")));
        assert!(is_locked(&anyhow!(LedgerError::Log(locked()))));
        assert!(is_locked(&anyhow!(ProjectionError::Log(locked()))));
        assert!(!is_locked(&anyhow!(opledger::Error::Closed)));
        assert!(!is_locked(&anyhow!("locked, says the text only")));
    }

    #[test]
    fn the_in_use_message_names_the_directory_and_the_way_out() {
        let message = in_use_message(Path::new("/srv/data"), Hint::Query);
        assert_eq!(
            message,
            "the data directory /srv/data is in use by a running server; pass --url and --token to query it"
        );
        assert!(in_use_message(Path::new("/srv/data"), Hint::StopServer).contains("stop the server"));
    }

    #[test]
    fn a_closed_pipe_is_a_quiet_end() {
        let pipe = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        assert!(quiet_on_closed_pipe(Err(anyhow!(pipe()).context("writing"))).is_ok());
        assert!(quiet_on_closed_pipe(Err(anyhow!(serde_json::Error::io(pipe())))).is_ok());
        assert!(quiet_on_closed_pipe(Err(anyhow!("other"))).is_err());
    }

    #[test]
    fn cells_and_tables() {
        assert_eq!(principal_text(&json!({"kind": "actor", "id": "u1"})), "actor u1");
        assert_eq!(principal_text(&json!({"kind": "system"})), "system");
        assert_eq!(field(&json!({"a": null, "b": 2, "c": "x"}), "a"), "-");
        assert_eq!(field(&json!({"b": 2}), "b"), "2");
        assert_eq!(field(&json!({}), "c"), "-");
        let rows = vec![vec!["1".to_owned(), "long cell".to_owned(), "z".to_owned()]];
        assert_eq!(table(&["ID", "NAME", "LAST"], &rows), "ID  NAME       LAST\n1   long cell  z\n");
    }
}
