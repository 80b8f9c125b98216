//! Authentication as registries ask for it: a request is sent with what is
//! known (nothing, or an authorization kept from before), and a `401` with
//! a `WWW-Authenticate` challenge is answered once per lookup. To `Bearer
//! realm=...,service=...,scope=...` (Docker Hub, GHCR, Harbor, a
//! distribution registry with token auth) the token service is asked for a
//! pull token, with the credentials in basic auth when there are any, and
//! anonymously when not; to `Basic` (a registry with htpasswd) the
//! credentials themselves are sent. Whatever was obtained is kept for the
//! repository and those credentials (tokens for as long as they last, at
//! most five minutes), so that the next lookup skips the challenge.
//!
//! A second `401`, or a token service that refuses, is the registry's
//! answer: the refusal names the credentials that were tried and where
//! they came from, or where none were found, and what could not be used
//! (a credential helper).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;

use super::cache::Bounded;
use super::credentials::{Credential, Found};
use super::error::{Answer, Failure, message_of};
use super::transport::{Incoming, Outgoing, Transport, Url};

/// The longest a kept authorization is used.
const MOST_KEPT: Duration = Duration::from_secs(300);
/// How long a token lasts when its service does not say (the spec's
/// default).
const TOKEN_DEFAULT: Duration = Duration::from_secs(60);
/// The most a token service's answer may weigh.
const TOKEN_LIMIT: usize = 1 << 20;

/// Who reads what: a registry, a repository, and the credentials (0 for
/// none, else their fingerprint). Everything cached is kept per access, so
/// that no caller is answered with what another's credentials read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    pub registry: String,
    pub repository: String,
    pub who: u64,
}

pub type Authorizations = Mutex<Bounded<Access, (String, Instant)>>;

/// The requests of one lookup in one repository.
pub struct Session<'a> {
    pub transport: &'a Transport,
    pub kept: &'a Authorizations,
    pub access: Access,
    pub found: &'a Found<'a>,
    pub searched: &'a [String],
    /// `https://HOST[:PORT]` of the registry's API.
    pub base: Url,
    pub deadline: Instant,
    authorization: Mutex<Option<String>>,
    /// Whether a challenge has been answered in this lookup; held while
    /// one is.
    challenged: tokio::sync::Mutex<bool>,
}

impl<'a> Session<'a> {
    pub fn new(
        transport: &'a Transport,
        kept: &'a Authorizations,
        access: Access,
        found: &'a Found<'a>,
        searched: &'a [String],
        base: Url,
        deadline: Instant,
    ) -> Session<'a> {
        let now = Instant::now();
        let authorization = lock(kept)
            .get(&access)
            .filter(|(_, until)| now < *until)
            .map(|(value, _)| value.clone());
        Session {
            transport,
            kept,
            access,
            found,
            searched,
            base,
            deadline,
            authorization: Mutex::new(authorization),
            challenged: tokio::sync::Mutex::new(false),
        }
    }

    fn credential(&self) -> Option<&'a Credential> {
        self.found.credential.map(|(c, _)| c)
    }

    /// `method` on `path` of the registry, answering one challenge; the
    /// answer whatever its status.
    pub async fn get(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        limit: usize,
    ) -> Result<Incoming, Failure> {
        let url = Url {
            path: path.to_owned(),
            ..self.base.clone()
        };
        loop {
            let sent = lock(&self.authorization).clone();
            let out = Outgoing {
                method: method.clone(),
                url: url.clone(),
                accept,
                authorization: sent.as_deref(),
                limit,
            };
            let answer = self.transport.exchange(&out, self.deadline).await?;
            if answer.status == 401 {
                // One challenge per lookup, answered by the first request
                // refused; one refused beside it waits, then goes again
                // with what the first obtained. A 401 after that is the
                // answer.
                let mut challenged = self.challenged.lock().await;
                if *lock(&self.authorization) != sent {
                    continue;
                }
                if !*challenged {
                    *challenged = true;
                    if self.answer_challenge(&answer).await? {
                        continue;
                    }
                }
            }
            return Ok(answer);
        }
    }

    /// The answer if it is a success, else the refusal it says.
    pub fn check(&self, answer: Incoming) -> Result<Incoming, Failure> {
        match answer.status {
            200..=299 => Ok(answer),
            401 => Err(Failure::Unauthorized {
                answer: said(&answer),
                why: self.why_unauthorized(),
            }),
            403 => Err(Failure::Denied {
                answer: said(&answer),
            }),
            404 => Err(Failure::NotFound {
                answer: said(&answer),
            }),
            _ => Err(Failure::Answered {
                answer: said(&answer),
            }),
        }
    }

    fn why_unauthorized(&self) -> String {
        let registry = &self.access.registry;
        let mut why = match self.found.credential {
            Some((credential, origin)) => format!(
                "the credentials of user {} for {registry} from {origin} were refused, or do not \
                 reach {}",
                credential.username(),
                self.access.repository
            ),
            None if self.searched.is_empty() => format!(
                "the registry asks for credentials, and none were given for {registry}; a \
                 registry answers so for an image that does not exist, too"
            ),
            None => format!(
                "the registry asks for credentials, and none for {registry} were found (looked \
                 in: {}); a registry answers so for an image that does not exist, too",
                self.searched.join(", ")
            ),
        };
        for note in &self.found.notes {
            why.push_str("; ");
            why.push_str(note);
        }
        why
    }

    /// Obtains what `answer`'s challenge asks for; `false` when there is
    /// nothing to answer it with.
    async fn answer_challenge(&self, answer: &Incoming) -> Result<bool, Failure> {
        let challenges: Vec<Challenge> = answer
            .headers
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        let (authorization, lasts) =
            if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                self.token(bearer).await?
            } else if challenges.iter().any(|c| c.scheme == "basic")
                && let Some(credential) = self.credential()
            {
                (credential.basic(), MOST_KEPT)
            } else {
                // Nothing to answer with: the 401 is the answer.
                return Ok(false);
            };
        *lock(&self.authorization) = Some(authorization.clone());
        lock(self.kept).insert(self.access.clone(), (authorization, Instant::now() + lasts));
        Ok(true)
    }

    /// A token from the service the challenge names, and how long to keep
    /// it.
    async fn token(&self, challenge: &Challenge) -> Result<(String, Duration), Failure> {
        let bad = |why: &str| Failure::Content {
            what: format!("the challenge of {}", self.base.authority),
            why: why.to_owned(),
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| bad("it names no realm"))?;
        let mut url = Url::parse(realm).map_err(|e| bad(&format!("its realm {e}")))?;
        let scope = challenge
            .param("scope")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("repository:{}:pull", self.access.repository));
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(("service", service.to_owned()));
        }
        query.push(("scope", scope));
        if let Some(credential) = self.credential() {
            query.push(("account", credential.username().to_owned()));
        }
        let encoded: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encoded(v)))
            .collect();
        url.path
            .push(if url.path.contains('?') { '&' } else { '?' });
        url.path.push_str(&encoded.join("&"));
        let basic = self.credential().map(Credential::basic);
        let out = Outgoing {
            method: Method::GET,
            url,
            accept: Some("application/json"),
            authorization: basic.as_deref(),
            limit: TOKEN_LIMIT,
        };
        let answer = self.transport.exchange(&out, self.deadline).await?;
        match answer.status {
            200..=299 => {}
            401 | 403 => {
                return Err(Failure::Unauthorized {
                    answer: said(&answer),
                    why: self.why_unauthorized(),
                });
            }
            _ => {
                return Err(Failure::Answered {
                    answer: said(&answer),
                });
            }
        }
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| Failure::Content {
            what: format!("the answer of the token service {}", answer.host),
            why: format!("it is not JSON: {e}"),
        })?;
        let token = ["token", "access_token"]
            .iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Content {
                what: format!("the answer of the token service {}", answer.host),
                why: "it holds no token".into(),
            })?;
        let lasts = value
            .get("expires_in")
            .and_then(Value::as_u64)
            .map(Duration::from_secs)
            .unwrap_or(TOKEN_DEFAULT);
        // Kept a little less long than it lasts, so that it is not sent
        // as it expires.
        let kept = lasts.min(MOST_KEPT).mul_f32(0.9);
        Ok((format!("Bearer {token}"), kept))
    }
}

/// An answer as refusals say it.
fn said(answer: &Incoming) -> Answer {
    Answer {
        host: answer.host.clone(),
        request: answer.request.clone(),
        status: answer.status,
        message: message_of(&answer.body),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, PartialEq)]
pub struct Challenge {
    /// Lowercased: `bearer`, `basic`.
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The challenges of one header value (RFC 7235: `scheme k=v, k="v",
/// scheme2 ...`).
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let chars: Vec<char> = value.chars().collect();
    let mut at = 0;
    let mut challenges: Vec<Challenge> = Vec::new();
    let is_token = |c: char| !c.is_whitespace() && !matches!(c, ',' | '=' | '"');
    let skip = |at: &mut usize, set: &[char]| {
        while *at < chars.len() && (chars[*at].is_whitespace() || set.contains(&chars[*at])) {
            *at += 1;
        }
    };
    loop {
        skip(&mut at, &[',']);
        if at >= chars.len() {
            break;
        }
        let start = at;
        while at < chars.len() && is_token(chars[at]) {
            at += 1;
        }
        if at == start {
            // Not a token: skip the character.
            at += 1;
            continue;
        }
        let word: String = chars[start..at].iter().collect();
        let mut look = at;
        skip(&mut look, &[]);
        if look < chars.len() && chars[look] == '=' && !challenges.is_empty() {
            // A parameter of the challenge being read.
            at = look + 1;
            skip(&mut at, &[]);
            let value = if at < chars.len() && chars[at] == '"' {
                at += 1;
                let mut text = String::new();
                while at < chars.len() && chars[at] != '"' {
                    if chars[at] == '\\' && at + 1 < chars.len() {
                        at += 1;
                    }
                    text.push(chars[at]);
                    at += 1;
                }
                at += 1;
                text
            } else {
                let begin = at;
                while at < chars.len() && chars[at] != ',' && !chars[at].is_whitespace() {
                    at += 1;
                }
                chars[begin..at].iter().collect()
            };
            if let Some(current) = challenges.last_mut() {
                current.params.push((word.to_ascii_lowercase(), value));
            }
        } else {
            challenges.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: Vec::new(),
            });
        }
    }
    challenges
}

fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_gives_its_realm_service_and_scope() {
        let challenges = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(challenges.len(), 1);
        let bearer = &challenges[0];
        assert_eq!(bearer.scheme, "bearer");
        assert_eq!(bearer.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(bearer.param("service"), Some("registry.docker.io"));
        assert_eq!(
            bearer.param("scope"),
            Some("repository:library/busybox:pull")
        );
    }

    #[test]
    fn several_challenges_in_one_header_and_unquoted_values_are_read() {
        let challenges =
            parse_challenges(r#"Basic realm="a \"b\"", Bearer realm=https://t.io/token, error=x"#);
        assert_eq!(challenges.len(), 2, "{challenges:?}");
        assert_eq!(challenges[0].param("realm"), Some(r#"a "b""#));
        assert_eq!(challenges[1].scheme, "bearer");
        assert_eq!(challenges[1].param("realm"), Some("https://t.io/token"));
        assert_eq!(challenges[1].param("error"), Some("x"));
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            percent_encoded("repository:a/b:pull push"),
            "repository%3Aa%2Fb%3Apull%20push"
        );
    }
}
