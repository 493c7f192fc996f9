//! The models, one module each, and the registry from model names to their recipes.
//!
//! Each module builds the graphs its commands need (training, evaluation, sampling) over the same parameter
//! names, so one parameter store serves all of them, and implements [`Recipe`]: the definitions follow models.md
//! line by line. Adding a model is its module, and its line in [`ModelKind`] and in [`ModelKind::recipe`].

pub mod ae;
pub mod classifier;
pub mod ddpm;
pub mod gan;
pub mod ldm;
pub mod vae;
pub mod wae;

use std::fmt;
use std::str::FromStr;

use crate::recipe::{Flag, Recipe};

/// A model the command line can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Ae,
    Vae,
    Classifier,
    Gan,
    Ddpm,
    Wae,
    AeKl,
    Ldm,
}

impl ModelKind {
    pub const ALL: [ModelKind; 8] = [
        Self::Ae,
        Self::Vae,
        Self::Classifier,
        Self::Gan,
        Self::Ddpm,
        Self::Wae,
        Self::AeKl,
        Self::Ldm,
    ];

    /// The registry: the one place a model's kind is matched.
    pub fn recipe(self) -> &'static dyn Recipe {
        match self {
            Self::Ae => &ae::Ae,
            Self::Vae => &vae::Vae,
            Self::Classifier => &classifier::Classifier,
            Self::Gan => &gan::Gan,
            Self::Ddpm => &ddpm::Ddpm,
            Self::Wae => &wae::Wae,
            Self::AeKl => &ldm::AeKl,
            Self::Ldm => &ldm::Ldm,
        }
    }

    pub fn name(self) -> &'static str {
        self.recipe().name()
    }

    /// The names of the models that take `--flag`.
    pub fn owners_of(flag: &str) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|m| m.recipe().flags().iter().any(|f| f.name == flag))
            .map(ModelKind::name)
            .collect()
    }

    /// Every model flag of `latent train`, each once, with the models that take it.
    pub fn all_flags() -> Vec<(Flag, Vec<&'static str>)> {
        let mut flags: Vec<(Flag, Vec<&'static str>)> = Vec::new();
        for model in Self::ALL {
            for flag in model.recipe().flags() {
                match flags.iter_mut().find(|(f, _)| f.name == flag.name) {
                    Some((_, owners)) => owners.push(model.name()),
                    None => flags.push((*flag, vec![model.name()])),
                }
            }
        }
        flags
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ModelKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|m| m.name()).collect();
            format!("unknown model {s:?}: choose one of {}", names.join(", "))
        })
    }
}
