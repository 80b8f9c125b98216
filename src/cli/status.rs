//! The status view: `kubexit --status [--json]`.
//!
//! Prints every tombstone of the graveyard, Go's included: its name, its
//! state, its times, its exit code and why it died. The states:
//!
//! | state | meaning |
//! |---|---|
//! | `born` | started, not (yet) judged ready |
//! | `ready` | started and ready |
//! | `dead` | `Died` recorded |
//! | `lost` | its kubexit ended without recording a death: recorded by a dependent (`Reason: lost…`), or seen here (the liveness lock is free but the tombstone shows no death) |
//! | `alive` | an empty tombstone (a Go peer writing in place) |
//! | `unreadable` | not a tombstone; the reason says why |
//!
//! For a live kubexit that waits for more than one death before it stops
//! its child (the death policy `all`, or a stop signal held for
//! `stop-after`), the reason column says what it still awaits.
//!
//! It only reads: the graveyard is never changed by looking at it (a
//! liveness lock is taken shared for an instant, to tell `lost`; a kubexit
//! taking its name at that instant waits for it), and it
//! opens its entries as the supervisor does (never through a link, never
//! blocking on a FIFO), so nothing planted in the graveyard can hold it or
//! lead it out of the directory.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::config::{Args, ProcessEnvironment};
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::{self, GoTime, Tombstone};
use crate::graveyard::{Graveyard, liveness};
use crate::json::Quoted;

/// One line of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub state: &'static str,
    pub stone: Tombstone,
    /// Why it cannot be read, for `unreadable`.
    pub problem: Option<String>,
}

/// `kubexit --status`: the graveyard's tombstones on stdout.
pub fn main(args: &Args) -> ExitCode {
    let graveyard = match args.graveyard(&ProcessEnvironment) {
        Ok(dir) if dir.is_dir() => Graveyard::at(&dir),
        Ok(dir) => {
            tracing::error!(
                "the graveyard {} does not exist; set KUBEXIT_GRAVEYARD or --graveyard",
                dir.display()
            );
            return ExitCode::from(super::exit::EXIT_FAILURE);
        }
        Err(err) => {
            tracing::error!("{err}");
            return ExitCode::from(super::exit::EXIT_CONFIG);
        }
    };
    match collect(&graveyard) {
        Ok(entries) => {
            let text = if args.json {
                json(&entries)
            } else {
                table(&entries, &tombstone::local_zone())
            };
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("cannot read the graveyard: {err}");
            ExitCode::from(super::exit::EXIT_FAILURE)
        }
    }
}

/// Reads every tombstone of `graveyard`, sorted by name.
pub fn collect(graveyard: &Graveyard) -> std::io::Result<Vec<Entry>> {
    Ok(graveyard
        .names()?
        .iter()
        .map(|name| look(graveyard, name))
        .collect())
}

fn look(graveyard: &Graveyard, name: &Name) -> Entry {
    let entry = |state, stone, problem| Entry {
        name: name.to_string(),
        state,
        stone,
        problem,
    };
    match graveyard.read(name) {
        Err(err) => entry("unreadable", Tombstone::default(), Some(err.to_string())),
        Ok(None) => entry("unreadable", Tombstone::default(), Some("vanished".into())),
        Ok(Some(stone)) => {
            let state = if stone.is_dead() {
                let lost = stone
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("lost"));
                if lost { "lost" } else { "dead" }
            } else if stone.born.is_none() {
                "alive"
            } else if liveness::holder_gone(graveyard, name, &stone) {
                "lost"
            } else if stone.ready.is_some() {
                "ready"
            } else {
                "born"
            };
            entry(state, stone, None)
        }
    }
}

/// The view as an aligned table.
pub fn table(entries: &[Entry], zone: &TimeZone) -> String {
    let time = |at: Option<Timestamp>| at.map_or("-".to_owned(), |at| GoTime(at, zone).to_string());
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".into(),
        "BORN".into(),
        "READY".into(),
        "DIED".into(),
        "EXIT".into(),
        "REASON".into(),
    ]];
    for e in entries {
        rows.push([
            e.name.clone(),
            e.state.into(),
            time(e.stone.born),
            time(e.stone.ready),
            time(e.stone.died),
            e.stone.exit_code.map_or("-".into(), |c| c.to_string()),
            e.problem
                .clone()
                .or_else(|| e.stone.reason.clone())
                .or_else(|| e.stone.awaiting.as_ref().map(|a| format!("awaiting {a}")))
                .unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The view as a JSON array, times in RFC 3339 UTC.
pub fn json(entries: &[Entry]) -> String {
    let time = |at: Option<Timestamp>| {
        at.map_or("null".to_owned(), |at| Quoted(&at.to_string()).to_string())
    };
    let text = |s: Option<&str>| s.map_or("null".to_owned(), |s| Quoted(s).to_string());
    let objects: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{{\"name\":{},\"state\":{},\"born\":{},\"ready\":{},\"died\":{},\"exitCode\":{},\"reason\":{},\"awaiting\":{}}}",
                Quoted(&e.name),
                Quoted(e.state),
                time(e.stone.born),
                time(e.stone.ready),
                time(e.stone.died),
                e.stone.exit_code.map_or("null".into(), |c| c.to_string()),
                text(e.problem.as_deref().or(e.stone.reason.as_deref())),
                text(e.stone.awaiting.as_deref()),
            )
        })
        .collect();
    format!("[{}]\n", objects.join(","))
}
