//! The annotation vocabulary: what a pod (template) may say under
//! `kubexit.io/`, and the checks each value gets before anything is
//! injected.
//!
//! A key is either pod-wide, `kubexit.io/SETTING`, or about one container,
//! `kubexit.io/SETTING.CONTAINER` (container names are DNS labels, so they
//! hold no dot and the split is unambiguous). Some settings take both
//! forms: the pod-wide value is a default that a container's own key
//! overrides. [`Setting`] lists them all; its order is the order in which
//! the variables appear in a container's environment, so output is stable.
//!
//! [`read`] turns the annotations of one pod into [`Annotations`]: every
//! key known, in the scope it allows, every value checked with the same
//! parsers kubexit runs with (names, Go durations, probes, death policies,
//! signals, quit endpoints), so a value that `kubectl apply` would carry
//! into a crash loop is refused here instead. Two values are checked
//! elsewhere: an image reference only for white space (the registry
//! judges the rest), and the record `kubexit.io/injected`, which `record`
//! reads. What the names refer to (containers of this pod, sidecars,
//! cycles) is the plan's to check: it knows the pod.

use std::collections::BTreeMap;

use crate::graveyard::name::Name;
use crate::readiness::probe::Probe;

/// Every key of the vocabulary starts with this.
pub const PREFIX: &str = "kubexit.io/";

/// Where a setting may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `kubexit.io/SETTING` only.
    Pod,
    /// `kubexit.io/SETTING.CONTAINER` only.
    Container,
    /// Both: the pod-wide value is the containers' default.
    Both,
}

/// What a setting's value is, and so how it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Toggle,
    Names,
    Image,
    Install,
    Command,
    Duration,
    Probe,
    Probes,
    Policy,
    Signal,
    QuitUrls,
    Record,
}

/// One setting of the vocabulary. The order is the order of the variables
/// in a coordinated container's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    Inject,
    Sidecars,
    Skip,
    Image,
    Install,
    Injected,
    Entrypoint,
    BirthDeps,
    BirthTimeout,
    BirthProbes,
    DeathDeps,
    DeathPolicy,
    GracePeriod,
    ReadyProbe,
    StopSignal,
    StopAfter,
    StopAfterTimeout,
    Quit,
    QuitTimeout,
}

/// (setting, key after the prefix, scope, kind, kubexit's variable).
const TABLE: &[(Setting, &str, Scope, Kind, Option<&str>)] = &[
    (Setting::Inject, "inject", Scope::Pod, Kind::Toggle, None),
    (Setting::Sidecars, "sidecars", Scope::Pod, Kind::Names, None),
    (Setting::Skip, "skip", Scope::Pod, Kind::Names, None),
    (Setting::Image, "image", Scope::Pod, Kind::Image, None),
    (Setting::Install, "install", Scope::Pod, Kind::Install, None),
    (
        Setting::Injected,
        "injected",
        Scope::Pod,
        Kind::Record,
        None,
    ),
    (
        Setting::Entrypoint,
        "entrypoint",
        Scope::Container,
        Kind::Command,
        None,
    ),
    (
        Setting::BirthDeps,
        "birth-deps",
        Scope::Container,
        Kind::Names,
        Some("KUBEXIT_BIRTH_DEPS"),
    ),
    (
        Setting::BirthTimeout,
        "birth-timeout",
        Scope::Both,
        Kind::Duration,
        Some("KUBEXIT_BIRTH_TIMEOUT"),
    ),
    (
        Setting::BirthProbes,
        "birth-probes",
        Scope::Both,
        Kind::Probes,
        Some("KUBEXIT_BIRTH_PROBES"),
    ),
    (
        Setting::DeathDeps,
        "death-deps",
        Scope::Container,
        Kind::Names,
        Some("KUBEXIT_DEATH_DEPS"),
    ),
    (
        Setting::DeathPolicy,
        "death-policy",
        Scope::Container,
        Kind::Policy,
        Some("KUBEXIT_DEATH_POLICY"),
    ),
    (
        Setting::GracePeriod,
        "grace-period",
        Scope::Both,
        Kind::Duration,
        Some("KUBEXIT_GRACE_PERIOD"),
    ),
    (
        Setting::ReadyProbe,
        "ready-probe",
        Scope::Container,
        Kind::Probe,
        Some("KUBEXIT_READY_PROBE"),
    ),
    (
        Setting::StopSignal,
        "stop-signal",
        Scope::Both,
        Kind::Signal,
        Some("KUBEXIT_STOP_SIGNAL"),
    ),
    (
        Setting::StopAfter,
        "stop-after",
        Scope::Container,
        Kind::Names,
        Some("KUBEXIT_STOP_AFTER"),
    ),
    (
        Setting::StopAfterTimeout,
        "stop-after-timeout",
        Scope::Both,
        Kind::Duration,
        Some("KUBEXIT_STOP_AFTER_TIMEOUT"),
    ),
    (
        Setting::Quit,
        "quit",
        Scope::Both,
        Kind::QuitUrls,
        Some("KUBEXIT_QUIT"),
    ),
    (
        Setting::QuitTimeout,
        "quit-timeout",
        Scope::Both,
        Kind::Duration,
        Some("KUBEXIT_QUIT_TIMEOUT"),
    ),
];

impl Setting {
    fn row(self) -> &'static (Setting, &'static str, Scope, Kind, Option<&'static str>) {
        TABLE
            .iter()
            .find(|row| row.0 == self)
            .expect("every setting has a row")
    }

    /// The key after `kubexit.io/`, without a container.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    pub fn scope(self) -> Scope {
        self.row().2
    }

    /// The environment variable this setting becomes, for those that
    /// become one.
    pub fn variable(self) -> Option<&'static str> {
        self.row().4
    }

    /// The pod-wide key, `kubexit.io/SETTING`.
    pub fn pod_key(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    /// A container's key, `kubexit.io/SETTING.CONTAINER`.
    pub fn container_key(self, container: &str) -> String {
        format!("{PREFIX}{}.{container}", self.name())
    }

    /// Every setting, in environment order.
    pub fn all() -> impl Iterator<Item = Setting> {
        TABLE.iter().map(|row| row.0)
    }

    fn from_name(name: &str) -> Option<Setting> {
        TABLE.iter().find(|row| row.1 == name).map(|row| row.0)
    }
}

/// What is wrong with one annotation. The transformation adds the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("unknown annotation {key}{}", hint.as_ref().map(|h| format!("; did you mean {h}?")).unwrap_or_else(|| "; see the list of kubexit.io/ annotations in docs/inject.md".into()))]
    Unknown { key: String, hint: Option<String> },
    #[error("annotation {key} is about the whole pod: write {pod_key} without a container")]
    PodOnly { key: String, pod_key: String },
    #[error("annotation {key} is about one container: write {key}.CONTAINER")]
    ContainerOnly { key: String },
    #[error("annotation {key}: {value:?} {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
}

/// A container's readiness as an annotation declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyProbe {
    /// `none`: no probe, not even the container's own readinessProbe.
    Off,
    /// A probe in kubexit's syntax, checked.
    Probe(String),
}

/// A checked value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A variable's value as written (trimmed), already checked.
    Text(String),
    Names(Vec<String>),
    Command(Vec<String>),
    Enabled(bool),
    Ready(ReadyProbe),
}

impl Value {
    pub fn names(&self) -> &[String] {
        match self {
            Value::Names(names) => names,
            _ => &[],
        }
    }
}

/// How kubexit gets into the coordinated containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// An init container runs `cp /bin/kubexit /kubexit/kubexit`: its image
    /// has `cp` (the busybox-based image).
    Copy,
    /// An init container runs `/bin/kubexit --install /kubexit`: any image
    /// with kubexit at `/bin/kubexit`, the scratch one included.
    SelfInstall,
    /// `none`: no init container, no volume for the binary. Each
    /// coordinated container's image already carries kubexit on its PATH
    /// (built `FROM` the user's image with kubexit copied in), which saves
    /// the pod the kubelet's step of running an init container.
    InImage,
}

/// The annotations of one pod, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Annotations {
    pod: BTreeMap<Setting, (String, Value)>,
    containers: BTreeMap<String, BTreeMap<Setting, (String, Value)>>,
}

impl Annotations {
    /// A pod-wide value, with the key it came from.
    pub fn pod(&self, setting: Setting) -> Option<&(String, Value)> {
        self.pod.get(&setting)
    }

    /// A container's own value, with the key it came from.
    pub fn own(&self, container: &str, setting: Setting) -> Option<&(String, Value)> {
        self.containers.get(container)?.get(&setting)
    }

    /// A container's value: its own, or else the pod-wide default.
    pub fn for_container(&self, container: &str, setting: Setting) -> Option<&(String, Value)> {
        self.own(container, setting)
            .or_else(|| match setting.scope() {
                Scope::Both => self.pod(setting),
                _ => None,
            })
    }

    /// The containers named in `kubexit.io/SETTING.CONTAINER` keys, with
    /// one key each, for checking that they exist.
    pub fn named_containers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.containers.iter().filter_map(|(container, settings)| {
            let (key, _) = settings.values().next()?;
            Some((container.as_str(), key.as_str()))
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.pod(Setting::Inject), Some((_, Value::Enabled(false))))
    }

    /// How kubexit gets into the containers: `cp` unless the pod says.
    /// Under `none`, `kubexit.io/image` (the install container's image) is
    /// not used.
    pub fn install(&self) -> Install {
        match self.pod(Setting::Install) {
            Some((_, Value::Text(how))) if how == "self" => Install::SelfInstall,
            Some((_, Value::Text(how))) if how == "none" => Install::InImage,
            _ => Install::Copy,
        }
    }
}

/// Reads every `kubexit.io/` annotation of a pod; others are not ours and
/// are ignored.
pub fn read(annotations: &BTreeMap<String, String>) -> Result<Annotations, AnnotationError> {
    let mut read = Annotations::default();
    for (key, raw) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let (name, container) = match rest.split_once('.') {
            Some((name, container)) => (name, Some(container)),
            None => (rest, None),
        };
        let Some(setting) = Setting::from_name(name) else {
            return Err(AnnotationError::Unknown {
                key: key.clone(),
                hint: nearest(name, TABLE.iter().map(|row| row.1)).map(|near| match container {
                    Some(container) => format!("{PREFIX}{near}.{container}"),
                    None => format!("{PREFIX}{near}"),
                }),
            });
        };
        match (setting.scope(), container) {
            (Scope::Pod, Some(_)) => {
                return Err(AnnotationError::PodOnly {
                    key: key.clone(),
                    pod_key: setting.pod_key(),
                });
            }
            (Scope::Container, None) => {
                return Err(AnnotationError::ContainerOnly { key: key.clone() });
            }
            _ => {}
        }
        let value = check(setting, raw).map_err(|why| AnnotationError::BadValue {
            key: key.clone(),
            value: raw.clone(),
            why,
        })?;
        let entry = (key.clone(), value);
        match container {
            Some(container) => {
                read.containers
                    .entry(container.to_owned())
                    .or_default()
                    .insert(setting, entry);
            }
            None => {
                read.pod.insert(setting, entry);
            }
        }
    }
    Ok(read)
}

/// Checks one value; the error says why it is refused and what to write.
fn check(setting: Setting, raw: &str) -> Result<Value, String> {
    let value = raw.trim();
    let text = || Value::Text(value.to_owned());
    match setting.row().3 {
        Kind::Toggle => match value {
            "enabled" => Ok(Value::Enabled(true)),
            "disabled" => Ok(Value::Enabled(false)),
            _ => Err("is neither enabled nor disabled".into()),
        },
        Kind::Names => {
            let names =
                Name::parse_list(value).map_err(|e| format!("is not a list of names: {e}"))?;
            Ok(Value::Names(
                names.iter().map(|n| n.as_str().to_owned()).collect(),
            ))
        }
        Kind::Image => {
            if value.is_empty() || value.chars().any(char::is_whitespace) {
                Err("is not an image reference".into())
            } else {
                Ok(text())
            }
        }
        Kind::Install => match value {
            "cp" | "self" | "none" => Ok(text()),
            _ => Err(
                "is not cp (the image has cp), self (kubexit --install) or none (the images \
                 carry kubexit)"
                    .into(),
            ),
        },
        Kind::Command => {
            let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            if words.is_empty() {
                Err("is empty: give the image's ENTRYPOINT, such as /docker-entrypoint.sh".into())
            } else {
                Ok(Value::Command(words))
            }
        }
        Kind::Duration => crate::duration::parse(value)
            .map(|_| text())
            .map_err(|e| format!("is not a duration: {e}")),
        Kind::Probe => {
            if value == "none" {
                return Ok(Value::Ready(ReadyProbe::Off));
            }
            Probe::parse(value)
                .map(|_| Value::Ready(ReadyProbe::Probe(value.to_owned())))
                .map_err(|e| format!("is not a probe ({e}), nor none"))
        }
        Kind::Probes => {
            let probes = crate::config::birth_probes(value)
                .map_err(|problem| format!("has a bad probe: {problem}"))?;
            if probes.is_empty() {
                return Err("names no probe".into());
            }
            let shown: Vec<String> = probes.iter().map(ToString::to_string).collect();
            Ok(Value::Text(shown.join(",")))
        }
        Kind::Policy => crate::config::DeathPolicy::parse(value)
            .map(|_| text())
            .map_err(|e| format!("is not a death policy: {e}")),
        Kind::Signal => crate::process::signals::parse_signal(value)
            .map(|_| text())
            .map_err(|e| format!("is not a signal: {e}")),
        Kind::QuitUrls => {
            let endpoints = crate::quit::endpoint::Endpoint::parse_list(value)
                .map_err(|e| format!("has {e}"))?;
            if endpoints.is_empty() {
                return Err("names no endpoint".into());
            }
            let urls: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect();
            Ok(Value::Text(urls.join(",")))
        }
        Kind::Record => Ok(text()),
    }
}

/// The candidate nearest to `word` by edit distance, if near enough to be
/// a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_misspelt_key_is_refused_with_the_nearest_known_one() {
        let err = read(&annotations(&[("kubexit.io/sidecar", "proxy")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown annotation kubexit.io/sidecar; did you mean kubexit.io/sidecars?"
        );
        let err = read(&annotations(&[(
            "kubexit.io/ready-prob.proxy",
            "tcp://x:1",
        )]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean kubexit.io/ready-probe.proxy?")
        );
    }

    #[test]
    fn keys_outside_the_prefix_are_not_ours() {
        let read = read(&annotations(&[("example.com/sidecar", "x")])).unwrap();
        assert!(read.pod(Setting::Sidecars).is_none());
    }

    #[test]
    fn scopes_are_enforced() {
        assert!(matches!(
            read(&annotations(&[("kubexit.io/sidecars.main", "x")])),
            Err(AnnotationError::PodOnly { .. })
        ));
        assert!(matches!(
            read(&annotations(&[("kubexit.io/ready-probe", "notify")])),
            Err(AnnotationError::ContainerOnly { .. })
        ));
    }

    #[test]
    fn values_are_checked_with_kubexits_own_parsers() {
        for (key, value) in [
            ("kubexit.io/grace-period", "30"),
            ("kubexit.io/ready-probe.db", "tcp://nowhere"),
            ("kubexit.io/death-policy.db", "most"),
            ("kubexit.io/stop-signal", "SIGNOPE"),
            ("kubexit.io/quit", "ftp://x"),
            ("kubexit.io/birth-deps.db", ".hidden"),
            ("kubexit.io/inject", "yes"),
        ] {
            let err = read(&annotations(&[(key, value)])).unwrap_err();
            assert!(
                matches!(err, AnnotationError::BadValue { .. }),
                "{key}: {value}: {err}"
            );
        }
    }

    #[test]
    fn a_container_key_overrides_the_pod_wide_default() {
        let read = read(&annotations(&[
            ("kubexit.io/grace-period", "10s"),
            ("kubexit.io/grace-period.proxy", "20s"),
        ]))
        .unwrap();
        let value = |c| match read.for_container(c, Setting::GracePeriod) {
            Some((_, Value::Text(t))) => t.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(value("proxy"), "20s");
        assert_eq!(value("main"), "10s");
    }

    #[test]
    fn install_is_cp_unless_the_pod_says_self_or_none() {
        let install = |pairs: &[(&str, &str)]| read(&annotations(pairs)).unwrap().install();
        assert_eq!(install(&[]), Install::Copy);
        assert_eq!(install(&[("kubexit.io/install", "cp")]), Install::Copy);
        assert_eq!(
            install(&[("kubexit.io/install", " self ")]),
            Install::SelfInstall
        );
        assert_eq!(install(&[("kubexit.io/install", "none")]), Install::InImage);
        assert!(matches!(
            read(&annotations(&[("kubexit.io/install", "None")])),
            Err(AnnotationError::BadValue { .. })
        ));
    }

    #[test]
    fn quit_presets_and_urls_are_accepted() {
        let read = read(&annotations(&[(
            "kubexit.io/quit",
            "istio, GET:http://127.0.0.1:9091/quitquitquit",
        )]))
        .unwrap();
        assert_eq!(
            read.pod(Setting::Quit).unwrap().1,
            Value::Text("istio,GET:http://127.0.0.1:9091/quitquitquit".into())
        );
    }
}
