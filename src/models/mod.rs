//! The default models of `shared/spec/models.md`, as graph builders.
//!
//! Each model module builds the graphs its commands need (training, evaluation, sampling) over the same
//! parameter names, so one parameter store serves all of them. The definitions follow models.md line by line.

pub mod ae;
pub mod classifier;
pub mod ddpm;
pub mod gan;
pub mod vae;
pub mod wae;

use std::fmt;
use std::str::FromStr;

use crate::data::PixelRange;

/// A model the command line can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Ae,
    Vae,
    Classifier,
    Gan,
    Ddpm,
    Wae,
}

impl ModelKind {
    pub const ALL: [ModelKind; 6] = [Self::Ae, Self::Vae, Self::Classifier, Self::Gan, Self::Ddpm, Self::Wae];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ae => "ae",
            Self::Vae => "vae",
            Self::Classifier => "classifier",
            Self::Gan => "gan",
            Self::Ddpm => "ddpm",
            Self::Wae => "wae",
        }
    }

    /// The pixel range the model's data is scaled to.
    pub fn range(self) -> PixelRange {
        match self {
            Self::Ae | Self::Vae | Self::Classifier | Self::Wae => PixelRange::ZeroToOne,
            Self::Gan => PixelRange::MinusOneToOne,
            Self::Ddpm => PixelRange::MinusOneToOne,
        }
    }

    /// Adam's learning rate in models.md.
    pub fn learning_rate(self) -> f64 {
        match self {
            Self::Ae | Self::Vae | Self::Classifier => 1e-3,
            Self::Gan => 2e-4,
            Self::Ddpm => ddpm::LEARNING_RATE,
            Self::Wae => wae::LEARNING_RATE,
        }
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
