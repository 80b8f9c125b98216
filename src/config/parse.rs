//! The parsers of the supervisor's settings: each takes a value as given
//! (bytes, since names and paths need not be UTF-8) and says what is wrong
//! with it in words that name the fix. The label is added by the caller
//! ([`super::spec`]), so a parser never names its setting.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use super::spec::{Problem, utf8};
use super::{DeathPolicy, StoppedExitCode};
use crate::duration;
use crate::graveyard::name::Name;
use crate::graveyard::restart::RestartPolicy;
use crate::process::signals::{self, SignalNumber};
use crate::quit::endpoint::Endpoint;
use crate::readiness::probe::Probe;

pub fn name(raw: &OsStr) -> Result<Name, Problem> {
    Name::from_os(raw).map_err(Problem::said)
}

/// Names, comma-separated.
pub fn names(raw: &OsStr) -> Result<Vec<Name>, Problem> {
    Name::parse_list(utf8(raw)?).map_err(Problem::said)
}

/// Trailing slashes dropped, as upstream. The root directory and the empty
/// string are refused: upstream silently turned them into the current
/// directory.
pub fn graveyard(raw: &OsStr) -> Result<PathBuf, Problem> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() {
        return Err("is empty; set it to the shared directory, such as /graveyard".into());
    }
    let mut end = bytes.len();
    while end > 1 && bytes[end - 1] == b'/' {
        end -= 1;
    }
    if &bytes[..end] == b"/" {
        return Err(
            "must not be the root directory; use a directory of its own, such as /graveyard".into(),
        );
    }
    if bytes.contains(&0) {
        return Err("contains a NUL byte".into());
    }
    // Only ASCII '/' bytes were cut, so the rest is the user's path as given.
    Ok(PathBuf::from(OsStr::from_bytes(&bytes[..end])))
}

/// A path as given.
pub fn path(raw: &OsStr) -> Result<PathBuf, Problem> {
    Ok(PathBuf::from(raw))
}

/// Trimmed text; blank is as if unset.
pub fn text(raw: &OsStr) -> Result<Option<String>, Problem> {
    let value = utf8(raw)?.trim();
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A Go duration.
pub fn duration(raw: &OsStr) -> Result<Duration, Problem> {
    duration::parse(utf8(raw)?).map_err(Problem::said)
}

/// A Go duration that is more than nothing: a period of 0 would spin.
pub fn period(raw: &OsStr) -> Result<Duration, Problem> {
    let period = duration(raw)?;
    if period.is_zero() {
        return Err("must be more than 0, such as 100ms".into());
    }
    Ok(period)
}

pub fn restart_policy(raw: &OsStr) -> Result<RestartPolicy, Problem> {
    RestartPolicy::parse(utf8(raw)?).map_err(Problem::from)
}

pub fn death_policy(raw: &OsStr) -> Result<DeathPolicy, Problem> {
    DeathPolicy::parse(utf8(raw)?).map_err(Problem::from)
}

pub fn probe(raw: &OsStr) -> Result<Probe, Problem> {
    Probe::parse(utf8(raw)?).map_err(Problem::said)
}

pub fn birth_probes(raw: &OsStr) -> Result<Vec<Probe>, Problem> {
    super::birth_probes(utf8(raw)?).map_err(Problem::from)
}

pub fn quit(raw: &OsStr) -> Result<Vec<Endpoint>, Problem> {
    Endpoint::parse_list(utf8(raw)?).map_err(Problem::said)
}

pub fn signal(raw: &OsStr) -> Result<SignalNumber, Problem> {
    signals::parse_signal(utf8(raw)?).map_err(Problem::said)
}

/// A number 0-255, or `child`.
pub fn stopped_exit_code(raw: &OsStr) -> Result<StoppedExitCode, Problem> {
    let value = utf8(raw)?.trim();
    if value.eq_ignore_ascii_case("child") {
        return Ok(StoppedExitCode::Child);
    }
    value
        .parse::<u8>()
        .map(StoppedExitCode::Code)
        .map_err(|_| format!("{value:?} is neither a number from 0 to 255 nor \"child\"").into())
}

/// The forks' boolean for the same policy: `true` kept the status 0,
/// `false` gave the child's.
pub fn fork_stopped_exit_code(raw: &OsStr) -> Result<&'static str, Problem> {
    match boolean(&raw.to_string_lossy())? {
        true => Ok("0"),
        false => Ok("child"),
    }
}

/// `true` or `false`, or any other spelling Go's strconv.ParseBool takes.
pub fn go_bool(raw: &OsStr) -> Result<bool, Problem> {
    boolean(utf8(raw)?)
}

fn boolean(value: &str) -> Result<bool, Problem> {
    parse_go_bool(value)
        .ok_or_else(|| format!("{value:?} is not a boolean; write true or false").into())
}

/// Go's strconv.ParseBool.
pub fn parse_go_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
