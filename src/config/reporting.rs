//! How kubexit reports: its log lines, set by the log flags that the
//! supervisor and `kubexit webhook` share ([`LogFlags`], flattened into
//! both), and the supervisor's termination message.
//!
//! They are read before the other settings, so that even a configuration
//! error is said the way the user asked; when a log setting is the error,
//! it is said in the [plain log](Log::PLAIN), and the termination message
//! goes to Kubernetes' file. One kind of error comes before them: a command
//! line that clap itself refuses (an unknown flag, a flag without its
//! value) is clap's message on stderr with exit status 2, and no
//! termination message, as the settings could not be read.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::spec::{Alias, Problem, settings, utf8};
use super::{Args, ConfigError, Environment, TERMINATION_LOG, parse};

settings! {
    /// The log's flags: the supervisor's and `kubexit webhook`'s.
    #[derive(clap::Args, Debug, Default, Clone)]
    pub struct LogFlags {
        settings {
            /// Log lines as `text` (upstream's wording) or `json` (one object per line)
            log_format: LogFormat = LOG_FORMAT {
                flag: "log-format",
                variable: "KUBEXIT_LOG_FORMAT",
                value_name: "FORMAT",
                default: "text",
                parse: log_format,
            }
            /// The least important level logged: error, warn, info, debug or trace
            log_level: tracing::Level = LOG_LEVEL {
                flag: "log-level",
                variable: "KUBEXIT_LOG_LEVEL",
                value_name: "LEVEL",
                default: "info",
                parse: log_level,
            }
            /// Start text log lines with a timestamp: true or false (alias: KUBEXIT_LOG_DATETIME)
            log_timestamps: bool = LOG_TIMESTAMPS {
                flag: "log-timestamps",
                variable: "KUBEXIT_LOG_TIMESTAMPS",
                value_name: "BOOL",
                default: "false",
                aliases: &[Alias::same("KUBEXIT_LOG_DATETIME")],
                parse: parse::go_bool,
            }
        }
    }
}

/// The log, as its settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    pub level: tracing::Level,
    pub timestamps: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Log {
    /// The log a refused log setting is said in: every setting at its
    /// default (a test holds this to the spec).
    pub const PLAIN: Log = Log {
        format: LogFormat::Text,
        level: tracing::Level::INFO,
        timestamps: false,
    };
}

impl LogFlags {
    /// The log these flags and their variables ask for: the one reader of
    /// them, for the supervisor and the webhook alike.
    pub fn read(&self, env: &dyn Environment) -> Result<Log, ConfigError> {
        Ok(Log {
            format: self.log_format(env)?,
            level: self.log_level(env)?,
            timestamps: self.log_timestamps(env)?,
        })
    }
}

fn log_format(raw: &OsStr) -> Result<LogFormat, Problem> {
    match utf8(raw)?.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("{other:?} is neither text nor json").into()),
    }
}

fn log_level(raw: &OsStr) -> Result<tracing::Level, Problem> {
    let value = utf8(raw)?.trim();
    value
        .parse()
        .map_err(|_| format!("{value:?} is not one of error, warn, info, debug, trace").into())
}

/// How the supervisor reports: its log, and its termination message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporting {
    pub log: Log,
    pub termination_log: TerminationLog,
}

/// Where the termination message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationLog {
    /// Kubernetes' file (the setting's default), written only if it exists.
    Kubernetes,
    /// A path the user chose, created if need be.
    Path(PathBuf),
    Off,
}

impl Default for Reporting {
    /// What a refused log setting is reported by: the plain log, and
    /// Kubernetes' file.
    fn default() -> Reporting {
        Reporting {
            log: Log::PLAIN,
            termination_log: TerminationLog::Kubernetes,
        }
    }
}

impl Reporting {
    pub fn from_args(args: &Args, env: &dyn Environment) -> Result<Reporting, ConfigError> {
        Ok(Reporting {
            log: args.log.read(env)?,
            termination_log: args.termination_log(env)?,
        })
    }

    /// The termination message's file, if one should be written now.
    pub fn termination_path(&self) -> Option<PathBuf> {
        match &self.termination_log {
            TerminationLog::Off => None,
            TerminationLog::Kubernetes => TERMINATION_LOG
                .about
                .default_text()
                .map(PathBuf::from)
                .filter(|path| path.exists()),
            TerminationLog::Path(path) => Some(path.clone()),
        }
    }
}

/// `none` (or nothing) turns it off; Kubernetes' own file is written only
/// when it exists; any other path is the user's.
pub(super) fn termination_log(raw: &OsStr) -> Result<TerminationLog, Problem> {
    Ok(match raw.as_bytes() {
        b"" | b"none" => TerminationLog::Off,
        _ if TERMINATION_LOG.about.default_text() == raw.to_str() => TerminationLog::Kubernetes,
        _ => TerminationLog::Path(PathBuf::from(raw)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    struct Unset;

    impl Environment for Unset {
        fn get(&self, _: &str) -> Option<OsString> {
            None
        }
    }

    #[test]
    fn the_plain_log_is_every_log_setting_at_its_default() {
        assert_eq!(LogFlags::default().read(&Unset), Ok(Log::PLAIN));
    }

    #[test]
    fn kubernetes_file_is_the_default_and_only_it_is_written_only_if_it_exists() {
        let read = |raw: &str| termination_log(OsStr::new(raw)).unwrap();
        assert_eq!(read("/dev/termination-log"), TerminationLog::Kubernetes);
        assert_eq!(read("none"), TerminationLog::Off);
        assert_eq!(read(""), TerminationLog::Off);
        assert_eq!(read("/tmp/t"), TerminationLog::Path("/tmp/t".into()));
        let default = Args::default().termination_log(&Unset).unwrap();
        assert_eq!(default, TerminationLog::Kubernetes);
    }

    #[test]
    fn a_bad_log_value_names_its_setting() {
        let flags = LogFlags {
            log_level: Some("loud".into()),
            ..LogFlags::default()
        };
        let err = flags.read(&Unset).unwrap_err().to_string();
        assert_eq!(
            err,
            "KUBEXIT_LOG_LEVEL (--log-level): \"loud\" is not one of error, warn, info, debug, trace"
        );
    }
}
