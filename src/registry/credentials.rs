//! Registry credentials, read where podman, skopeo and buildah read them,
//! or from a Kubernetes pull secret.
//!
//! [`Keyring::from_auth_files`] reads, in this order, as containers/image
//! does: only `REGISTRY_AUTH_FILE` when it is set (and then it must exist);
//! otherwise `$XDG_RUNTIME_DIR/containers/auth.json` (without
//! `XDG_RUNTIME_DIR`, `/run/containers/UID/auth.json`),
//! `$XDG_CONFIG_HOME/containers/auth.json` (`~/.config/...`),
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, and the legacy
//! `~/.dockercfg`; files that do not exist are passed over, a file that
//! exists and cannot be read is an error. [`Keyring::from_docker_config`]
//! reads the `.dockerconfigjson` (or legacy `.dockercfg`) of a Secret.
//!
//! Each file's `auths` maps a registry (`docker.io`,
//! `https://index.docker.io/v1/`, `registry.example.com/team` for one
//! namespace, `*.example.com` for its subdomains, as the kubelet matches)
//! to `auth` (base64 of `USER:PASSWORD`) or `username` and `password`.
//! The first source with credentials for a registry gives them, and within
//! one source the most specific key. Credential helpers (`credsStore`,
//! `credHelpers`) and identity tokens are never run or used: where one
//! would have given the credentials, the refusal that follows says so, and
//! how to put them in a file instead.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;

/// Why credentials cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the registry credentials in {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the registry credentials in {origin} cannot be read: {why} (the format is \
         {{\"auths\": {{\"REGISTRY\": {{\"auth\": \"BASE64 OF USER:PASSWORD\"}}}}}}, as podman login writes it)"
    )]
    Malformed { origin: String, why: String },
}

/// A user name and password for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    username: String,
    password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .finish()
    }
}

impl Credential {
    pub fn new(username: &str, password: &str) -> Credential {
        Credential {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// The value of an `Authorization` header of the basic scheme.
    pub(crate) fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// Tells credentials apart without keeping them (cache keys).
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut material = Vec::with_capacity(self.username.len() + self.password.len() + 1);
        material.extend_from_slice(self.username.as_bytes());
        material.push(0);
        material.extend_from_slice(self.password.as_bytes());
        let hash = ring::digest::digest(&ring::digest::SHA256, &material);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_ref()[..8]);
        // Never 0, which stands for no credentials.
        u64::from_le_bytes(first) | 1
    }
}

/// Credentials by registry, from one or more sources, searched in order.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    sources: Vec<Source>,
    /// Where credentials were looked for, for the refusals to say.
    searched: Vec<String>,
}

#[derive(Clone, Debug)]
struct Source {
    origin: String,
    entries: Vec<(Key, Entry)>,
    store: Option<String>,
    helpers: Vec<(Key, String)>,
}

/// How a source's JSON holds its map of registries.
#[derive(Clone, Copy)]
enum Format {
    /// Under `auths` (auth.json, config.json, `.dockerconfigjson`).
    Modern,
    /// The map alone (`~/.dockercfg`).
    Legacy,
    /// Under `auths` if there is one, else alone (a pull secret).
    Either,
}

#[derive(Clone, Debug)]
enum Entry {
    Usable(Credential),
    /// An entry kubexit cannot use, and why.
    Unusable(String),
}

/// A registry key of an auth file: host (maybe `*.` and a domain, maybe a
/// port) and an optional repository path prefix.
#[derive(Clone, Debug, PartialEq)]
struct Key {
    host: String,
    path: String,
}

impl Key {
    fn parse(raw: &str) -> Key {
        let raw = raw.trim();
        let raw = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .unwrap_or(raw);
        let raw = raw.trim_end_matches('/');
        let (host, path) = raw.split_once('/').unwrap_or((raw, ""));
        // docker login's `https://index.docker.io/v1/` and the like.
        let path = match path {
            "v1" | "v2" => "",
            p => p,
        };
        let host = host.to_ascii_lowercase();
        let host = match host.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                super::reference::DOCKER_HUB.to_owned()
            }
            _ => host,
        };
        Key {
            host,
            path: path.trim_matches('/').to_owned(),
        }
    }

    /// How specifically this key names `repository` of `registry`, if it
    /// names it at all: the longer the path, the more; an exact host more
    /// than a wildcard.
    fn specificity(&self, registry: &str, repository: &str) -> Option<usize> {
        let exact = self.host == registry;
        let wildcard = !exact
            && self.host.strip_prefix("*.").is_some_and(|domain| {
                registry
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == domain)
            });
        if !exact && !wildcard {
            return None;
        }
        let path_ok = self.path.is_empty()
            || repository == self.path
            || repository
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        path_ok.then_some((self.path.len() + 1) * 2 + usize::from(exact))
    }
}

/// What a keyring holds for one image.
#[derive(Debug, Default)]
pub struct Found<'a> {
    /// The credentials to use, and where they come from.
    pub credential: Option<(&'a Credential, &'a str)>,
    /// What could not be used on the way (helpers, unusable entries), for
    /// a refusal to say.
    pub notes: Vec<String>,
}

impl Keyring {
    /// No credentials: every registry is asked anonymously.
    pub fn anonymous() -> Keyring {
        Keyring::default()
    }

    /// The credentials podman, skopeo and buildah would use, from the
    /// process's environment.
    pub fn from_auth_files() -> Result<Keyring, CredentialsError> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { nix::libc::getuid() };
        Keyring::from_auth_files_with(|name| std::env::var_os(name), uid)
    }

    /// [`Keyring::from_auth_files`] with the environment given by `env`
    /// and the user by `uid`.
    pub fn from_auth_files_with(
        env: impl Fn(&str) -> Option<OsString>,
        uid: u32,
    ) -> Result<Keyring, CredentialsError> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut keyring = Keyring::default();
        if let Some(file) = var("REGISTRY_AUTH_FILE") {
            let bytes = std::fs::read(&file).map_err(|source| CredentialsError::Read {
                path: file.clone(),
                source,
            })?;
            let origin = format!("REGISTRY_AUTH_FILE={}", file.display());
            keyring.add(&bytes, &origin, Format::Modern)?;
            return Ok(keyring);
        }
        let home = var("HOME");
        let under_home = |path: &str| home.as_ref().map(|h| h.join(path));
        let runtime = var("XDG_RUNTIME_DIR")
            .map(|dir| dir.join("containers/auth.json"))
            .unwrap_or_else(|| PathBuf::from(format!("/run/containers/{uid}/auth.json")));
        let config = var("XDG_CONFIG_HOME").or_else(|| under_home(".config"));
        let docker = var("DOCKER_CONFIG")
            .map(|d| d.join("config.json"))
            .or_else(|| under_home(".docker/config.json"));
        let files = [
            (Some(runtime), Format::Modern),
            (
                config.map(|c| c.join("containers/auth.json")),
                Format::Modern,
            ),
            (docker, Format::Modern),
            (under_home(".dockercfg"), Format::Legacy),
        ];
        for (path, format) in files {
            let Some(path) = path else { continue };
            match std::fs::read(&path) {
                Ok(bytes) => keyring.add(&bytes, &path.display().to_string(), format)?,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    keyring.searched.push(path.display().to_string());
                }
                Err(source) => return Err(CredentialsError::Read { path, source }),
            }
        }
        Ok(keyring)
    }

    /// The credentials of a Kubernetes pull secret: the bytes of its
    /// `.dockerconfigjson` (`{"auths": {...}}`) or legacy `.dockercfg`
    /// (the map alone); `origin` names it in messages, such as
    /// `imagePullSecret default/regcred`.
    pub fn from_docker_config(json: &[u8], origin: &str) -> Result<Keyring, CredentialsError> {
        let mut keyring = Keyring::default();
        keyring.add(json, origin, Format::Either)?;
        Ok(keyring)
    }

    /// Searches `other` after this keyring's own sources (the kubelet
    /// tries a pod's pull secrets in order).
    pub fn extend(&mut self, other: Keyring) {
        self.sources.extend(other.sources);
        self.searched.extend(other.searched);
    }

    /// One source's JSON.
    fn add(&mut self, json: &[u8], origin: &str, format: Format) -> Result<(), CredentialsError> {
        let malformed = |why: String| CredentialsError::Malformed {
            origin: origin.to_owned(),
            why,
        };
        self.searched.push(origin.to_owned());
        let value: Value = serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| malformed("it is not a JSON object".into()))?;
        let legacy = match format {
            Format::Modern => false,
            Format::Legacy => true,
            Format::Either => !object.contains_key("auths"),
        };
        let auths = if legacy {
            Some(object)
        } else {
            match object.get("auths") {
                Some(Value::Object(auths)) => Some(auths),
                None | Some(Value::Null) => None,
                Some(_) => return Err(malformed("`auths` is not an object".into())),
            }
        };
        let mut entries = Vec::new();
        for (key, entry) in auths.into_iter().flatten() {
            if !entry.is_object() {
                return Err(malformed(format!("the entry of {key} is not an object")));
            }
            entries.push((Key::parse(key), read_entry(key, entry).map_err(malformed)?));
        }
        let store = object
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let helpers = match object.get("credHelpers") {
            Some(Value::Object(helpers)) => helpers
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|h| (Key::parse(k), h.to_owned())))
                .collect(),
            _ => Vec::new(),
        };
        self.sources.push(Source {
            origin: origin.to_owned(),
            entries,
            store,
            helpers,
        });
        Ok(())
    }

    /// The credentials for `repository` of `registry`.
    pub fn find(&self, registry: &str, repository: &str) -> Found<'_> {
        let mut found = Found::default();
        for source in &self.sources {
            if let Some((_, helper)) = source
                .helpers
                .iter()
                .find(|(key, _)| key.specificity(registry, repository).is_some())
            {
                found
                    .notes
                    .push(helper_note(&source.origin, registry, helper));
                continue;
            }
            let best = source
                .entries
                .iter()
                .filter_map(|(key, entry)| {
                    key.specificity(registry, repository).map(|s| (s, entry))
                })
                .max_by_key(|(s, _)| *s);
            match best {
                Some((_, Entry::Usable(credential))) => {
                    found.credential = Some((credential, &source.origin));
                    return found;
                }
                Some((_, Entry::Unusable(why))) => match &source.store {
                    Some(store) => found
                        .notes
                        .push(helper_note(&source.origin, registry, store)),
                    None => found.notes.push(format!(
                        "the entry for {registry} in {} holds {why}",
                        source.origin
                    )),
                },
                None => {
                    if let Some(store) = &source.store {
                        found
                            .notes
                            .push(helper_note(&source.origin, registry, store));
                    }
                }
            }
        }
        found
    }

    /// Where credentials were looked for.
    pub fn searched(&self) -> &[String] {
        &self.searched
    }
}

fn helper_note(origin: &str, registry: &str, helper: &str) -> String {
    format!(
        "{origin} keeps the credentials for {registry} in the credential helper \
         docker-credential-{helper}, which kubexit does not run: put them in an auth file \
         (podman login --authfile FILE {registry}, then REGISTRY_AUTH_FILE=FILE) or a pull secret"
    )
}

fn read_entry(key: &str, entry: &Value) -> Result<Entry, String> {
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(auth) = field("auth") {
        let engine = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = engine
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        return match decoded.as_deref().and_then(|pair| pair.split_once(':')) {
            Some((user, password)) => Ok(Entry::Usable(Credential::new(user, password))),
            None => Err(format!("the auth of {key} is not base64 of USER:PASSWORD")),
        };
    }
    if let (Some(user), Some(password)) = (field("username"), field("password")) {
        return Ok(Entry::Usable(Credential::new(user, password)));
    }
    if field("identitytoken").is_some() {
        return Ok(Entry::Unusable(
            "an identity token (a browser login's), which kubexit does not use".into(),
        ));
    }
    if field("registrytoken").is_some() {
        return Ok(Entry::Unusable(
            "a registry token, which kubexit does not use".into(),
        ));
    }
    Ok(Entry::Unusable("no user name and password".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }

    fn user<'a>(found: &Found<'a>) -> Option<&'a str> {
        found.credential.map(|(c, _)| c.username())
    }

    #[test]
    fn an_auth_is_base64_of_user_and_password_and_username_password_work_too() {
        let json = format!(
            r#"{{"auths":{{"ghcr.io":{{"auth":"{}"}},
                "quay.io":{{"username":"q","password":"p:w"}}}}}}"#,
            auth("me", "pa:ss")
        );
        let keyring = Keyring::from_docker_config(json.as_bytes(), "test").unwrap();
        let found = keyring.find("ghcr.io", "a/b");
        let (credential, origin) = found.credential.unwrap();
        assert_eq!((credential.username(), origin), ("me", "test"));
        assert_eq!(credential.password, "pa:ss");
        assert_eq!(user(&keyring.find("quay.io", "x")), Some("q"));
        assert_eq!(user(&keyring.find("gcr.io", "x")), None);
    }

    #[test]
    fn docker_hub_is_found_under_its_old_names_and_the_most_specific_key_wins() {
        let json = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},
                "docker.io/team":{{"auth":"{}"}},
                "*.example.com":{{"auth":"{}"}}}}}}"#,
            auth("hub", "x"),
            auth("team", "x"),
            auth("wild", "x")
        );
        let keyring = Keyring::from_docker_config(json.as_bytes(), "test").unwrap();
        assert_eq!(
            user(&keyring.find("docker.io", "library/busybox")),
            Some("hub")
        );
        assert_eq!(user(&keyring.find("docker.io", "team/app")), Some("team"));
        assert_eq!(user(&keyring.find("docker.io", "teamx/app")), Some("hub"));
        assert_eq!(user(&keyring.find("r.example.com", "a")), Some("wild"));
        assert_eq!(user(&keyring.find("a.b.example.com", "a")), None);
        assert_eq!(user(&keyring.find("example.com", "a")), None);
    }

    #[test]
    fn a_legacy_dockercfg_is_the_map_alone() {
        let json = format!(
            r#"{{"registry.example.com":{{"auth":"{}"}}}}"#,
            auth("old", "x")
        );
        let keyring = Keyring::from_docker_config(json.as_bytes(), "secret").unwrap();
        assert_eq!(
            user(&keyring.find("registry.example.com", "a")),
            Some("old")
        );
    }

    #[test]
    fn helpers_and_identity_tokens_are_named_and_not_used() {
        let json = r#"{"auths":{"docker.io":{}, "quay.io":{"identitytoken":"t"}},
                       "credsStore":"desktop","credHelpers":{"gcr.io":"gcloud"}}"#;
        let keyring = Keyring::from_docker_config(json.as_bytes(), "config.json").unwrap();
        let hub = keyring.find("docker.io", "library/busybox");
        assert!(hub.credential.is_none());
        assert!(
            hub.notes[0].contains("docker-credential-desktop"),
            "{:?}",
            hub.notes
        );
        let gcr = keyring.find("gcr.io", "p/i");
        assert!(
            gcr.notes[0].contains("docker-credential-gcloud"),
            "{:?}",
            gcr.notes
        );
        let quay = keyring.find("quay.io", "a");
        assert!(
            quay.notes[0].contains("docker-credential-desktop"),
            "{:?}",
            quay.notes
        );
        let json = r#"{"auths":{"quay.io":{"identitytoken":"t"}}}"#;
        let keyring = Keyring::from_docker_config(json.as_bytes(), "config.json").unwrap();
        let quay = keyring.find("quay.io", "a");
        assert!(quay.notes[0].contains("identity token"), "{:?}", quay.notes);
    }

    #[test]
    fn malformed_credentials_are_refused_with_where_they_are() {
        for json in [
            "nope",
            "[]",
            r#"{"auths":[]}"#,
            r#"{"auths":{"a.io":{"auth":"!!!"}}}"#,
            r#"{"auths":{"a.io":"x"}}"#,
        ] {
            let err = Keyring::from_docker_config(json.as_bytes(), "secret default/x").unwrap_err();
            assert!(err.to_string().contains("secret default/x"), "{err}");
        }
    }

    #[test]
    fn auth_files_are_read_in_podmans_order_and_registry_auth_file_alone_when_set() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, who: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let json = format!(r#"{{"auths":{{"r.io":{{"auth":"{}"}}}}}}"#, auth(who, "x"));
            std::fs::write(&path, json).unwrap();
        };
        write("home/.docker/config.json", "docker");
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        let env = |extra: Vec<(&'static str, PathBuf)>| {
            let mut vars = vec![("HOME", home.clone()), ("XDG_RUNTIME_DIR", runtime.clone())];
            vars.extend(extra);
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let keyring = Keyring::from_auth_files_with(env(vec![]), 0).unwrap();
        assert_eq!(user(&keyring.find("r.io", "a")), Some("docker"));
        write("run/containers/auth.json", "runtime");
        let keyring = Keyring::from_auth_files_with(env(vec![]), 0).unwrap();
        assert_eq!(user(&keyring.find("r.io", "a")), Some("runtime"));
        assert_eq!(keyring.searched().len(), 4, "{:?}", keyring.searched());
        write("elsewhere.json", "named");
        let named = dir.path().join("elsewhere.json");
        let keyring =
            Keyring::from_auth_files_with(env(vec![("REGISTRY_AUTH_FILE", named)]), 0).unwrap();
        assert_eq!(user(&keyring.find("r.io", "a")), Some("named"));
        let missing = dir.path().join("missing.json");
        let err = Keyring::from_auth_files_with(env(vec![("REGISTRY_AUTH_FILE", missing)]), 0)
            .unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
        let nothing = Keyring::from_auth_files_with(|_| None, 1000).unwrap();
        assert_eq!(nothing.searched(), ["/run/containers/1000/auth.json"]);
    }

    #[test]
    fn credentials_never_show_their_password() {
        let credential = Credential::new("me", "secret");
        assert!(!format!("{credential:?}").contains("secret"));
        assert_ne!(
            credential.fingerprint(),
            Credential::new("me", "other").fingerprint()
        );
    }
}
