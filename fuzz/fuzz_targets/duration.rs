//! Any text as a Go duration: the parser must return, never panic, and what
//! it accepts must print and parse back to the same value.
#![no_main]

use kubexit::duration::{format_go, parse_go};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(nanos) = parse_go(text) {
        assert_eq!(parse_go(&format_go(nanos)), Ok(nanos));
    }
});
