//! `opledger explain RUN`: every decision of a run, each check with its
//! fact and the authority event that made the fact true.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use opledger_projections::explain::{explain, Explanation};
use uuid::Uuid;

use super::DataDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataDir,
    /// The run id.
    run: Uuid,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let log = args.data.open_existing_log(super::source::Hint::StopServer)?;
    let Some(explanation) = explain(&log, args.run).context("explaining the run")? else {
        eprintln!("no run {} in {}", args.run, args.data.path.display());
        return Ok(ExitCode::from(3));
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&explanation)?)?;
    } else {
        write_text(&mut out, &explanation)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_text(out: &mut impl Write, explanation: &Explanation) -> anyhow::Result<()> {
    writeln!(out, "run {}", explanation.run_id)?;
    for decision in &explanation.decisions {
        let verdict = match decision.reason_code {
            None => "allowed".to_owned(),
            Some(reason) => format!("denied: {reason}"),
        };
        writeln!(
            out,
            "\n{} decision, attempt {}, at position {} ({}): {verdict}; authority as of position {}",
            decision.gate, decision.attempt, decision.position, decision.recorded_at, decision.authority_position
        )?;
        if let (Some(message), Some(step)) = (decision.operator_message, decision.next_step) {
            writeln!(out, "  {message}\n  next step: {step}")?;
        }
        for check in &decision.checks {
            let mark = if check.check.passed { "ok  " } else { "FAIL" };
            writeln!(out, "  {mark} {}: {}", check.check.check.operator_word(), check.check.fact)?;
            if let Some(source) = &check.source {
                writeln!(
                    out,
                    "       because of {} at position {} by {} ({})",
                    source.event_type, source.position, source.changed_by, source.recorded_at
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::DateTime;
    use opledger::domain::legitimacy::{Check, CheckResult, DecisionOutcome};
    use opledger::domain::reason::ReasonCode;
    use opledger_projections::explain::{ExplainedCheck, ExplainedDecision};

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
        let mut out = Vec::new();
        write_text(&mut out, &Explanation { run_id: Uuid::nil(), decisions: vec![decision] }).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("ok   authority mode: a fact") && text.contains("FAIL write gate: a fact"), "{text}");
        assert!(!text.contains("WriteGate") && !text.contains("AuthorityMode"), "{text}");
    }
}
