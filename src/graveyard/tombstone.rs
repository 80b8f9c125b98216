//! The tombstone: the record of one supervised process's life.
//!
//! Tombstones are what kubexit instances say to each other (the liveness
//! lock beside each, see `liveness`, is the one other sign, and only
//! kubexit's), and they are read by Go kubexit too, so this module keeps
//! two promises:
//!
//! * **What we write, Go reads.** [`Tombstone::render`] produces upstream's
//!   bytes exactly: `Born`, `Died`, `ExitCode`, in that order, one per line,
//!   each key only once it has a value; timestamps in RFC 3339 with
//!   nanoseconds, trailing zeros of the fraction trimmed, in the local zone
//!   (`Z` for UTC), double-quoted. Keys of our own (`Ready`, `Quit`,
//!   `Awaiting`, `ExitStatus`, `Reason`) are plain YAML that Go's lenient
//!   reader ignores.
//! * **What anyone writes, we survive.** [`Tombstone::parse`] accepts the
//!   YAML and JSON forms, any key case, quoted or unquoted times, and treats
//!   an empty document as "alive". The form kubexit and Go kubexit write is
//!   read first by a small reader of its own, byte by byte, for speed (it
//!   is on the way from a death to the stop signal), and so are its times
//!   when they have the one RFC 3339 shape both write; a time of any other
//!   shape goes to jiff, and any other form to the YAML reader, each giving
//!   the same result on what both read. Anything else is a [`ParseError`],
//!   never a panic: the deserializer is panic-free and budgeted, and the
//!   caller (the graveyard) has already bounded the size of the input.
//!
//! Whether a record means "dead" is decided here ([`Tombstone::is_dead`]),
//! so every reader in the program agrees. Where files live and how they are
//! written atomically is the graveyard's business, not this module's.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::json::Quoted;

/// The life of one supervised process, as recorded in its tombstone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tombstone {
    /// When the child was started (absent if it never was).
    pub born: Option<Timestamp>,
    /// When the child was judged ready (kubexit's own key; Go ignores it).
    pub ready: Option<Timestamp>,
    /// The quit endpoints its kubexit calls once the child has ended, as
    /// printed (URLs), comma-separated: the sidecars it shares with other
    /// processes that name them too (kubexit's own key; Go ignores it).
    pub quit: Option<String>,
    /// While the child runs: what its kubexit still waits for before it
    /// stops it, such as the deaths still awaited under the death policy
    /// `all` (kubexit's own key; Go ignores it).
    pub awaiting: Option<String>,
    /// When the child ended, or kubexit gave up on starting it.
    pub died: Option<Timestamp>,
    /// The child's status: its exit code, 128+N when killed by signal N,
    /// -1 when it never started (as upstream writes).
    pub exit_code: Option<i32>,
    /// kubexit's own exit status, the one its container ends with, where it
    /// differs from `exit_code`: a child stopped for a death dependency (0
    /// by default, where the child's is 143), or never started (kubexit's
    /// own key; Go ignores it). What a kubelet restarts by.
    pub exit_status: Option<i32>,
    /// Why it died, in words (kubexit's own key; Go ignores it).
    pub reason: Option<String>,
}

/// A tombstone that could not be read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a YAML or JSON mapping of tombstone keys: {0}")]
    Syntax(String),
}

/// The exit code recorded for a child that never started, as upstream.
pub const NEVER_STARTED: i32 = -1;

impl Tombstone {
    /// A tombstone has died once it records a `Died` time; that is all Go
    /// peers look at, and so do we.
    pub fn is_dead(&self) -> bool {
        self.died.is_some()
    }

    /// Whether its kubexit names `endpoint` (as printed) among its quit
    /// endpoints.
    pub fn quits(&self, endpoint: &str) -> bool {
        self.quit
            .as_deref()
            .is_some_and(|list| list.split(',').any(|e| e.trim() == endpoint))
    }

    /// The exit status of the process that ended (kubexit's, where it is
    /// recorded, else the child's, as Go kubexit exits with it); `None`
    /// while it lives, or when nothing was recorded.
    pub fn status(&self) -> Option<i32> {
        self.exit_status.or(self.exit_code)
    }

    /// The bytes of this tombstone, in upstream's format, times shown in `tz`.
    pub fn render(&self, tz: &TimeZone) -> String {
        fn time_line(out: &mut String, key: &str, at: Option<Timestamp>, tz: &TimeZone) {
            if let Some(at) = at {
                let _ = writeln!(out, "{key}: \"{}\"", GoTime(at, tz));
            }
        }
        let mut out = String::with_capacity(160);
        time_line(&mut out, "Born", self.born, tz);
        time_line(&mut out, "Ready", self.ready, tz);
        if let Some(quit) = &self.quit {
            let _ = writeln!(out, "Quit: {}", Quoted(quit));
        }
        if let Some(awaiting) = &self.awaiting {
            let _ = writeln!(out, "Awaiting: {}", Quoted(awaiting));
        }
        time_line(&mut out, "Died", self.died, tz);
        if let Some(code) = self.exit_code {
            let _ = writeln!(out, "ExitCode: {code}");
        }
        if let Some(status) = self.exit_status {
            let _ = writeln!(out, "ExitStatus: {status}");
        }
        if let Some(reason) = &self.reason {
            let _ = writeln!(out, "Reason: {}", Quoted(reason));
        }
        out
    }

    /// Reads a tombstone leniently; see the module docs for what is accepted.
    pub fn parse(bytes: &[u8]) -> Result<Tombstone, ParseError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ParseError::Syntax("the file is not UTF-8 text".into()))?;
        if let Some(stone) = parse_canonical(text) {
            return Ok(stone);
        }
        // An empty file (or one of blanks and comments) is a tombstone being
        // written in place by a Go peer: the process is alive. (The
        // canonical reader has taken the empty file already.)
        if text
            .lines()
            .all(|line| line.trim().is_empty() || line.trim_start().starts_with('#'))
        {
            return Ok(Tombstone::default());
        }
        parse_yaml(text)
    }
}

fn parse_yaml(text: &str) -> Result<Tombstone, ParseError> {
    match serde_saphyr::from_str::<Option<Tombstone>>(text) {
        Ok(found) => Ok(found.unwrap_or_default()),
        Err(err) => Err(ParseError::Syntax(first_line(&err.to_string()))),
    }
}

/// Tombstones as kubexit and Go kubexit write them, read without the YAML
/// parser, on the path from a death to the stop signal: one `Key: value`
/// per line with the keys as written, times and text double-quoted without
/// escapes, `ExitCode` a plain integer, no key twice. Anything else (other
/// keys or spellings, escapes, comments, JSON, a bad value) is the YAML
/// reader's: `None`. Whatever this reads, the YAML reader reads the same
/// (a property test holds them together). It works on bytes, in one pass
/// over each line, so that the few cache lines of code it needs are all a
/// reaction touches (the reaction's code is cold: it runs once).
fn parse_canonical(text: &str) -> Option<Tombstone> {
    /// Fills `slot` once: a key given twice is not the canonical form.
    fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(value?);
        Some(())
    }
    let mut stone = Tombstone::default();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, next) = match rest.find('\n') {
            Some(end) => (&rest[..end], &rest[end + 1..]),
            None => (rest, ""),
        };
        rest = next;
        // The key ends at the first ": "; a key with a colon in it is none
        // of ours, so the first colon must be that one.
        let colon = line.find(':')?;
        let (key, value) = (&line[..colon], line[colon + 1..].strip_prefix(' ')?);
        match key {
            "Born" => once(&mut stone.born, time(value))?,
            "Ready" => once(&mut stone.ready, time(value))?,
            "Died" => once(&mut stone.died, time(value))?,
            "ExitCode" => once(&mut stone.exit_code, integer(value))?,
            "ExitStatus" => once(&mut stone.exit_status, integer(value))?,
            "Reason" => once(&mut stone.reason, quoted(value).map(str::to_owned))?,
            "Awaiting" => once(&mut stone.awaiting, quoted(value).map(str::to_owned))?,
            "Quit" => once(&mut stone.quit, quoted(value).map(str::to_owned))?,
            _ => return None,
        }
    }
    Some(stone)
}

/// A plain integer, an optional `-` and digits, as kubexit and Go write
/// exit codes.
fn integer(value: &str) -> Option<i32> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The text between double quotes that hold no quote, backslash or control
/// character (`char::is_control`: C0, DEL and C1; in UTF-8, a C1 character
/// is 0xC2 followed by 0x80..=0x9F, and 0xC2 is never a continuation byte).
fn quoted(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let plain = bytes.iter().enumerate().all(|(i, &b)| match b {
        b'"' | b'\\' | 0x00..=0x1f | 0x7f => false,
        0xc2 => !matches!(bytes.get(i + 1), Some(0x80..=0x9f)),
        _ => true,
    });
    plain.then_some(inner)
}

/// A quoted time in a canonical tombstone.
fn time(value: &str) -> Option<Timestamp> {
    let inner = quoted(value)?;
    rfc3339(inner.as_bytes()).or_else(|| inner.parse().ok())
}

/// The RFC 3339 times kubexit and Go write, `2026-11-24T19:47:53.1Z` or
/// `...+05:30`, read by hand: jiff's reader is general, and its code is
/// most of what a reaction would otherwise touch. `None` for anything it
/// is not sure of (another shape, a value out of range, a leap second, a
/// year outside 1970..=9998, `-00:00`); jiff's reader has the last word on
/// those. Where this gives a time, jiff gives the same (a property test
/// holds them together).
fn rfc3339(b: &[u8]) -> Option<Timestamp> {
    fn digits(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    }
    if b.len() < 20 || [b[4], b[7], b[10], b[13], b[16]] != *b"--T::" {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if !(1970..=9998).contains(&year)
        || !(1..=days_in_month).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let count = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return None;
        }
        nanos = digits(&fraction[..count])? * 10i64.pow(9 - count as u32);
        rest = &fraction[count..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 || (*sign == b'-' && hours == 0 && minutes == 0) {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let of_era = y - era * 400;
    let of_year = (153 * m + 2) / 5 + day - 1;
    let of_cycle = of_era * 365 + of_era / 4 - of_era / 100 + of_year;
    let days = era * 146_097 + of_cycle - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    if seconds < 0 {
        return None;
    }
    Timestamp::new(seconds, nanos as i32).ok()
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

/// The local time zone, found as Go finds it: with `TZ` unset, the zone
/// file `/etc/localtime`; with `TZ` empty or `UTC`, UTC; with `TZ=NAME`
/// (or `:NAME`), the file of that name under `$ZONEINFO` or the system's
/// zoneinfo directories, or the absolute path it names. Beyond Go, a POSIX
/// rule such as `IST-5:30` is understood too. What cannot be read is UTC,
/// as in Go. The file is read directly, never by listing the zone database:
/// that listing cost a millisecond at every start.
pub fn local_zone() -> TimeZone {
    zone_for(
        std::env::var_os("TZ").as_deref(),
        std::env::var_os("ZONEINFO").as_deref(),
    )
}

fn zone_for(tz: Option<&std::ffi::OsStr>, zoneinfo: Option<&std::ffi::OsStr>) -> TimeZone {
    let Some(tz) = tz else {
        return zone_file("/etc/localtime", Path::new("/etc/localtime"));
    };
    let tz = tz.to_string_lossy();
    let name = tz.strip_prefix(':').unwrap_or(&tz);
    if name.is_empty() || name == "UTC" {
        return TimeZone::UTC;
    }
    if name.starts_with('/') {
        return zone_file(name, Path::new(name));
    }
    // A name is a relative path inside a zoneinfo directory, never one
    // that climbs out of it.
    if name.split('/').any(|part| part == "..") {
        return TimeZone::UTC;
    }
    let dirs = zoneinfo.map(PathBuf::from).into_iter().chain(
        [
            "/usr/share/zoneinfo",
            "/usr/share/lib/zoneinfo",
            "/usr/lib/locale/TZ",
        ]
        .map(PathBuf::from),
    );
    for dir in dirs {
        let path = dir.join(name);
        if path.is_file() {
            return zone_file(name, &path);
        }
    }
    TimeZone::posix(name).unwrap_or(TimeZone::UTC)
}

/// A TZif file as a zone; UTC when it cannot be read or parsed.
fn zone_file(name: &str, path: &Path) -> TimeZone {
    std::fs::read(path)
        .ok()
        .and_then(|data| TimeZone::tzif(name, &data).ok())
        .unwrap_or(TimeZone::UTC)
}

/// A timestamp as Go's `time.RFC3339Nano` prints it in a given zone.
pub struct GoTime<'a>(pub Timestamp, pub &'a TimeZone);

impl fmt::Display for GoTime<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let zoned = self.0.to_zoned(self.1.clone());
        let dt = zoned.datetime();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        let nanos = dt.subsec_nanosecond();
        if nanos != 0 {
            let digits = format!("{nanos:09}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        // Go prints "Z" for a zero offset and ±hh:mm otherwise (seconds of
        // historical offsets are dropped, as Go's RFC 3339 layout does).
        let offset = zoned.offset().seconds();
        if offset == 0 {
            f.write_char('Z')
        } else {
            let sign = if offset < 0 { '-' } else { '+' };
            let minutes = offset.unsigned_abs() / 60;
            write!(f, "{sign}{:02}:{:02}", minutes / 60, minutes % 60)
        }
    }
}

/// Parses a timestamp the way Go's YAML reader would accept it: RFC 3339
/// with an offset, or a civil date-time (or date) taken as UTC.
fn parse_time(raw: &str) -> Option<Timestamp> {
    let raw = raw.trim();
    if let Ok(at) = raw.parse::<Timestamp>() {
        return Some(at);
    }
    if let Ok(civil) = raw.parse::<jiff::civil::DateTime>() {
        return civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp());
    }
    let date = raw.parse::<jiff::civil::Date>().ok()?;
    date.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The keys we know, matched case-insensitively as Go's readers do.
enum Key {
    Born,
    Ready,
    Died,
    ExitCode,
    ExitStatus,
    Reason,
    Awaiting,
    Quit,
    Other,
}

impl Key {
    fn of(raw: &str) -> Key {
        match raw.to_ascii_lowercase().as_str() {
            "born" => Key::Born,
            "ready" => Key::Ready,
            "died" => Key::Died,
            "exitcode" => Key::ExitCode,
            "exitstatus" => Key::ExitStatus,
            "reason" => Key::Reason,
            "awaiting" => Key::Awaiting,
            "quit" => Key::Quit,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Tombstone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TombstoneVisitor)
    }
}

struct TombstoneVisitor;

impl<'de> Visitor<'de> for TombstoneVisitor {
    type Value = Tombstone;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping with Born, Died and ExitCode keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tombstone, A::Error> {
        let mut stone = Tombstone::default();
        while let Some(key) = map.next_key::<Scalar>()? {
            let key = key.into_text().unwrap_or_default();
            match Key::of(&key) {
                Key::Born => stone.born = map.next_value::<Scalar>()?.into_time(&key)?,
                Key::Ready => stone.ready = map.next_value::<Scalar>()?.into_time(&key)?,
                Key::Died => stone.died = map.next_value::<Scalar>()?.into_time(&key)?,
                Key::ExitCode => stone.exit_code = map.next_value::<Scalar>()?.into_code(&key)?,
                Key::ExitStatus => {
                    stone.exit_status = map.next_value::<Scalar>()?.into_code(&key)?;
                }
                Key::Reason => stone.reason = map.next_value::<Scalar>()?.into_text(),
                Key::Awaiting => stone.awaiting = map.next_value::<Scalar>()?.into_text(),
                Key::Quit => stone.quit = map.next_value::<Scalar>()?.into_text(),
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(stone)
    }
}

/// A scalar value of any YAML type, kept as text or integer until we know
/// which key it belongs to. Nested values are rejected as errors.
enum Scalar {
    Null,
    Int(i64),
    Text(String),
}

impl Scalar {
    fn into_text(self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::Text(s) => Some(s),
        }
    }

    fn into_time<E: de::Error>(self, key: &str) -> Result<Option<Timestamp>, E> {
        match self.into_text() {
            None => Ok(None),
            Some(text) if text.trim().is_empty() => Ok(None),
            Some(text) => parse_time(&text)
                .map(Some)
                .ok_or_else(|| E::custom(format!("{key}: {text:?} is not a timestamp"))),
        }
    }

    fn into_code<E: de::Error>(self, key: &str) -> Result<Option<i32>, E> {
        let invalid =
            |shown: &dyn fmt::Display| E::custom(format!("{key}: {shown} is not an exit code"));
        match self {
            Scalar::Null => Ok(None),
            Scalar::Int(n) => i32::try_from(n).map(Some).map_err(|_| invalid(&n)),
            Scalar::Text(s) if s.trim().is_empty() => Ok(None),
            Scalar::Text(s) => s
                .trim()
                .parse::<i32>()
                .map(Some)
                .map_err(|_| invalid(&format!("{s:?}"))),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .or(Ok(Scalar::Text(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Text(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn kolkata() -> TimeZone {
        TimeZone::fixed(jiff::tz::Offset::from_seconds(5 * 3600 + 30 * 60).unwrap())
    }

    #[test]
    fn born_only_renders_one_quoted_line_with_trimmed_nanoseconds() {
        let stone = Tombstone {
            born: Some(at("2026-11-24T19:47:52.28610517Z")),
            ..Tombstone::default()
        };
        assert_eq!(
            stone.render(&TimeZone::UTC),
            "Born: \"2026-11-24T19:47:52.28610517Z\"\n"
        );
    }

    #[test]
    fn death_renders_upstream_keys_in_order() {
        let stone = Tombstone {
            born: Some(at("2026-11-24T19:47:53.325483769Z")),
            died: Some(at("2026-11-24T19:47:53.327552559Z")),
            exit_code: Some(3),
            ..Tombstone::default()
        };
        assert_eq!(
            stone.render(&TimeZone::UTC),
            "Born: \"2026-11-24T19:47:53.325483769Z\"\n\
             Died: \"2026-11-24T19:47:53.327552559Z\"\n\
             ExitCode: 3\n"
        );
    }

    #[test]
    fn whole_seconds_have_no_fraction_and_local_offsets_are_kept() {
        let stone = Tombstone {
            died: Some(at("2026-11-24T19:47:53Z")),
            exit_code: Some(-1),
            ..Tombstone::default()
        };
        assert_eq!(
            stone.render(&kolkata()),
            "Died: \"2026-11-25T01:17:53+05:30\"\nExitCode: -1\n"
        );
    }

    #[test]
    fn our_own_keys_stay_valid_yaml_and_round_trip() {
        let stone = Tombstone {
            born: Some(at("2026-11-24T19:47:53.1Z")),
            ready: Some(at("2026-11-24T19:47:54Z")),
            quit: Some(
                "GET:http://[::1]:8080/stop \"now\",http://127.0.0.1:15020/quitquitquit".into(),
            ),
            awaiting: Some("the deaths of app and \"worker\"".into()),
            died: Some(at("2026-11-24T19:48:00.000000001Z")),
            exit_code: Some(143),
            exit_status: Some(0),
            reason: Some("stopped: \"db\" died\n\\ \u{7}".into()),
        };
        let text = stone.render(&kolkata());
        assert_eq!(Tombstone::parse(text.as_bytes()), Ok(stone));
    }

    #[test]
    fn the_quit_endpoints_named_are_the_entries_of_the_list_as_printed() {
        let stone = Tombstone {
            quit: Some(
                "http://127.0.0.1:15020/quitquitquit, http://127.0.0.1:4191/shutdown".into(),
            ),
            ..Tombstone::default()
        };
        assert!(stone.quits("http://127.0.0.1:15020/quitquitquit"));
        assert!(stone.quits("http://127.0.0.1:4191/shutdown"));
        assert!(!stone.quits("http://127.0.0.1:15020/"));
        assert!(!Tombstone::default().quits("http://127.0.0.1:15020/quitquitquit"));
    }

    #[test]
    fn the_canonical_reader_agrees_with_the_yaml_reader_and_leaves_it_the_rest() {
        let stone = Tombstone {
            born: Some(at("2026-11-24T19:47:53.1Z")),
            ready: Some(at("2026-11-24T19:47:54Z")),
            quit: Some("http://127.0.0.1:15020/quitquitquit,http://[::1]:4191/shutdown".into()),
            awaiting: Some("the deaths of app and worker".into()),
            died: Some(at("2026-11-24T19:48:00.000000001Z")),
            exit_code: Some(-1),
            exit_status: Some(0),
            reason: Some("stopped because db died".into()),
        };
        for zone in [TimeZone::UTC, kolkata()] {
            let text = stone.render(&zone);
            assert_eq!(parse_canonical(&text), Some(stone.clone()), "{text}");
            assert_eq!(parse_yaml(&text), Ok(stone.clone()));
        }
        for other in [
            "born: \"2026-11-24T19:47:53Z\"\n",
            "Born: 2026-11-24T19:47:53Z\n",
            "Reason: \"a \\\"quoted\\\" word\"\n",
            "Born: \"2026-11-24T19:47:53Z\"\r\n",
            "ExitCode: 0x1\n",
            "ExitCode: +3\n",
            "Died: \"x\"\n",
            "Born: \"2026-11-24T19:47:53Z\"\nBorn: \"2026-11-24T19:47:54Z\"\n",
            "{\"Died\": \"2026-11-24T19:47:53Z\"}",
            "# comment\nDied: \"2026-11-24T19:47:53Z\"\n",
        ] {
            assert_eq!(parse_canonical(other), None, "{other:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the canonical reader takes, the YAML reader reads the
        /// same, on text shaped like tombstones, good and bad.
        #[test]
        fn whatever_the_canonical_reader_takes_the_yaml_reader_reads_the_same(
            lines in proptest::collection::vec(
                (
                    "(Born|Ready|Died|Awaiting|Quit|Reason|ExitCode|ExitStatus|born|Other)",
                    "(\"2026-11-2[0-9]T1[0-9]:4[0-9]:5[0-9](\\.[0-9]{1,9})?(Z|[+-]0[0-9]:[03]0)\"|\"[a-z ,.:'#/-]{0,12}\"|-?[0-9]{1,4}|[a-z0-9 :.]{0,8})",
                ),
                0..7,
            ),
            tail in "\n?",
        ) {
            let text: String = lines
                .iter()
                .map(|(key, value)| format!("{key}: {value}"))
                .collect::<Vec<_>>()
                .join("\n")
                + &tail;
            if let Some(stone) = parse_canonical(&text) {
                proptest::prop_assert_eq!(parse_yaml(&text), Ok(stone), "{:?}", text);
            }
        }
    }

    /// jiff's reading of a time, the reference for the hand-written one.
    fn by_jiff(text: &str) -> Option<Timestamp> {
        text.parse().ok()
    }

    #[test]
    fn the_hand_read_times_are_jiffs_and_the_doubtful_ones_are_left_to_it() {
        for text in [
            "2026-11-24T19:47:52.28610517Z",
            "2026-11-25T01:17:53+05:30",
            "2024-02-29T23:59:59.999999999-08:00",
            "1970-01-01T00:00:00Z",
            "2000-03-01T00:00:00.1+23:59",
            "9998-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339(text.as_bytes()), by_jiff(text), "{text}");
            assert!(rfc3339(text.as_bytes()).is_some(), "{text}");
        }
        for text in [
            "2026-11-24T19:47:60Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-24t19:47:52Z",
            "2026-11-24T19:47:52z",
            "2026-11-24T19:47:52-00:00",
            "2026-11-24T19:47:52.Z",
            "2026-11-24T19:47:52.1234567890Z",
            "2026-11-24T19:47:52,5Z",
            "2026-11-24 19:47:52Z",
            "2026-11-24T19:47:52",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59Z",
            "2026-11-24T19:47:52+24:00",
            "2026-11-24T19:47:52+05:30:00",
            "+2026-11-24T19:47:52Z",
        ] {
            assert_eq!(rfc3339(text.as_bytes()), None, "{text}");
        }
        // What the hand-written reader leaves, jiff still reads.
        let text = "Died: \"2026-11-24T19:47:52,5Z\"\n";
        assert_eq!(
            parse_canonical(text).and_then(|s| s.died),
            by_jiff("2026-11-24T19:47:52.5Z")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Wherever the hand-written reader gives a time, jiff gives the
        /// same, on times right and wrong in every field.
        #[test]
        fn where_the_hand_read_time_is_given_jiff_reads_the_same(
            text in "[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,10})?(Z|[+-][0-2][0-9]:[0-6][0-9]|)",
        ) {
            if let Some(at) = rfc3339(text.as_bytes()) {
                proptest::prop_assert_eq!(Some(at), by_jiff(&text), "{}", text);
            }
        }

        /// The byte-wise check of quoted text is `char::is_control`'s.
        #[test]
        fn quoted_text_is_refused_for_the_characters_char_refuses(inner in "\\PC{0,6}|[\\x00-\\x{a0}\"\\\\]{0,6}") {
            let expected = !inner.contains(['"', '\\']) && !inner.chars().any(char::is_control);
            let value = format!("\"{inner}\"");
            proptest::prop_assert_eq!(quoted(&value).is_some(), expected, "{:?}", inner);
        }
    }

    #[test]
    fn empty_and_blank_files_mean_alive() {
        for text in ["", "\n", "  \n# comment\n"] {
            let stone = Tombstone::parse(text.as_bytes()).unwrap();
            assert!(!stone.is_dead());
            assert_eq!(stone, Tombstone::default());
        }
    }

    #[test]
    fn json_lowercase_keys_unquoted_times_and_unknown_keys_are_read() {
        let json = br#"{"born": "2026-11-24T19:47:52Z", "died": "2026-11-24T19:47:53+01:00", "exitCode": 2, "extra": [1, 2]}"#;
        let stone = Tombstone::parse(json).unwrap();
        assert_eq!(stone.died, Some(at("2026-11-24T18:47:53Z")));
        assert_eq!(stone.exit_code, Some(2));

        let yaml = b"DIED: 2026-11-24T19:47:53Z\nexitcode: \"7\"\nOther: {a: b}\n";
        let stone = Tombstone::parse(yaml).unwrap();
        assert!(stone.is_dead());
        assert_eq!(stone.exit_code, Some(7));
    }

    #[test]
    fn garbage_is_an_error_not_a_death_or_a_panic() {
        let cases: [&[u8]; 8] = [
            b"Died: [unclosed",
            b"Died: not-a-time\n",
            b"ExitCode: 99999999999\n",
            b"- a list\n- of things\n",
            b"just a scalar",
            b"\xff\xfe\x00binary",
            b"Died: {nested: map}\n",
            b"&a [*a, *a, *a]",
        ];
        for bytes in cases {
            assert!(Tombstone::parse(bytes).is_err(), "accepted {bytes:?}");
        }
    }

    #[test]
    fn the_local_zone_is_found_as_go_finds_it_and_never_outside_zoneinfo() {
        let at: Timestamp = "2026-01-15T12:00:00Z".parse().unwrap();
        let offset = |tz: Option<&str>| {
            let zone = zone_for(tz.map(std::ffi::OsStr::new), None);
            zone.to_offset(at).seconds()
        };
        assert_eq!(offset(Some("")), 0);
        assert_eq!(offset(Some("UTC")), 0);
        assert_eq!(offset(Some("Europe/Paris")), 3600);
        assert_eq!(offset(Some(":Asia/Kolkata")), 19800);
        assert_eq!(offset(Some("/usr/share/zoneinfo/Asia/Kolkata")), 19800);
        assert_eq!(offset(Some("IST-5:30")), 19800);
        assert_eq!(offset(Some("../../../etc/passwd")), 0);
        assert_eq!(offset(Some("No/Such_Zone")), 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("/usr/share/zoneinfo/Asia/Kolkata", dir.path().join("Home")).unwrap();
        let zone = zone_for(Some("Home".as_ref()), Some(dir.path().as_os_str()));
        assert_eq!(zone.to_offset(at).seconds(), 19800);
    }
}
