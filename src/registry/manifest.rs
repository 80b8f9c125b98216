//! What a registry's manifests and image configs say, read from their
//! bytes.
//!
//! Four kinds of manifest are read: the two lists of per-platform images
//! (OCI image index, Docker manifest list) and the two image manifests
//! (OCI, Docker schema 2). The kind is the document's own `mediaType` when
//! it has one (it is part of the bytes the digest covers), else the
//! `Content-Type` the registry sent, else its shape (`manifests` or
//! `config`). Docker schema 1, which registries stopped accepting years
//! ago, is refused by name. Of an image config only what the kubelet's
//! runtime runs is kept: `config.Entrypoint` and `config.Cmd` (each absent,
//! `null` or a list of strings), and the platform it says it is for.

use serde_json::Value;

use super::reference::{Digest, Platform};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header of a manifest request: the four kinds read.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The most a manifest may weigh (the limit distribution and containerd
/// keep too).
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// The most an image config may weigh.
pub const CONFIG_LIMIT: usize = 8 << 20;

/// A manifest, as far as resolution needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum Manifest {
    /// An image index or manifest list: one entry per platform.
    Index(Vec<Entry>),
    /// One image: its config blob.
    Image { config: Digest, config_size: u64 },
}

/// One image of an index.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// `None` for entries without a platform (such as attestations).
    pub platform: Option<Platform>,
}

/// What an image runs, from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The platform the config says it is for, when it says.
    pub platform: Option<Platform>,
}

/// Whether `media_type` is one of the two index kinds.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Reads a manifest; `content_type` is the registry's `Content-Type`.
pub fn parse_manifest(content_type: Option<&str>, body: &[u8]) -> Result<Manifest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("the manifest is not a JSON object".into());
    };
    let own = object.get("mediaType").and_then(Value::as_str);
    // A Content-Type may carry parameters (`; charset=utf-8`).
    let sent = content_type.map(|t| t.split(';').next().unwrap_or_default().trim());
    let media_type = match (own, sent) {
        (Some(own), _) => own,
        (None, Some(sent)) if is_known(sent) => sent,
        (None, _) if object.contains_key("manifests") => OCI_INDEX,
        (None, _) if object.contains_key("config") => OCI_MANIFEST,
        (None, sent) => {
            return Err(format!(
                "the manifest names no media type{}, and is neither an index nor an image manifest",
                sent.map(|s| format!(" (Content-Type {s})"))
                    .unwrap_or_default()
            ));
        }
    };
    if DOCKER_SCHEMA1.contains(&media_type) {
        return Err(
            "the image has a Docker schema 1 manifest, which kubexit does not read (registries no \
             longer accept them): push it again with a current tool"
                .into(),
        );
    }
    if is_index(media_type) {
        let entries = object
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or("the index has no list of manifests")?;
        entries
            .iter()
            .map(entry)
            .collect::<Result<_, _>>()
            .map(Manifest::Index)
    } else if media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST {
        let config = object
            .get("config")
            .ok_or("the image manifest has no config")?;
        let config_type = config.get("mediaType").and_then(Value::as_str);
        if let Some(kind) = config_type
            && kind != OCI_CONFIG
            && kind != DOCKER_CONFIG
        {
            return Err(format!(
                "it is not a container image: its config is of media type {kind}"
            ));
        }
        Ok(Manifest::Image {
            config: descriptor_digest(config)?,
            config_size: config.get("size").and_then(Value::as_u64).unwrap_or(0),
        })
    } else {
        Err(format!(
            "the manifest is of media type {media_type}, which is not a container image's"
        ))
    }
}

fn is_known(media_type: &str) -> bool {
    [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type)
        || DOCKER_SCHEMA1.contains(&media_type)
}

fn descriptor_digest(descriptor: &Value) -> Result<Digest, String> {
    let text = descriptor
        .get("digest")
        .and_then(Value::as_str)
        .ok_or("a descriptor has no digest")?;
    Digest::parse(text).map_err(|e| format!("a descriptor {e}"))
}

fn entry(value: &Value) -> Result<Entry, String> {
    let platform = match value.get("platform") {
        Some(p) => {
            let field = |name: &str| p.get(name).and_then(Value::as_str).map(str::to_owned);
            match (field("os"), field("architecture")) {
                (Some(os), Some(architecture)) => Some(Platform {
                    os,
                    architecture,
                    variant: field("variant").filter(|v| !v.is_empty()),
                }),
                _ => None,
            }
        }
        None => None,
    };
    Ok(Entry {
        digest: descriptor_digest(value)?,
        size: value.get("size").and_then(Value::as_u64).unwrap_or(0),
        media_type: value
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(OCI_MANIFEST)
            .to_owned(),
        platform,
    })
}

/// Reads an image config.
pub fn parse_config(body: &[u8]) -> Result<RunSpec, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the image config is not JSON: {e}"))?;
    if !value.is_object() {
        return Err("the image config is not a JSON object".into());
    }
    let words = |name: &str| -> Result<Vec<String>, String> {
        match value.get("config").and_then(|c| c.get(name)) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|w| w.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    format!("the image config's config.{name} is not a list of strings")
                }),
            Some(_) => Err(format!(
                "the image config's config.{name} is not a list of strings"
            )),
        }
    };
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let platform = match (field("os"), field("architecture")) {
        (Some(os), Some(architecture)) => Some(Platform {
            os,
            architecture,
            variant: field("variant").filter(|v| !v.is_empty()),
        }),
        _ => None,
    };
    Ok(RunSpec {
        entrypoint: words("Entrypoint")?,
        cmd: words("Cmd")?,
        platform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn an_index_lists_its_platforms_and_entries_without_one() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":10,
                  "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":5,
                  "annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        let Manifest::Index(entries) = parse_manifest(None, body.as_bytes()).unwrap() else {
            panic!("an index");
        };
        assert_eq!(
            entries[0].platform,
            Some(Platform::parse("linux/arm64/v8").unwrap())
        );
        assert_eq!(entries[0].digest.to_string(), D1);
        assert_eq!(entries[1].platform, None);
    }

    #[test]
    fn the_kind_comes_from_the_document_then_the_content_type_then_the_shape() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
                "config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D1}","size":7}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(Some("application/json"), docker.as_bytes()),
            Ok(Manifest::Image { config_size: 7, .. })
        ));
        let bare = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{D1}"}}]}}"#);
        assert!(matches!(
            parse_manifest(
                Some(&format!("{DOCKER_LIST}; charset=utf-8")),
                bare.as_bytes()
            ),
            Ok(Manifest::Index(_))
        ));
        assert!(matches!(
            parse_manifest(None, bare.as_bytes()),
            Ok(Manifest::Index(_))
        ));
        let schema1 = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_manifest(Some(DOCKER_SCHEMA1[1]), schema1.as_bytes()).unwrap_err();
        assert!(err.contains("schema 1"), "{err}");
    }

    #[test]
    fn artifacts_that_are_not_container_images_are_refused() {
        let helm = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
                "config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}"}}}}"#
        );
        let err = parse_manifest(None, helm.as_bytes()).unwrap_err();
        assert!(err.contains("helm"), "{err}");
        assert!(parse_manifest(None, b"[1]").is_err());
        assert!(parse_manifest(None, b"not json").is_err());
    }

    #[test]
    fn a_config_gives_its_entrypoint_and_cmd_null_or_absent_as_empty() {
        let spec = parse_config(
            br#"{"architecture":"amd64","os":"linux",
                 "config":{"Entrypoint":["/bin/app","serve"],"Cmd":null}}"#,
        )
        .unwrap();
        assert_eq!(spec.entrypoint, ["/bin/app", "serve"]);
        assert!(spec.cmd.is_empty());
        assert_eq!(spec.platform, Some(Platform::linux("amd64")));
        let bare = parse_config(br#"{"rootfs":{}}"#).unwrap();
        assert!(bare.entrypoint.is_empty() && bare.cmd.is_empty() && bare.platform.is_none());
        let err = parse_config(br#"{"config":{"Cmd":"sh"}}"#).unwrap_err();
        assert!(err.contains("config.Cmd"), "{err}");
    }
}
