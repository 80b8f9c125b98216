//! The registry client: an image's ENTRYPOINT and CMD, read from its
//! registry, fast, bounded, cached, and clear when it cannot.
//!
//! A container without `command` runs its image's ENTRYPOINT, which only
//! the image's registry knows. [`Resolver::resolve`] reads it the way the
//! kubelet's runtime would pull the image, through the OCI distribution
//! API, and promises this:
//!
//! - **What is read.** The reference is normalised as the runtime does
//!   (`busybox` is `docker.io/library/busybox:latest`; Docker Hub is asked
//!   at `registry-1.docker.io`; `reference`). A tag is resolved to a digest
//!   (`HEAD`, which Docker Hub does not count against its pull limit); the
//!   manifest of that digest is read, one of the four kinds of `manifest`
//!   (OCI image index, Docker manifest list, OCI or Docker schema 2
//!   manifest); from an index, the image of each platform asked for; from
//!   each image manifest, its config blob, and of it `config.Entrypoint`
//!   and `config.Cmd`. Every manifest and blob is checked against its
//!   digest (the sha256 of its bytes), so what is returned is what that
//!   digest names, whoever served it.
//! - **Platforms.** The caller says which platforms the pod may run on
//!   ([`Platform::defaults`] when it cannot say: linux/amd64 and
//!   linux/arm64). Of an index, the images of those platforms are read;
//!   those the index lacks are listed in [`Resolved::absent`] (the pod
//!   cannot be scheduled there anyway), and an index with none of them is
//!   refused. When the images read disagree on ENTRYPOINT or CMD, the
//!   lookup is refused with each platform and what it runs: wrapping one
//!   would run the wrong command on the other. A single image is for
//!   whatever platform it is for.
//! - **Authentication** (`auth`, `credentials`): anonymous, a bearer token
//!   from the registry's challenge (with or without credentials), or basic
//!   auth. Credentials come from the [`Keyring`] the resolver was made
//!   with (the auth files podman reads) or the one given to
//!   [`Resolver::resolve_with`] (a pod's pull secrets).
//! - **Trust** (`transport`): TLS against the system's CAs or
//!   `SSL_CERT_FILE`/`SSL_CERT_DIR`, and any CA files named in the
//!   settings; plain HTTP only to the registries named insecure.
//! - **Bounded.** Each request ends within [`Settings::per_call`], and the
//!   whole lookup within [`Settings::budget`], whatever the registry does:
//!   one that accepts connections and never answers costs the budget, no
//!   more. Bodies are bounded (manifests 4 MiB, configs 8 MiB).
//! - **Cached, and shared.** A tag's digest is kept for
//!   [`Settings::tag_lifetime`]; manifests and configs, named by their
//!   digest, for good; both bounded in entries, the one used longest ago
//!   forgotten first. Lookups of the same image that overlap in time wait
//!   for one another: a hundred pods of one Deployment admitted at once
//!   make one set of requests, and the first one's answer (or refusal) is
//!   theirs. Everything kept is kept per registry, repository and
//!   credentials, so no caller is answered with what another's credentials
//!   read.
//! - **Clear refusals** ([`RegistryError`]): the image, what the registry
//!   answered (status and the message of its error JSON) or why it could
//!   not be asked, and the way out, `kubexit.io/entrypoint.NAME`, with the
//!   container's name once the caller gives it
//!   ([`RegistryError::for_container`]).
//!
//! What it leaves to its callers: deciding when to look up (never for a
//! container with its own `command`), what to wrap (`command` = kubexit +
//! ENTRYPOINT, `args` = the container's own or CMD), which platforms a pod
//! may run on, and which pull secrets to read. It runs no credential
//! helper, follows no nested index, and reads no Docker schema 1 manifest.

mod auth;
mod cache;
mod credentials;
mod error;
mod manifest;
mod reference;
mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use tokio::sync::OnceCell;

pub use credentials::{Credential, CredentialsError, Keyring};
pub use error::{Answer, Failure, PlatformAnswer, RegistryError};
pub use reference::{Digest, Platform, Reference};
pub use transport::{SetupError, Trust};

use auth::{Access, Authorizations, Session};
use cache::Bounded;
use credentials::Found;
use manifest::{Entry, Manifest, RunSpec};
use transport::{Transport, Url};

/// The whole lookup's default budget: it fits in the webhook's
/// `timeoutSeconds` (5 s) with room for the rest of the review.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(3);
/// One request's default timeout.
pub const DEFAULT_PER_CALL: Duration = Duration::from_secs(2);
/// How long a tag's digest is kept by default.
pub const DEFAULT_TAG_LIFETIME: Duration = Duration::from_secs(60);
/// How many entries each cache holds by default.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// How a [`Resolver`] reaches registries.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The most one whole lookup may take.
    pub budget: Duration,
    /// The most one request (connection, request, whole answer) may take.
    pub per_call: Duration,
    /// Registries (`HOST[:PORT]`, as image references name them) spoken
    /// to over plain HTTP.
    pub insecure: Vec<String>,
    /// The CAs a registry's certificate must chain to.
    pub trust: Trust,
    /// How long a tag's digest is kept (0: asked every time).
    pub tag_lifetime: Duration,
    /// How many entries each cache holds.
    pub cache_entries: usize,
}

impl Default for Settings {
    /// The defaults above, with the trust of this process's environment.
    fn default() -> Settings {
        Settings {
            budget: DEFAULT_BUDGET,
            per_call: DEFAULT_PER_CALL,
            insecure: Vec::new(),
            trust: Trust::from_env(),
            tag_lifetime: DEFAULT_TAG_LIFETIME,
            cache_entries: DEFAULT_CACHE_ENTRIES,
        }
    }
}

/// What an image runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The image, normalised: `docker.io/library/busybox:1.36`.
    pub image: String,
    /// What the reference resolved to: the digest of its index, or of its
    /// manifest when it has no index (`image@digest` pins it).
    pub digest: Digest,
    /// `config.Entrypoint` (empty when the image has none).
    pub entrypoint: Vec<String>,
    /// `config.Cmd` (empty when the image has none).
    pub cmd: Vec<String>,
    /// The platforms whose images were read and agree (of a single
    /// image, the platform its config names, if it names one).
    pub platforms: Vec<Platform>,
    /// The platforms asked for that the index does not offer.
    pub absent: Vec<Platform>,
}

/// What is cached by digest.
#[derive(Clone, Debug)]
enum Content {
    Manifest(Manifest),
    Config(RunSpec),
}

/// Lookups that overlap in time share one flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FlightKey {
    access: Access,
    target: String,
    platforms: Vec<Platform>,
}

type Outcome = Result<Resolved, Failure>;

/// Reads images' ENTRYPOINT and CMD from their registries; one for the
/// whole process, shared by every caller (it is `Send` and `Sync`).
pub struct Resolver {
    settings: Settings,
    keyring: Keyring,
    transport: Transport,
    tags: Mutex<Bounded<(Access, String), (Digest, Instant)>>,
    contents: Mutex<Bounded<(Access, Digest), Content>>,
    authorizations: Authorizations,
    flights: Mutex<HashMap<FlightKey, Arc<OnceCell<Outcome>>>>,
}

impl Resolver {
    /// A resolver with `settings`, asking with the credentials of
    /// `keyring` (`Keyring::anonymous()` for none).
    pub fn new(settings: Settings, keyring: Keyring) -> Result<Resolver, SetupError> {
        let transport = Transport::new(
            &settings.trust,
            &settings.insecure,
            settings.per_call,
            settings.budget,
        )?;
        let entries = settings.cache_entries;
        Ok(Resolver {
            settings,
            keyring,
            transport,
            tags: Mutex::new(Bounded::new(entries)),
            contents: Mutex::new(Bounded::new(entries)),
            authorizations: Mutex::new(Bounded::new(entries)),
            flights: Mutex::new(HashMap::new()),
        })
    }

    /// The ENTRYPOINT and CMD of `image` for `platforms` (none:
    /// [`Platform::defaults`]), with the resolver's own credentials.
    pub async fn resolve(
        &self,
        image: &str,
        platforms: &[Platform],
    ) -> Result<Resolved, RegistryError> {
        self.resolve_with(image, platforms, &self.keyring).await
    }

    /// [`Resolver::resolve`] with the credentials of `keyring` instead
    /// (a pod's pull secrets).
    pub async fn resolve_with(
        &self,
        image: &str,
        platforms: &[Platform],
        keyring: &Keyring,
    ) -> Result<Resolved, RegistryError> {
        let refused = |failure| RegistryError::new(image, failure);
        let reference = Reference::parse(image).map_err(|why| refused(Failure::Reference(why)))?;
        let mut platforms = if platforms.is_empty() {
            Platform::defaults()
        } else {
            platforms.to_vec()
        };
        platforms.sort();
        platforms.dedup();
        let found = keyring.find(&reference.registry, &reference.repository);
        let access = Access {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            who: found.credential.map_or(0, |(c, _)| c.fingerprint()),
        };
        let deadline = Instant::now() + self.settings.budget;
        let flight = self.board(FlightKey {
            access: access.clone(),
            target: reference.target(),
            platforms: platforms.clone(),
        });
        let lookup = flight.cell.get_or_init(|| {
            self.look_up(
                &reference,
                &platforms,
                access,
                &found,
                keyring.searched(),
                deadline,
            )
        });
        let outcome = match tokio::time::timeout_at(deadline.into(), lookup).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => Err(Failure::Budget {
                budget: self.settings.budget,
            }),
        };
        outcome.map_err(refused)
    }

    /// Joins the flight of `key`, or starts it.
    fn board(&self, key: FlightKey) -> Flight<'_> {
        let mut flights = lock(&self.flights);
        let cell = Arc::clone(flights.entry(key.clone()).or_default());
        Flight {
            resolver: self,
            key,
            cell,
        }
    }

    async fn look_up(
        &self,
        reference: &Reference,
        platforms: &[Platform],
        access: Access,
        found: &Found<'_>,
        searched: &[String],
        deadline: Instant,
    ) -> Outcome {
        let host = reference.api_host();
        let https =
            !(self.transport.is_insecure(&reference.registry) || self.transport.is_insecure(host));
        let session = Session::new(
            &self.transport,
            &self.authorizations,
            access,
            found,
            searched,
            Url {
                https,
                authority: host.to_owned(),
                path: "/".to_owned(),
            },
            deadline,
        );
        let top = match (&reference.digest, &reference.tag) {
            (Some(digest), _) => digest.clone(),
            (None, tag) => {
                self.tag_digest(&session, tag.as_deref().unwrap_or("latest"))
                    .await?
            }
        };
        let image = reference.to_string();
        match self.manifest(&session, &top).await? {
            Manifest::Image {
                config,
                config_size,
            } => {
                let spec = self.config(&session, &config, config_size).await?;
                Ok(Resolved {
                    image,
                    digest: top,
                    entrypoint: spec.entrypoint,
                    cmd: spec.cmd,
                    platforms: spec.platform.into_iter().collect(),
                    absent: Vec::new(),
                })
            }
            Manifest::Index(entries) => {
                let mut chosen: Vec<(&Platform, &Entry)> = Vec::new();
                let mut absent = Vec::new();
                for asked in platforms {
                    let accepted: Vec<&Entry> = entries
                        .iter()
                        .filter(|e| e.platform.as_ref().is_some_and(|p| asked.accepts(p)))
                        .collect();
                    let best = accepted
                        .iter()
                        .find(|e| e.platform.as_ref().is_some_and(|p| asked.prefers(p)))
                        .or(accepted.first());
                    match best.and_then(|e| Some((e.platform.as_ref()?, *e))) {
                        Some((offered, entry))
                            if !chosen.iter().any(|(_, c)| c.digest == entry.digest) =>
                        {
                            chosen.push((offered, entry))
                        }
                        Some(_) => {}
                        None => absent.push(asked.clone()),
                    }
                }
                if chosen.is_empty() {
                    return Err(Failure::NoPlatform {
                        asked: platforms.to_vec(),
                        offered: entries.iter().filter_map(|e| e.platform.clone()).collect(),
                    });
                }
                let reads = chosen
                    .iter()
                    .map(|(_, entry)| self.image_of(&session, entry));
                let mut answers = Vec::new();
                for ((platform, _), spec) in chosen
                    .iter()
                    .zip(futures_util::future::join_all(reads).await)
                {
                    let spec = spec?;
                    answers.push(PlatformAnswer {
                        platform: (*platform).clone(),
                        entrypoint: spec.entrypoint,
                        cmd: spec.cmd,
                    });
                }
                let first = &answers[0];
                if answers
                    .iter()
                    .any(|a| a.entrypoint != first.entrypoint || a.cmd != first.cmd)
                {
                    return Err(Failure::Disagree { answers });
                }
                Ok(Resolved {
                    image,
                    digest: top,
                    entrypoint: first.entrypoint.clone(),
                    cmd: first.cmd.clone(),
                    platforms: answers.into_iter().map(|a| a.platform).collect(),
                    absent,
                })
            }
        }
    }

    /// The run spec of one image of an index.
    async fn image_of(&self, session: &Session<'_>, entry: &Entry) -> Result<RunSpec, Failure> {
        let nested = || Failure::Content {
            what: format!(
                "the index entry {} of {}/{}",
                entry.digest, session.access.registry, session.access.repository
            ),
            why: "it is an index itself, which kubexit does not follow".into(),
        };
        if manifest::is_index(&entry.media_type) {
            return Err(nested());
        }
        match self.manifest(session, &entry.digest).await? {
            Manifest::Image {
                config,
                config_size,
            } => self.config(session, &config, config_size).await,
            Manifest::Index(_) => Err(nested()),
        }
    }

    /// The digest `tag` names now.
    async fn tag_digest(&self, session: &Session<'_>, tag: &str) -> Result<Digest, Failure> {
        let key = (session.access.clone(), tag.to_owned());
        if let Some((digest, until)) = lock(&self.tags).get(&key)
            && Instant::now() < *until
        {
            return Ok(digest.clone());
        }
        let path = format!("/v2/{}/manifests/{tag}", session.access.repository);
        let head = session
            .get(Method::HEAD, &path, Some(manifest::ACCEPT), 0)
            .await?;
        let said = head
            .header("docker-content-digest")
            .filter(|_| head.status == 200)
            .and_then(|d| Digest::parse(d).ok());
        let digest = match said {
            Some(digest) => digest,
            // No digest said, or a refusal, whose reason only a GET's body
            // tells: the manifest itself, kept under the digest of its bytes.
            None => self.fetch_manifest(session, &path, None).await?.0,
        };
        if !self.settings.tag_lifetime.is_zero() {
            lock(&self.tags).insert(
                key,
                (digest.clone(), Instant::now() + self.settings.tag_lifetime),
            );
        }
        Ok(digest)
    }

    /// The manifest `digest` names.
    async fn manifest(&self, session: &Session<'_>, digest: &Digest) -> Result<Manifest, Failure> {
        let key = (session.access.clone(), digest.clone());
        if let Some(Content::Manifest(manifest)) = lock(&self.contents).get(&key) {
            return Ok(manifest.clone());
        }
        let path = format!("/v2/{}/manifests/{digest}", session.access.repository);
        Ok(self.fetch_manifest(session, &path, Some(digest)).await?.1)
    }

    /// GETs the manifest at `path`, checks its bytes against `expected` if
    /// given, parses it and caches it under its digest.
    async fn fetch_manifest(
        &self,
        session: &Session<'_>,
        path: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, Manifest), Failure> {
        let got = session.check(
            session
                .get(
                    Method::GET,
                    path,
                    Some(manifest::ACCEPT),
                    manifest::MANIFEST_LIMIT,
                )
                .await?,
        )?;
        let what = || format!("the manifest {path} of {}", got.host);
        let digest = match expected {
            Some(digest) if !digest.verify(&got.body) => {
                return Err(Failure::Content {
                    what: what(),
                    why: "its bytes are not those of its digest: the registry, or something \
                          between, changed them"
                        .into(),
                });
            }
            Some(digest) => digest.clone(),
            None => Digest::sha256_of(&got.body),
        };
        let parsed = manifest::parse_manifest(got.header("content-type"), &got.body)
            .map_err(|why| Failure::Content { what: what(), why })?;
        lock(&self.contents).insert(
            (session.access.clone(), digest.clone()),
            Content::Manifest(parsed.clone()),
        );
        Ok((digest, parsed))
    }

    /// The run spec of the config blob `digest`.
    async fn config(
        &self,
        session: &Session<'_>,
        digest: &Digest,
        size: u64,
    ) -> Result<RunSpec, Failure> {
        let key = (session.access.clone(), digest.clone());
        if let Some(Content::Config(spec)) = lock(&self.contents).get(&key) {
            return Ok(spec.clone());
        }
        let path = format!("/v2/{}/blobs/{digest}", session.access.repository);
        if size > manifest::CONFIG_LIMIT as u64 {
            return Err(Failure::Content {
                what: format!("the image config {path}"),
                why: format!(
                    "its manifest says it weighs {size} bytes, more than the {} kubexit reads",
                    manifest::CONFIG_LIMIT
                ),
            });
        }
        let got = session.check(
            session
                .get(Method::GET, &path, None, manifest::CONFIG_LIMIT)
                .await?,
        )?;
        let what = || format!("the image config {path} of {}", got.host);
        if !digest.verify(&got.body) {
            return Err(Failure::Content {
                what: what(),
                why: "its bytes are not those of its digest: the registry, or something between, \
                      changed them"
                    .into(),
            });
        }
        let spec = manifest::parse_config(&got.body)
            .map_err(|why| Failure::Content { what: what(), why })?;
        lock(&self.contents).insert(key, Content::Config(spec.clone()));
        Ok(spec)
    }
}

/// A caller's seat on a flight. The flight leaves the board when it has
/// landed (later lookups go through the caches, whose lifetimes then
/// hold) or when its last caller gave up before it did.
struct Flight<'a> {
    resolver: &'a Resolver,
    key: FlightKey,
    cell: Arc<OnceCell<Outcome>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = lock(&self.resolver.flights);
        if let Some(current) = flights.get(&self.key)
            && Arc::ptr_eq(current, &self.cell)
            && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2)
        {
            flights.remove(&self.key);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_resolver_is_shared_by_threads_and_its_lookups_can_be_spawned() {
        assert_send_sync::<Resolver>();
        let settings = Settings {
            trust: Trust::default(),
            ..Settings::default()
        };
        let resolver = Resolver::new(settings, Keyring::anonymous()).unwrap();
        let lookup = resolver.resolve("busybox", &[]);
        assert_send(&lookup);
    }

    #[test]
    fn a_malformed_reference_is_refused_before_any_request() {
        let runtime = crate::testing::runtime();
        let settings = Settings {
            trust: Trust::default(),
            ..Settings::default()
        };
        let resolver = Resolver::new(settings, Keyring::anonymous()).unwrap();
        let err = runtime
            .block_on(resolver.resolve("Not An Image", &[]))
            .unwrap_err()
            .for_container("app");
        assert!(matches!(err.failure, Failure::Reference(_)), "{err}");
        assert!(
            err.to_string().contains("kubexit.io/entrypoint.app"),
            "{err}"
        );
    }
}
