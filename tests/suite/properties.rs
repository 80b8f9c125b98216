//! Properties that hold for every input: the tombstone reader, the duration
//! parser and the configuration never panic, and what kubexit writes reads
//! back as it was.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use kubexit::config::{Args, Config, Environment};
use kubexit::duration::{format_go, parse, parse_go};
use kubexit::graveyard::tombstone::Tombstone;
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    // Years 1970 to 2200, any nanosecond.
    (0i64..7_258_118_400, 0i32..1_000_000_000)
        .prop_map(|(seconds, nanos)| Timestamp::new(seconds, nanos).unwrap())
}

fn zone() -> impl Strategy<Value = TimeZone> {
    prop_oneof![
        Just(TimeZone::UTC),
        // Whole-minute offsets, as Go's RFC 3339 prints them.
        (-14 * 60i32..=14 * 60)
            .prop_map(|m| TimeZone::fixed(Offset::from_seconds(m * 60).unwrap())),
    ]
}

fn tombstone() -> impl Strategy<Value = Tombstone> {
    (
        proptest::option::of(timestamp()),
        proptest::option::of(timestamp()),
        proptest::option::of(timestamp()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<i32>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
        proptest::option::of(any::<String>()),
    )
        .prop_map(
            |(born, ready, died, exit_code, exit_status, reason, awaiting, quit)| Tombstone {
                born,
                ready,
                quit,
                awaiting,
                died,
                exit_code,
                exit_status,
                reason,
            },
        )
}

struct NoEnvironment;

impl Environment for NoEnvironment {
    fn get(&self, _: &str) -> Option<OsString> {
        None
    }
}

fn os_string() -> impl Strategy<Value = Option<OsString>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24).prop_map(OsString::from_vec))
}

proptest! {
    #[test]
    fn the_tombstone_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Tombstone::parse(&bytes);
    }

    #[test]
    fn the_tombstone_reader_never_panics_on_yaml_like_text(text in "[A-Za-z:\"'{}\\[\\]&*!|>#,\\- \n0-9.]{0,200}") {
        let _ = Tombstone::parse(text.as_bytes());
    }

    #[test]
    fn tombstones_round_trip_in_any_zone(stone in tombstone(), tz in zone()) {
        let text = stone.render(&tz);
        prop_assert_eq!(Tombstone::parse(text.as_bytes()), Ok(stone));
    }

    #[test]
    fn the_duration_parser_never_panics(text in any::<String>()) {
        let _ = parse_go(&text);
        let _ = parse(&text);
    }

    #[test]
    fn the_duration_parser_never_panics_on_duration_like_text(text in "[-+]?[0-9.]{0,25}(ns|us|µs|ms|s|m|h|d)?([0-9.]{0,5}(s|m|h))?") {
        let _ = parse_go(&text);
    }

    #[test]
    fn durations_round_trip_through_gos_format(nanos in any::<i64>()) {
        prop_assert_eq!(parse_go(&format_go(nanos)), Ok(nanos));
    }

    #[test]
    fn the_configuration_never_panics(
        name in os_string(),
        graveyard in os_string(),
        death_deps in os_string(),
        birth_deps in os_string(),
        grace_period in os_string(),
        stop_signal in os_string(),
        stopped_exit_code in os_string(),
        ready_probe in os_string(),
        command in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8).prop_map(OsString::from_vec), 0..3),
    ) {
        let args = Args {
            name,
            graveyard,
            death_deps,
            birth_deps,
            grace_period,
            stop_signal,
            stopped_exit_code,
            ready_probe,
            command,
            ..Args::default()
        };
        let _ = Config::from_args(args, &NoEnvironment);
    }
}
