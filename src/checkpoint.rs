//! Checkpoints in safetensors.
//!
//! Model tensors carry the dotted names and PyTorch layouts of `shared/spec/models.md`, so the same model in
//! PyTorch loads them with `load_state_dict` (after dropping the `optim.` and `ema.` prefixes it does not know).
//! Optimizer state lives under `optim.`; metadata holds the model name, its configuration, the seed, the step and
//! the format version. Writes are atomic: a temporary file in the same directory, flushed, then renamed over the
//! old one, so a crash mid-write leaves the previous checkpoint intact.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Written into every checkpoint's metadata as `format` and `format_version`.
pub const FORMAT: &str = "latent-checkpoint";
pub const FORMAT_VERSION: &str = "1";

/// A tensor's values on the host.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    /// For counters such as BatchNorm's `num_batches_tracked`.
    I64(Vec<i64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl HostTensor {
    pub fn f32(shape: &[usize], values: Vec<f32>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: TensorData::F32(values),
        }
    }

    pub fn i64_scalar(value: i64) -> Self {
        Self {
            shape: vec![],
            data: TensorData::I64(vec![value]),
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self.data {
            TensorData::F32(_) => "F32",
            TensorData::I64(_) => "I64",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path}: not a readable safetensors checkpoint ({message}); the file may be truncated or corrupted — \
             use an earlier checkpoint or start a new run"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: no tensor named {name:?}; is this a checkpoint of a different model?")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} has shape {found:?}, expected {expected:?} (a different model configuration?)")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name:?} has dtype {found}, expected {expected}")]
    Dtype {
        path: PathBuf,
        name: String,
        expected: &'static str,
        found: String,
    },
    #[error("{path}: a checkpoint of model {found:?}, but {expected:?} was asked for")]
    WrongModel {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: metadata {key:?} is missing or invalid; this file was not written by latent")]
    Metadata { path: PathBuf, key: String },
    #[error("cannot serialize checkpoint {path}: {message}")]
    Serialize { path: PathBuf, message: String },
}

/// Named tensors and string metadata, as saved to or loaded from one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    pub tensors: BTreeMap<String, HostTensor>,
    pub metadata: BTreeMap<String, String>,
    /// Where it was loaded from (for error messages).
    pub path: PathBuf,
}

impl Checkpoint {
    pub fn new(model: &str) -> Self {
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), FORMAT.to_string());
        metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        metadata.insert("model".to_string(), model.to_string());
        Self {
            tensors: BTreeMap::new(),
            metadata,
            path: PathBuf::new(),
        }
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// The model name in the metadata.
    pub fn model(&self) -> &str {
        self.metadata.get("model").map(String::as_str).unwrap_or("")
    }

    /// A metadata value parsed as `T`, with an error naming the key.
    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> Result<T, CheckpointError> {
        self.metadata
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| CheckpointError::Metadata {
                path: self.path.clone(),
                key: key.to_string(),
            })
    }

    /// Refuses a checkpoint of another model.
    pub fn expect_model(&self, model: &str) -> Result<(), CheckpointError> {
        if self.model() != model {
            return Err(CheckpointError::WrongModel {
                path: self.path.clone(),
                expected: model.to_string(),
                found: self.model().to_string(),
            });
        }
        Ok(())
    }

    /// The f32 values of `name`, which must have `shape`.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<&[f32], CheckpointError> {
        let tensor = self.get(name, shape)?;
        match &tensor.data {
            TensorData::F32(values) => Ok(values),
            _ => Err(self.dtype_error(name, "F32", tensor)),
        }
    }

    /// The i64 values of `name`, which must have `shape`.
    pub fn i64(&self, name: &str, shape: &[usize]) -> Result<&[i64], CheckpointError> {
        let tensor = self.get(name, shape)?;
        match &tensor.data {
            TensorData::I64(values) => Ok(values),
            _ => Err(self.dtype_error(name, "I64", tensor)),
        }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<&HostTensor, CheckpointError> {
        let tensor = self.tensors.get(name).ok_or_else(|| CheckpointError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        if tensor.shape != shape {
            return Err(CheckpointError::Shape {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: tensor.shape.clone(),
            });
        }
        Ok(tensor)
    }

    fn dtype_error(&self, name: &str, expected: &'static str, tensor: &HostTensor) -> CheckpointError {
        CheckpointError::Dtype {
            path: self.path.clone(),
            name: name.to_string(),
            expected,
            found: tensor.dtype_name().to_string(),
        }
    }

    /// The safetensors bytes of this checkpoint.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, CheckpointError> {
        let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| match &t.data {
                TensorData::F32(v) => (
                    name.clone(),
                    bytemuck::cast_slice(v).to_vec(),
                    Dtype::F32,
                    t.shape.clone(),
                ),
                TensorData::I64(v) => (
                    name.clone(),
                    bytemuck::cast_slice(v).to_vec(),
                    Dtype::I64,
                    t.shape.clone(),
                ),
            })
            .collect();
        let serialize_error = |message: String| CheckpointError::Serialize {
            path: path.to_path_buf(),
            message,
        };
        let views = bytes
            .iter()
            .map(|(name, data, dtype, shape)| {
                TensorView::new(*dtype, shape.clone(), data).map(|view| (name.clone(), view))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| serialize_error(e.to_string()))?;
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(metadata)).map_err(|e| serialize_error(e.to_string()))
    }

    /// Writes atomically: `path` is either the old file or the complete new one, never half of either.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        write_atomically(path, &self.to_bytes(path)?)
    }

    /// Reads and validates a checkpoint.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, CheckpointError> {
        let corrupt = |message: String| CheckpointError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
        let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let data = match view.dtype() {
                Dtype::F32 => TensorData::F32(bytemuck::pod_collect_to_vec(view.data())),
                Dtype::I64 => TensorData::I64(bytemuck::pod_collect_to_vec(view.data())),
                other => {
                    return Err(CheckpointError::Dtype {
                        path: path.to_path_buf(),
                        name,
                        expected: "F32 or I64",
                        found: format!("{other:?}"),
                    })
                }
            };
            tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        let checkpoint = Self {
            tensors,
            metadata,
            path: path.to_path_buf(),
        };
        if checkpoint.metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(CheckpointError::Metadata {
                path: path.to_path_buf(),
                key: "format".into(),
            });
        }
        Ok(checkpoint)
    }
}

/// Writes `bytes` to a temporary file beside `path`, flushes it to disk, and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io_error = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let directory = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, path)?;
        // Make the rename itself durable.
        if let Ok(dir) = fs::File::open(directory) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(io_error)
}
