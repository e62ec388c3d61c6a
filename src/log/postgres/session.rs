//! What every connection of a node starts with, whatever the database's
//! and the role's defaults: bounds on a silent peer (TCP), and session
//! settings `SET` once connected. Found from outside: a role whose
//! defaults were meant for an application failed appends between nodes,
//! and a silent database machine held connections for TCP's minutes.

use std::time::Duration;

use tokio_postgres::Config;

use super::conninfo;
use crate::error::Error;

/// How soon a node finds that the database's machine went silent (powered
/// off, or a network that drops packets without a reset), when the
/// connection string does not say: TCP's own bounds are minutes (about 15
/// for data the peer never acknowledges) to hours (2 h before a first
/// keepalive probe), during which a lane or the follower would wait on a
/// dead connection instead of reconnecting, to the promoted standby say.
/// Data unacknowledged for [`TCP_UNACKNOWLEDGED_WAIT_MAX`](super::TCP_UNACKNOWLEDGED_WAIT_MAX)
/// ends the connection (`tcp_user_timeout`, which the string gives in
/// milliseconds, as libpq reads it); an idle one is probed after
/// [`KEEPALIVE_IDLE`](super::KEEPALIVE_IDLE), every
/// [`KEEPALIVE_INTERVAL`](super::KEEPALIVE_INTERVAL), and ended after
/// [`KEEPALIVE_RETRIES`](super::KEEPALIVE_RETRIES) unanswered probes. A
/// live server acknowledges at once, whatever it is doing (a commit
/// waiting for a synchronous standby included): only a silent peer is cut.
pub(super) fn dead_peer_bounds(config: &mut Config, split: &conninfo::Split) -> Result<(), Error> {
    match split.tcp_user_timeout.as_deref().map(str::trim) {
        None => {
            config.tcp_user_timeout(super::TCP_UNACKNOWLEDGED_WAIT_MAX);
        }
        // libpq: 0 is the system's default.
        Some("0") => {}
        Some(given) => {
            let milliseconds = given.parse::<u64>().map_err(|_| {
                Error::Storage(format!(
                    "tcp_user_timeout={given:?} is not a number of milliseconds (as libpq reads it)"
                ))
            })?;
            config.tcp_user_timeout(Duration::from_millis(milliseconds));
        }
    }
    let names = |parameter: &str| split.rest.contains(&format!("{parameter}="));
    if !names("keepalives_idle") {
        config.keepalives_idle(super::KEEPALIVE_IDLE);
    }
    if !names("keepalives_interval") {
        config.keepalives_interval(super::KEEPALIVE_INTERVAL);
    }
    if !names("keepalives_retries") {
        config.keepalives_retries(super::KEEPALIVE_RETRIES);
    }
    Ok(())
}

/// The settings every connection of a node starts with, whatever the
/// role's or the database's defaults (`ALTER ROLE … SET`, `ALTER DATABASE
/// … SET`): the writer's serialization is built and tested on them, and a
/// default meant for an application's queries (a `lock_timeout` of a few
/// milliseconds, `serializable` as the default isolation) fails appends
/// under ordinary contention between nodes. The node bounds its own waits:
/// [`LOCK_WAIT_MAX`](super::LOCK_WAIT_MAX) for any lock (the head above
/// all), and a transaction left idle is ended past
/// [`IDLE_IN_TRANSACTION_WAIT_MAX`](super::IDLE_IN_TRANSACTION_WAIT_MAX),
/// above the longest a decider holds the head.
///
/// Set by `SET` once connected, not in the startup packet's `options`:
/// PgBouncer refuses a connection whose `options` name a setting it does
/// not track.
fn session_settings() -> [(&'static str, String); 4] {
    [
        // First: the role's `statement_timeout` bounds this round trip.
        ("statement_timeout", "0".to_owned()),
        ("default_transaction_isolation", "read committed".to_owned()),
        ("lock_timeout", format!("{}ms", super::LOCK_WAIT_MAX.as_millis())),
        ("idle_in_transaction_session_timeout", format!("{}ms", super::IDLE_IN_TRANSACTION_WAIT_MAX.as_millis())),
    ]
}

/// The `SET`s of [`session_settings`], but for the settings the
/// connection string's own `options` name: an operator's explicit choice
/// there holds.
pub(super) fn statements(given: Option<&str>) -> String {
    let named = options_named(given.unwrap_or(""));
    session_settings()
        .into_iter()
        .filter(|(name, _)| !named.iter().any(|given| given == name))
        .map(|(name, value)| format!("SET {name} TO '{value}';"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings an `options` value sets, as the server reads it: `-c
/// name=value`, `-cname=value` or `--name=value` (dashes in a name read
/// as underscores, letters without case).
fn options_named(options: &str) -> Vec<String> {
    let mut named = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let setting = match word {
            "-c" => words.next(),
            _ => word.strip_prefix("--").or_else(|| word.strip_prefix("-c")),
        };
        if let Some((name, _)) = setting.and_then(|setting| setting.split_once('=')) {
            named.push(name.replace('-', "_").to_ascii_lowercase());
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::postgres::connect::Target;

    #[test]
    fn a_silent_peer_is_found_within_seconds_unless_the_string_says_otherwise() {
        let target = Target::parse_in("postgres://db.internal/ledger", &|_| None).unwrap();
        assert_eq!(target.config.get_tcp_user_timeout(), Some(&crate::log::postgres::TCP_UNACKNOWLEDGED_WAIT_MAX));
        assert_eq!(target.config.get_keepalives_idle(), crate::log::postgres::KEEPALIVE_IDLE);
        assert_eq!(target.config.get_keepalives_interval(), Some(crate::log::postgres::KEEPALIVE_INTERVAL));
        assert_eq!(target.config.get_keepalives_retries(), Some(crate::log::postgres::KEEPALIVE_RETRIES));
        let given = "postgres://db.internal/ledger?tcp_user_timeout=5000&keepalives_idle=60&sslmode=disable";
        // libpq's milliseconds, not tokio-postgres' seconds.
        let target = Target::parse_in(given, &|_| None).unwrap();
        assert_eq!(target.config.get_tcp_user_timeout(), Some(&std::time::Duration::from_millis(5000)));
        assert_eq!(target.config.get_keepalives_idle(), std::time::Duration::from_secs(60));
        assert_eq!(target.config.get_keepalives_interval(), Some(crate::log::postgres::KEEPALIVE_INTERVAL));
        let system = Target::parse_in("host=db.internal tcp_user_timeout=0", &|_| None).unwrap();
        assert_eq!(system.config.get_tcp_user_timeout(), None, "0: the system's default");
        let refused = Target::parse_in("host=db.internal tcp_user_timeout=soon", &|_| None).err().unwrap();
        assert!(refused.to_string().contains("not a number of milliseconds"), "{refused}");
    }

    #[test]
    fn a_nodes_sessions_set_its_own_settings_but_those_the_string_names() {
        let all = statements(None);
        assert_eq!(
            all,
            "SET statement_timeout TO '0'; SET default_transaction_isolation TO 'read committed'; \
             SET lock_timeout TO '30000ms'; SET idle_in_transaction_session_timeout TO '60000ms';"
        );
        let given = statements(Some("-c search_path=ledger -c lock_timeout=5s --statement-timeout=1min"));
        assert_eq!(
            given,
            "SET default_transaction_isolation TO 'read committed'; SET idle_in_transaction_session_timeout TO '60000ms';"
        );
        assert_eq!(options_named("-cLock_Timeout=5s -c work_mem=8MB"), ["lock_timeout", "work_mem"]);
        let target =
            Target::parse_in("postgres://db.internal/ledger?options=-c%20lock_timeout%3D1s", &|_| None).unwrap();
        assert_eq!(target.config.get_options(), Some("-c lock_timeout=1s"), "passed on as given");
        let session = statements(target.config.get_options());
        assert!(!session.contains("lock_timeout") && session.contains("statement_timeout"));
    }
}
