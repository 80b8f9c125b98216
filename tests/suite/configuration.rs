//! The command line and environment: upstream's interface, flags of our
//! own, and a clear exit status 2 for every bad input.

use std::fs;

use kubexit::config::Args;
use kubexit::config::spec::About;

use crate::util::{Kubexit, Yard, assert_contains, files::root, kubexit};

/// Runs kubexit with `env` and `args` and expects exit 2 with `message`
/// in its log, and no child started.
fn refused(yard: &Yard, env: &[(&str, &str)], args: &[&str], message: &str) {
    let mut k = kubexit();
    k.env("KUBEXIT_GRAVEYARD", yard.path());
    for (key, value) in env {
        k.env(key, value);
    }
    let done = k.args(args).run();
    assert_eq!(
        done.code(),
        2,
        "{env:?} {args:?} was not refused:\n{}",
        done.stderr
    );
    assert!(
        done.stderr.contains(message),
        "{env:?} {args:?}: expected {message:?} in\n{}",
        done.stderr
    );
    assert!(!done.stdout.contains("started"), "the child ran");
}

const CHILD: &[&str] = &["sh", "-c", "echo started"];

#[test]
fn no_command_exits_2_with_usage() {
    let yard = Yard::new();
    refused(&yard, &[("KUBEXIT_NAME", "a")], &[], "no command given");
}

#[test]
fn missing_or_empty_name_exits_2() {
    let yard = Yard::new();
    refused(&yard, &[], CHILD, "KUBEXIT_NAME is not set");
    refused(&yard, &[("KUBEXIT_NAME", "")], CHILD, "must not be empty");
}

#[test]
fn names_that_would_leave_the_graveyard_exit_2() {
    let yard = Yard::new();
    for (name, message) in [
        ("a/b", "contains '/'"),
        ("..", "starts with '.'"),
        (".", "starts with '.'"),
        (".hidden", "reserved for kubexit"),
        ("../../etc/passwd", "contains '/'"),
    ] {
        refused(&yard, &[("KUBEXIT_NAME", name)], CHILD, message);
    }
    assert_eq!(std::fs::read_dir(yard.path()).unwrap().count(), 0);
}

#[test]
fn bad_dependency_names_and_self_dependency_exit_2() {
    let yard = Yard::new();
    for var in ["KUBEXIT_DEATH_DEPS", "KUBEXIT_BIRTH_DEPS"] {
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, "db, ../x")],
            CHILD,
            var,
        );
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, ".tmp")],
            CHILD,
            "reserved",
        );
        refused(
            &yard,
            &[("KUBEXIT_NAME", "a"), (var, "db,a")],
            CHILD,
            "depends on itself",
        );
    }
}

#[test]
fn bad_durations_exit_2_naming_the_variable() {
    let yard = Yard::new();
    for var in ["KUBEXIT_GRACE_PERIOD", "KUBEXIT_BIRTH_TIMEOUT"] {
        for value in ["30", "soon", "-5s", "1d", ""] {
            refused(&yard, &[("KUBEXIT_NAME", "a"), (var, value)], CHILD, var);
        }
    }
}

#[test]
fn empty_or_root_graveyard_exits_2() {
    for value in ["", "/", "//"] {
        let done = kubexit()
            .env("KUBEXIT_NAME", "a")
            .env("KUBEXIT_GRAVEYARD", value)
            .args(CHILD)
            .run();
        assert_eq!(done.code(), 2, "{value:?}: {}", done.stderr);
        assert_contains(&done.stderr, "KUBEXIT_GRAVEYARD");
    }
}

#[test]
fn bad_stop_signal_and_stopped_exit_code_exit_2() {
    let yard = Yard::new();
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOP_SIGNAL", "SIGFOO")],
        CHILD,
        "not a signal",
    );
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOPSIGNAL", "99")],
        CHILD,
        "not a signal",
    );
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a"), ("KUBEXIT_STOPPED_EXIT_CODE", "300")],
        CHILD,
        "0 to 255",
    );
    refused(
        &yard,
        &[
            ("KUBEXIT_NAME", "a"),
            ("KUBEXIT_IGNORE_CODE_ON_DEATH_DEPS", "perhaps"),
        ],
        CHILD,
        "not a boolean",
    );
}

#[test]
fn unknown_flag_before_the_command_exits_2() {
    let yard = Yard::new();
    refused(
        &yard,
        &[("KUBEXIT_NAME", "a")],
        &["--no-such-flag", "true"],
        "--no-such-flag",
    );
}

#[test]
fn flags_override_the_environment_and_the_rest_is_the_childs() {
    let yard = Yard::new();
    let done = kubexit()
        .env("KUBEXIT_NAME", "from-env")
        .args(["--name", "from-flag", "--graveyard"])
        .arg_path(yard.path())
        .args(["--", "sh", "-c", "echo \"$0 $1\"", "--name", "x"])
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert_eq!(done.stdout, "--name x\n");
    assert!(yard.read("from-flag").is_some());
    assert!(yard.read("from-env").is_none());
}

#[test]
fn help_lists_every_upstream_variable_and_version_prints() {
    let done = kubexit().args(["--help"]).run();
    assert_eq!(done.code(), 0);
    for var in [
        "KUBEXIT_NAME",
        "KUBEXIT_GRAVEYARD",
        "KUBEXIT_DEATH_DEPS",
        "KUBEXIT_GRACE_PERIOD",
        "KUBEXIT_BIRTH_DEPS",
        "KUBEXIT_BIRTH_TIMEOUT",
        "KUBEXIT_POD_NAME",
        "KUBEXIT_NAMESPACE",
        "KUBEXIT_STOP_SIGNAL",
        "KUBEXIT_STOPPED_EXIT_CODE",
    ] {
        assert!(
            done.stdout.contains(var),
            "--help lacks {var}:\n{}",
            done.stdout
        );
    }
    let done = kubexit().args(["--version"]).run();
    assert_eq!(done.code(), 0);
    assert!(done.stdout.starts_with("kubexit "), "{}", done.stdout);
}

#[test]
fn dependency_lists_are_trimmed() {
    let yard = Yard::new();
    yard.bury("db");
    let done = Kubexit::named("app", &yard)
        .env("KUBEXIT_DEATH_DEPS", " x ,, db ")
        .sh("echo started")
        .run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    assert!(
        !done.stdout.contains("started"),
        "the child ran although db is dead"
    );
}

/// Without birth dependencies the pod name has nothing to do, in either
/// build: upstream manifests set it on every container.
#[test]
fn a_pod_name_without_birth_dependencies_changes_nothing() {
    let yard = Yard::new();
    let run = Kubexit::named("sidecar", &yard)
        .env("KUBEXIT_POD_NAME", "job-abc")
        .env("KUBEXIT_NAMESPACE", "batch")
        .args(CHILD)
        .run();
    assert_eq!(run.code(), 0, "{}", run.stderr);
    assert_eq!(run.stdout, "started\n");
}

// ---------------------------------------------------------------------------
// The docs and --help, held to the specification of settings
// ---------------------------------------------------------------------------

fn page(name: &str) -> String {
    fs::read_to_string(root().join(name)).unwrap()
}

/// One row of a Markdown table.
struct Row {
    line: usize,
    text: String,
    cells: Vec<String>,
}

/// The rows of the table of `page` whose header starts with `header`.
/// Cells are split on `|` outside inline code.
fn table(page: &str, header: &[&str]) -> Vec<Row> {
    let cells = |line: &str| {
        let mut cells = vec![String::new()];
        let mut code = false;
        for c in line.trim().trim_matches('|').chars() {
            match c {
                '`' => code = !code,
                '|' if !code => {
                    cells.push(String::new());
                    continue;
                }
                _ => {}
            }
            cells.last_mut().unwrap().push(c);
        }
        cells
            .into_iter()
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
    };
    let lines: Vec<&str> = page.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.starts_with('|')
                && cells(l).iter().zip(header).filter(|(c, h)| c == *h).count() == header.len()
        })
        .unwrap_or_else(|| panic!("no table headed {header:?}"));
    lines[start + 2..]
        .iter()
        .enumerate()
        .take_while(|(_, l)| l.starts_with('|'))
        .map(|(i, l)| Row {
            line: start + 3 + i,
            text: (*l).to_owned(),
            cells: cells(l),
        })
        .collect()
}

/// The flags of a cell (`` `--listen ADDR:PORT` ``, `` `--a`, `--b` ``),
/// without their values.
fn flags(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|code| code.strip_prefix("--"))
        .map(|code| {
            code.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// A default cell, one entry per flag of its row: a remark in parentheses
/// at the end is dropped (`` `0s` (`5s` in the Deployment) ``), a cell
/// that is all remark is its words (`(required)`), and a row of several
/// flags lists their defaults in order or gives one for all.
#[cfg(feature = "webhook")]
fn defaults(cell: &str, flags: usize) -> Vec<String> {
    let cell = match cell.strip_prefix('(').and_then(|c| c.strip_suffix(')')) {
        Some(words) => words,
        None => cell.rfind(" (").map_or(cell, |at| &cell[..at]),
    };
    let parts: Vec<String> = cell.split(", ").map(str::to_owned).collect();
    if flags > 1 && parts.len() == flags {
        parts
    } else {
        vec![cell.to_owned(); flags]
    }
}

/// The lines of `--help` that show options, by flag.
fn help_lines(help: &str) -> Vec<(String, String)> {
    help.lines()
        .filter_map(|line| {
            let option = line
                .trim_start()
                .trim_start_matches("-h, ")
                .trim_start_matches("-V, ");
            let flag = option.strip_prefix("--")?.split([' ', '<']).next()?;
            Some((flag.to_owned(), line.to_owned()))
        })
        .collect()
}

fn help_of(args: &[&str]) -> String {
    let done = kubexit().args(args).run();
    assert_eq!(done.code(), 0, "{}", done.stderr);
    done.stdout
}

fn fail_on(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// docs/configuration.md's table is the supervisor's settings: each with
/// its variable, its flag, its default and its aliases, and no other row.
#[test]
fn the_configuration_page_lists_every_setting_with_the_specs_variable_and_default() {
    let settings: Vec<&About> = Args::all_settings().collect();
    let text = page("docs/configuration.md");
    let rows = table(&text, &["variable", "flag", "default"]);
    let mut problems = Vec::new();
    for row in &rows {
        let at = format!("docs/configuration.md:{}", row.line);
        let variable = row.cells[0].trim_matches('`');
        let [flag] = &flags(&row.cells[1])[..] else {
            problems.push(format!("{at}: one flag per row: {}", row.text));
            continue;
        };
        let Some(about) = settings.iter().find(|a| a.flag == flag) else {
            problems.push(format!("{at}: --{flag} is not a setting of kubexit"));
            continue;
        };
        if about.variable != Some(variable) {
            problems.push(format!(
                "{at}: --{flag} is {:?}, not {variable}",
                about.variable
            ));
        }
        if row.cells[2] != about.absent.in_docs() {
            problems.push(format!(
                "{at}: --{flag}'s default is {}, not {}",
                about.absent.in_docs(),
                row.cells[2]
            ));
        }
        for alias in about.aliases {
            if !row.text.contains(alias.variable) {
                problems.push(format!(
                    "{at}: --{flag}'s row lacks its alias {}",
                    alias.variable
                ));
            }
        }
    }
    for about in &settings {
        let documented = rows
            .iter()
            .filter(|row| flags(&row.cells[1]) == [about.flag])
            .count();
        if documented != 1 {
            problems.push(format!(
                "docs/configuration.md has {documented} rows for --{} ({})",
                about.flag, about.label
            ));
        }
    }
    fail_on(problems);
}

/// `kubexit --help` shows each setting of the spec on its flag's line, with
/// its variable, its default and its aliases; any option read from a
/// variable is one of the spec's.
#[test]
fn help_shows_every_setting_with_the_specs_variable_default_and_aliases() {
    let settings: Vec<&About> = Args::all_settings().collect();
    let help = help_of(&["--help"]);
    let lines = help_lines(&help);
    let mut problems = Vec::new();
    for about in &settings {
        let Some((_, line)) = lines.iter().find(|(flag, _)| flag == about.flag) else {
            problems.push(format!("--help lacks --{}", about.flag));
            continue;
        };
        let mut wanted = vec![about.absent.in_help()];
        wanted.extend(about.variable.map(|v| format!("[env: {v}=")));
        wanted.extend(about.aliases.iter().map(|a| a.variable.to_owned()));
        for word in wanted {
            if !line.contains(&word) {
                problems.push(format!("--help's --{} lacks {word}: {line}", about.flag));
            }
        }
    }
    for (flag, line) in &lines {
        if line.contains("[env: ") && !settings.iter().any(|a| a.flag == flag) {
            problems.push(format!("--{flag} is not in the spec: {line}"));
        }
    }
    fail_on(problems);
}

/// docs/webhook.md's table of flags is what `kubexit webhook --help` shows
/// (which the library's tests hold to the webhook's spec): every flag with
/// a default, that default, and no flag the webhook does not have.
#[cfg(feature = "webhook")]
#[test]
fn the_webhook_page_lists_every_flag_of_webhook_help_with_its_default() {
    let help = help_of(&["webhook", "--help"]);
    let shown: Vec<(String, String)> = help_lines(&help)
        .into_iter()
        .filter_map(|(flag, line)| {
            let default = match line.split_once("[default: ") {
                Some((_, rest)) => rest.split(']').next()?.to_owned(),
                None if line.contains("[required]") => "required".to_owned(),
                None => return None,
            };
            Some((flag, default))
        })
        .collect();
    assert!(shown.len() >= 10, "{help}");
    let text = page("docs/webhook.md");
    let rows = table(&text, &["flag", "default"]);
    let mut problems = Vec::new();
    let mut documented = Vec::new();
    for row in &rows {
        let at = format!("docs/webhook.md:{}", row.line);
        let flags = flags(&row.cells[0]);
        for (flag, default) in flags.iter().zip(defaults(&row.cells[1], flags.len())) {
            documented.push(flag.clone());
            let default = default.replace('`', "");
            match shown.iter().find(|(f, _)| f == flag) {
                None => problems.push(format!("{at}: kubexit webhook has no --{flag}")),
                Some((_, help)) if *help != default => {
                    problems.push(format!("{at}: --{flag}'s default is {help}, not {default}"))
                }
                Some(_) => {}
            }
        }
    }
    for (flag, _) in &shown {
        if documented.iter().filter(|d| *d == flag).count() != 1 {
            problems.push(format!("docs/webhook.md needs one row for --{flag}"));
        }
    }
    fail_on(problems);
}
