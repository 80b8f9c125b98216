//! Quoted strings, written by hand, valid both as JSON and as YAML.
//!
//! kubexit writes a little JSON (log lines with `KUBEXIT_LOG_FORMAT=json`,
//! `kubexit --status --json`) and quoted YAML strings (the tombstone's
//! `Reason`), and parses neither with this module, so a string escaper is
//! all it needs; a JSON library would be much of the binary's weight for it.
//! Escaping every control character (C0, DEL and C1) and the two
//! non-characters U+FFFE and U+FFFF as `\uXXXX` makes one literal that both
//! languages accept as the same string.

use std::fmt::{self, Write as _};

/// A string as a double-quoted literal, quotes included.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {
                    write!(f, "\\u{:04x}", u32::from(c))?
                }
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_backslashes_and_controls_are_escaped() {
        assert_eq!(
            Quoted("a \"b\" \\ c\n\u{1}é\u{85}\u{ffff}").to_string(),
            r#""a \"b\" \\ c\n\u0001é\u0085\uffff""#
        );
    }
}
