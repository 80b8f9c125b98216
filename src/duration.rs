//! Durations exactly as Go writes and reads them.
//!
//! Upstream reads `KUBEXIT_GRACE_PERIOD` and `KUBEXIT_BIRTH_TIMEOUT` with
//! Go's `time.ParseDuration`, and manifests in the wild are written for it:
//! `30s`, `1m30s`, `1.5h`, `300ms`, `0`. No Rust crate implements that
//! grammar exactly (bare numbers, `µs`, fractions beyond nine digits, the
//! int64 boundaries), so this module ports its semantics, and its tests are
//! Go's own tables. Go's `Duration.String` is ported too, so that log lines
//! print durations as upstream did (`Grace Period: 30s`).
//!
//! The grammar: an optional sign, then one or more `NUMBER UNIT` groups,
//! where a number is digits with an optional fraction (`5`, `5.`, `.5`) and
//! a unit is `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m` or `h`. `0` alone needs
//! no unit; any other bare number is an error. The total must fit in a
//! signed 64-bit count of nanoseconds. Fractions keep as many digits as
//! fit and drop the rest, as Go does.
//!
//! [`parse`] additionally refuses negative values: a grace period or a
//! timeout cannot be negative. Which setting a value belongs to is the
//! caller's to say.

use std::fmt;
use std::time::Duration;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Why a string is not a duration. Each message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: write a number with a unit, such as 30s")]
    Empty,
    #[error("{0:?}: a duration needs a unit, such as \"{0}s\"; units are ns, us, ms, s, m, h")]
    MissingUnit(String),
    #[error("{input:?}: unknown unit {unit:?}; units are ns, us (or µs), ms, s, m, h")]
    UnknownUnit { input: String, unit: String },
    #[error("{0:?}: not a duration; write a number with a unit, such as 300ms, 30s or 1m30s")]
    Invalid(String),
    #[error("{0:?}: too large; the largest duration is 2562047h47m16.854775807s")]
    Overflow(String),
    #[error("{0:?}: must not be negative")]
    Negative(String),
}

/// Nanoseconds per unit, as Go's `unitMap`.
fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

/// Parses with Go's `time.ParseDuration` semantics; a signed count of
/// nanoseconds, as Go's `time.Duration`.
pub fn parse_go(input: &str) -> Result<i64, DurationError> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || DurationError::Invalid(input.to_owned());
    let overflow = || DurationError::Overflow(input.to_owned());
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(if input.is_empty() {
            DurationError::Empty
        } else {
            invalid()
        });
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !rest.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, after_whole) = leading_int(rest).ok_or_else(invalid)?;
        let had_whole = after_whole.len() != rest.len();
        rest = after_whole;
        let mut fraction = (0u64, 1f64);
        let mut had_fraction = false;
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (digits, scale, after_fraction) = leading_fraction(after_dot);
            had_fraction = after_fraction.len() != after_dot.len();
            fraction = (digits, scale);
            rest = after_fraction;
        }
        if !had_whole && !had_fraction {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: input.to_owned(),
            unit: unit.to_owned(),
        })?;
        if whole > LIMIT / per_unit {
            return Err(overflow());
        }
        let mut value = whole * per_unit;
        if fraction.0 > 0 {
            // As Go: float64 keeps fractions of an hour nanosecond-accurate.
            value += (fraction.0 as f64 * (per_unit as f64 / fraction.1)) as u64;
            if value > LIMIT {
                return Err(overflow());
            }
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > LIMIT {
            return Err(overflow());
        }
    }
    if negative {
        // total <= 2^63, so its negation fits in i64.
        return Ok(0i64.wrapping_sub_unsigned(total));
    }
    i64::try_from(total).map_err(|_| overflow())
}

/// Consumes leading digits; None when the number exceeds 2^63.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut value: u64 = 0;
    for digit in s[..end].bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
        if value > 1 << 63 {
            return None;
        }
    }
    Some((value, &s[end..]))
}

/// Consumes the digits of a fraction: their value and 10^(digits kept).
/// Digits beyond what fits are consumed and dropped, never an error.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (mut value, mut scale, mut full) = (0u64, 1f64, false);
    for digit in s[..end].bytes() {
        if full {
            continue;
        }
        let next = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit - b'0')))
            .filter(|v| *v <= 1 << 63);
        match next {
            Some(next) if value <= (i64::MAX as u64) / 10 => {
                value = next;
                scale *= 10.0;
            }
            _ => full = true,
        }
    }
    (value, scale, &s[end..])
}

/// Go's grammar, refusing negative values.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go(input)?;
    let nanos = u64::try_from(nanos).map_err(|_| DurationError::Negative(input.to_owned()))?;
    Ok(Duration::from_nanos(nanos))
}

/// A duration displayed as Go's `Duration.String()` does.
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i64::try_from(self.0.as_nanos()).unwrap_or(i64::MAX);
        f.write_str(&format_go(nanos))
    }
}

/// Go's `Duration.String()` for a signed count of nanoseconds.
pub fn format_go(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    if u < NANOS_PER_SECOND {
        let (unit, digits) = match u {
            0..1_000 => ("ns", 0),
            1_000..1_000_000 => ("µs", 3),
            _ => ("ms", 6),
        };
        return format!("{sign}{}{unit}", with_fraction(u, digits));
    }
    let seconds = with_fraction(u % (60 * NANOS_PER_SECOND), 9);
    let minutes = u / (60 * NANOS_PER_SECOND);
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^digits` with the fraction's trailing zeros (and a bare dot)
/// left out, as Go's fmtFrac and fmtInt.
fn with_fraction(value: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = digits as usize);
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000;
    const MS: i64 = 1_000_000;
    const S: i64 = 1_000_000_000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's parseDurationTests (src/time/time_test.go).
    #[test]
    fn go_parse_duration_table() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("5s", 5 * S),
            ("30s", 30 * S),
            ("1478s", 1478 * S),
            ("-5s", -5 * S),
            ("+5s", 5 * S),
            ("-0", 0),
            ("+0", 0),
            ("5.0s", 5 * S),
            ("5.6s", 5 * S + 600 * MS),
            ("5.s", 5 * S),
            (".5s", 500 * MS),
            ("1.0s", S),
            ("1.00s", S),
            ("1.004s", S + 4 * MS),
            ("1.0040s", S + 4 * MS),
            ("100.00100s", 100 * S + MS),
            ("10ns", 10 * NS),
            ("11us", 11 * US),
            ("12µs", 12 * US),
            ("12μs", 12 * US),
            ("13ms", 13 * MS),
            ("14s", 14 * S),
            ("15m", 15 * M),
            ("16h", 16 * H),
            ("3h30m", 3 * H + 30 * M),
            ("10.5s4m", 4 * M + 10 * S + 500 * MS),
            ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
            (
                "1h2m3s4ms5us6ns",
                H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
            ),
            ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
            ("52763797000ns", 52763797000 * NS),
            ("0.3333333333333333333h", 20 * M),
            ("9007199254740993ns", (1 << 53) + 1),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-9223372036s854ms775us808ns", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            ("0.100000000000000000000h", 6 * M),
            ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go(input), Ok(*want), "{input:?}");
        }
    }

    /// Go's parseDurationErrorTests. Go's inputs with invalid UTF-8 bytes
    /// (\x85, \xff) cannot be a &str; the same characters as code points stand
    /// in for them, and are just as invalid.
    #[test]
    fn go_parse_duration_error_table() {
        let cases = [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{85}\u{85}",
            "\u{ff}ff",
            "hello \u{ff}ff world",
            "\u{FFFD}",
            "\u{FFFD} hello \u{FFFD} world",
            "9223372036854775810ns",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "9223372036854776us",
            "3000000h",
            "9223372036854775.808us",
            "9223372036854ms775us808ns",
        ];
        for input in cases {
            assert!(parse_go(input).is_err(), "{input:?} was accepted");
        }
    }

    #[test]
    fn errors_say_what_is_wrong_and_name_the_input() {
        assert_eq!(parse_go(""), Err(DurationError::Empty));
        assert_eq!(parse_go("30"), Err(DurationError::MissingUnit("30".into())));
        assert_eq!(
            parse_go("1d"),
            Err(DurationError::UnknownUnit {
                input: "1d".into(),
                unit: "d".into()
            })
        );
        assert_eq!(parse_go("soon"), Err(DurationError::Invalid("soon".into())));
        assert_eq!(
            parse_go("9223372036854775808ns"),
            Err(DurationError::Overflow("9223372036854775808ns".into()))
        );
        assert_eq!(
            parse_go("30").unwrap_err().to_string(),
            "\"30\": a duration needs a unit, such as \"30s\"; units are ns, us, ms, s, m, h"
        );
    }

    #[test]
    fn parse_refuses_negative_durations() {
        assert_eq!(parse("-5s"), Err(DurationError::Negative("-5s".into())));
        assert_eq!(parse("-0"), Ok(Duration::ZERO));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
    }

    /// Go's durationTests for Duration.String.
    #[test]
    fn go_duration_string_table() {
        let cases: &[(&str, i64)] = &[
            ("0s", 0),
            ("1ns", NS),
            ("1.1µs", 1100 * NS),
            ("2.2ms", 2200 * US),
            ("3.3s", 3300 * MS),
            ("4m5s", 4 * M + 5 * S),
            ("4m5.001s", 4 * M + 5001 * MS),
            ("5h6m7.001s", 5 * H + 6 * M + 7001 * MS),
            ("8m0.000000001s", 8 * M + NS),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-2562047h47m16.854775808s", i64::MIN),
        ];
        for (want, nanos) in cases {
            assert_eq!(format_go(*nanos), *want, "{nanos}");
        }
        assert_eq!(GoDuration(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(GoDuration(Duration::from_secs(3600)).to_string(), "1h0m0s");
        assert_eq!(GoDuration(Duration::from_millis(1500)).to_string(), "1.5s");
    }

    #[test]
    fn what_is_printed_parses_back() {
        for nanos in [
            1,
            999,
            1_000,
            1_500_000,
            S,
            61 * S + 5,
            25 * H + 1,
            i64::MAX,
        ] {
            assert_eq!(parse_go(&format_go(nanos)), Ok(nanos), "{nanos}");
        }
    }
}
