//! Image references, digests and platforms, read as the kubelet's runtime
//! reads them.
//!
//! A reference is `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`. The first
//! component names a registry when it holds a `.` or a `:` or is
//! `localhost`; otherwise the image is Docker Hub's (`docker.io`), where a
//! one-word repository lives under `library/` (`busybox` is
//! `docker.io/library/busybox:latest`). Without a tag or digest the tag is
//! `latest`. With a digest the tag is ignored, as containerd ignores it: the
//! digest names the content, the tag only a moment of it.
//!
//! Digests are `sha256:` or `sha512:` followed by the lowercase hex of the
//! hash; [`Digest::verify`] is how every byte read from a registry is
//! checked against the digest that named it.

use std::fmt;

/// Docker Hub, as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The registry as the reference names it, lowercased: `docker.io`,
    /// `ghcr.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// The repository within it: `library/busybox`.
    pub repository: String,
    /// The tag, when the reference has one (and `latest` when it has
    /// neither tag nor digest).
    pub tag: Option<String>,
    /// The digest, when the reference has one.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Reads `image`; the error says what is wrong with it.
    pub fn parse(image: &str) -> Result<Reference, String> {
        if image.is_empty() {
            return Err("is empty".into());
        }
        if image.len() > 4096 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("holds white space or control characters".into());
        }
        let (named, digest) = match image.split_once('@') {
            Some((named, digest)) => (named, Some(Digest::parse(digest)?)),
            None => (image, None),
        };
        // A tag is after the last `:` that follows the last `/`; a `:`
        // before it is a registry's port.
        let last_slash = named.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match named[last_slash..].rfind(':') {
            Some(i) => (&named[..last_slash + i], Some(&named[last_slash + i + 1..])),
            None => (named, None),
        };
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), rest.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        check_registry(&registry)?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                DOCKER_HUB.to_owned()
            }
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        check_repository(&repository)?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some("latest".to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host (and port) that serves the registry's API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What the manifest is asked for by: the digest if there is one, else
    /// the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && tag.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "has the tag {tag:?}: a tag is up to 128 letters, digits, `_`, `.` and `-`, not \
             starting with `.` or `-`"
        ))
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.strip_prefix('[') {
        // [::1]:5000
        Some(rest) => match rest.split_once(']') {
            Some((host, port)) => (host, port.strip_prefix(':')),
            None => return Err(format!("has the registry {registry:?}: no closing `]`")),
        },
        None => match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        },
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!(
            "has the registry {registry:?}, which is not a host name with an optional port"
        ))
    }
}

fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        // Lowercase letters and digits, separated by `.`, `_`, `__` or
        // runs of `-`.
        let bytes = c.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let separator = &c[start..i];
            if !(separator == "."
                || separator == "_"
                || separator == "__"
                || separator.bytes().all(|b| b == b'-'))
            {
                return false;
            }
        }
        true
    };
    if repository.len() <= 255 && repository.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "has the repository {repository:?}: a repository is lowercase letters and digits, \
             with `.`, `_`, `__` or `-` between them, in components separated by `/`"
        ))
    }
}

/// The hash functions digests are made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// A content digest: `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Reads `ALGORITHM:HEX`.
    pub fn parse(text: &str) -> Result<Digest, String> {
        let (algorithm, hex) = text
            .split_once(':')
            .ok_or_else(|| format!("has the digest {text:?}, which is not ALGORITHM:HEX"))?;
        let (algorithm, length) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            other => {
                return Err(format!(
                    "has a digest of algorithm {other:?}; kubexit reads sha256 and sha512"
                ));
            }
        };
        if hex.len() != length || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!(
                "has the digest {text:?}: {} takes {length} lowercase hex digits",
                algorithm.name()
            ));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }

    fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let hash = ring::digest::digest(algorithm.ring(), bytes);
        let mut hex = String::with_capacity(hash.as_ref().len() * 2);
        for byte in hash.as_ref() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
        }
        Digest { algorithm, hex }
    }

    /// Whether `bytes` are the content this digest names.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        Digest::of(self.algorithm, bytes) == *self
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// A platform an image runs on: `linux/amd64`, `linux/arm/v7`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Linux on `architecture` (Kubernetes' `kubernetes.io/arch` values:
    /// `amd64`, `arm64`...).
    pub fn linux(architecture: &str) -> Platform {
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
        }
    }

    /// The platforms a pod can run on when nothing says which: the two
    /// that nearly every cluster's nodes are.
    pub fn defaults() -> Vec<Platform> {
        vec![Platform::linux("amd64"), Platform::linux("arm64")]
    }

    /// Reads `OS/ARCHITECTURE[/VARIANT]`.
    pub fn parse(text: &str) -> Result<Platform, String> {
        let words: Vec<&str> = text.split('/').collect();
        let word_ok = |w: &&str| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        match words.as_slice() {
            [os, arch] | [os, arch, _] if words.iter().all(word_ok) => Ok(Platform {
                os: os.to_ascii_lowercase(),
                architecture: arch.to_ascii_lowercase(),
                variant: words.get(2).map(|v| v.to_ascii_lowercase()),
            }),
            _ => Err(format!(
                "{text:?} is not a platform: OS/ARCHITECTURE or OS/ARCHITECTURE/VARIANT, such as \
                 linux/arm64"
            )),
        }
    }

    /// Whether an image offered for `offered` runs here: the same system
    /// and architecture, and the variant asked for (a platform that names
    /// none takes any; arm64 without a variant is v8).
    pub(crate) fn accepts(&self, offered: &Platform) -> bool {
        self.os == offered.os
            && self.architecture == offered.architecture
            && match (&self.variant, &offered.variant) {
                (None, _) => true,
                (Some(asked), Some(given)) => asked == given,
                (Some(asked), None) => default_variant(&self.architecture) == Some(asked.as_str()),
            }
    }

    /// Whether `offered` is the plain form of this platform (no variant, or
    /// the architecture's usual one): the one taken among several
    /// accepted.
    pub(crate) fn prefers(&self, offered: &Platform) -> bool {
        match &offered.variant {
            None => true,
            Some(variant) => {
                self.variant.as_ref() == Some(variant)
                    || default_variant(&offered.architecture) == Some(variant.as_str())
            }
        }
    }
}

fn default_variant(architecture: &str) -> Option<&'static str> {
    match architecture {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(image: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(image).expect(image);
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    const D: &str = "sha256:4c1c50d0ffc614f90b93b07d778028dc765548e823f676fb027f61d281ac380d";

    #[test]
    fn a_one_word_name_is_docker_hubs_library_at_latest() {
        assert_eq!(
            parsed("busybox"),
            (
                "docker.io".into(),
                "library/busybox".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn docker_hub_is_named_in_several_ways() {
        for image in [
            "docker.io/busybox:1.36",
            "index.docker.io/library/busybox:1.36",
            "library/busybox:1.36",
        ] {
            assert_eq!(
                parsed(image),
                (
                    "docker.io".into(),
                    "library/busybox".into(),
                    Some("1.36".into()),
                    None
                ),
                "{image}"
            );
        }
        assert_eq!(parsed("bitnami/redis").1, "bitnami/redis");
    }

    #[test]
    fn a_first_component_with_a_dot_a_colon_or_localhost_is_a_registry() {
        assert_eq!(parsed("ghcr.io/a/b:v1").0, "ghcr.io");
        assert_eq!(
            parsed("127.0.0.1:5000/x"),
            (
                "127.0.0.1:5000".into(),
                "x".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(parsed("localhost/x:1").0, "localhost");
        assert_eq!(parsed("[::1]:5000/x:1").0, "[::1]:5000");
        assert_eq!(parsed("Registry.Example.com/x").0, "registry.example.com");
    }

    #[test]
    fn a_digest_names_the_content_and_the_tag_beside_it_is_kept_only_for_show() {
        let r = Reference::parse(&format!("ghcr.io/a/b:v1@{D}")).unwrap();
        assert_eq!(r.target(), D);
        assert_eq!(r.to_string(), format!("ghcr.io/a/b:v1@{D}"));
        let r = Reference::parse(&format!("ghcr.io/a/b@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), D);
    }

    #[test]
    fn malformed_references_are_refused_with_what_is_wrong() {
        for (image, said) in [
            ("", "empty"),
            ("Busybox", "repository"),
            ("a b", "white space"),
            ("busybox:-x", "tag"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@md5:abc", "sha256 and sha512"),
            ("ghcr.io/a//b", "repository"),
            ("ghcr.io:x/a", "registry"),
            ("a--b__c/d..e", "repository"),
        ] {
            let err = Reference::parse(image).expect_err(image);
            assert!(err.contains(said), "{image}: {err}");
        }
        assert!(Reference::parse("a--b/c__d/e.f_g").is_ok());
    }

    #[test]
    fn digests_verify_the_bytes_they_name() {
        let digest = Digest::sha256_of(b"hello");
        assert_eq!(
            digest.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(digest.verify(b"hello"));
        assert!(!digest.verify(b"hello!"));
        let sha512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(Digest::parse(&sha512.to_string()).unwrap(), sha512);
        assert!(sha512.verify(b"x"));
    }

    #[test]
    fn platforms_accept_the_variants_they_stand_for() {
        let arm64 = Platform::linux("arm64");
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm64.accepts(&v8) && v8.accepts(&arm64));
        assert!(!Platform::linux("amd64").accepts(&arm64));
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v7.accepts(&v6));
        assert!(Platform::linux("arm").accepts(&v6));
        assert!(Platform::linux("arm").prefers(&v7) && !Platform::linux("arm").prefers(&v6));
        assert_eq!(v7.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_err());
    }
}
