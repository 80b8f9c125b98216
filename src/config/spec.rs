//! The specification of settings: each declared once, in a `settings!`
//! row, and that row is all the command line, the errors and the docs'
//! test know of it. What concerns several settings at once (a process that
//! depends on itself, a mode missing from the build) is checked by
//! [`Config::from_args`](super::Config::from_args), which reads the rows'
//! values.
//!
//! A row names the setting's flag, its variable, its value's name, its
//! default, its aliases, its parser and (in its doc comment) its help. From
//! the rows of a group the macro makes:
//!
//! * the clap struct, one `Option<OsString>` field per row, with the flag,
//!   the variable and the help clap shows (the default appended to the help
//!   as `[default: 30s]`, `[default: none]` or `[required]`);
//! * one [`Spec`] constant per row, whose [`About`] carries the flag, the
//!   variable, the aliases, the default and the label errors name the
//!   setting by (`KUBEXIT_GRACE_PERIOD (--grace-period)`, or `--listen`
//!   for a flag without a variable), and whose reader applies the default
//!   and the parser;
//! * one method per row on the struct, named as its field, that reads the
//!   value: the one given (flag or variable, as clap took it; the flag
//!   wins), else an alias's, else the default, through the parser;
//! * `SETTINGS`, the group's [`About`]s in the order of `--help`, which
//!   tests hold `--help`, `docs/configuration.md` and `docs/webhook.md` to.
//!
//! **Why clap keeps raw values.** With typed value parsers a bad value would
//! be clap's error: printed before the log is set up (so not in the JSON a
//! log pipeline reads), without the termination message, and naming only
//! the flag although most values come from the variable. So clap only
//! collects the settings' text (the flags that are not settings, such as
//! `--install DIR`, `--status` and the command, are clap's own), and every
//! value is parsed here, once, by the row's parser: a bad one is a
//! [`ConfigError`] naming the setting by its label, which the command line
//! reports in the user's log format, in the termination message and with
//! exit status 2. Defaults are ours for the
//! same reason, and for the aliases: a default filled in by clap could not
//! be told from a value given, so an alias could never be read below it.
//!
//! A default is text, parsed as a given value would be (so the text shown
//! is the value applied), or words saying what the absence means, or
//! "required". Which of them a row has decides its value's type: `T` for a
//! default, `Option<T>` for words, and `T` for a required setting, whose
//! absence is [`ConfigError::Required`]. Required is not clap's business
//! unless the row says so (`clap: (required = true)`, the webhook's
//! certificate and key): `KUBEXIT_NAME` is required to supervise, not for
//! `--status` or `--install`, and its absence has a message of its own.

use std::ffi::OsStr;

use super::{ConfigError, Environment};

/// What is known of a setting apart from its parser: enough for `--help`,
/// the label of its errors, and the test that holds the docs to it.
#[derive(Debug)]
pub struct About {
    /// The flag, without its dashes: `grace-period`.
    pub flag: &'static str,
    /// The variable clap reads it from; the webhook's own flags have none.
    pub variable: Option<&'static str>,
    /// Variables read below the official one, in this order: the names
    /// that forks of upstream gave the setting.
    pub aliases: &'static [Alias],
    pub absent: Absent,
    /// How an error names the setting: `KUBEXIT_X (--x)`, or `--x`.
    pub label: &'static str,
}

impl About {
    /// The default, when it is a value.
    pub fn default_text(&self) -> Option<&'static str> {
        match self.absent {
            Absent::Default(text) => Some(text),
            Absent::Means(_) | Absent::Required => None,
        }
    }
}

/// What a setting is when it is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// This text, parsed as if it had been given.
    Default(&'static str),
    /// Nothing is parsed; the words say what that means (`none`).
    Means(&'static str),
    /// It must be given.
    Required,
}

impl Absent {
    /// As `--help` shows it: `[default: 30s]`, `[default: none]`,
    /// `[required]`.
    pub fn in_help(self) -> String {
        match self {
            Absent::Default(text) | Absent::Means(text) => format!("[default: {text}]"),
            Absent::Required => "[required]".to_owned(),
        }
    }

    /// As the docs' tables show it: `` `30s` ``, `none`, `required`.
    pub fn in_docs(self) -> String {
        match self {
            Absent::Default(text) => format!("`{text}`"),
            Absent::Means(words) => words.to_owned(),
            Absent::Required => "required".to_owned(),
        }
    }
}

/// A fork's value, put in the setting's own words.
pub type Translate = fn(&OsStr) -> Result<&'static str, Problem>;

/// A variable that forks of upstream read for a setting.
#[derive(Debug)]
pub struct Alias {
    pub variable: &'static str,
    /// The fork's values put in the setting's own words, for a fork that
    /// spelled the choice differently; `None` when the values are the same.
    translate: Option<Translate>,
}

impl Alias {
    /// An alias that takes the setting's own values.
    pub const fn same(variable: &'static str) -> Alias {
        Alias {
            variable,
            translate: None,
        }
    }

    /// An alias whose values `translate` puts in the setting's words; its
    /// errors name the alias, which is what the user wrote.
    pub const fn translated(variable: &'static str, translate: Translate) -> Alias {
        Alias {
            variable,
            translate: Some(translate),
        }
    }
}

/// What a parser says is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Said after the label: `KUBEXIT_X (--x): PROBLEM`.
    Is(String),
    /// Said of the value as written: `--x "VALUE": WHY` (the webhook's own
    /// flags word their errors so).
    OfValue(String),
    /// A required setting that was not given.
    Missing,
}

impl From<String> for Problem {
    fn from(problem: String) -> Problem {
        Problem::Is(problem)
    }
}

impl From<&str> for Problem {
    fn from(problem: &str) -> Problem {
        Problem::Is(problem.to_owned())
    }
}

impl Problem {
    /// Any error, said as it says itself.
    pub fn said(error: impl std::fmt::Display) -> Problem {
        Problem::Is(error.to_string())
    }

    fn of(self, label: &'static str, raw: Option<&OsStr>) -> ConfigError {
        match self {
            Problem::Is(problem) => ConfigError::Invalid {
                setting: label,
                problem,
            },
            Problem::OfValue(why) => ConfigError::InvalidValue {
                setting: label,
                value: raw
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                why,
            },
            Problem::Missing => ConfigError::Required { setting: label },
        }
    }
}

/// A value as text, for the parsers that want text.
pub fn utf8(raw: &OsStr) -> Result<&str, Problem> {
    raw.to_str()
        .ok_or_else(|| format!("{:?} is not valid UTF-8", raw.to_string_lossy()).into())
}

/// One setting: what it is, and how its value (given or not) is read.
pub struct Spec<V> {
    pub about: &'static About,
    /// The value given (or an alias's), or `None`, to the setting's value:
    /// the parser, with the default applied.
    decode: fn(Option<&OsStr>) -> Result<V, Problem>,
}

impl<V> Spec<V> {
    pub const fn new(
        about: &'static About,
        decode: fn(Option<&OsStr>) -> Result<V, Problem>,
    ) -> Self {
        Spec { about, decode }
    }

    pub fn label(&self) -> &'static str {
        self.about.label
    }

    /// The setting's value from `given` (what clap took from the flag or
    /// the variable), else from the first alias set in `env`, else its
    /// default.
    pub fn read(&self, given: Option<&OsStr>, env: &dyn Environment) -> Result<V, ConfigError> {
        let aliased;
        let raw = match given {
            Some(raw) => Some(raw),
            None => {
                aliased = self.alias(env)?;
                aliased.as_deref()
            }
        };
        (self.decode)(raw).map_err(|problem| problem.of(self.about.label, raw))
    }

    fn alias(&self, env: &dyn Environment) -> Result<Option<std::ffi::OsString>, ConfigError> {
        for alias in self.about.aliases {
            let Some(raw) = env.get(alias.variable) else {
                continue;
            };
            return match alias.translate {
                None => Ok(Some(raw)),
                Some(translate) => translate(&raw)
                    .map(|words| Some(words.into()))
                    .map_err(|problem| problem.of(alias.variable, Some(&raw))),
            };
        }
        Ok(None)
    }
}

/// Declares a group of settings: the clap struct `$Group` with one raw
/// field per row (and any other fields after the rows), one [`Spec`]
/// constant per row, a reading method per row, and `$Group::SETTINGS`. A
/// row:
///
/// ```text
/// /// Help, as --help shows it (the default is appended)
/// field: Type = CONSTANT {
///     flag: "flag-name",
///     variable: "KUBEXIT_FLAG_NAME",        // optional
///     value_name: "DURATION",
///     default: "30s",                       // or (none "words"), or (required)
///     aliases: &[Alias::same("KUBEXIT_X")], // optional
///     clap: (required = true),              // optional: more of clap's attributes
///     parse: parse::duration,               // fn(&OsStr) -> Result<Type, Problem>
/// }
/// ```
macro_rules! settings {
    (@type $T:ty, (none $words:literal)) => { Option<$T> };
    (@type $T:ty, (required)) => { $T };
    (@type $T:ty, $text:literal) => { $T };

    (@help (none $words:literal)) => { concat!("[default: ", $words, "]") };
    (@help (required)) => { "[required]" };
    (@help $text:literal) => { concat!("[default: ", $text, "]") };

    (@absent (none $words:literal)) => { $crate::config::spec::Absent::Means($words) };
    (@absent (required)) => { $crate::config::spec::Absent::Required };
    (@absent $text:literal) => { $crate::config::spec::Absent::Default($text) };

    (@decode $parse:expr, (none $words:literal)) => {
        |raw: Option<&::std::ffi::OsStr>| raw.map($parse).transpose()
    };
    (@decode $parse:expr, (required)) => {
        |raw: Option<&::std::ffi::OsStr>| match raw {
            Some(raw) => ($parse)(raw),
            None => Err($crate::config::spec::Problem::Missing),
        }
    };
    (@decode $parse:expr, $text:literal) => {
        |raw: Option<&::std::ffi::OsStr>| ($parse)(raw.unwrap_or(::std::ffi::OsStr::new($text)))
    };

    (@label $flag:literal, $variable:literal) => { concat!($variable, " (--", $flag, ")") };
    (@label $flag:literal) => { concat!("--", $flag) };
    (@variable $variable:literal) => { Some($variable) };
    (@variable) => { None };
    (@aliases $aliases:expr) => { $aliases };
    (@aliases) => { &[] };

    (
        $(#[$($attr:tt)*])*
        $vis:vis struct $Group:ident {
            settings {
                $(
                    $(#[doc = $doc:literal])*
                    $field:ident: $T:ty = $SPEC:ident {
                        flag: $flag:literal,
                        $(variable: $variable:literal,)?
                        value_name: $value_name:literal,
                        default: $default:tt,
                        $(aliases: $aliases:expr,)?
                        $(clap: ($($clap:tt)*),)?
                        parse: $parse:expr $(,)?
                    }
                )*
            }
            $($other:tt)*
        }
    ) => {
        $(#[$($attr)*])*
        $vis struct $Group {
            $(
                #[arg(
                    long = $flag,
                    $(env = $variable,)?
                    value_name = $value_name,
                    help = concat!(
                        $($doc,)* " ", $crate::config::spec::settings!(@help $default)
                    ).trim_ascii_start(),
                    $($($clap)*)?
                )]
                pub $field: Option<::std::ffi::OsString>,
            )*
            $($other)*
        }

        $(
            $(#[doc = $doc])*
            $vis const $SPEC: $crate::config::spec::Spec<
                $crate::config::spec::settings!(@type $T, $default)
            > = $crate::config::spec::Spec::new(
                &$crate::config::spec::About {
                    flag: $flag,
                    variable: $crate::config::spec::settings!(@variable $($variable)?),
                    aliases: $crate::config::spec::settings!(@aliases $($aliases)?),
                    absent: $crate::config::spec::settings!(@absent $default),
                    label: $crate::config::spec::settings!(@label $flag $(, $variable)?),
                },
                $crate::config::spec::settings!(@decode $parse, $default),
            );
        )*

        impl $Group {
            /// Every setting of the group, in the order of `--help`.
            // A group that is not part of the library's API (the webhook's)
            // is read only by its tests.
            #[allow(dead_code)]
            pub const SETTINGS: &'static [&'static $crate::config::spec::About] =
                &[$($SPEC.about),*];

            $(
                #[doc = concat!(
                    "The value of ",
                    $crate::config::spec::settings!(@label $flag $(, $variable)?),
                    "."
                )]
                pub fn $field(
                    &self,
                    env: &dyn $crate::config::Environment,
                ) -> Result<
                    $crate::config::spec::settings!(@type $T, $default),
                    $crate::config::ConfigError,
                > {
                    $SPEC.read(self.$field.as_deref(), env)
                }
            )*
        }
    };
}

pub(crate) use settings;
