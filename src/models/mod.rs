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

use crate::data::ImageShape;
use crate::graph::GraphError;
use crate::recipe::{Flag, Recipe};

/// (N, C, H, W) of a batch of `batch` images of `image`.
pub fn batch_shape(batch: usize, image: ImageShape) -> [usize; 4] {
    [batch, image.channels, image.height, image.width]
}

/// Refuses images whose height or width is not a positive multiple of `multiple` (what `model`'s down-samplings
/// need), naming sizes that work.
pub fn check_multiple(image: ImageShape, multiple: usize, model: &str) -> Result<(), GraphError> {
    let fits = |side: usize| side > 0 && side.is_multiple_of(multiple);
    if fits(image.height) && fits(image.width) {
        return Ok(());
    }
    Err(GraphError {
        op: "input",
        layer: model.to_string(),
        message: format!(
            "{model} takes images whose height and width are multiples of {multiple} (e.g. {}), not {image}",
            sizes_that_work(multiple)
        ),
    })
}

/// "16, 28, 32, 64" for `multiple` 4: a few sides a model whose sides must be multiples of `multiple` takes.
pub fn sizes_that_work(multiple: usize) -> String {
    let sides: Vec<String> = [16, 28, 32, 64]
        .iter()
        .filter(|&&side: &&usize| side % multiple == 0)
        .map(|side| side.to_string())
        .collect();
    sides.join(", ")
}

/// The error of an encoder given something other than (N, C, H, W).
pub fn not_an_image_batch(layer: &str, shape: &[usize]) -> GraphError {
    GraphError {
        op: "input",
        layer: layer.to_string(),
        message: format!("expected images (N, C, H, W), got {shape:?}"),
    }
}

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
