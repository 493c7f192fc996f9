//! The commands that work on a run directory (`eval`, `sample`, `reconstruct`, `interpolate`, `diffuse`,
//! `inpaint`): each opens the run, finds its model's recipe in the registry and asks it. A command the model does
//! not offer is refused with the models that do. `eval` adds FID and the sliced Wasserstein distance for every
//! model that generates.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data;
use crate::error::TrainError;
use crate::fid;
use crate::generate::LoadedRun;
use crate::gpu::Gpu;
use crate::models::ModelKind;
use crate::recipe::{Command, EvalOptions, InpaintRequest, Recipe, SampleRequest};
use crate::run::RunDir;

/// Opens the run at `path` and its model's recipe.
pub fn open(path: &Path) -> Result<(LoadedRun, &'static dyn Recipe), TrainError> {
    let config = RunDir::open(path)?.config()?;
    let model: ModelKind = config.model.parse().map_err(TrainError::Config)?;
    model.recipe().check_config(&config)?;
    Ok((LoadedRun::open(path)?, model.recipe()))
}

/// Opens the run and checks that its model offers `command`.
fn open_for(path: &Path, command: Command) -> Result<(LoadedRun, &'static dyn Recipe), TrainError> {
    let (run, recipe) = open(path)?;
    if !recipe.supports(command) {
        let offering: Vec<&str> = ModelKind::ALL
            .into_iter()
            .filter(|m| m.recipe().supports(command))
            .map(ModelKind::name)
            .collect();
        return Err(TrainError::Config(format!(
            "`latent {}` works on runs of {}; {} is a {} run",
            command.name(),
            offering.join(", "),
            path.display(),
            run.config.model
        )));
    }
    Ok((run, recipe))
}

/// `latent eval`: the model's metrics on the whole test set, and for models that generate, FID and the sliced
/// Wasserstein distance of `options.fid_n` samples with their floors.
pub fn evaluate(gpu: &Gpu, path: &Path, options: &EvalOptions) -> Result<Value, TrainError> {
    if let Some(mask) = &options.inpaint {
        let (run, recipe) = open_for(path, Command::Inpaint)?;
        return fid::completion_benchmark(gpu, recipe, &run, mask, options);
    }
    let (run, recipe) = open(path)?;
    let mut report = recipe.evaluate(gpu, &run, options)?;
    if options.fid_n > 0 {
        if let Some(samples) = recipe.generate(gpu, &run, options.fid_n, &options.sampling) {
            let splits = data::load_run_data(run.config.data.as_ref(), run.config.image)?;
            fid::add_fid(gpu, &mut report, &samples?, &splits, &run, options)?;
            let sets = recipe.measured_sets(gpu, &run, options.fid_n, &options.sampling)?;
            fid::add_measured_sets(gpu, &mut report, &sets, &splits, &run, options)?;
        }
    }
    Ok(report)
}

pub fn sample(gpu: &Gpu, path: &Path, request: &SampleRequest) -> Result<Value, TrainError> {
    let (run, recipe) = open_for(path, Command::Sample)?;
    recipe.sample(gpu, &run, request)
}

pub fn reconstruct(gpu: &Gpu, path: &Path, n: usize, out: Option<PathBuf>) -> Result<Value, TrainError> {
    let (run, recipe) = open_for(path, Command::Reconstruct)?;
    recipe.reconstruct(gpu, &run, n, out)
}

pub fn interpolate(
    gpu: &Gpu,
    path: &Path,
    pairs: usize,
    steps: usize,
    out: Option<PathBuf>,
) -> Result<Value, TrainError> {
    let (run, recipe) = open_for(path, Command::Interpolate)?;
    recipe.interpolate(gpu, &run, pairs, steps, out)
}

pub fn diffuse(gpu: &Gpu, path: &Path, n: usize, out: Option<PathBuf>) -> Result<Value, TrainError> {
    let (run, recipe) = open_for(path, Command::Diffuse)?;
    recipe.diffuse(gpu, &run, n, out)
}

pub fn inpaint(gpu: &Gpu, path: &Path, request: &InpaintRequest) -> Result<Value, TrainError> {
    let (run, recipe) = open_for(path, Command::Inpaint)?;
    crate::recipe::inpaint_with(recipe, gpu, &run, request)
}
