//! Logging: kubexit's lines on stderr, and nothing on stdout.
//!
//! stdout belongs to the child: a pipeline reading the child's output must
//! see exactly that output, so every line kubexit writes goes to stderr
//! (upstream once printed one line to stdout; that was a bug).
//!
//! The lines keep upstream's wording (`Name: app`, `New death: db`,
//! `Terminating child process...`) because people grep for them. Errors are
//! prefixed `Error: ` and warnings `Warning: `, as upstream prints errors.
//! Call sites use `tracing`'s macros with structured fields beside the
//! message; this subscriber prints the message only, and a structured
//! format can print the fields without touching any call site.
//!
//! The subscriber is deliberately tiny: kubexit has no spans, one thread,
//! and writes each line with one `write` call, so lines from kubexit never
//! interleave mid-line with each other.

use std::fmt::{self, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Installs the stderr subscriber for the whole process. Calling it twice
/// keeps the first.
pub fn init(max_level: Level) {
    let _ = tracing::subscriber::set_global_default(StderrLog { max_level });
}

struct StderrLog {
    max_level: Level,
}

/// Collects the `message` field of an event.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max_level
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let prefix = match *event.metadata().level() {
            Level::ERROR => "Error: ",
            Level::WARN => "Warning: ",
            _ => "",
        };
        let line = format!("{prefix}{}\n", message.0);
        // A closed stderr must not take the supervisor down with it.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
