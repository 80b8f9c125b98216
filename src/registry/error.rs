//! Why an image's ENTRYPOINT and CMD could not be read, said so that the
//! person who reads it knows the image, what the registry answered, and the
//! way out.

use std::fmt;
use std::time::Duration;

use super::reference::Platform;

/// A refused resolution: the image, what went wrong, and the container it
/// was for once the caller says ([`RegistryError::for_container`]).
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "cannot read the ENTRYPOINT and CMD of image {image} from its registry: {failure}; {}{}",
    if matches!(.failure, Failure::Disagree { .. }) { "or " } else { "" },
    way_out(.container.as_deref())
)]
pub struct RegistryError {
    pub image: String,
    pub container: Option<String>,
    pub failure: Failure,
}

impl RegistryError {
    pub(crate) fn new(image: &str, failure: Failure) -> RegistryError {
        RegistryError {
            image: image.to_owned(),
            container: None,
            failure,
        }
    }

    /// A lookup refused before any request: the platform the pod names
    /// (`why`) cannot be read.
    pub fn bad_platform(image: &str, why: String) -> RegistryError {
        RegistryError::new(image, Failure::Platform(why))
    }

    /// The same refusal, for the container `name`: the way out names its
    /// annotation.
    pub fn for_container(mut self, name: &str) -> RegistryError {
        self.container = Some(name.to_owned());
        self
    }
}

fn way_out(container: Option<&str>) -> String {
    match container {
        Some(name) => format!(
            "give container {name} a command, or its image's entrypoint in the annotation \
             kubexit.io/entrypoint.{name}"
        ),
        None => "give the container a command, or its image's entrypoint in the annotation \
                 kubexit.io/entrypoint.NAME"
            .to_owned(),
    }
}

/// What went wrong.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Failure {
    #[error("the reference {0}")]
    Reference(String),
    #[error("{answer}: there is no such image")]
    NotFound { answer: Answer },
    #[error("{answer}: {why}")]
    Unauthorized { answer: Answer, why: String },
    #[error("{answer}: access is denied")]
    Denied { answer: Answer },
    #[error("{answer}")]
    Answered { answer: Answer },
    #[error("cannot reach {registry}: {why}")]
    Unreachable { registry: String, why: String },
    #[error(
        "{registry} did not answer {request} {}",
        if *.by_budget {
            format!("before the lookup's budget of {} ran out", go(*.budget))
        } else {
            format!("within {}, the timeout of one request", go(*.per_call))
        }
    )]
    Timeout {
        registry: String,
        request: String,
        per_call: Duration,
        budget: Duration,
        /// Whether what was left of the budget ended the request, rather
        /// than the timeout of one request.
        by_budget: bool,
    },
    #[error("the lookup took more than its budget of {}", go(*.budget))]
    Budget { budget: Duration },
    #[error("{what}: {why}")]
    Content { what: String, why: String },
    #[error(
        "the image is for {}, and not for the platforms the pod may run on ({})",
        list(.offered), list(.asked)
    )]
    NoPlatform {
        asked: Vec<Platform>,
        offered: Vec<Platform>,
    },
    #[error(
        "its platforms disagree on what to run: {}; keep the pod on one of them with a \
         kubernetes.io/arch node selector",
        .answers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Disagree { answers: Vec<PlatformAnswer> },
    #[error("the pod's kubernetes.io/arch names {0}")]
    Platform(String),
}

fn go(duration: Duration) -> String {
    crate::duration::format_go(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX))
}

fn list(platforms: &[Platform]) -> String {
    if platforms.is_empty() {
        return "no platform".to_owned();
    }
    platforms
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one platform of an index runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformAnswer {
    pub platform: Platform,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl fmt::Display for PlatformAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has ENTRYPOINT {} and CMD {}",
            self.platform,
            words(&self.entrypoint),
            words(&self.cmd)
        )
    }
}

/// Words as a JSON list, as a Dockerfile writes them.
fn words(words: &[String]) -> String {
    serde_json::Value::from(words.to_vec()).to_string()
}

/// One answer of a registry (or its token service), for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Who answered: `HOST[:PORT]`.
    pub host: String,
    /// What was asked: `GET /v2/library/busybox/manifests/latest`.
    pub request: String,
    pub status: u16,
    /// The message of its error JSON (`CODE: message`), or the start of
    /// its text.
    pub message: Option<String>,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = hyper::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        write!(
            f,
            "{} answered {}{reason} to {}",
            self.host, self.status, self.request
        )?;
        if let Some(message) = &self.message {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

/// The message of a registry's error body: the `errors` of the
/// distribution spec (`CODE: message`), a token service's `details` or
/// `error`, or the first line of plain text.
pub(crate) fn message_of(body: &[u8]) -> Option<String> {
    const MOST: usize = 300;
    let shorten = |text: &str| {
        let text = text.trim();
        match text.char_indices().nth(MOST) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_owned(),
        }
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(errors) = value.get("errors").and_then(|e| e.as_array()) {
            let said: Vec<String> = errors
                .iter()
                .map(|e| {
                    let field = |name| e.get(name).and_then(|v| v.as_str()).unwrap_or_default();
                    match (field("code"), field("message")) {
                        ("", message) => message.to_owned(),
                        (code, "") => code.to_owned(),
                        (code, message) => format!("{code}: {message}"),
                    }
                })
                .filter(|s| !s.is_empty())
                .collect();
            if !said.is_empty() {
                return Some(shorten(&said.join("; ")));
            }
        }
        for field in ["details", "error_description", "error", "message"] {
            if let Some(text) = value.get(field).and_then(|v| v.as_str()) {
                return Some(shorten(text));
            }
        }
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.starts_with('<') {
        // An HTML page says nothing a line of it would.
        return None;
    }
    Some(shorten(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_image_the_answer_and_the_annotation_of_the_container() {
        let err = RegistryError::new(
            "ghcr.io/a/b:v1",
            Failure::NotFound {
                answer: Answer {
                    host: "ghcr.io".into(),
                    request: "HEAD /v2/a/b/manifests/v1".into(),
                    status: 404,
                    message: Some("MANIFEST_UNKNOWN: manifest unknown".into()),
                },
            },
        );
        let text = err.clone().for_container("app").to_string();
        for said in [
            "image ghcr.io/a/b:v1",
            "ghcr.io answered 404 Not Found to HEAD /v2/a/b/manifests/v1",
            "MANIFEST_UNKNOWN: manifest unknown",
            "kubexit.io/entrypoint.app",
        ] {
            assert!(text.contains(said), "{said:?} in {text}");
        }
        assert!(err.to_string().contains("kubexit.io/entrypoint.NAME"));
    }

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            message_of(br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#),
            Some("UNAUTHORIZED: authentication required".into())
        );
        assert_eq!(
            message_of(br#"{"details":"incorrect username or password"}"#),
            Some("incorrect username or password".into())
        );
        assert_eq!(
            message_of(b"\n  upstream timed out\nmore"),
            Some("upstream timed out".into())
        );
        assert_eq!(message_of(b"<html><body>502</body></html>"), None);
        assert_eq!(message_of(b""), None);
        let long = "x".repeat(1000);
        assert!(message_of(long.as_bytes()).unwrap().len() < 310);
    }

    #[test]
    fn disagreeing_platforms_are_each_named_with_what_they_run() {
        let answer = |arch: &str, entrypoint: &[&str]| PlatformAnswer {
            platform: Platform::linux(arch),
            entrypoint: entrypoint.iter().map(|w| w.to_string()).collect(),
            cmd: vec![],
        };
        let text = Failure::Disagree {
            answers: vec![answer("amd64", &["/app"]), answer("arm64", &["/app-arm"])],
        }
        .to_string();
        assert!(
            text.contains(r#"linux/amd64 has ENTRYPOINT ["/app"] and CMD []"#)
                && text.contains(r#"linux/arm64 has ENTRYPOINT ["/app-arm"]"#),
            "{text}"
        );
    }
}
