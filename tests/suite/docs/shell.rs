//! Shell lines as the docs write them: split into words, and the kubexit
//! invocations found in them (directly, after `exec`, inside `sh -c`, or
//! after `kubectl exec --`).

use std::collections::BTreeMap;

use super::Problems;
use super::runtime::{accept, is_kubexit};
use crate::util::files::root;

/// One token of a shell line: a word, or an operator between commands.
#[derive(Debug, PartialEq)]
pub enum Token {
    Word(String),
    Operator,
}

/// Splits a shell line into words as sh does for the simple cases the docs
/// use: quotes, backslashes, comments, and `&`, `|`, `;` between commands.
pub fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed ' in {line:?}")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => w.push(chars.next().unwrap_or('\\')),
                        Some(c) => w.push(c),
                        None => return Err(format!("unclosed \" in {line:?}")),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '#' if word.is_none() => break,
            '&' | '|' | ';' => {
                out.extend(word.take().map(Token::Word));
                out.push(Token::Operator);
                while chars.next_if(|c| matches!(c, '&' | '|')).is_some() {}
            }
            c if c.is_whitespace() => out.extend(word.take().map(Token::Word)),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word.map(Token::Word));
    Ok(out)
}

/// The simple commands of a script: lines joined where they end in `\`,
/// split at operators.
pub fn simple_commands(script: &str) -> Result<Vec<Vec<String>>, String> {
    let joined = script.replace("\\\n", " ");
    let mut commands = Vec::new();
    for line in joined.lines() {
        let mut current = Vec::new();
        for token in tokens(line)? {
            match token {
                Token::Word(w) => current.push(w),
                Token::Operator => commands.push(std::mem::take(&mut current)),
            }
        }
        commands.push(current);
    }
    commands.retain(|c| !c.is_empty());
    Ok(commands)
}

/// A kubexit invocation found in a command: the variables set on its line,
/// and its argv from the kubexit word on.
pub struct Invocation {
    pub env: BTreeMap<String, String>,
    pub argv: Vec<String>,
}

/// The kubexit invocations in one simple command: directly, after
/// `exec`, inside `sh -c SCRIPT`, or after `kubectl exec ... --`. The
/// other programs a line runs are returned too, for the caller to judge.
pub fn invocations(
    words: &[String],
    found: &mut Vec<Invocation>,
    others: &mut Vec<String>,
) -> Result<(), String> {
    let mut env = BTreeMap::new();
    let mut rest = words;
    while let Some((first, tail)) = rest.split_first() {
        match first.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                env.insert(key.to_owned(), value.to_owned());
                rest = tail;
            }
            _ => break,
        }
    }
    if rest.first().is_some_and(|w| w == "exec") {
        rest = &rest[1..];
    }
    let Some(program) = rest.first() else {
        return Ok(());
    };
    if is_kubexit(program) {
        found.push(Invocation {
            env,
            argv: rest.to_vec(),
        });
    } else if matches!(program.as_str(), "sh" | "/bin/sh" | "bash" | "/bin/bash")
        && rest.get(1).is_some_and(|w| w == "-c")
    {
        if let Some(script) = rest.get(2) {
            for command in simple_commands(script)? {
                invocations(&command, found, others)?;
            }
        }
    } else if program == "kubectl" && rest.get(1).is_some_and(|w| w == "exec") {
        if let Some(dashes) = rest.iter().position(|w| w == "--") {
            invocations(&rest[dashes + 1..], found, others)?;
        }
    } else {
        others.push(program.clone());
    }
    Ok(())
}

/// Checks the kubexit invocations of a shell text. A line that names its
/// kubexit (`KUBEXIT_NAME` or `--name`) must be one kubexit runs; others
/// must parse. A script of this repository that a line runs must exist.
pub fn check_shell(origin: &str, text: &str, problems: &mut Problems) -> usize {
    let commands = match simple_commands(text) {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("{origin}: {e}"));
            return 0;
        }
    };
    let mut checked = 0;
    for words in commands {
        let mut found = Vec::new();
        let mut others = Vec::new();
        if let Err(e) = invocations(&words, &mut found, &mut others) {
            problems.push(format!("{origin}: {e}"));
        }
        for program in others {
            let ours = program.starts_with("./")
                || program.ends_with(".sh")
                || program.starts_with("bench/");
            if ours && !root().join(&program).exists() {
                problems.push(format!(
                    "{origin}: runs {program}, which is not in the repository"
                ));
            }
        }
        for invocation in found {
            let complete = invocation.env.contains_key("KUBEXIT_NAME");
            if let Err(e) = accept(&invocation.argv, &invocation.env, complete) {
                problems.push(format!("{origin}: {}: {e}", words.join(" ")));
            }
            checked += 1;
        }
    }
    checked
}
