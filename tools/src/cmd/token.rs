//! `opledger token create|list|revoke`: API tokens. A new token is printed
//! once, alone on the last line of stdout; only its hash is stored.

use std::io::Write;
use std::process::ExitCode;

use uuid::Uuid;

use super::DataDir;
use crate::tokens::Grant;

#[derive(Debug, clap::Subcommand)]
pub enum Token {
    /// Mint a token for a service (read/write) or an actor (read-only).
    Create(CreateArgs),
    /// List tokens (ids, grants, dates; never the tokens themselves).
    List(ListArgs),
    /// Withdraw a token by id.
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Who {
    /// A service token with this name.
    #[arg(long)]
    service: Option<String>,
    /// An actor token bound to this actor id.
    #[arg(long)]
    actor: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    who: Who,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    data: DataDir,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    data: DataDir,
    /// The token's id (from `token list`).
    id: Uuid,
}

pub fn run(token: Token) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match token {
        Token::Create(args) => {
            let grant = match (args.who.service, args.who.actor) {
                (Some(name), _) => Grant::Service { name },
                (None, Some(actor_id)) => Grant::Actor { actor_id },
                (None, None) => anyhow::bail!("name --service or --actor"),
            };
            if args.data.log.is_none() {
                std::fs::create_dir_all(&args.data.path)?;
            }
            let (secret, record) = args.data.tokens()?.create(grant)?;
            writeln!(out, "created token {} for {}; it is shown once:", record.id, describe(&record.grant))?;
            writeln!(out, "{secret}")?;
        }
        Token::List(args) => {
            let records = args.data.tokens()?.list()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
            }
            if !args.json {
                write_table(&mut out, &records)?;
            }
        }
        Token::Revoke(args) => {
            let record = args.data.tokens()?.revoke(args.id)?;
            writeln!(out, "revoked token {}", record.id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A grant in the words an operator uses: `service host-app`, `actor u1`.
pub fn describe(grant: &Grant) -> String {
    match grant {
        Grant::Service { name } => format!("service {name}"),
        Grant::Actor { actor_id } => format!("actor {actor_id}"),
    }
}

/// One token a line under a header, columns aligned; never the token or its hash.
fn write_table(out: &mut impl Write, records: &[crate::tokens::TokenRecord]) -> std::io::Result<()> {
    let grants: Vec<String> = records.iter().map(|record| describe(&record.grant)).collect();
    let width = grants.iter().map(String::len).chain(["GRANT".len()]).max().unwrap_or(0);
    writeln!(out, "{:<36}  {:<width$}  {:<20}  STATE", "ID", "GRANT", "CREATED")?;
    for (record, grant) in records.iter().zip(&grants) {
        let state = record
            .revoked_at
            .map_or_else(|| "active".to_owned(), |at| format!("revoked {}", at.format("%Y-%m-%dT%H:%M:%SZ")));
        let created = record.created_at.format("%Y-%m-%dT%H:%M:%SZ");
        writeln!(out, "{:<36}  {grant:<width$}  {created:<20}  {state}", record.id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn grants_read_as_words_not_debug_text() {
        assert_eq!(describe(&Grant::Service { name: "host-app".into() }), "service host-app");
        assert_eq!(describe(&Grant::Actor { actor_id: "u1".into() }), "actor u1");
    }

    #[test]
    fn the_table_has_a_header_and_one_aligned_line_per_token() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-29T15:00:00Z").map(|t| t.to_utc()).unwrap();
        let record = |grant| crate::tokens::TokenRecord {
            id: Uuid::nil(),
            grant,
            hash: "ab".repeat(32),
            created_at: at,
            revoked_at: None,
        };
        let records = vec![
            record(Grant::Service { name: "host-app".into() }),
            crate::tokens::TokenRecord { revoked_at: Some(at), ..record(Grant::Actor { actor_id: "u1".into() }) },
        ];
        let mut out = Vec::new();
        write_table(&mut out, &records).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID ") && lines[0].ends_with("STATE"), "{text}");
        assert!(lines[1].contains("service host-app") && lines[1].ends_with("active"), "{text}");
        assert!(lines[2].contains("actor u1") && lines[2].ends_with("revoked 2026-11-29T15:00:00Z"), "{text}");
        assert!(!text.contains("Service {") && !text.contains(&"ab".repeat(32)), "{text}");
    }
}
