//! `opledger explain RUN`: every decision of a run, each check with its
//! fact and the authority event that made the fact true. On a data
//! directory, or over `--url` from a running server
//! (`GET /v1/runs/{id}/explain`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use opledger::domain::legitimacy::Check;
use opledger_projections::explain::explain;
use serde_json::Value;
use uuid::Uuid;

use super::remote::is_status;
use super::source::{field, principal_text, text, Hint, Source, Target};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: Source,
    /// The run id.
    run: Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (explanation, place) = match args.source.target()? {
        Target::Local(data) => {
            let log = data.open_existing_log(Hint::Query)?;
            let explanation = explain(&log, args.run).context("explaining the run")?;
            let value = explanation.map(|e| serde_json::to_value(e).context("encoding the explanation")).transpose()?;
            (value, data.path.display().to_string())
        }
        Target::Remote(remote) => match remote.get::<Value>(&format!("/v1/runs/{}/explain", args.run), &[]) {
            Ok(value) => (Some(value), remote.url()),
            Err(error) if is_status(&error, 404) => (None, remote.url()),
            Err(error) => return Err(error),
        },
    };
    let Some(explanation) = explanation else {
        eprintln!("no run {} in {place}", args.run);
        return Ok(ExitCode::from(3));
    };
    let mut out = std::io::stdout().lock();
    match args.json {
        true => writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?,
        false => out.write_all(explanation_text(&explanation).as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A check's operator words from the one registry (`write gate`, not
/// `write_gate` or `WriteGate`); an unknown name is shown as sent.
fn check_words(check: &Value) -> String {
    match serde_json::from_value::<Check>(check.clone()) {
        Ok(check) => check.operator_word().to_owned(),
        Err(_) => text(check),
    }
}

/// The explanation (as the API serializes it) in words.
pub fn explanation_text(explanation: &Value) -> String {
    let mut out = format!("run {}\n", field(explanation, "run_id"));
    for decision in explanation["decisions"].as_array().into_iter().flatten() {
        let verdict = match decision.get("reason_code").filter(|code| !code.is_null()) {
            None => "allowed".to_owned(),
            Some(reason) => format!("denied: {}", text(reason)),
        };
        out.push_str(&format!(
            "\n{} decision, attempt {}, at position {} ({}): {verdict}; authority as of position {}\n",
            field(decision, "gate"),
            field(decision, "attempt"),
            field(decision, "position"),
            field(decision, "recorded_at"),
            field(decision, "authority_position")
        ));
        if let (Some(message), Some(step)) = (decision["operator_message"].as_str(), decision["next_step"].as_str()) {
            out.push_str(&format!("  {message}\n  next step: {step}\n"));
        }
        for check in decision["checks"].as_array().into_iter().flatten() {
            let mark = if check["passed"].as_bool() == Some(true) { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark} {}: {}\n", check_words(&check["check"]), field(check, "fact")));
            if let Some(source) = check.get("source").filter(|source| !source.is_null()) {
                out.push_str(&format!(
                    "       because of {} at position {} by {} ({})\n",
                    field(source, "type"),
                    field(source, "position"),
                    principal_text(&source["changed_by"]),
                    field(source, "recorded_at")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::DateTime;
    use opledger::domain::legitimacy::{CheckResult, DecisionOutcome};
    use opledger::domain::reason::ReasonCode;
    use opledger_projections::explain::{ExplainedCheck, ExplainedDecision, Explanation};

    use super::*;

    #[test]
    fn checks_are_named_in_operator_words() {
        let check = |check, passed| ExplainedCheck {
            check: CheckResult {
                check,
                passed,
                fact: "a fact".to_owned(),
                source_position: None,
                reason_code: (!passed).then_some(ReasonCode::WriteGateClosed),
            },
            source: None,
        };
        let decision = ExplainedDecision {
            position: 7,
            recorded_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            gate: "legitimacy",
            attempt: 1,
            outcome: DecisionOutcome::Denied,
            reason_code: Some(ReasonCode::WriteGateClosed),
            operator_message: None,
            next_step: None,
            authority_position: 6,
            checks: vec![check(Check::AuthorityMode, true), check(Check::WriteGate, false)],
        };
        let explanation = Explanation { run_id: Uuid::nil(), decisions: vec![decision] };
        let text = explanation_text(&serde_json::to_value(explanation).unwrap());
        assert!(text.contains("ok   authority mode: a fact") && text.contains("FAIL write gate: a fact"), "{text}");
        assert!(!text.contains("WriteGate") && !text.contains("AuthorityMode"), "{text}");
    }
}
