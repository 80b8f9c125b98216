//! Dependencies: what the graveyard says about the processes kubexit
//! depends on.
//!
//! The supervisor asks one question of a dependency, "what does its
//! tombstone say now?", whenever the graveyard watch names it, when events
//! were lost, and once at start. This module answers it and absorbs the
//! untidiness of a shared directory: a tombstone that is missing says
//! nothing yet; one that cannot be read (garbage, a link, a FIFO, a huge
//! file) is reported once per distinct problem, not on every event, and
//! never counts as a death: only a `Died` time does.

pub mod births;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use std::collections::HashMap;
use std::ffi::OsStr;

use crate::graveyard::Graveyard;
use crate::graveyard::name::Name;
use crate::graveyard::tombstone::Tombstone;

/// What a dependency's tombstone says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No tombstone yet.
    Nothing,
    /// A tombstone that cannot be read (already logged).
    Unreadable,
    /// A readable tombstone.
    Stone(Tombstone),
}

impl Seen {
    pub fn is_dead(&self) -> bool {
        matches!(self, Seen::Stone(stone) if stone.is_dead())
    }
}

/// A set of named dependencies and the problems already reported for them.
pub struct Dependencies {
    names: Vec<Name>,
    complaints: HashMap<Name, String>,
}

impl Dependencies {
    pub fn new(names: &[Name]) -> Dependencies {
        Dependencies {
            names: names.to_vec(),
            complaints: HashMap::new(),
        }
    }

    pub fn names(&self) -> &[Name] {
        &self.names
    }

    /// The dependency a graveyard entry belongs to, if any.
    pub fn matching(&self, entry: &OsStr) -> Option<&Name> {
        self.names
            .iter()
            .find(|name| OsStr::new(name.as_str()) == entry)
    }

    /// Reads `name`'s tombstone now.
    pub fn look(&mut self, graveyard: &Graveyard, name: &Name) -> Seen {
        match graveyard.read(name) {
            Ok(None) => {
                self.complaints.remove(name);
                Seen::Nothing
            }
            Ok(Some(stone)) => {
                self.complaints.remove(name);
                Seen::Stone(stone)
            }
            Err(err) => {
                let problem = err.to_string();
                if self.complaints.get(name) != Some(&problem) {
                    tracing::warn!(
                        dependency = %name,
                        "Ignoring unreadable tombstone {}: {problem}",
                        graveyard.path_of(name).display()
                    );
                    self.complaints.insert(name.clone(), problem);
                }
                Seen::Unreadable
            }
        }
    }

    /// The first dependency whose tombstone records a death, if any.
    pub fn first_dead(&mut self, graveyard: &Graveyard) -> Option<Name> {
        let names = self.names.clone();
        names
            .into_iter()
            .find(|name| self.look(graveyard, name).is_dead())
    }
}
