//! Names of supervised processes.
//!
//! A name is two things at once: how kubexit instances refer to each other
//! (`KUBEXIT_NAME`, `KUBEXIT_DEATH_DEPS`, `KUBEXIT_BIRTH_DEPS`) and the file
//! name of a tombstone inside the graveyard. The second role is the dangerous
//! one: a name must never let a path escape the graveyard or collide with the
//! files kubexit keeps for itself. A [`Name`] can only be built through
//! [`Name::new`], so every tombstone path in the program is safe by
//! construction and no other module re-checks it.
//!
//! The rules are the smallest set that makes a name a single, ordinary entry
//! of one directory: not empty, no `/`, no NUL, and not starting with `.`
//! (which rules out `.` and `..` and reserves dot-files for kubexit's own:
//! temporary files and liveness locks). Anything else, Kubernetes container names and beyond, is
//! accepted, as upstream accepts it.

use std::ffi::OsStr;
use std::fmt;

/// A validated process name: one plain entry of the graveyard.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

/// Why a string is not a usable name. The caller says where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("{0:?} contains '/': a name is a file in the graveyard, not a path")]
    Slash(String),
    #[error("{0:?} contains a NUL byte")]
    Nul(String),
    #[error("{0:?} starts with '.': such names are reserved for kubexit's own files")]
    Dot(String),
    #[error("{0:?} is not valid UTF-8")]
    NotUtf8(String),
}

impl Name {
    /// Checks `raw` against the rules in the module docs.
    pub fn new(raw: &str) -> Result<Name, NameError> {
        if raw.is_empty() {
            Err(NameError::Empty)
        } else if raw.contains('/') {
            Err(NameError::Slash(raw.to_owned()))
        } else if raw.contains('\0') {
            Err(NameError::Nul(raw.to_owned()))
        } else if raw.starts_with('.') {
            Err(NameError::Dot(raw.to_owned()))
        } else {
            Ok(Name(raw.to_owned()))
        }
    }

    /// Like [`Name::new`], for a name read from the environment or the file
    /// system, which need not be UTF-8.
    pub fn from_os(raw: &OsStr) -> Result<Name, NameError> {
        match raw.to_str() {
            Some(text) => Name::new(text),
            None => Err(NameError::NotUtf8(raw.to_string_lossy().into_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a comma-separated list as upstream writes them, but forgiving:
    /// entries are trimmed and empty entries dropped, so `"x, a"` and
    /// `"x,a,"` both mean `x` and `a`. Duplicates are dropped too.
    pub fn parse_list(raw: &str) -> Result<Vec<Name>, NameError> {
        let mut names: Vec<Name> = Vec::new();
        for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let name = Name::new(entry)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Joins names the way upstream logs them (`a,b`), or `N/A` for none.
    pub fn display_list(names: &[Name]) -> String {
        if names.is_empty() {
            "N/A".to_owned()
        } else {
            names.iter().map(Name::as_str).collect::<Vec<_>>().join(",")
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for raw in [
            "app1",
            "cloudsql-proxy",
            "main",
            "a.b",
            "x..",
            "名前",
            "a b",
        ] {
            assert_eq!(Name::new(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn names_that_could_leave_or_pollute_the_graveyard_are_rejected() {
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("a/b"), Err(NameError::Slash("a/b".into())));
        assert_eq!(Name::new("/etc"), Err(NameError::Slash("/etc".into())));
        assert_eq!(Name::new("a\0b"), Err(NameError::Nul("a\0b".into())));
        assert_eq!(Name::new("."), Err(NameError::Dot(".".into())));
        assert_eq!(Name::new(".."), Err(NameError::Dot("..".into())));
        assert_eq!(Name::new(".hidden"), Err(NameError::Dot(".hidden".into())));
    }

    #[test]
    fn lists_are_trimmed_and_empty_entries_dropped() {
        let names = Name::parse_list(" x, a ,,a,").unwrap();
        let names: Vec<&str> = names.iter().map(Name::as_str).collect();
        assert_eq!(names, ["x", "a"]);
        assert!(Name::parse_list("").unwrap().is_empty());
        assert!(Name::parse_list(" , ").unwrap().is_empty());
    }

    #[test]
    fn a_bad_entry_fails_the_whole_list() {
        assert_eq!(
            Name::parse_list("a, ../b"),
            Err(NameError::Slash("../b".into()))
        );
    }

    #[test]
    fn lists_display_like_upstream() {
        assert_eq!(Name::display_list(&[]), "N/A");
        let names = Name::parse_list("a,b").unwrap();
        assert_eq!(Name::display_list(&names), "a,b");
    }
}
