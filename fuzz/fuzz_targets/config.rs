//! Any command line, split on NUL bytes: parsing and validation must return
//! a configuration or an error, never panic.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use kubexit::config::{Args, Config, Environment};
use libfuzzer_sys::fuzz_target;

struct NoEnvironment;

impl Environment for NoEnvironment {
    fn get(&self, _: &str) -> Option<OsString> {
        None
    }
}

fuzz_target!(|bytes: &[u8]| {
    let words = std::iter::once(OsString::from("kubexit"))
        .chain(bytes.split(|b| *b == 0).map(|w| OsString::from_vec(w.to_vec())));
    if let Ok(args) = Args::try_parse_from(words) {
        let _ = Config::from_args(args, &NoEnvironment);
    }
});
