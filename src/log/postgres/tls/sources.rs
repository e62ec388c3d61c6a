//! Where each TLS parameter comes from when the connection string does not
//! name it, with libpq's precedence: the string, else its environment
//! variable (`PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//! `PGSSLCRL`, `PGSSLCRLDIR`), else libpq's default (`prefer`; the files
//! under `~/.postgresql/`, used only when present). The environment is
//! passed in, so the precedence is decided without touching the process'
//! own; the files are looked at later, when `tls.rs` reads them.

use std::path::{Path, PathBuf};

use crate::log::postgres::conninfo::{SslPassword, TlsParameters};

/// The environment: a variable's value, `None` when unset.
pub(crate) type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) const PGSSLMODE: &str = "PGSSLMODE";
pub(crate) const PGSSLROOTCERT: &str = "PGSSLROOTCERT";
pub(crate) const PGSSLCERT: &str = "PGSSLCERT";
pub(crate) const PGSSLKEY: &str = "PGSSLKEY";
pub(crate) const PGSSLCRL: &str = "PGSSLCRL";
pub(crate) const PGSSLCRLDIR: &str = "PGSSLCRLDIR";

/// The home directory libpq's default files are under (libpq also asks the
/// password database when `HOME` is unset; without it there are no
/// default files here).
const HOME: &str = "HOME";

/// libpq's default files, under the home directory.
pub(crate) const DEFAULT_ROOT_FILE: &str = ".postgresql/root.crt";
pub(crate) const DEFAULT_CERT_FILE: &str = ".postgresql/postgresql.crt";
pub(crate) const DEFAULT_KEY_FILE: &str = ".postgresql/postgresql.key";
pub(crate) const DEFAULT_CRL_FILE: &str = ".postgresql/root.crl";

/// A file a TLS parameter names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsFile {
    /// Named by the string or the environment: it must be readable.
    Named(PathBuf),
    /// libpq's default: used when present, skipped when absent.
    Default(PathBuf),
}

impl TlsFile {
    pub(crate) fn path(&self) -> &Path {
        match self {
            TlsFile::Named(path) | TlsFile::Default(path) => path,
        }
    }
}

/// The TLS parameters of one log, each from where libpq takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsSources {
    /// As written; `None` means libpq's default mode.
    pub(crate) sslmode: Option<String>,
    /// `Named("system")` means the system's trust store.
    pub(crate) sslrootcert: Option<TlsFile>,
    pub(crate) sslcert: Option<TlsFile>,
    pub(crate) sslkey: Option<TlsFile>,
    pub(crate) sslcrl: Option<TlsFile>,
    /// A directory of revocation lists, non-empty.
    pub(crate) sslcrldir: Option<String>,
    /// The password of an encrypted `sslkey` (libpq has no environment
    /// variable for it, and no default).
    pub(crate) sslpassword: Option<SslPassword>,
}

/// The parameters `named` (the string's) completed from `environment`.
/// An empty file parameter counts as given but names no file, so libpq's
/// default is used (libpq's reading of `sslcert=` and the like). The
/// default client files come as a pair, only when neither `sslcert` nor
/// `sslkey` is given anywhere: one named alone is refused later, not
/// completed with a default. libpq's default revocation list is looked
/// for only when no directory of them is named (an empty one is none).
pub(crate) fn resolve(named: &TlsParameters, environment: Environment<'_>) -> TlsSources {
    let given = |value: &Option<String>, variable: &str| value.clone().or_else(|| environment(variable));
    let file = |value: &Option<String>, variable: &str| {
        given(value, variable).filter(|path| !path.is_empty()).map(|path| TlsFile::Named(PathBuf::from(path)))
    };
    let home = environment(HOME).filter(|home| !home.is_empty()).map(PathBuf::from);
    let default = |file: &str| home.as_ref().map(|home| TlsFile::Default(home.join(file)));
    let (sslcert, sslkey) = match (file(&named.sslcert, PGSSLCERT), file(&named.sslkey, PGSSLKEY)) {
        (None, None) => (default(DEFAULT_CERT_FILE), default(DEFAULT_KEY_FILE)),
        either => either,
    };
    let sslcrldir = given(&named.sslcrldir, PGSSLCRLDIR).filter(|directory| !directory.is_empty());
    let sslcrl = match file(&named.sslcrl, PGSSLCRL) {
        None if sslcrldir.is_none() => default(DEFAULT_CRL_FILE),
        either => either,
    };
    TlsSources {
        sslmode: given(&named.sslmode, PGSSLMODE),
        sslrootcert: file(&named.sslrootcert, PGSSLROOTCERT).or_else(|| default(DEFAULT_ROOT_FILE)),
        sslcert,
        sslkey,
        sslcrl,
        sslcrldir,
        sslpassword: named.sslpassword.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolved(named: &TlsParameters, variables: &[(&str, &str)]) -> TlsSources {
        let variables: HashMap<String, String> =
            variables.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        resolve(named, &|name| variables.get(name).cloned())
    }

    fn named(path: &str) -> Option<TlsFile> {
        Some(TlsFile::Named(PathBuf::from(path)))
    }

    fn default(path: &str) -> Option<TlsFile> {
        Some(TlsFile::Default(PathBuf::from(path)))
    }

    /// A string naming every file parameter but `sslcrldir`.
    fn string(sslmode: &str, sslrootcert: &str, sslcert: &str, sslkey: &str, sslcrl: &str) -> TlsParameters {
        let some = |value: &str| Some(value.to_owned());
        TlsParameters {
            sslmode: some(sslmode),
            sslrootcert: some(sslrootcert),
            sslcert: some(sslcert),
            sslkey: some(sslkey),
            sslcrl: some(sslcrl),
            sslcrldir: None,
            sslpassword: None,
        }
    }

    const ENVIRONMENT: [(&str, &str); 6] = [
        ("PGSSLMODE", "verify-ca"),
        ("PGSSLROOTCERT", "/env/ca.crt"),
        ("PGSSLCERT", "/env/client.crt"),
        ("PGSSLKEY", "/env/client.key"),
        ("PGSSLCRL", "/env/revoked.crl"),
        ("HOME", "/home/u"),
    ];

    #[test]
    fn the_string_wins_over_the_environment() {
        let sources =
            resolved(&string("verify-full", "/s/ca.crt", "/s/c.crt", "/s/c.key", "/s/revoked.crl"), &ENVIRONMENT);
        assert_eq!(
            sources,
            TlsSources {
                sslmode: Some("verify-full".to_owned()),
                sslrootcert: named("/s/ca.crt"),
                sslcert: named("/s/c.crt"),
                sslkey: named("/s/c.key"),
                sslcrl: named("/s/revoked.crl"),
                sslcrldir: None,
                sslpassword: None,
            }
        );
    }

    #[test]
    fn the_environment_fills_what_the_string_does_not_name() {
        let sources = resolved(&TlsParameters::default(), &ENVIRONMENT);
        assert_eq!(
            sources,
            TlsSources {
                sslmode: Some("verify-ca".to_owned()),
                sslrootcert: named("/env/ca.crt"),
                sslcert: named("/env/client.crt"),
                sslkey: named("/env/client.key"),
                sslcrl: named("/env/revoked.crl"),
                sslcrldir: None,
                sslpassword: None,
            }
        );
        let only_mode = TlsParameters { sslmode: Some("require".to_owned()), ..TlsParameters::default() };
        let sources = resolved(&only_mode, &ENVIRONMENT);
        assert_eq!(sources.sslmode.as_deref(), Some("require"));
        assert_eq!(sources.sslrootcert, named("/env/ca.crt"));
    }

    #[test]
    fn without_either_the_defaults_are_libpqs_files_under_home() {
        let sources = resolved(&TlsParameters::default(), &[("HOME", "/home/u")]);
        assert_eq!(
            sources,
            TlsSources {
                sslmode: None,
                sslrootcert: default("/home/u/.postgresql/root.crt"),
                sslcert: default("/home/u/.postgresql/postgresql.crt"),
                sslkey: default("/home/u/.postgresql/postgresql.key"),
                sslcrl: default("/home/u/.postgresql/root.crl"),
                sslcrldir: None,
                sslpassword: None,
            }
        );
        assert_eq!(resolved(&TlsParameters::default(), &[]), TlsSources::default());
        assert_eq!(resolved(&TlsParameters::default(), &[("HOME", "")]), TlsSources::default());
    }

    #[test]
    fn an_empty_parameter_is_given_but_names_no_file() {
        // libpq: `sslrootcert=` hides PGSSLROOTCERT and means the default.
        let sources = resolved(&string("", "", "", "", ""), &ENVIRONMENT);
        assert_eq!(sources.sslmode.as_deref(), Some(""));
        assert_eq!(sources.sslrootcert, default("/home/u/.postgresql/root.crt"));
        assert_eq!(sources.sslcert, default("/home/u/.postgresql/postgresql.crt"));
        assert_eq!(sources.sslkey, default("/home/u/.postgresql/postgresql.key"));
        assert_eq!(sources.sslcrl, default("/home/u/.postgresql/root.crl"));
    }

    #[test]
    fn one_client_file_named_gets_no_default_partner() {
        let cert_only = TlsParameters { sslcert: Some("/s/c.crt".to_owned()), ..TlsParameters::default() };
        let sources = resolved(&cert_only, &[("HOME", "/home/u")]);
        assert_eq!((sources.sslcert, sources.sslkey), (named("/s/c.crt"), None));
        let sources = resolved(&TlsParameters::default(), &[("HOME", "/home/u"), ("PGSSLKEY", "/env/k.key")]);
        assert_eq!((sources.sslcert, sources.sslkey), (None, named("/env/k.key")));
        // The string's certificate and the environment's key make a pair.
        let sources = resolved(&cert_only, &[("PGSSLKEY", "/env/k.key")]);
        assert_eq!((sources.sslcert, sources.sslkey), (named("/s/c.crt"), named("/env/k.key")));
    }

    #[test]
    fn a_directory_of_revocation_lists_hides_the_default_list() {
        let directory = TlsParameters { sslcrldir: Some("/s/crls".to_owned()), ..TlsParameters::default() };
        let sources = resolved(&directory, &[("HOME", "/home/u")]);
        assert_eq!((sources.sslcrl, sources.sslcrldir.as_deref()), (None, Some("/s/crls")));
        let sources = resolved(&TlsParameters::default(), &[("HOME", "/home/u"), ("PGSSLCRLDIR", "/env/crls")]);
        assert_eq!((sources.sslcrl, sources.sslcrldir.as_deref()), (None, Some("/env/crls")));
        // An empty one names none, as libpq reads it.
        let empty = TlsParameters { sslcrldir: Some(String::new()), ..TlsParameters::default() };
        let sources = resolved(&empty, &[("HOME", "/home/u"), ("PGSSLCRLDIR", "/env/crls")]);
        assert_eq!((sources.sslcrl, sources.sslcrldir), (default("/home/u/.postgresql/root.crl"), None));
    }

    /// libpq reads `sslpassword` from the string alone: no environment
    /// variable, no default.
    #[test]
    fn the_key_password_comes_from_the_string_alone() {
        let with = TlsParameters { sslpassword: Some(SslPassword("pw".to_owned())), ..TlsParameters::default() };
        assert_eq!(resolved(&with, &ENVIRONMENT).sslpassword, Some(SslPassword("pw".to_owned())));
        let environment = [("PGSSLPASSWORD", "pw"), ("HOME", "/home/u")];
        assert_eq!(resolved(&TlsParameters::default(), &environment).sslpassword, None);
    }
}
