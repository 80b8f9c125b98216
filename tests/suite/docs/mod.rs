//! What users copy is checked like code: the manifests in `examples/`, the
//! docker compose file, and every manifest, fragment, command line and link
//! of the README and of the pages in `docs/`.
//!
//! - Every Kubernetes object parses into the typed object it claims to be
//!   (k8s-openapi) with no field lost on the way (a misspelt field would be).
//! - Every container's command line is worked out as its runtime works it
//!   out, from the image's `ENTRYPOINT` and `CMD` and the container's
//!   overrides: in Kubernetes `command` replaces the `ENTRYPOINT` and `args`
//!   the `CMD`; in compose `entrypoint` replaces the `ENTRYPOINT` and
//!   `command` the `CMD`; in both, replacing the `ENTRYPOINT` drops the
//!   image's `CMD`. kubexit's own images are read from the Dockerfile; of
//!   other images nothing is assumed, so a container that runs kubexit in
//!   them must give its whole command line. The resulting argv (or each
//!   kubexit line of an `sh -c` script) is parsed by kubexit's own `Args`
//!   and validated by `Config`, as the binary would: an installer that
//!   compose would run as `/bin/kubexit /bin/kubexit --install /kubexit` is
//!   refused here, as kubexit refuses it at run time.
//! - Each kubexit of a pod (or compose project) has its graveyard on a
//!   mounted volume, and its dependencies exist there; `--install` writes
//!   to a mounted volume, and a kubexit run from a volume is run from one
//!   that is mounted.
//! - Every kubexit command line of the docs (in `sh` and `console` blocks,
//!   and in inline code) is one that kubexit accepts; scripts of the
//!   repository that the docs tell users to run exist.
//! - Every table of every page the repository ships renders whole: each
//!   row on one line with its header's number of cells, no fence or YAML
//!   inside, no code span left open.
//! - Every relative link leads to a file (and heading) that exists, every
//!   page of `docs/` opens with the question it answers, and the README's
//!   map reaches every page.

mod manifests;
mod markdown;
mod runtime;
mod shell;
mod tables;

use crate::util::files::root;
use std::collections::BTreeMap;
use std::fs;

use manifests::{check_compose, check_fragment, check_manifest, is_manifest};
use markdown::{anchors, blocks_and_prose, inline_code, links, pages};
use runtime::is_kubexit;
use shell::check_shell;
use tables::{read_tables, shipped_pages};

/// Problems found, each naming where it was found; a check reports all of
/// them at once rather than stopping at the first.
type Problems = Vec<String>;

fn assert_none(problems: Problems) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

#[test]
fn every_kubernetes_example_is_a_valid_object_with_a_valid_kubexit_setup() {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for entry in fs::read_dir(root().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.ends_with(".yaml") || file.starts_with("docker-compose") {
            continue;
        }
        let pods = check_manifest(&file, &fs::read_to_string(&path).unwrap(), &mut problems);
        if pods == 0 {
            problems.push(format!("{file}: no Job or Pod that runs kubexit"));
        }
        checked.push(file);
    }
    assert_none(problems);
    checked.sort();
    assert_eq!(
        checked,
        [
            "client-server-job-api.yaml",
            "client-server-job-graveyard.yaml",
            "cloudsql-proxy-job.yaml",
            "istio-job.yaml",
            "native-sidecar.yaml",
            "shared-proxy-job.yaml"
        ]
    );
}

#[test]
fn the_docker_compose_example_runs_as_compose_would_run_it() {
    let text = fs::read_to_string(root().join("examples/docker-compose.yaml")).unwrap();
    let mut problems = Vec::new();
    let supervised = check_compose("docker-compose.yaml", &text, true, &mut problems);
    assert_none(problems);
    assert_eq!(supervised, 2);
}

/// The defect this file exists to catch, kept as a case: compose's
/// `command` replaces only the `CMD`, so after kubexit's `ENTRYPOINT` an
/// installer written as in Kubernetes becomes
/// `/bin/kubexit /bin/kubexit --install /kubexit`.
#[test]
fn a_kubernetes_style_command_in_compose_is_joined_after_the_entrypoint_and_refused() {
    let service = |key: &str| {
        format!(
            "volumes: {{kubexit: {{}}, graveyard: {{}}}}\n\
             services:\n  \
               kubexit:\n    \
                 image: ghcr.io/kubexit/kubexit:scratch\n    \
                 {key}: ['/bin/kubexit', '--install', '/kubexit']\n    \
                 volumes: ['kubexit:/kubexit']\n  \
               app:\n    \
                 image: alpine\n    \
                 entrypoint: ['/kubexit/kubexit', 'true']\n    \
                 environment: {{KUBEXIT_NAME: app}}\n    \
                 volumes: ['kubexit:/kubexit', 'graveyard:/graveyard']\n"
        )
    };
    let mut problems = Vec::new();
    check_compose("as command", &service("command"), true, &mut problems);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("KUBEXIT_NAME is not set")
                && p.contains("/bin/kubexit\", \"/bin/kubexit\", \"--install")),
        "{problems:?}"
    );
    let mut problems = Vec::new();
    check_compose("as entrypoint", &service("entrypoint"), true, &mut problems);
    assert_none(problems);

    // In Kubernetes the same words belong in `command`; in `args` they
    // would follow the ENTRYPOINT as in compose.
    let pod = |key: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  \
               volumes: [{{name: kubexit, emptyDir: {{}}}}]\n  \
               initContainers:\n  \
               - name: kubexit\n    \
                 image: ghcr.io/kubexit/kubexit:scratch\n    \
                 {key}: ['/bin/kubexit', '--install', '/kubexit']\n    \
                 volumeMounts: [{{name: kubexit, mountPath: /kubexit}}]\n  \
               containers:\n  \
               - name: app\n    \
                 image: alpine\n    \
                 command: ['/kubexit/kubexit', 'true']\n    \
                 env: [{{name: KUBEXIT_NAME, value: app}}]\n    \
                 volumeMounts: [{{name: kubexit, mountPath: /kubexit}}]\n"
        )
    };
    let mut problems = Vec::new();
    check_manifest("as command", &pod("command"), &mut problems);
    assert_none(problems);
    let mut problems = Vec::new();
    check_manifest("as args", &pod("args"), &mut problems);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("KUBEXIT_NAME is not set")),
        "{problems:?}"
    );
}

#[test]
fn a_container_that_runs_kubexit_in_another_image_gives_its_whole_command_line() {
    let mut problems = Vec::new();
    let compose = "services:\n  app:\n    image: postgres:16-alpine\n    \
                   command: ['/kubexit/kubexit', 'psql']\n    \
                   environment: {KUBEXIT_NAME: app}\n";
    check_compose("compose", compose, true, &mut problems);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("give the whole command line in `entrypoint`")),
        "{problems:?}"
    );
}

#[test]
fn every_complete_manifest_in_the_docs_is_valid() {
    let mut problems = Vec::new();
    let mut manifests = BTreeMap::new();
    for (page, text) in pages() {
        let (blocks, _) = blocks_and_prose(&text);
        for block in blocks.iter().filter(|b| b.language == "yaml") {
            let origin = format!("{page} line {}", block.line);
            if is_manifest(&block.text) {
                check_manifest(&origin, &block.text, &mut problems);
                *manifests.entry(page.clone()).or_insert(0) += 1;
            } else {
                check_fragment(&origin, &block.text, &mut problems);
            }
        }
    }
    assert_none(problems);
    // The pages known to hold manifests: a block that stopped being
    // recognised would silently go unchecked.
    assert_eq!(manifests.get("docs/jobs.md"), Some(&2), "{manifests:?}");
    assert_eq!(manifests.get("docs/rbac.md"), Some(&1), "{manifests:?}");
}

#[test]
fn every_kubexit_command_line_in_the_docs_is_accepted() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for (page, text) in pages() {
        let (blocks, prose) = blocks_and_prose(&text);
        for block in &blocks {
            let origin = format!("{page} line {}", block.line);
            match block.language.as_str() {
                "sh" | "shell" | "bash" => {
                    checked += check_shell(&origin, &block.text, &mut problems)
                }
                // Only the lines typed at the prompt are commands.
                "console" => {
                    let typed: String = block
                        .text
                        .lines()
                        .filter_map(|l| l.strip_prefix("$ "))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    checked += check_shell(&origin, &typed, &mut problems);
                }
                _ => {}
            }
        }
        // Inline code is a command line when it starts like one.
        for code in inline_code(&prose) {
            let first = code
                .split_whitespace()
                .find(|w| !w.contains('='))
                .unwrap_or_default();
            if is_kubexit(first) || matches!(first, "sh" | "kubectl") {
                checked += check_shell(&format!("{page}: `{code}`"), &code, &mut problems);
            }
        }
    }
    assert_none(problems);
    assert!(checked >= 10, "only {checked} kubexit command lines found");
}

#[test]
fn a_misspelt_flag_or_variable_in_a_doc_command_line_is_caught() {
    let mut problems = Vec::new();
    check_shell(
        "case",
        "KUBEXIT_NAME=a kubexit --death-dep b -- true",
        &mut problems,
    );
    check_shell(
        "case",
        "KUBEXIT_NAME=a KUBEXIT_GRACE=1s kubexit true",
        &mut problems,
    );
    check_shell(
        "case",
        "KUBEXIT_GRACE_PERIOD=30 kubexit --name a true",
        &mut problems,
    );
    check_shell("case", "./demo/no-such-demo.sh", &mut problems);
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let mut problems = Vec::new();
    for (page, text) in pages() {
        let dir = root().join(&page).parent().unwrap().to_owned();
        let (_, prose) = blocks_and_prose(&text);
        for target in links(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() {
                root().join(&page)
            } else {
                dir.join(file)
            };
            if !path.exists() {
                problems.push(format!("{page}: link {target}: no such file"));
                continue;
            }
            if !fragment.is_empty()
                && !anchors(&fs::read_to_string(&path).unwrap())
                    .iter()
                    .any(|a| a == fragment)
            {
                problems.push(format!("{page}: link {target}: no such heading"));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn every_docs_page_opens_with_its_question_and_is_on_the_readme_map() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    let (_, map) = blocks_and_prose(&readme);
    let mut problems = Vec::new();
    for (page, text) in pages().into_iter().filter(|(p, _)| p.starts_with("docs/")) {
        let mut lines = text.lines();
        let title = lines.next().unwrap_or_default();
        let blank = lines.next().unwrap_or_default();
        // The question is the first paragraph, on one line or several.
        let question: Vec<&str> = lines.take_while(|l| !l.is_empty()).collect();
        let question = question.join(" ");
        let opens_well = title.starts_with("# ")
            && blank.is_empty()
            && question.starts_with('*')
            && question.ends_with("?*");
        if !opens_well {
            problems.push(format!(
                "{page}: should open with `# Title`, a blank line, and the question it answers in italics, `*...?*`"
            ));
        }
        if !links(&map).contains(&page) {
            problems.push(format!(
                "{page}: not on the README's map (link it as ]({page}))"
            ));
        }
    }
    assert_none(problems);
}

#[test]
fn every_table_of_every_shipped_page_renders_whole() {
    let pages = shipped_pages();
    let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
    // The pages found must include these, or the walk went wrong.
    for page in [
        "README.md",
        "BENCHMARKS.md",
        "docs/inject.md",
        "docs/configuration.md",
        "examples/README.md",
    ] {
        assert!(names.contains(&page), "{page} not found in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.starts_with("tests/fixtures/")),
        "{names:?}"
    );
    let mut problems = Vec::new();
    let mut tables = 0;
    for (page, text) in &pages {
        let (found, wrong) = read_tables(text);
        tables += found;
        problems.extend(wrong.into_iter().map(|p| format!("{page} {p}")));
    }
    assert_none(problems);
    // Tables that stopped being recognised would go unchecked.
    assert!(tables >= 30, "only {tables} tables found");
}
