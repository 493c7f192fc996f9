//! Fréchet distance between feature distributions (FID, Heusel et al. 2017), with the project's own classifier as
//! the feature network (models.md: the 128 ReLU outputs of `f1`).
//!
//! FID = |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) over Gaussians fitted to two sets of features. The
//! trace of the matrix square root comes from nalgebra's symmetric eigendecomposition: with R = S_a^(1/2) (S_a is
//! symmetric positive semi-definite), S_a S_b is similar to R S_b R, which is symmetric PSD, so
//! tr((S_a S_b)^(1/2)) = Σ sqrt(λ_i(R S_b R)).
//!
//! Any model that generates plugs in by handing [`fid_report`] N images in [0, 1]; the floor beside the score is
//! the same distance for N real training images, what a perfect generator would get at that N.
//!
//! The feature classifier is trained on the run's own data at the run's (C, H, W), so FID needs labels (IDX
//! labels or class subfolders, at most 10 classes). For other data (a flat folder of images) `latent eval`
//! reports the sliced Wasserstein distance alone, and says so under `fid_skipped`.

use std::path::{Path, PathBuf};

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde_json::json;

use crate::data::{self, Dataset, PixelRange, Splits};
use crate::generate::{run_batched_outputs, LoadedRun};
use crate::gpu::Gpu;
use crate::graph::{Graph, TensorId};
use crate::models::{classifier, ModelKind};
use crate::plan::{ParamStore, Plan};
use crate::recipe::EvalOptions;
use crate::train::{self, TrainError, TrainRequest};

/// Mean and covariance of a set of feature vectors.
#[derive(Clone, Debug)]
pub struct FeatureStatistics {
    pub count: usize,
    /// (D)
    pub mean: DVector<f64>,
    /// (D, D), unbiased (divided by count - 1, as numpy's `cov` in the reference implementation)
    pub covariance: DMatrix<f64>,
}

impl FeatureStatistics {
    /// Statistics of `features` (count, dim), row-major.
    pub fn new(features: &[f32], dim: usize) -> Self {
        let count = features.len() / dim.max(1);
        let rows = DMatrix::from_row_slice(count, dim, &features[..count * dim]).map(f64::from);
        let mean = DVector::from_iterator(dim, rows.column_iter().map(|c| c.mean()));
        let mut centered = rows;
        for mut row in centered.row_iter_mut() {
            row -= mean.transpose();
        }
        let covariance = centered.transpose() * &centered / (count.saturating_sub(1).max(1) as f64);
        Self {
            count,
            mean,
            covariance,
        }
    }
}

/// The square root of a symmetric positive semi-definite matrix (negative rounding-error eigenvalues clamped to 0).
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let symmetric = (m + m.transpose()) * 0.5;
    let eigen = SymmetricEigen::new(symmetric);
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eigen.eigenvectors * DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

/// FID between two fitted Gaussians: |mu_a - mu_b|² + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)).
pub fn frechet_distance(a: &FeatureStatistics, b: &FeatureStatistics) -> f64 {
    let root_a = psd_sqrt(&a.covariance);
    let product = &root_a * &b.covariance * &root_a;
    let symmetric = (&product + product.transpose()) * 0.5;
    let trace_sqrt: f64 = SymmetricEigen::new(symmetric)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    let mean_term = (&a.mean - &b.mean).norm_squared();
    mean_term + a.covariance.trace() + b.covariance.trace() - 2.0 * trace_sqrt
}

/// FID between two sets of features (count, dim), row-major.
pub fn fid(a: &[f32], b: &[f32], dim: usize) -> f64 {
    frechet_distance(&FeatureStatistics::new(a, dim), &FeatureStatistics::new(b, dim))
}

/// Entropy (nats) of a histogram of counts.
pub fn entropy(histogram: &[usize]) -> f64 {
    let total: usize = histogram.iter().sum();
    histogram
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}

/// The classifier of a run directory as a feature network: images in [0, 1] -> (features (N, 128), classes (N)).
pub struct FeatureNet {
    pub run: PathBuf,
    plan: Plan,
    _store: ParamStore,
    x: TensorId,
    features: TensorId,
    logits: TensorId,
    batch: usize,
    /// C·H·W of the classifier's images.
    pixels: usize,
}

impl FeatureNet {
    const BATCH: usize = 100;

    /// The classifier run at `path`, which must take images of `image` (C, H, W), those of the run it measures.
    pub fn load(gpu: &Gpu, path: &Path, image: data::ImageShape) -> Result<Self, TrainError> {
        let run = LoadedRun::open(path)?;
        if run.config.model != ModelKind::Classifier.name() {
            return Err(TrainError::Config(format!(
                "--classifier {} is a {} run; give a run of `latent train classifier`",
                path.display(),
                run.config.model
            )));
        }
        if run.config.image != image {
            return Err(TrainError::Config(format!(
                "--classifier {} was trained on {} images (C x H x W) and the run's are {image}; give a classifier \
                 trained on the run's data, or leave --classifier out to train one",
                path.display(),
                run.config.image
            )));
        }
        let batch = Self::BATCH;
        let image = run.config.image;
        let mut graph = Graph::new();
        let x = graph.input("x", &crate::models::batch_shape(batch, image));
        let (features, logits) = classifier::forward(&mut graph, x)?;
        let (plan, store) = run.forward_plan(gpu, &graph, "fid features")?;
        Ok(Self {
            run: path.to_path_buf(),
            plan,
            _store: store,
            x,
            features,
            logits,
            batch,
            pixels: image.numel(),
        })
    }

    /// Features (N, 128) and predicted classes (N) of `images` (N, C·H·W) in [0, 1].
    pub fn features(&self, gpu: &Gpu, images: &[f32]) -> Result<(Vec<f32>, Vec<u32>), TrainError> {
        let outputs = [self.features, self.logits];
        let [features, logits]: [Vec<f32>; 2] =
            run_batched_outputs(gpu, &self.plan, self.x, &outputs, images, self.pixels, self.batch)?
                .try_into()
                .expect("two outputs");
        let classes = logits
            .chunks(classifier::CLASSES)
            .map(|row| (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b }) as u32)
            .collect();
        Ok((features, classes))
    }
}

/// Where trained feature classifiers are kept: `$LATENT_CACHE`, else `$XDG_CACHE_HOME/latent`, else
/// `~/.cache/latent`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATENT_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("latent");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("latent"),
        None => PathBuf::from(".latent-cache"),
    }
}

/// Which trainer made a cached classifier: 2 since the conv weight gradient keeps within the CPU drivers' loop limit
/// (PERF-LOG v7; before it, a classifier trained on lavapipe at batch 128 had a wrong first-layer gradient).
const CLASSIFIER_VERSION: &[u8] = b"classifier v2";

/// FNV-1a over the trainer's version, the pixels and labels of both splits (and the image shape, when it is not
/// 1x28x28, the shape of the classifiers cached before runs had other shapes): names the cached classifier of a
/// dataset.
fn data_hash(splits: &Splits) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01B3);
        }
    };
    feed(CLASSIFIER_VERSION);
    let shape = splits.train.shape();
    if shape != data::ImageShape::MNIST {
        feed(shape.to_string().as_bytes());
    }
    for dataset in [&splits.train, &splits.test] {
        feed(&(dataset.len() as u64).to_le_bytes());
        feed(dataset.pixels());
        for label in dataset.labels().unwrap_or(&[]) {
            feed(&label.to_le_bytes());
        }
    }
    hash
}

/// Why FID cannot be measured on `splits` (no labels to train its classifier on, or more classes than it has),
/// or None when it can.
pub fn fid_unavailable(splits: &Splits) -> Option<String> {
    if splits.train.labels().is_none() {
        return Some(format!(
            "FID needs a classifier trained on labelled data (IDX labels or one subfolder per class) and {} has \
             no labels; the sliced Wasserstein distance (swd, in pixel space) is reported instead",
            splits.train.name()
        ));
    }
    let classes = splits.train.num_classes();
    (classes > classifier::CLASSES).then(|| {
        format!(
            "FID's classifier has {} classes and {} has {classes}; the sliced Wasserstein distance (swd, in pixel \
             space) is reported instead",
            classifier::CLASSES,
            splits.train.name()
        )
    })
}

/// The classifier run to take features from: `given`, or one trained with the defaults on `data` at `image` and
/// kept in the cache (trained on first use, which takes minutes; said on stderr).
pub fn classifier_run(
    gpu: &Gpu,
    given: Option<&Path>,
    data: Option<&PathBuf>,
    image: data::ImageShape,
) -> Result<PathBuf, TrainError> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let splits = data::load_run_data(data, image)?;
    let dir = cache_root().join(format!("classifier-{:016x}", data_hash(&splits)));
    let finished = LoadedRun::open(&dir).ok().is_some_and(|run| {
        let metrics = run.dir.metrics().map(|m| m.len() as u64).unwrap_or(0);
        metrics >= run.config.epochs
    });
    if finished {
        eprintln!("FID features from the cached classifier {}", dir.display());
        return Ok(dir);
    }
    let resume = dir.join(crate::run::CHECKPOINT).exists();
    eprintln!(
        "No --classifier given: training the FID classifier with the defaults into {} (once per dataset; set \
         LATENT_CACHE to keep it elsewhere, or pass --classifier DIR)",
        dir.display()
    );
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|source| crate::run::RunError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let request = TrainRequest {
        data: if resume { None } else { data.cloned() },
        image: (!resume).then_some(image),
        run: if resume { None } else { Some(dir.clone()) },
        resume: resume.then(|| dir.clone()),
        ..TrainRequest::new(ModelKind::Classifier)
    };
    train::train(gpu, &request)?;
    Ok(dir)
}

/// `n` real images in [0, 1] from `dataset`: a fixed random subset (the floor's reference set).
pub fn real_subset(dataset: &Dataset, n: usize, seed: u64) -> Vec<f32> {
    let order = data::shuffled_order(dataset.len(), seed, 0);
    let indices: Vec<usize> = order.into_iter().take(n).collect();
    let mut images = vec![0.0f32; indices.len() * dataset.shape().numel()];
    dataset.fill_images(&indices, PixelRange::ZeroToOne, &mut images);
    images
}

/// FID of `generated` (N, C·H·W) in [0, 1] against the whole test set, its floor (N real training images against
/// the test set), and the generated images' class histogram and entropy by the classifier.
pub fn fid_report(
    gpu: &Gpu,
    net: &FeatureNet,
    generated: &[f32],
    splits: &Splits,
    seed: u64,
) -> Result<serde_json::Value, TrainError> {
    let n = generated.len() / splits.test.shape().numel();
    let dim = classifier::FEATURES;
    let test_images = real_subset(&splits.test, splits.test.len(), seed);
    let (test_features, _) = net.features(gpu, &test_images)?;
    let test = FeatureStatistics::new(&test_features, dim);
    let (generated_features, classes) = net.features(gpu, generated)?;
    let score = frechet_distance(&FeatureStatistics::new(&generated_features, dim), &test);
    let (real_features, _) = net.features(gpu, &real_subset(&splits.train, n, seed))?;
    let floor = frechet_distance(&FeatureStatistics::new(&real_features, dim), &test);
    let mut histogram = vec![0usize; classifier::CLASSES];
    for c in classes {
        histogram[c as usize] += 1;
    }
    Ok(json!({
        "fid": score,
        "fid_floor": floor,
        "fid_n": n,
        "fid_classifier": net.run,
        "class_histogram": histogram,
        "class_entropy_nats": entropy(&histogram),
    }))
}

/// Adds FID, its floor and the samples' class histogram to `report`, for `samples` (N, C·H·W) in [0, 1], and the
/// sliced Wasserstein distance (`crate::swd`) between the samples and N test images, with its floor (N real
/// training images against the same test images). On data FID cannot use ([`fid_unavailable`]) the report has
/// the SWD alone and `fid_skipped` says why.
pub fn add_fid(
    gpu: &Gpu,
    report: &mut serde_json::Value,
    samples: &[f32],
    splits: &Splits,
    run: &LoadedRun,
    options: &EvalOptions,
) -> Result<(), TrainError> {
    let pixels = splits.test.shape().numel();
    let n = samples.len() / pixels;
    if n < 2 || splits.train.len() < n {
        return Err(TrainError::Config(format!(
            "--fid-n {n}: FID needs at least 2 samples and no more than the {} training images of the floor",
            splits.train.len()
        )));
    }
    match fid_unavailable(splits).filter(|_| options.classifier.is_none()) {
        Some(reason) => report["fid_skipped"] = json!(reason),
        None => {
            let data = run.config.data.as_ref();
            let classifier = classifier_run(gpu, options.classifier.as_deref(), data, run.config.image)?;
            let net = FeatureNet::load(gpu, &classifier, run.config.image)?;
            let fid = fid_report(gpu, &net, samples, splits, run.config.seed)?;
            if let Some(map) = fid.as_object() {
                for (key, value) in map {
                    report[key] = value.clone();
                }
            }
        }
    }
    if options.projections > 0 {
        // As many test images as samples (all of them when there are fewer).
        let count = n.min(splits.test.len());
        let test = real_subset(&splits.test, count, run.config.seed);
        let real = real_subset(&splits.train, count, run.config.seed);
        let (seed, projections) = (run.config.seed, options.projections);
        let samples = &samples[..count * pixels];
        report["swd"] = json!(crate::swd::sliced_wasserstein(
            samples,
            &test,
            pixels,
            projections,
            seed
        ));
        report["swd_floor"] = json!(crate::swd::sliced_wasserstein(&real, &test, pixels, projections, seed));
        report["swd_n"] = json!(count);
        report["swd_projections"] = json!(projections);
    }
    Ok(())
}

/// The FID, the class histogram and entropy of every set of `sets` (the ldm's reconstructions, a conditional
/// model's samples at each guidance weight) against the test set, and, for sets with the classes they were asked
/// for, the classifier's accuracy on them, overall and per class. Each set goes under its name in `report`.
pub fn add_measured_sets(
    gpu: &Gpu,
    report: &mut serde_json::Value,
    sets: &[crate::recipe::MeasuredSet],
    splits: &Splits,
    run: &LoadedRun,
    options: &EvalOptions,
) -> Result<(), TrainError> {
    if sets.is_empty() {
        return Ok(());
    }
    if let Some(reason) = fid_unavailable(splits).filter(|_| options.classifier.is_none()) {
        for set in sets {
            report[&set.name] = json!({ "description": set.description, "n": set.images.len() / splits.test.shape().numel(), "fid_skipped": reason });
        }
        return Ok(());
    }
    let data = run.config.data.as_ref();
    let classifier = classifier_run(gpu, options.classifier.as_deref(), data, run.config.image)?;
    let net = FeatureNet::load(gpu, &classifier, run.config.image)?;
    let dim = classifier::FEATURES;
    let test_images = real_subset(&splits.test, splits.test.len(), run.config.seed);
    let (test_features, _) = net.features(gpu, &test_images)?;
    let test = FeatureStatistics::new(&test_features, dim);
    for set in sets {
        let (features, classes) = net.features(gpu, &set.images)?;
        let mut histogram = vec![0usize; classifier::CLASSES];
        for &c in &classes {
            histogram[c as usize] += 1;
        }
        let mut entry = json!({
            "description": set.description,
            "n": classes.len(),
            "fid": frechet_distance(&FeatureStatistics::new(&features, dim), &test),
            "class_histogram": histogram,
            "class_entropy_nats": entropy(&histogram),
        });
        if let Some(guidance) = set.guidance {
            entry["guidance"] = json!(guidance);
        }
        if let Some(labels) = &set.labels {
            let mut asked = vec![0usize; classifier::CLASSES];
            let mut hits = vec![0usize; classifier::CLASSES];
            for (&label, &class) in labels.iter().zip(&classes) {
                asked[label as usize] += 1;
                hits[label as usize] += (label == class) as usize;
            }
            let correct: usize = hits.iter().sum();
            entry["accuracy_of_asked_class"] = json!(correct as f64 / labels.len().max(1) as f64);
            entry["accuracy_per_class"] = json!(hits
                .iter()
                .zip(&asked)
                .map(|(&h, &a)| if a > 0 { h as f64 / a as f64 } else { f64::NAN })
                .collect::<Vec<_>>());
        }
        report[&set.name] = entry;
    }
    Ok(())
}

/// The completion benchmark (`latent eval --inpaint MASK`): the first `inpaint_n` test images masked, completed by
/// the model (RePaint's `resample` and `jump`, DDIM with `inpaint_steps` steps, the EMA weights unless `--no-ema`),
/// and measured: the
/// classifier's accuracy on the completions against the original labels (beside its accuracy on the originals),
/// FID of the completions against the test set with its floor, the seam score of the completions beside that of
/// the real images under the same masks, and the largest change of a known pixel.
pub fn completion_benchmark(
    gpu: &Gpu,
    recipe: &dyn crate::recipe::Recipe,
    run: &LoadedRun,
    mask: &crate::diffusion::completion::MaskKind,
    options: &EvalOptions,
) -> Result<serde_json::Value, TrainError> {
    use crate::diffusion::completion;
    let image = run.config.image;
    let pixels = image.numel();
    let splits = data::load_run_data(run.config.data.as_ref(), image)?;
    let test = &splits.test;
    let n = options.inpaint_n.min(test.len());
    if n < 2 || splits.train.len() < n {
        return Err(TrainError::Config(format!(
            "--inpaint-n {n}: the benchmark needs at least 2 test images and no more than the {} training images of \
             the FID floor",
            splits.train.len()
        )));
    }
    let indices: Vec<usize> = (0..n).collect();
    let mut originals = vec![0.0f32; n * pixels];
    test.fill_images(&indices, PixelRange::ZeroToOne, &mut originals);
    let mut labels = vec![0u32; n];
    let labelled = test.fill_labels(&indices, &mut labels);
    let mut masks = Vec::with_capacity(n * pixels);
    for i in 0..n {
        masks.extend(mask.mask_for(i, run.config.seed, image)?);
    }
    let diffusion = crate::recipe::DiffusionOptions {
        sampler: "ddim".into(),
        steps: Some(options.inpaint_steps),
        eta: None,
        ema: options.sampling.ema,
        guide: options.sampling.guide.clone(),
        guide_weight: options.sampling.guide_weight,
    };
    let request = crate::recipe::Completion {
        images: &originals,
        masks: &masks,
        diffusion: &diffusion,
        resample: options.resample,
        jump: options.jump,
        seed: run.config.seed,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let start = std::time::Instant::now();
    let completed = recipe.complete(gpu, run, &request)?;
    let seconds = start.elapsed().as_secs_f64();
    let evaluations = crate::diffusion::repaint::schedule(
        &crate::kernels::diffusion::Schedule::ddpm().ddim_steps(options.inpaint_steps),
        options.jump,
        options.resample,
    )?
    .len();

    let known_pixels = masks.iter().filter(|&&m| m == 1.0).count();
    let mut report = json!({
        "model": run.config.model,
        "mask": mask.name(),
        "images": n,
        "regenerated_fraction": 1.0 - known_pixels as f64 / masks.len() as f64,
        "sampler": format!("ddim, {} steps", options.inpaint_steps),
        "weights": if options.sampling.ema { "ema" } else { "trained" },
        "resample": options.resample,
        "jump": options.jump,
        "network_evaluations": evaluations,
        "seconds": seconds,
        "seam_score": completion::seam_score(&completed, &masks, image),
        "seam_score_of_real_images": completion::seam_score(&originals, &masks, image),
        "max_known_pixel_change": completion::max_known_change(&completed, &originals, &masks),
    });
    if let Some(reason) = fid_unavailable(&splits).filter(|_| options.classifier.is_none()) {
        report["fid_skipped"] = json!(reason);
        return Ok(report);
    }
    let classifier = classifier_run(gpu, options.classifier.as_deref(), run.config.data.as_ref(), image)?;
    let net = FeatureNet::load(gpu, &classifier, run.config.image)?;
    let dim = classifier::FEATURES;
    let test_images = real_subset(test, test.len(), run.config.seed);
    let (test_features, _) = net.features(gpu, &test_images)?;
    let test_stats = FeatureStatistics::new(&test_features, dim);
    let (features, classes) = net.features(gpu, &completed)?;
    let (_, original_classes) = net.features(gpu, &originals)?;
    let (real_features, _) = net.features(gpu, &real_subset(&splits.train, n, run.config.seed))?;
    let accuracy = |predicted: &[u32]| {
        labelled.then(|| predicted.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64 / n as f64)
    };
    report["accuracy_on_completions"] = json!(accuracy(&classes));
    report["accuracy_on_originals"] = json!(accuracy(&original_classes));
    report["fid"] = json!(frechet_distance(&FeatureStatistics::new(&features, dim), &test_stats));
    report["fid_floor"] = json!(frechet_distance(
        &FeatureStatistics::new(&real_features, dim),
        &test_stats
    ));
    report["fid_classifier"] = json!(net.run);
    Ok(report)
}
