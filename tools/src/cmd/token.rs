//! `opledger token create|list|revoke`: API tokens. A new token is printed
//! once, alone on the last line of stdout; only its hash is stored.

use std::io::Write;
use std::process::ExitCode;

use uuid::Uuid;

use super::DataDir;
use crate::tokens::{Grant, TokenStore};

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
            std::fs::create_dir_all(&args.data.path)?;
            let (secret, record) = TokenStore::new(&args.data.path).create(grant)?;
            writeln!(out, "created token {} ({:?}); it is shown once:", record.id, record.grant)?;
            writeln!(out, "{secret}")?;
        }
        Token::List(args) => {
            let records = TokenStore::new(&args.data.path).list()?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
            }
            for record in records.iter().filter(|_| !args.json) {
                let state = record.revoked_at.map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                writeln!(out, "{} {:?} created {} {state}", record.id, record.grant, record.created_at)?;
            }
        }
        Token::Revoke(args) => {
            let record = TokenStore::new(&args.data.path).revoke(args.id)?;
            writeln!(out, "revoked token {}", record.id)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
