//! The error every model, command and the training loop return, each variant with what to do about it.

use std::path::PathBuf;

use crate::data::DataError;
use crate::gpu::GpuError;
use crate::graph::GraphError;
use crate::plan::LoadError;
use crate::run::RunError;

/// Everything that can stop training, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Config(String),
    /// A failure every rank of a distributed run reports alike, at its start (rank 0 prints it).
    #[error("{0}")]
    Ranks(String),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    #[error(
        "training stopped at step {step}: loss {loss} became {value} (not finite){}; lower --lr, or check the data",
        last_checkpoint_note(last_checkpoint)
    )]
    NonFinite {
        step: u64,
        loss: String,
        value: f32,
        last_checkpoint: Option<PathBuf>,
    },
    #[error("interrupted at step {step}; checkpoint written to {}; continue with `latent train {model} --resume {}`", checkpoint.display(), run.display())]
    Interrupted {
        step: u64,
        model: String,
        checkpoint: PathBuf,
        run: PathBuf,
    },
    #[error("{error}\nThe last checkpoint is {}; continue with `latent train {model} --resume {}`", checkpoint.display(), run.display())]
    AfterCheckpoint {
        error: Box<TrainError>,
        model: String,
        checkpoint: PathBuf,
        run: PathBuf,
    },
}

fn last_checkpoint_note(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => format!("; the last good checkpoint is kept at {}", path.display()),
        None => "; no checkpoint had been written yet".to_string(),
    }
}

impl TrainError {
    /// Whether every rank of a distributed run returns this error at the same point: a refused start, a loss the
    /// ranks share becoming NaN, an interrupt they agreed on. Other errors are one rank's own.
    pub fn same_on_every_rank(&self) -> bool {
        matches!(
            self,
            TrainError::Ranks(_) | TrainError::NonFinite { .. } | TrainError::Interrupted { .. }
        )
    }

    /// The process exit status for this error: 130 for an interrupt (as shells report SIGINT), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            TrainError::Interrupted { .. } => 130,
            _ => 1,
        }
    }
}

impl From<crate::checkpoint::CheckpointError> for TrainError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        Self::Load(LoadError::Checkpoint(e))
    }
}
