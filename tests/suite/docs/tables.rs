//! Tables as GitHub renders them, read line by line and held to the shape
//! that renders whole.
//!
//! A table starts at a line of cells followed by a delimiter row
//! (`|---|---|`) and, as on GitHub, runs until a blank line: a line without
//! pipes in between is not a paragraph but one more row, which is how a
//! manifest pasted into a cell swallows the rows after it. Within that
//! stretch every line must be a whole row: it starts and ends with a pipe,
//! has as many cells as the header (GitHub drops the cells beyond and pads
//! the missing, so either way something is lost), holds no fence and no
//! YAML, and closes every backtick span it opens within its cell (an
//! unclosed one shows its backticks and the markup after them as text).
//! Cells are split on every pipe not escaped by a backslash, inside code
//! spans too, as GitHub splits them. Tables inside fenced blocks are text,
//! and are not read.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::files::root;

/// Every Markdown page the repository ships, by path from its root: the
/// README, `docs/`, the examples' README, the benchmarks' pages and any
/// other, but not the test fixtures (inputs of tests, not pages) nor
/// build output.
pub fn shipped_pages() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let from_root = path.strip_prefix(root()).unwrap();
            if path.is_dir() {
                let skipped = name.starts_with('.')
                    || name == "target"
                    || from_root == Path::new("tests/fixtures");
                if !skipped {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(root(), &mut paths);
    super::markdown::read(paths)
}

/// What is wrong with the tables of `page`, each problem with its line.
pub fn table_problems(page: &str) -> Vec<String> {
    read_tables(page).1
}

/// The number of tables of `page`, and what is wrong with them.
pub fn read_tables(page: &str) -> (usize, Vec<String>) {
    let lines: Vec<&str> = page.lines().map(str::trim).collect();
    let mut problems = Vec::new();
    let mut tables = 0;
    let mut fence: Option<&str> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if let Some(open) = fence {
            if closes(line, open) {
                fence = None;
            }
            continue;
        }
        fence = fence_of(line);
        if fence.is_some() {
            continue;
        }
        let Some(width) = lines.get(i).and_then(|d| delimiter_width(d)) else {
            continue;
        };
        tables += 1;
        let header = cells(line);
        if header.len() == width {
            check_row(line, width, i, &mut problems);
        } else {
            problems.push(format!(
                "line {i}: the header has {} cells and the delimiter row {width}, so this is no table",
                header.len()
            ));
        }
        i += 1;
        while i < lines.len() && !lines[i].is_empty() {
            let row = lines[i];
            i += 1;
            if let Some(open) = fence_of(row) {
                problems.push(format!(
                    "line {i}: a fenced block inside a table: the table ends here, and the rows after the block are lost"
                ));
                fence = Some(open);
                break;
            }
            check_row(row, width, i, &mut problems);
        }
    }
    (tables, problems)
}

/// The fence a line opens: its run of three or more backticks or tildes.
fn fence_of(line: &str) -> Option<&str> {
    ['`', '~'].into_iter().find_map(|mark| {
        let run = line.len() - line.trim_start_matches(mark).len();
        (run >= 3).then(|| &line[..run])
    })
}

/// Whether `line` closes the fence `open`: a run of its mark at least as
/// long, and nothing after it.
fn closes(line: &str, open: &str) -> bool {
    fence_of(line).is_some_and(|run| run.starts_with(open) && line[run.len()..].trim().is_empty())
}

/// The number of columns a delimiter row (`|---|:---:|`) declares, if
/// `line` is one.
fn delimiter_width(line: &str) -> Option<usize> {
    if !line.contains('-') || !line.contains('|') {
        return None;
    }
    let cells = cells(line);
    cells
        .iter()
        .all(|c| {
            let dashes = c.trim().trim_start_matches(':').trim_end_matches(':');
            !dashes.is_empty() && dashes.bytes().all(|b| b == b'-')
        })
        .then_some(cells.len())
}

/// The cells of a row: split on unescaped pipes, without the empty text
/// before a leading pipe and after a trailing one.
fn cells(row: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut chars = row.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let cell = cells.last_mut().unwrap();
                cell.push(c);
                cell.extend(chars.next());
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    if row.starts_with('|') {
        cells.remove(0);
    }
    if ends_with_pipe(row) {
        cells.pop();
    }
    cells
}

/// Whether `row` ends with a pipe that no backslash escapes.
fn ends_with_pipe(row: &str) -> bool {
    row.strip_suffix('|')
        .is_some_and(|b| (b.len() - b.trim_end_matches('\\').len()) % 2 == 0)
}

/// Whether a line reads as YAML rather than as a row or prose: `key:
/// value`, `key:` or a list item.
fn looks_like_yaml(line: &str) -> bool {
    if line.starts_with("- ") {
        return true;
    }
    line.split_once(':').is_some_and(|(key, rest)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
            && (rest.is_empty() || rest.starts_with(' '))
    })
}

/// The problems of one line of a table, the `number`th of its page.
fn check_row(row: &str, width: usize, number: usize, problems: &mut Vec<String>) {
    let shown: String = row.chars().take(60).collect();
    if !row.starts_with('|') || !ends_with_pipe(row) {
        let what = if looks_like_yaml(row) {
            "YAML inside a table"
        } else {
            "a row broken across lines, or a line that is no row"
        };
        problems.push(format!(
            "line {number}: {what}: a row starts and ends with `|`, on one line: {shown:?}"
        ));
    } else if cells(row).len() != width {
        problems.push(format!(
            "line {number}: {} cells where the header has {width}: {shown:?} (an unescaped `|` in a cell? write `\\|`)",
            cells(row).len()
        ));
    }
    for cell in cells(row) {
        if let Some(unclosed) = unclosed_code_span(&cell) {
            problems.push(format!(
                "line {number}: an unclosed code span: {unclosed} in the cell {:?}",
                cell.trim()
            ));
        }
    }
}

/// Where the first backtick run of `cell` that no later run of the same
/// length closes starts, said for the message; `None` when every span
/// closes. A backslash escapes a backtick outside a span, not inside.
fn unclosed_code_span(cell: &str) -> Option<String> {
    let bytes = cell.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'`' => {
                let run = run_at(i);
                let mut j = i + run;
                while j < bytes.len() && !(bytes[j] == b'`' && run_at(j) == run) {
                    j += if bytes[j] == b'`' { run_at(j) } else { 1 };
                }
                if j >= bytes.len() {
                    let rest: String = cell[i..].chars().take(30).collect();
                    return Some(format!("{run} backtick(s) opening {rest:?}"));
                }
                i = j + run;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of a two-column table with `rows` (its first on line 5),
    /// each said as its line and its kind.
    fn problems(rows: &str) -> Vec<String> {
        let page = format!("Before.\n\n| key | value |\n|---|---|\n{rows}\nAfter.\n");
        table_problems(&page)
            .iter()
            .map(|p| p.splitn(3, ": ").take(2).collect::<Vec<_>>().join(": "))
            .collect()
    }

    #[test]
    fn a_whole_table_has_no_problem() {
        assert_eq!(
            problems("| `a` | b \\| c |\n| ``x`y`` | :--: |\n| \\`a | b |\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            table_problems("| a | b |\n| :-- | --: |\n| 1 | 2 |"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_row_with_more_or_fewer_cells_than_the_header_is_caught() {
        // A pipe inside a code span splits the cell too, as on GitHub, and
        // leaves two halves of a span.
        assert_eq!(
            problems("| a | b | c |\n| a |\n| `x | y` | z |\n"),
            [
                "line 5: 3 cells where the header has 2",
                "line 6: 1 cells where the header has 2",
                "line 7: 3 cells where the header has 2",
                "line 7: an unclosed code span",
                "line 7: an unclosed code span",
            ]
        );
    }

    #[test]
    fn a_header_that_its_delimiter_row_does_not_match_is_caught() {
        assert_eq!(
            table_problems("| a | b | c |\n|---|---|\n| 1 | 2 |\n"),
            ["line 1: the header has 3 cells and the delimiter row 2, so this is no table"]
        );
    }

    #[test]
    fn a_row_broken_across_lines_is_caught() {
        assert_eq!(
            problems("| a | the value\nwent on |\n"),
            [
                "line 5: a row broken across lines, or a line that is no row",
                "line 6: a row broken across lines, or a line that is no row",
            ]
        );
    }

    #[test]
    fn a_fence_inside_a_table_is_caught_and_read_as_a_fence() {
        assert_eq!(
            problems("| a | b |\n```yaml\n| x: 1\n```\n| c | d |\n"),
            ["line 6: a fenced block inside a table"]
        );
    }

    #[test]
    fn an_unclosed_code_span_in_a_cell_is_caught() {
        assert_eq!(
            problems("| `a | b |\n| a | ``b` |\n"),
            [
                "line 5: an unclosed code span",
                "line 6: an unclosed code span"
            ]
        );
    }

    /// The damage this check was written for: a manifest pasted where a
    /// word of a cell stood, as docs/inject.md had it.
    #[test]
    fn a_manifest_pasted_into_a_cell_is_caught_line_by_line() {
        assert_eq!(
            problems(
                "| `kubexit.io/stop-after.C` | `KUBEXIT_STOP_apiVersion: batch/v1\n\
                 kind: Job\n\
                 metadata:\n  name: migrate\n\
                 `: holds a stop signal |\n\
                 | `kubexit.io/quit` | `KUBEXIT_QUIT` |\n"
            ),
            [
                "line 5: a row broken across lines, or a line that is no row",
                "line 5: an unclosed code span",
                "line 6: YAML inside a table",
                "line 7: YAML inside a table",
                "line 8: YAML inside a table",
                "line 9: a row broken across lines, or a line that is no row",
                "line 9: an unclosed code span",
            ]
        );
    }

    #[test]
    fn tables_in_fenced_blocks_and_lone_pipes_are_not_tables() {
        let page =
            "```text\n| a | b |\n|---|---|\n| x\n```\n\nA | B, a pipe in prose.\nMore prose.\n";
        assert_eq!(table_problems(page), Vec::<String>::new());
    }
}
