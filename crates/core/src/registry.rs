//! The kinds a pipeline may use. The engine never names a kind: a binary builds a
//! [`Registry`] from the engine's built-in kinds and its domain's, and config resolves
//! `kind:` against it.

use std::marker::PhantomData;

use crate::stage::{Kind, KindOf};

/// Kinds by name, in the order `pipe kinds` lists them.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn Kind>,
}

/// The kinds every domain gets: `command` (any program as a stage).
pub static BUILTIN: &[&dyn Kind] = &[&KindOf::<crate::command::Command>(PhantomData)];

impl Registry {
    /// `domain` kinds followed by the built-in ones.
    pub fn new(domain: &[&'static dyn Kind]) -> Registry {
        let mut kinds: Vec<&'static dyn Kind> = domain.to_vec();
        for k in BUILTIN {
            if !kinds.iter().any(|d| d.name() == k.name()) {
                kinds.push(*k);
            }
        }
        Registry { kinds }
    }

    /// The kind users write as `kind: name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn Kind> {
        self.kinds.iter().copied().find(|k| k.name() == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Kind> + '_ {
        self.kinds.iter().copied()
    }
}
