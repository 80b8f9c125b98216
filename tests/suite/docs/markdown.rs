//! The pages users read, taken apart: fenced blocks, prose, inline code,
//! links and headings.

use std::fs;
use std::path::PathBuf;

use crate::util::files::root;

/// The Markdown pages users read: the README, every page of `docs/`, and
/// the examples' README.
pub fn pages() -> Vec<(String, String)> {
    let mut paths = vec![root().join("README.md"), root().join("examples/README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    paths.extend(docs);
    read(paths)
}

/// Each page as its path from the checkout and its text.
pub fn read(paths: Vec<PathBuf>) -> Vec<(String, String)> {
    paths
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap().display().to_string();
            (name, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// A fenced code block: its language and its text, with the fence's
/// indentation removed (blocks inside list items are indented).
pub struct Block {
    pub language: String,
    pub text: String,
    pub line: usize,
}

/// The fenced blocks of a page, and its prose with the blocks and HTML
/// comments blanked out.
pub fn blocks_and_prose(page: &str) -> (Vec<Block>, String) {
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut open: Option<(usize, Block)> = None;
    for (i, line) in page.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None if trimmed.starts_with("```") => {
                let block = Block {
                    language: trimmed[3..].trim().to_owned(),
                    text: String::new(),
                    line: i + 1,
                };
                open = Some((indent, block));
                prose.push('\n');
            }
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
            Some(_) if trimmed.starts_with("```") => {
                blocks.push(open.take().unwrap().1);
                prose.push('\n');
            }
            Some((indent, block)) => {
                block.text.push_str(line.get(*indent..).unwrap_or(trimmed));
                block.text.push('\n');
                prose.push('\n');
            }
        }
    }
    while let Some(start) = prose.find("<!--") {
        let end = prose[start..]
            .find("-->")
            .map_or(prose.len(), |e| start + e + 3);
        prose.replace_range(start..end, "");
    }
    (blocks, prose)
}

/// The inline code spans of prose.
pub fn inline_code(prose: &str) -> Vec<String> {
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// GitHub's anchor for a heading: lower case, spaces as `-`, punctuation
/// other than `-` and `_` dropped.
pub fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

pub fn anchors(page: &str) -> Vec<String> {
    let (_, prose) = blocks_and_prose(page);
    prose
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of a page's Markdown links.
pub fn links(prose: &str) -> Vec<String> {
    prose
        .split("](")
        .skip(1)
        .filter_map(|s| s.split_once(')').map(|(target, _)| target.to_owned()))
        .collect()
}
