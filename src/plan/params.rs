//! Parameters shared by every plan of a model: values, gradients, optimizer state, EMA copies.
//!
//! Plans find their parameters here by name, so the GAN's discriminator step and generator step update the same
//! buffers. Initial values are drawn on the host from a generator seeded by (seed, parameter name), so they do
//! not depend on the order in which layers were built.

use std::collections::HashMap;
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{Checkpoint, CheckpointError, HostTensor};
use crate::gpu::{BufferRole, Gpu, GpuBuffer, GpuError};
use crate::graph::{Init, ParamSpec};

/// One parameter (or persistent state tensor) and everything attached to it.
#[derive(Debug)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub trainable: bool,
    pub value: Arc<GpuBuffer>,
    /// Made when a plan first computes this parameter's gradient.
    pub grad: Option<Arc<GpuBuffer>>,
    /// Optimizer state tensors by name (`exp_avg`, `exp_avg_sq`, `momentum_buffer`).
    pub optimizer_state: Vec<(String, Arc<GpuBuffer>)>,
    /// Exponential moving average of the value, when the model keeps one (`ema.<name>` in checkpoints).
    pub ema: Option<Arc<GpuBuffer>>,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every parameter of a model, by name.
#[derive(Debug, Default)]
pub struct ParamStore {
    pub entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    pub seed: u64,
}

/// The generator for one parameter's initial values: depends on the seed and the name only.
fn init_rng(seed: u64, name: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    // FNV-1a of the name fills the rest of the key.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01B3);
    }
    key[8..16].copy_from_slice(&hash.to_le_bytes());
    key[16..24].copy_from_slice(&(name.len() as u64).to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// A parameter's initial values.
pub fn initial_values(seed: u64, spec: &ParamSpec) -> Vec<f32> {
    let len: usize = spec.shape.iter().product();
    match spec.init {
        Init::Constant(value) => vec![value; len],
        Init::Uniform { bound } => {
            let mut rng = init_rng(seed, &spec.name);
            (0..len).map(|_| rng.random_range(-bound..bound)).collect()
        }
    }
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            ..Default::default()
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut ParamEntry> {
        self.index.get(name).map(|&i| &mut self.entries[i])
    }

    /// The entry for `spec`, created and initialised on first use.
    pub fn entry(&mut self, gpu: &Gpu, spec: &ParamSpec) -> Result<&mut ParamEntry, GpuError> {
        if let Some(&i) = self.index.get(&spec.name) {
            let entry = &mut self.entries[i];
            if entry.shape != spec.shape {
                return Err(GpuError::Validation {
                    context: format!("parameter {}", spec.name),
                    message: format!("used with shapes {:?} and {:?}", entry.shape, spec.shape),
                });
            }
            return Ok(entry);
        }
        let role = if spec.trainable {
            BufferRole::Weights
        } else {
            BufferRole::OptimizerState
        };
        let value = Arc::new(gpu.buffer_from(&spec.name, role, &initial_values(self.seed, spec))?);
        self.entries.push(ParamEntry {
            name: spec.name.clone(),
            shape: spec.shape.clone(),
            trainable: spec.trainable,
            value,
            grad: None,
            optimizer_state: Vec::new(),
            ema: None,
        });
        self.index.insert(spec.name.clone(), self.entries.len() - 1);
        Ok(self.entries.last_mut().expect("just pushed"))
    }

    /// Number of learned parameters (elements).
    pub fn parameter_count(&self) -> usize {
        self.entries.iter().filter(|e| e.trainable).map(ParamEntry::len).sum()
    }

    /// Copies every value, optimizer state and EMA tensor into `checkpoint` (`optim.<name>.<state>`,
    /// `ema.<name>`). Waits for the GPU.
    pub fn save_into(&self, gpu: &Gpu, checkpoint: &mut Checkpoint) -> Result<(), GpuError> {
        for entry in &self.entries {
            let read = |buffer: &GpuBuffer| -> Result<Vec<f32>, GpuError> {
                let mut values: Vec<f32> = gpu.read(buffer)?;
                values.truncate(entry.len());
                Ok(values)
            };
            if entry.name.ends_with("num_batches_tracked") {
                let count = read(&entry.value)?.first().copied().unwrap_or(0.0);
                checkpoint.insert(entry.name.clone(), HostTensor::i64_scalar(count as i64));
                continue;
            }
            checkpoint.insert(entry.name.clone(), HostTensor::f32(&entry.shape, read(&entry.value)?));
            for (state, buffer) in &entry.optimizer_state {
                checkpoint.insert(
                    format!("optim.{}.{state}", entry.name),
                    HostTensor::f32(&entry.shape, read(buffer)?),
                );
            }
            if let Some(ema) = &entry.ema {
                checkpoint.insert(format!("ema.{}", entry.name), HostTensor::f32(&entry.shape, read(ema)?));
            }
        }
        Ok(())
    }

    /// Restores every value (and optimizer state and EMA, where present in the store) from `checkpoint`,
    /// checking each name and shape.
    pub fn load_from(&self, gpu: &Gpu, checkpoint: &Checkpoint) -> Result<(), LoadError> {
        for entry in &self.entries {
            if entry.name.ends_with("num_batches_tracked") {
                let count = checkpoint.i64(&entry.name, &[])?[0];
                gpu.write(&entry.value, &[count as f32])?;
                continue;
            }
            gpu.write(&entry.value, checkpoint.f32(&entry.name, &entry.shape)?)?;
            for (state, buffer) in &entry.optimizer_state {
                gpu.write(
                    buffer,
                    checkpoint.f32(&format!("optim.{}.{state}", entry.name), &entry.shape)?,
                )?;
            }
            if let Some(ema) = &entry.ema {
                gpu.write(ema, checkpoint.f32(&format!("ema.{}", entry.name), &entry.shape)?)?;
            }
        }
        Ok(())
    }
}

/// Loading a checkpoint into GPU buffers.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
}
