//! Logging: kubexit's lines on stderr, and nothing of the log on stdout.
//!
//! stdout belongs to the child: a pipeline reading the child's output must
//! see exactly that output, so every line kubexit writes while it
//! supervises goes to stderr (upstream once printed one line to stdout;
//! that was a bug). Only the modes without a child write to stdout what
//! they were asked for: `--help` and `--version`, the `--status` view, and
//! the manifests of `kubexit inject`.
//!
//! Two formats, chosen with `KUBEXIT_LOG_FORMAT`:
//!
//! * `text` keeps upstream's wording (`Name: app`, `New death: db`,
//!   `Terminating child process...`) because people grep for it. Errors are
//!   prefixed `Error: ` and warnings `Warning: `, as upstream prints errors;
//!   `KUBEXIT_LOG_TIMESTAMPS=true` starts each line with an RFC 3339 time.
//! * `json` writes one object per line for log pipelines: `time`, `level`,
//!   `name` (KUBEXIT_NAME, or `webhook`), `message`, and the event's fields
//!   (`dependency`, `signal`, `probe`, `status`…).
//!
//! Call sites use `tracing`'s macros with structured fields beside the
//! message, so both formats come from the same events. The subscriber is
//! deliberately tiny: kubexit makes no spans (libraries' are ignored), and
//! each line is written in one `write_all` under stderr's lock, so
//! kubexit's own lines never interleave mid-line, whatever thread logs; a
//! few lines logged together ([`together`]: the configuration's summary at
//! start-up) go out in one. Against the child, which shares stderr, one
//! write is whole only up to the pipe's atomic size (`PIPE_BUF`, 4 KiB on
//! Linux): a longer line may be split by one of the child's writes. When stderr's reader goes away (a
//! log pipe closed, `| head`), the log falls silent: kubexit and its child
//! go on.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::config::{Log, LogFormat};
use crate::json::Quoted;

/// Installs the stderr subscriber for the whole process; `name` is the
/// process's name as given (for the `name` field of JSON lines). Calling it
/// twice keeps the first.
pub fn init(log: &Log, name: Option<String>) {
    let _ = tracing::subscriber::set_global_default(StderrLog {
        max_level: log.level,
        format: log.format,
        timestamps: log.timestamps,
        name,
    });
}

/// Runs `log`, and writes the lines it logs (on this thread) in one `write`
/// at its end, rather than one each.
pub fn together(log: impl FnOnce()) {
    HELD.with(|held| *held.borrow_mut() = Some(String::new()));
    log();
    if let Some(lines) = HELD.with(|held| held.borrow_mut().take()) {
        write_out(&lines);
    }
}

thread_local! {
    /// Lines held for one write, inside [`together`].
    static HELD: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Writes `lines` to stderr in one call, unless its reader is gone.
fn write_out(lines: &str) {
    // A closed stderr must not take the supervisor down with it, nor cost
    // it anything more: once its reader is gone, nothing more is written
    // (each write would only raise another SIGPIPE).
    if STDERR_GONE.load(Ordering::Relaxed) {
        return;
    }
    if let Err(err) = std::io::stderr().lock().write_all(lines.as_bytes())
        && err.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDERR_GONE.store(true, Ordering::Relaxed);
    }
}

/// Set once a write to stderr found its reader gone.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

struct StderrLog {
    max_level: Level,
    format: LogFormat,
    timestamps: bool,
    name: Option<String>,
}

/// The message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others.push((field.name(), format!("{value:?}")));
        }
    }
}

impl StderrLog {
    fn text_line(&self, level: Level, fields: &Fields) -> String {
        let mut line = String::with_capacity(fields.message.len() + 48);
        if self.timestamps {
            let _ = write!(line, "{} ", jiff::Timestamp::now());
        }
        line.push_str(match level {
            Level::ERROR => "Error: ",
            Level::WARN => "Warning: ",
            _ => "",
        });
        line.push_str(&fields.message);
        line.push('\n');
        line
    }

    fn json_line(&self, level: Level, fields: &Fields) -> String {
        let mut line = String::with_capacity(fields.message.len() + 96);
        let time = jiff::Timestamp::now().to_string();
        let level = level.as_str().to_ascii_lowercase();
        let _ = write!(
            line,
            "{{\"time\":{},\"level\":{}",
            Quoted(&time),
            Quoted(&level)
        );
        if let Some(name) = &self.name {
            let _ = write!(line, ",\"name\":{}", Quoted(name));
        }
        let _ = write!(line, ",\"message\":{}", Quoted(&fields.message));
        for (key, value) in &fields.others {
            let _ = write!(line, ",{}:{}", Quoted(key), Quoted(value));
        }
        line.push_str("}\n");
        line
    }
}

impl Subscriber for StderrLog {
    /// kubexit's own events at the chosen level. Libraries' events (the
    /// Kubernetes client's, say) only at `debug` and `trace`: kubexit says
    /// what went wrong in its own words, once.
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = *metadata.level();
        level <= self.max_level
            && (metadata.target().starts_with("kubexit") || self.max_level >= Level::DEBUG)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = *event.metadata().level();
        let line = match self.format {
            LogFormat::Text => self.text_line(level, &fields),
            LogFormat::Json => self.json_line(level, &fields),
        };
        let held = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some(lines) => {
                lines.push_str(&line);
                true
            }
            None => false,
        });
        if !held {
            write_out(&line);
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
