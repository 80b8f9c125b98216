//! The registry client (`kubexit::registry`) against real registries:
//! Debian's docker-registry with TLS, htpasswd and token authentication,
//! serving images buildah built and pushed (`util::registry`). Each test
//! names the promise of the module's essay it checks.

use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kubexit::registry::{
    Failure, Keyring, Platform, RegistryError, Resolved, Resolver, Settings, Trust,
};

use crate::util::registry::{Build, PASSWORD, Registries, Silent, USER, registries};
use crate::util::webhook::{Pki, Webhook, answer as webhook_answer, patched, review_of};
use crate::util::{assert_contains, free_port};

/// Settings that trust the test CA and speak plain HTTP to the plain
/// registry; generous limits, since a loaded test machine is slow (the
/// tests of the limits set their own).
fn settings(registries: &Registries) -> Settings {
    Settings {
        budget: Duration::from_secs(15),
        per_call: Duration::from_secs(15),
        insecure: vec![registries.plain.authority.clone()],
        trust: Trust {
            ca_files: vec![registries.ca.clone()],
            ..Trust::default()
        },
        ..Settings::default()
    }
}

fn resolver(registries: &Registries) -> Resolver {
    Resolver::new(settings(registries), Keyring::anonymous()).expect("a resolver")
}

fn block<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

fn resolve(resolver: &Resolver, image: &str, platforms: &[Platform]) -> Resolved {
    block(resolver.resolve(image, platforms)).unwrap_or_else(|e| panic!("{image}: {e}"))
}

fn refusal(resolver: &Resolver, image: &str, keyring: &Keyring) -> RegistryError {
    match block(resolver.resolve_with(image, &[], keyring)) {
        Ok(resolved) => panic!("{image} resolved: {resolved:?}"),
        Err(err) => err.for_container("app"),
    }
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn credentials_for(authority: &str, user: &str, password: &str) -> Keyring {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let json = format!(r#"{{"auths":{{"{authority}":{{"auth":"{auth}"}}}}}}"#);
    Keyring::from_docker_config(json.as_bytes(), "secret test/pull").expect("a keyring")
}

#[test]
fn an_oci_image_gives_its_entrypoint_cmd_and_the_digest_of_its_manifest() {
    let Some(registries) = registries("registry::an_oci_image") else {
        return;
    };
    let (media_type, digest) = registries.manifest_of("single/oci:1");
    assert_eq!(media_type, "application/vnd.oci.image.manifest.v1+json");
    let resolved = resolve(
        &resolver(registries),
        &registries.open.image("single/oci:1"),
        &[],
    );
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));
    assert_eq!(resolved.cmd, words(&["world"]));
    assert_eq!(resolved.digest.to_string(), digest);
    assert_eq!(resolved.platforms, [Platform::linux("amd64")]);
    assert_eq!(
        resolved.image,
        format!("{}/single/oci:1", registries.open.authority)
    );
}

#[test]
fn a_docker_schema_2_image_is_read_as_an_oci_one() {
    let Some(registries) = registries("registry::a_docker_schema_2_image") else {
        return;
    };
    let (media_type, digest) = registries.manifest_of("single/docker:1");
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let resolved = resolve(
        &resolver(registries),
        &registries.open.image("single/docker:1"),
        &[],
    );
    assert_eq!(
        (resolved.entrypoint, resolved.cmd),
        (words(&["/hello", "--greet"]), words(&["world"]))
    );
    assert_eq!(resolved.digest.to_string(), digest);
}

#[test]
fn an_image_with_cmd_only_has_no_entrypoint() {
    let Some(registries) = registries("registry::an_image_with_cmd_only") else {
        return;
    };
    let resolved = resolve(
        &resolver(registries),
        &registries.open.image("cmd-only:1"),
        &[],
    );
    assert!(resolved.entrypoint.is_empty(), "{resolved:?}");
    assert_eq!(resolved.cmd, words(&["/hello", "run"]));
}

#[test]
fn an_oci_index_whose_platforms_agree_is_read_for_each_platform_asked() {
    let Some(registries) = registries("registry::an_oci_index_whose_platforms_agree") else {
        return;
    };
    let (media_type, digest) = registries.manifest_of("multi/agree:oci");
    assert_eq!(media_type, "application/vnd.oci.image.index.v1+json");
    let resolver = resolver(registries);
    let image = registries.open.image("multi/agree:oci");
    let both = resolve(&resolver, &image, &[]);
    assert_eq!(
        (both.entrypoint.clone(), both.cmd.clone()),
        (words(&["/hello", "--greet"]), words(&["world"]))
    );
    assert_eq!(both.digest.to_string(), digest, "the index's digest");
    assert_eq!(
        both.platforms,
        [Platform::linux("amd64"), Platform::linux("arm64")]
    );
    let arm = resolve(&resolver, &image, &[Platform::linux("arm64")]);
    assert_eq!(arm.platforms, [Platform::linux("arm64")]);
    assert!(arm.absent.is_empty());
    let with_absent = resolve(
        &resolver,
        &image,
        &[Platform::linux("amd64"), Platform::linux("s390x")],
    );
    assert_eq!(with_absent.platforms, [Platform::linux("amd64")]);
    assert_eq!(with_absent.absent, [Platform::linux("s390x")]);
}

#[test]
fn a_docker_manifest_list_is_read_as_an_index() {
    let Some(registries) = registries("registry::a_docker_manifest_list") else {
        return;
    };
    let (media_type, _) = registries.manifest_of("multi/agree:docker");
    assert_eq!(
        media_type,
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let resolved = resolve(
        &resolver(registries),
        &registries.open.image("multi/agree:docker"),
        &[],
    );
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));
    assert_eq!(resolved.platforms.len(), 2);
}

#[test]
fn platforms_that_disagree_are_refused_naming_each_and_what_it_runs() {
    let Some(registries) = registries("registry::platforms_that_disagree") else {
        return;
    };
    let resolver = resolver(registries);
    let image = registries.open.image("multi/disagree:1");
    let err = refusal(&resolver, &image, &Keyring::anonymous());
    assert!(matches!(err.failure, Failure::Disagree { .. }), "{err}");
    let text = err.to_string();
    assert_contains(&text, &image);
    assert_contains(
        &text,
        r#"linux/amd64 has ENTRYPOINT ["/hello","--greet"] and CMD ["world"]"#,
    );
    assert_contains(
        &text,
        r#"linux/arm64 has ENTRYPOINT ["/app-arm64"] and CMD []"#,
    );
    assert_contains(&text, "kubexit.io/entrypoint.app");
    assert_contains(&text, "kubernetes.io/arch");
    // A pod that runs on one of them only is answered for that one.
    let amd = resolve(&resolver, &image, &[Platform::linux("amd64")]);
    assert_eq!(amd.entrypoint, words(&["/hello", "--greet"]));
}

#[test]
fn an_index_without_the_pods_platforms_is_refused_naming_what_it_offers() {
    let Some(registries) = registries("registry::an_index_without_the_pods_platforms") else {
        return;
    };
    let image = registries.open.image("multi/agree:oci");
    let err = block(resolver(registries).resolve(&image, &[Platform::linux("s390x")]))
        .expect_err("no s390x image");
    let text = err.to_string();
    assert_contains(&text, "the image is for linux/amd64, linux/arm64");
    assert_contains(&text, "linux/s390x");
}

#[test]
fn a_reference_by_digest_is_read_by_that_digest() {
    let Some(registries) = registries("registry::a_reference_by_digest") else {
        return;
    };
    let (_, digest) = registries.manifest_of("multi/agree:oci");
    let resolver = resolver(registries);
    let by_digest = resolve(
        &resolver,
        &format!("{}@{digest}", registries.open.image("multi/agree")),
        &[],
    );
    assert_eq!(by_digest.digest.to_string(), digest);
    assert_eq!(by_digest.entrypoint, words(&["/hello", "--greet"]));
    let nothing = format!(
        "{}@sha256:{}",
        registries.open.image("multi/agree"),
        "0".repeat(64)
    );
    let err = refusal(&resolver, &nothing, &Keyring::anonymous());
    assert!(matches!(err.failure, Failure::NotFound { .. }), "{err}");
}

#[test]
fn an_image_that_does_not_exist_is_refused_with_the_registrys_answer() {
    let Some(registries) = registries("registry::an_image_that_does_not_exist") else {
        return;
    };
    let image = registries.open.image("single/oci:no-such-tag");
    let err = refusal(&resolver(registries), &image, &Keyring::anonymous());
    assert!(matches!(err.failure, Failure::NotFound { .. }), "{err}");
    let text = err.to_string();
    assert_contains(&text, &format!("image {image}"));
    assert_contains(
        &text,
        "answered 404 Not Found to GET /v2/single/oci/manifests/no-such-tag",
    );
    assert_contains(&text, "MANIFEST_UNKNOWN: manifest unknown");
    assert_contains(&text, "kubexit.io/entrypoint.app");
}

#[test]
fn basic_auth_reads_a_private_registry_with_its_credentials_and_says_when_they_are_missing_or_wrong()
 {
    let Some(registries) = registries("registry::basic_auth") else {
        return;
    };
    let resolver = resolver(registries);
    let image = registries.basic.image("single/oci:1");
    let good = credentials_for(&registries.basic.authority, USER, PASSWORD);
    let resolved = block(resolver.resolve_with(&image, &[], &good)).expect("with credentials");
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));

    let none = refusal(&resolver, &image, &Keyring::anonymous());
    assert!(
        matches!(none.failure, Failure::Unauthorized { .. }),
        "{none}"
    );
    let text = none.to_string();
    assert_contains(&text, "answered 401 Unauthorized");
    assert_contains(&text, "UNAUTHORIZED: authentication required");
    assert_contains(
        &text,
        &format!("none were given for {}", registries.basic.authority),
    );
    assert_contains(&text, "kubexit.io/entrypoint.app");

    let wrong = credentials_for(&registries.basic.authority, USER, "not-the-password");
    let refused = refusal(&resolver, &image, &wrong);
    let text = refused.to_string();
    assert_contains(&text, "answered 401 Unauthorized");
    assert_contains(
        &text,
        &format!(
            "the credentials of user {USER} for {}",
            registries.basic.authority
        ),
    );
    assert_contains(&text, "from secret test/pull were refused");
}

#[test]
fn a_token_service_gives_anonymous_pulls_of_public_repositories() {
    let Some(registries) = registries("registry::a_token_service_gives_anonymous_pulls") else {
        return;
    };
    let resolved = resolve(
        &resolver(registries),
        &registries.token.image("multi/agree:oci"),
        &[],
    );
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));
    assert!(
        registries
            .tokens
            .requests()
            .contains(&"repository:multi/agree:pull".to_owned()),
        "{:?}",
        registries.tokens.requests()
    );
}

#[test]
fn a_private_repository_behind_a_token_service_needs_credentials_and_is_read_with_them() {
    let Some(registries) = registries("registry::a_private_repository_behind_a_token_service")
    else {
        return;
    };
    let resolver = resolver(registries);
    let image = registries.token.image("private/app:1");
    let none = refusal(&resolver, &image, &Keyring::anonymous());
    let text = none.to_string();
    assert!(
        matches!(none.failure, Failure::Unauthorized { .. }),
        "{text}"
    );
    assert_contains(&text, "answered 401 Unauthorized");
    assert_contains(&text, "the registry asks for credentials");

    let good = credentials_for(&registries.token.authority, USER, PASSWORD);
    let resolved = block(resolver.resolve_with(&image, &[], &good)).expect("with credentials");
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));
    assert!(
        registries
            .tokens
            .requests()
            .contains(&format!("repository:private/app:pull as {USER}")),
        "{:?}",
        registries.tokens.requests()
    );

    let wrong = credentials_for(&registries.token.authority, USER, "nope");
    let text = refusal(&resolver, &image, &wrong).to_string();
    assert_contains(
        &text,
        &format!(
            "{} answered 401 Unauthorized to GET https://{}/token",
            registries.tokens.authority, registries.tokens.authority
        ),
    );
    assert_contains(&text, "incorrect username or password");
}

#[test]
fn credentials_are_read_from_registry_auth_file_as_podman_reads_them() {
    let Some(registries) = registries("registry::credentials_are_read_from_registry_auth_file")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registries.basic.authority
        ),
    )
    .unwrap();
    let keyring = Keyring::from_auth_files_with(
        |name| (name == "REGISTRY_AUTH_FILE").then(|| file.clone().into()),
        0,
    )
    .expect("the auth file");
    let resolver = Resolver::new(settings(registries), keyring).expect("a resolver");
    let resolved = resolve(&resolver, &registries.basic.image("cmd-only:1"), &[]);
    assert_eq!(resolved.cmd, words(&["/hello", "run"]));
    // A file without the registry: the refusal says where it looked.
    std::fs::write(
        &file,
        r#"{"auths":{"elsewhere.example.com":{"auth":"eDp5"}}}"#,
    )
    .unwrap();
    let keyring = Keyring::from_auth_files_with(
        |name| (name == "REGISTRY_AUTH_FILE").then(|| file.clone().into()),
        0,
    )
    .expect("the auth file");
    let resolver = Resolver::new(settings(registries), Keyring::anonymous()).unwrap();
    let text = refusal(&resolver, &registries.basic.image("cmd-only:1"), &keyring).to_string();
    assert_contains(
        &text,
        &format!(
            "none for {} were found (looked in: REGISTRY_AUTH_FILE={})",
            registries.basic.authority,
            file.display()
        ),
    );
}

#[test]
fn a_credential_helper_that_would_hold_the_credentials_is_named_in_the_refusal() {
    let Some(registries) = registries("registry::a_credential_helper") else {
        return;
    };
    let json = format!(
        r#"{{"auths":{{"{}":{{}}}},"credsStore":"desktop"}}"#,
        registries.basic.authority
    );
    let keyring = Keyring::from_docker_config(json.as_bytes(), "~/.docker/config.json").unwrap();
    let text = refusal(
        &resolver(registries),
        &registries.basic.image("single/oci:1"),
        &keyring,
    )
    .to_string();
    assert_contains(
        &text,
        "docker-credential-desktop, which kubexit does not run",
    );
    assert_contains(&text, "REGISTRY_AUTH_FILE");
}

#[test]
fn a_certificate_from_an_untrusted_ca_is_refused_saying_how_to_trust_it() {
    let Some(registries) = registries("registry::a_certificate_from_an_untrusted_ca") else {
        return;
    };
    let untrusting = Settings {
        trust: Trust::default(),
        ..settings(registries)
    };
    let resolver = Resolver::new(untrusting, Keyring::anonymous()).unwrap();
    let err = refusal(
        &resolver,
        &registries.open.image("single/oci:1"),
        &Keyring::anonymous(),
    );
    assert!(matches!(err.failure, Failure::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert_contains(&text, "certificate");
    assert_contains(&text, "SSL_CERT_FILE");
}

#[test]
fn ssl_cert_file_replaces_the_systems_store() {
    let Some(registries) = registries("registry::ssl_cert_file") else {
        return;
    };
    let ca = registries.ca.clone();
    let trust = Trust::from_env_with(|name| (name == "SSL_CERT_FILE").then(|| ca.clone().into()));
    let resolver = Resolver::new(
        Settings {
            trust,
            ..settings(registries)
        },
        Keyring::anonymous(),
    )
    .unwrap();
    let resolved = resolve(&resolver, &registries.open.image("cmd-only:1"), &[]);
    assert_eq!(resolved.cmd, words(&["/hello", "run"]));
}

#[test]
fn plain_http_is_spoken_only_to_registries_named_insecure() {
    let Some(registries) = registries("registry::plain_http") else {
        return;
    };
    let image = registries.plain.image("single/oci:1");
    let resolved = resolve(&resolver(registries), &image, &[]);
    assert_eq!(resolved.entrypoint, words(&["/hello", "--greet"]));
    let secure_only = Resolver::new(
        Settings {
            insecure: Vec::new(),
            ..settings(registries)
        },
        Keyring::anonymous(),
    )
    .unwrap();
    let text = refusal(&secure_only, &image, &Keyring::anonymous()).to_string();
    assert_contains(
        &text,
        &format!("cannot reach {}", registries.plain.authority),
    );
    assert_contains(&text, "name it insecure (--insecure-registries)");

    // kubexit inject names it so.
    let pod = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let refused = inject_cli(registries, &["inject"], &pod, None);
    assert_eq!(refused.code(), 2, "{}", refused.stderr);
    assert_contains(&refused.stderr, "--insecure-registries");
    let done = inject_cli(
        registries,
        &[
            "inject",
            "--insecure-registries",
            &registries.plain.authority,
        ],
        &pod,
        None,
    );
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let out: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
}

#[test]
fn a_registry_that_never_answers_costs_at_most_the_budget() {
    let silent = Silent::start();
    for (insecure, what) in [(false, "a TLS handshake"), (true, "an HTTP request")] {
        let budget = Duration::from_millis(800);
        let settings = Settings {
            budget,
            per_call: Duration::from_secs(5),
            insecure: if insecure {
                vec![silent.authority.clone()]
            } else {
                Vec::new()
            },
            trust: Trust::default(),
            ..Settings::default()
        };
        let resolver = Resolver::new(settings, Keyring::anonymous()).unwrap();
        let started = Instant::now();
        let err = block(resolver.resolve(&format!("{}/hung:1", silent.authority), &[]))
            .expect_err("no answer");
        let took = started.elapsed();
        assert!(
            took >= budget && took < budget + Duration::from_millis(700),
            "{what}: took {took:?} for a budget of {budget:?}: {err}"
        );
        let text = err.to_string();
        assert!(
            matches!(
                err.failure,
                Failure::Timeout { .. } | Failure::Budget { .. }
            ),
            "{what}: {text}"
        );
        assert_contains(&text, "the lookup's budget of 800ms");
    }
}

#[test]
fn each_request_ends_within_its_own_timeout_inside_the_budget() {
    let silent = Silent::start();
    let settings = Settings {
        budget: Duration::from_secs(10),
        per_call: Duration::from_millis(300),
        trust: Trust::default(),
        ..Settings::default()
    };
    let resolver = Resolver::new(settings, Keyring::anonymous()).unwrap();
    let started = Instant::now();
    let err = block(resolver.resolve(&format!("{}/hung:1", silent.authority), &[]))
        .expect_err("no answer");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with requests of 300ms: {err}"
    );
    let text = err.to_string();
    assert!(matches!(err.failure, Failure::Timeout { .. }), "{text}");
    assert_contains(
        &text,
        &format!(
            "{} did not answer HEAD /v2/hung/manifests/1 within 300ms, the timeout of one request",
            silent.authority
        ),
    );
}

#[test]
fn a_registry_that_is_down_is_refused_as_unreachable() {
    let authority = format!("127.0.0.1:{}", free_port());
    let resolver = Resolver::new(
        Settings {
            trust: Trust::default(),
            ..Settings::default()
        },
        Keyring::anonymous(),
    )
    .unwrap();
    let image = format!("{authority}/gone:1");
    let err = refusal(&resolver, &image, &Keyring::anonymous());
    assert!(matches!(err.failure, Failure::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert_contains(&text, &format!("cannot reach {authority}"));
    assert_contains(&text, "refused");
    assert_contains(&text, "kubexit.io/entrypoint.app");
}

/// Pushes a two-platform index of its own to `repository:1`, so that no
/// other test's requests are counted with this test's.
fn own_index(registries: &Registries, repository: &str, entrypoint: &str) {
    let amd = format!("{}-amd64", repository.replace('/', "-"));
    let arm = format!("{}-arm64", repository.replace('/', "-"));
    for (name, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        registries
            .build(&Build {
                name,
                arch,
                entrypoint: Some(entrypoint),
                cmd: None,
            })
            .expect("build");
    }
    registries
        .push_list(&[&amd, &arm], &format!("{repository}:1"), "oci")
        .expect("push");
}

#[test]
fn a_hundred_lookups_at_once_make_one_set_of_requests_and_later_ones_none() {
    let Some(registries) = registries("registry::a_hundred_lookups_at_once") else {
        return;
    };
    own_index(registries, "cache/hundred", r#"["/app"]"#);
    let resolver = resolver(registries);
    let image = registries.token.image("cache/hundred:1");
    let all = block(futures_util::future::join_all(
        (0..100).map(|_| resolver.resolve(&image, &[])),
    ));
    for resolved in &all {
        let resolved = resolved.as_ref().expect("resolved");
        assert_eq!(resolved.entrypoint, words(&["/app"]));
    }
    // One set: the tag asked (refused, then with a token), the index, and
    // each platform's manifest and config, each once.
    let requests = registries.token.requests_for("/cache/hundred/");
    let shown: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    let count = |method: &str, part: &str, status: u16| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.contains(part) && r.status == status)
            .count()
    };
    assert_eq!(count("HEAD", "/manifests/1", 401), 1, "{shown:#?}");
    assert_eq!(count("HEAD", "/manifests/1", 200), 1, "{shown:#?}");
    assert_eq!(count("GET", "/manifests/sha256:", 200), 3, "{shown:#?}");
    assert_eq!(count("GET", "/blobs/sha256:", 200), 2, "{shown:#?}");
    assert_eq!(requests.len(), 7, "{shown:#?}");
    let tokens = registries
        .tokens
        .requests()
        .iter()
        .filter(|s| s.contains("cache/hundred"))
        .count();
    assert_eq!(tokens, 1, "one token for the hundred");

    // Later lookups within the tag's lifetime ask nothing at all.
    for _ in 0..100 {
        resolve(&resolver, &image, &[]);
    }
    let again = registries.token.requests_for("/cache/hundred/");
    assert_eq!(again.len(), requests.len(), "{again:#?}");
}

#[test]
fn a_tag_is_asked_again_once_its_lifetime_is_over_and_digests_are_kept_for_good() {
    let Some(registries) = registries("registry::a_tag_is_asked_again") else {
        return;
    };
    own_index(registries, "cache/moving", r#"["/first"]"#);
    let resolver = Resolver::new(
        Settings {
            tag_lifetime: Duration::ZERO,
            ..settings(registries)
        },
        Keyring::anonymous(),
    )
    .unwrap();
    let image = registries.basic.image("cache/moving:1");
    let keyring = credentials_for(&registries.basic.authority, USER, PASSWORD);
    let first = block(resolver.resolve_with(&image, &[], &keyring)).expect("first");
    assert_eq!(first.entrypoint, words(&["/first"]));
    let before = registries.basic.requests_for("/cache/moving/").len();
    let second = block(resolver.resolve_with(&image, &[], &keyring)).expect("second");
    assert_eq!(second, first);
    let after = registries.basic.requests_for("/cache/moving/");
    let new: Vec<_> = after[before..].to_vec();
    assert_eq!(new.len(), 1, "only the tag is asked again: {new:#?}");
    assert_eq!(
        (new[0].method.as_str(), new[0].path.as_str(), new[0].status),
        ("HEAD", "/v2/cache/moving/manifests/1", 200),
        "with the basic auth kept from the first lookup"
    );
    // The tag moves: the next lookup sees where it went.
    own_index(registries, "cache/moving", r#"["/second"]"#);
    let moved = block(resolver.resolve_with(&image, &[], &keyring)).expect("moved");
    assert_eq!(moved.entrypoint, words(&["/second"]));
    assert_ne!(moved.digest, first.digest);
}

// `kubexit inject` reading images: what the kubelet would run, wrapped.

/// Runs `kubexit inject ARGS` (or `uninject`) on `pod` (JSON), trusting
/// the test CA, with the credentials of `auth` (a REGISTRY_AUTH_FILE's
/// JSON; none: no credentials).
fn inject_cli(
    registries: &Registries,
    args: &[&str],
    pod: &serde_json::Value,
    auth: Option<&str>,
) -> crate::util::Finished {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("pod.json");
    std::fs::write(&input, pod.to_string()).unwrap();
    let auth_file = dir.path().join("auth.json");
    std::fs::write(&auth_file, auth.unwrap_or(r#"{"auths":{}}"#)).unwrap();
    crate::util::kubexit()
        .args(args)
        .args(["-o", "json"])
        .env("SSL_CERT_FILE", &registries.ca)
        .env("REGISTRY_AUTH_FILE", &auth_file)
        .arg_path(&input)
        .run()
}

fn injected(registries: &Registries, pod: &serde_json::Value) -> serde_json::Value {
    let done = inject_cli(registries, &["inject"], pod, None);
    assert_eq!(done.code(), 0, "kubexit inject failed:\n{}", done.stderr);
    serde_json::from_str(&done.stdout).unwrap()
}

/// A Job's pod of `containers`, whose sidecar is `proxy` when there is one.
fn job_pod(containers: serde_json::Value) -> serde_json::Value {
    let has_proxy = containers
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["name"] == "proxy"));
    let annotations = if has_proxy {
        serde_json::json!({"kubexit.io/sidecars": "proxy"})
    } else {
        serde_json::json!({"kubexit.io/birth-timeout": "10s"})
    };
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "job", "annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": containers},
    })
}

fn container_of<'a>(pod: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod}"))
}

#[test]
fn inject_wraps_what_the_kubelet_would_run_of_an_image_and_uninject_gives_the_pod_back() {
    let Some(registries) = registries("registry::inject_wraps_what_the_kubelet_would_run") else {
        return;
    };
    let single = registries.open.image("single/oci:1");
    let pod = job_pod(serde_json::json!([
        {"name": "app", "image": single},
        {"name": "args", "image": single, "args": ["--loud", "you"]},
        {"name": "proxy", "image": registries.open.image("cmd-only:1")},
        {"name": "own", "image": single, "command": ["/bin/own"]},
    ]));
    let out = injected(registries, &pod);
    let command = |name: &str| container_of(&out, name)["command"].clone();
    let args = |name: &str| container_of(&out, name).get("args").cloned();
    // ENTRYPOINT, then the image's CMD as args.
    assert_eq!(
        command("app"),
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
    assert_eq!(args("app"), Some(serde_json::json!(["world"])));
    // The container's own args replace CMD.
    assert_eq!(
        command("args"),
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
    assert_eq!(args("args"), Some(serde_json::json!(["--loud", "you"])));
    // An image with CMD only runs its CMD.
    assert_eq!(
        command("proxy"),
        serde_json::json!(["/kubexit/kubexit", "/hello", "run"])
    );
    assert_eq!(args("proxy"), None);
    assert_eq!(
        command("own"),
        serde_json::json!(["/kubexit/kubexit", "/bin/own"])
    );

    // The record pins each image read by its digest.
    let record: serde_json::Value = serde_json::from_str(
        out["metadata"]["annotations"]["kubexit.io/injected"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let (_, digest) = registries.manifest_of("single/oci:1");
    assert_eq!(
        record["containers"]["app"]["image"],
        format!("{single}@{digest}")
    );
    let (_, cmd_only) = registries.manifest_of("cmd-only:1");
    assert_eq!(
        record["containers"]["proxy"]["image"],
        format!("{}@{cmd_only}", registries.open.image("cmd-only:1"))
    );
    assert!(
        record["containers"]["own"].get("image").is_none(),
        "{record}"
    );

    // Injecting again changes nothing; uninjecting gives the pod back.
    assert_eq!(injected(registries, &out), out);
    let done = inject_cli(registries, &["uninject"], &out, None);
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let back: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(back, pod);
}

#[test]
fn inject_never_looks_up_a_container_with_its_own_command_nor_any_offline() {
    let Some(registries) = registries("registry::inject_never_looks_up") else {
        return;
    };
    let image = registries.open.image("never/asked:1");
    let own = job_pod(serde_json::json!([
        {"name": "app", "image": image, "command": ["/app"]},
    ]));
    injected(registries, &own);
    let none = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let done = inject_cli(registries, &["inject", "--offline"], &none, None);
    assert_eq!(done.code(), 2);
    assert_contains(&done.stderr, "container app has no command");
    assert_contains(&done.stderr, "kubexit.io/entrypoint.app");
    assert_eq!(registries.open.requests_for("never/asked"), []);
}

#[test]
fn inject_refuses_an_image_that_does_not_exist_naming_it_the_answer_and_the_way_out() {
    let Some(registries) = registries("registry::inject_refuses_an_image_that_does_not_exist")
    else {
        return;
    };
    let image = registries.open.image("no/such:1");
    let pod = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let done = inject_cli(registries, &["inject"], &pod, None);
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert_eq!(done.stdout, "");
    assert_contains(&done.stderr, "Pod job: container app:");
    assert_contains(&done.stderr, &image);
    assert_contains(&done.stderr, "404");
    assert_contains(&done.stderr, "kubexit.io/entrypoint.app");
}

#[test]
fn inject_reads_a_private_image_with_the_credentials_podman_would_use() {
    let Some(registries) = registries("registry::inject_reads_a_private_image") else {
        return;
    };
    let image = registries.basic.image("private/app:1");
    let pod = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let refused = inject_cli(registries, &["inject"], &pod, None);
    assert_eq!(refused.code(), 2, "{}", refused.stderr);
    assert_contains(&refused.stderr, &image);
    assert_contains(&refused.stderr, "401 Unauthorized");
    assert_contains(&refused.stderr, "kubexit.io/entrypoint.app");

    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let file = format!(
        r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
        registries.basic.authority
    );
    let done = inject_cli(registries, &["inject"], &pod, Some(&file));
    assert_eq!(done.code(), 0, "{}", done.stderr);
    let out: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
}

#[test]
fn inject_reads_an_index_for_the_pods_platforms_and_refuses_platforms_that_disagree() {
    let Some(registries) = registries("registry::inject_reads_an_index_for_the_pods_platforms")
    else {
        return;
    };
    let image = registries.open.image("multi/disagree:1");
    let mut pod = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let done = inject_cli(registries, &["inject"], &pod, None);
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert_contains(&done.stderr, &image);
    assert_contains(&done.stderr, "linux/amd64 has ENTRYPOINT");
    assert_contains(&done.stderr, "linux/arm64 has ENTRYPOINT");
    assert_contains(&done.stderr, "kubexit.io/entrypoint.app");

    pod["spec"]["nodeSelector"] = serde_json::json!({"kubernetes.io/arch": "arm64"});
    let out = injected(registries, &pod);
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/app-arm64"])
    );
    pod["spec"].as_object_mut().unwrap().remove("nodeSelector");
    pod["spec"]["affinity"] = serde_json::json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
            ]}
        ]}
    }});
    let out = injected(registries, &pod);
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
}

#[test]
fn inject_against_a_registry_that_never_answers_costs_at_most_its_budget() {
    let Some(registries) = registries("registry::inject_against_a_registry_that_never_answers")
    else {
        return;
    };
    let silent = Silent::start();
    // Two pods, two images, each in both: the lookups side by side, one
    // budget for all.
    let pod = job_pod(serde_json::json!([
        {"name": "app", "image": format!("{}/hung:1", silent.authority)},
        {"name": "proxy", "image": format!("{}/hung:2", silent.authority)},
    ]));
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [pod, pod]});
    let started = Instant::now();
    let done = inject_cli(
        registries,
        &["inject", "--registry-timeout", "1s"],
        &list,
        None,
    );
    let took = started.elapsed();
    assert_eq!(done.code(), 2, "{}", done.stderr);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1900),
        "took {took:?}:\n{}",
        done.stderr
    );
    assert_contains(&done.stderr, "the lookup's budget of 1s");
    assert_contains(&done.stderr, "kubexit.io/entrypoint.app");
}

// The webhook reading images, as `kubexit inject` does.

/// A webhook that trusts the test CA, with `extra` flags.
fn webhook(registries: &Registries, pki: &Pki, extra: &[&str]) -> Webhook {
    Webhook::start_with_env(
        &pki.cert,
        &pki.key,
        extra,
        &[("SSL_CERT_FILE", registries.ca.as_path())],
    )
}

/// `pod` with what the webhook's answer adds, or its refusal.
fn admitted(
    server: &Webhook,
    pki: &Pki,
    pod: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let answered = webhook_answer(&server.client(pki).review(&review_of(pod)));
    match (answered.allowed, answered.patch) {
        (true, Some(patch)) => Ok(patched(pod, &patch)),
        (true, None) => Err("allowed unchanged".into()),
        (false, _) => Err(answered.message),
    }
}

#[test]
fn the_webhook_wraps_a_container_without_command_as_kubexit_inject_does() {
    let Some(registries) = registries("registry::the_webhook_wraps_a_container_without_command")
    else {
        return;
    };
    let pki = Pki::new();
    let server = webhook(registries, &pki, &[]);
    let mut pod = job_pod(serde_json::json!([
        {"name": "app", "image": registries.open.image("single/oci:1")},
        {"name": "proxy", "image": registries.open.image("cmd-only:1")},
    ]));
    pod["metadata"]["namespace"] = serde_json::json!("team");
    let out = admitted(&server, &pki, &pod).expect("injected");
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );
    assert_eq!(
        container_of(&out, "app")["args"],
        serde_json::json!(["world"])
    );
    assert_eq!(
        out,
        injected(registries, &pod),
        "the same as kubexit inject"
    );
    server
        .process
        .wait_for_log("Pod team/job: injected into app, proxy");
}

#[test]
fn the_webhook_refuses_an_image_it_cannot_read_within_its_budget_and_reads_with_its_credentials() {
    let Some(registries) = registries("registry::the_webhook_refuses_an_image_it_cannot_read")
    else {
        return;
    };
    let silent = Silent::start();
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let auth_file = dir.path().join("config.json");
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#,
            registries.basic.authority
        ),
    )
    .unwrap();
    let pki = Pki::new();
    let server = webhook(
        registries,
        &pki,
        &[
            "--registry-timeout",
            "1s",
            "--registry-auth-file",
            auth_file.to_str().unwrap(),
        ],
    );
    let private = job_pod(serde_json::json!([
        {"name": "app", "image": registries.basic.image("private/app:1")},
    ]));
    let out = admitted(&server, &pki, &private).expect("read with the mounted credentials");
    assert_eq!(
        container_of(&out, "app")["command"],
        serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"])
    );

    let image = format!("{}/hung:1", silent.authority);
    let hung = job_pod(serde_json::json!([{"name": "app", "image": image}]));
    let started = Instant::now();
    let refused = admitted(&server, &pki, &hung).expect_err("denied");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1900),
        "took {took:?}: {refused}"
    );
    assert_contains(&refused, &image);
    assert_contains(&refused, "the lookup's budget of 1s");
    assert_contains(&refused, "kubexit.io/entrypoint.app");

    // Switched off, nothing is asked.
    let off = webhook(registries, &pki, &["--registry-lookup", "off"]);
    let never = job_pod(serde_json::json!([
        {"name": "app", "image": registries.open.image("never/webhook:1")},
    ]));
    let refused = admitted(&off, &pki, &never).expect_err("denied");
    assert_contains(&refused, "container app has no command");
    assert_eq!(registries.open.requests_for("never/webhook"), []);
}

// The webhook reading pull secrets from the real API server
// (`--registry-pull-secrets on`), with the rights of
// deploy/webhook/pull-secrets.yaml and nothing more.

/// `pod`, created in `namespace`, with what the webhook's answer adds, or
/// its refusal.
fn admitted_in(
    server: &Webhook,
    pki: &Pki,
    pod: &serde_json::Value,
    namespace: &str,
) -> Result<serde_json::Value, String> {
    let mut review = review_of(pod);
    review["request"]["namespace"] = serde_json::json!(namespace);
    let answered = webhook_answer(&server.client(pki).review(&review));
    match (answered.allowed, answered.patch) {
        (true, Some(patch)) => Ok(patched(pod, &patch)),
        (true, None) => Err("allowed unchanged".into()),
        (false, _) => Err(answered.message),
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret with the credentials of `authority`.
fn pull_secret(name: &str, authority: &str) -> serde_json::Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = b64(&format!("{USER}:{PASSWORD}"));
    let config = format!(r#"{{"auths":{{"{authority}":{{"auth":"{auth}"}}}}}}"#);
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(&config)},
    })
}

/// deploy/webhook/pull-secrets.yaml applied for the webhook's
/// ServiceAccount `kubexit-webhook` of `home`, bound in `namespace`; a
/// kubeconfig with that account's token.
fn webhook_account(
    cluster: &crate::util::k8s::Cluster,
    home: &str,
    namespace: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        crate::util::files::root().join("deploy/webhook/pull-secrets.yaml"),
    )
    .unwrap();
    let objects = kubexit::inject::manifest::parse(&text, "pull-secrets.yaml").unwrap();
    let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, ["ClusterRole", "RoleBinding"]);
    // A ClusterRole of this test's own name, so that the manifest's own
    // is never made for good (the dry run of webhook_kubernetes makes it).
    let role = format!(
        "{}-{home}",
        objects[0]["metadata"]["name"].as_str().unwrap()
    );
    let mut cluster_role = objects[0].clone();
    cluster_role["metadata"]["name"] = serde_json::json!(role);
    let (code, body) = cluster.create("", &cluster_role, false);
    assert_eq!(code, 201, "the ClusterRole: {body}");
    let mut binding = objects[1].clone();
    assert_eq!(binding["roleRef"]["name"], objects[0]["metadata"]["name"]);
    binding["roleRef"]["name"] = serde_json::json!(role);
    binding["metadata"]["namespace"] = serde_json::json!(namespace);
    binding["subjects"][0]["namespace"] = serde_json::json!(home);
    let (code, body) = cluster.create(namespace, &binding, false);
    assert_eq!(code, 201, "the RoleBinding: {body}");
    let account = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "kubexit-webhook"}});
    let (code, body) = cluster.create(home, &account, false);
    assert_eq!(code, 201, "the ServiceAccount: {body}");
    let (code, token) = cluster.request(
        "POST",
        &format!("/api/v1/namespaces/{home}/serviceaccounts/kubexit-webhook/token"),
        Some(
            &serde_json::json!({"apiVersion": "authentication.k8s.io/v1",
                                 "kind": "TokenRequest", "spec": {}}),
        ),
    );
    assert_eq!(code, 201, "the token: {token}");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {}\ncontexts:\n- \
             name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
            cluster.url,
            cluster.ca.display(),
            token["status"]["token"].as_str().unwrap()
        ),
    )
    .unwrap();
    kubeconfig
}

#[test]
fn the_webhook_reads_a_private_image_with_the_pods_pull_secrets_and_its_service_accounts() {
    let test = "registry::the_webhook_reads_a_private_image_with_the_pods_pull_secrets";
    let Some(registries) = registries(test) else {
        return;
    };
    let Some(cluster) = crate::util::k8s::cluster(test) else {
        return;
    };
    let home = cluster.namespace("kubexit");
    let team = cluster.namespace("team");
    let unbound = cluster.namespace("unbound");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = webhook_account(cluster, &home, &team, dir.path());
    let authority = &registries.basic.authority;
    for (namespace, name) in [
        (&team, "pod-cred"),
        (&team, "account-cred"),
        (&unbound, "pod-cred"),
    ] {
        let (code, body) = cluster.create(namespace, &pull_secret(name, authority), false);
        assert_eq!(code, 201, "{body}");
    }
    let builder = serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "builder"},
                                     "imagePullSecrets": [{"name": "account-cred"}]});
    assert_eq!(cluster.create(&team, &builder, false).0, 201);

    let pki = Pki::new();
    let server = Webhook::start_with_env(
        &pki.cert,
        &pki.key,
        &["--registry-pull-secrets", "on"],
        &[
            ("SSL_CERT_FILE", registries.ca.as_path()),
            ("KUBECONFIG", kubeconfig.as_path()),
        ],
    );
    server
        .process
        .wait_for_log("with the credentials of each pod's pull secrets");
    let wrapped = serde_json::json!(["/kubexit/kubexit", "/hello", "--greet"]);
    let private = |name: &str| {
        job_pod(serde_json::json!([
            {"name": "app", "image": registries.basic.image(&format!("private/{name}:1"))},
        ]))
    };
    // A repository of its own for the account's pod, so that no cache
    // answers it with what the pod's own secret read.
    registries
        .push("hello-amd64", "private/account:1", "oci")
        .unwrap_or_else(|e| panic!("{e}"));

    let mut own = private("app");
    own["spec"]["imagePullSecrets"] =
        serde_json::json!([{"name": "missing"}, {"name": "pod-cred"}]);
    let out = admitted_in(&server, &pki, &own, &team).expect("read with the pod's secret");
    assert_eq!(container_of(&out, "app")["command"], wrapped);
    server
        .process
        .wait_for_log(&format!("imagePullSecret {team}/missing does not exist"));

    let mut through_account = private("account");
    through_account["spec"]["serviceAccountName"] = serde_json::json!("builder");
    let out = admitted_in(&server, &pki, &through_account, &team)
        .expect("read with the ServiceAccount's secret");
    assert_eq!(container_of(&out, "app")["command"], wrapped);

    // Without a secret, or where the webhook may not read them, the
    // registry refuses, and the refusal says where credentials were sought.
    let refused = admitted_in(&server, &pki, &private("app"), &home).expect_err("no secret");
    assert_contains(&refused, "answered 401 Unauthorized");
    assert_contains(&refused, "kubexit.io/entrypoint.app");
    let refused = admitted_in(&server, &pki, &own, &unbound).expect_err("not bound there");
    assert_contains(&refused, "answered 401 Unauthorized");
    server.process.wait_for_log(&format!(
        "Cannot read imagePullSecret {unbound}/pod-cred: forbidden"
    ));
    server
        .process
        .wait_for_log("deploy/webhook/pull-secrets.yaml");
}
