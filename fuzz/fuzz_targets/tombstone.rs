//! Any bytes in a graveyard file: the reader must return, never panic, and
//! whatever it accepts must survive a write and a read unchanged.
#![no_main]

use jiff::tz::TimeZone;
use kubexit::graveyard::tombstone::Tombstone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(stone) = Tombstone::parse(bytes) {
        let text = stone.render(&TimeZone::UTC);
        assert_eq!(Tombstone::parse(text.as_bytes()), Ok(stone));
    }
});
