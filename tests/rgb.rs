//! Your own images at their own size and colour: a generated folder of small RGBA PNGs is read at its size and
//! colour (alpha onto black), every model family builds its graph from (C, H, W) and trains steps against the
//! f64 CPU reference at 3x16x16, the command line trains, samples and evaluates such a folder with RGB grids and
//! [N, 3, H, W] samples, and mixed sizes, unsupported sizes and inpainting files of the wrong size are refused in
//! one line that names the fix.

use std::path::Path;

use latent::check::{self, TestRng};
use latent::data::{self, Fit, ImageShape};
use latent::graph::{Graph, TensorId};
use latent::kernels::optim::SgdConfig;
use latent::models::ldm::{self, LdmConfig};
use latent::models::{self, ddpm, ModelKind};
use latent::optim::Optimizer;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, PlanOptions, TrainOptions};

mod common;
use common::{latent, latent_command};

const RGB16: ImageShape = ImageShape::new(3, 16, 16);

/// `count` RGBA PNGs of `side` x `side` in `dir`: a coloured disc (its colour, place and radius drawn per image)
/// on a transparent background, the pixels under it transparent but not black (so compositing shows).
fn rgba_folder(dir: &Path, count: usize, side: u32, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = TestRng::new(seed);
    for i in 0..count {
        let colour = [
            rng.uniform(0.0, 255.0),
            rng.uniform(0.0, 255.0),
            rng.uniform(0.0, 255.0),
        ]
        .map(|v| v as u8);
        let (cx, cy) = (rng.uniform(4.0, side as f32 - 4.0), rng.uniform(4.0, side as f32 - 4.0));
        let radius = rng.uniform(2.0, side as f32 / 3.0);
        let image = image::RgbaImage::from_fn(side, side, |x, y| {
            let inside = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= radius * radius;
            if inside {
                image::Rgba([colour[0], colour[1], colour[2], 255])
            } else {
                image::Rgba([200, 100, 50, 0])
            }
        });
        image.save(dir.join(format!("icon-{i:03}.png"))).unwrap();
    }
}

/// The header of a .npy file.
fn npy_header(path: &Path) -> String {
    let npy = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    String::from_utf8(npy[10..10 + header_len].to_vec()).unwrap()
}

/// Whether some pixel of a PNG has channels that differ (a colour picture, not gray written as RGB).
fn has_colour(path: &Path) -> bool {
    let image = image::open(path).unwrap();
    assert_eq!(image.color(), image::ColorType::Rgb8, "{}", path.display());
    image.to_rgb8().pixels().any(|p| p[0] != p[1] || p[1] != p[2])
}

#[test]
fn a_colour_folder_loads_at_its_own_size_and_colour_with_alpha_onto_black() {
    let dir = tempfile::tempdir().unwrap();
    rgba_folder(dir.path(), 20, 16, 1);
    let shape = data::resolve_shape(Some(dir.path()), None, false).unwrap();
    assert_eq!(shape, RGB16);
    assert_eq!(
        data::resolve_shape(Some(dir.path()), None, true).unwrap(),
        ImageShape::new(1, 16, 16),
        "--grayscale"
    );
    assert_eq!(
        data::resolve_shape(Some(dir.path()), Some(32), false).unwrap(),
        ImageShape::new(3, 32, 32),
        "--image-size 32"
    );
    let splits = data::load_dir(dir.path(), shape, Fit::default()).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (18, 2));
    // Image 0 decoded by hand: the disc keeps its colour, the transparent rest is black, not (200, 100, 50).
    let png = image::open(dir.path().join("icon-000.png")).unwrap().to_rgba8();
    let loaded = splits.train.image(0);
    for (i, pixel) in png.pixels().enumerate() {
        for channel in 0..3 {
            let expected = if pixel[3] == 255 { pixel[channel] } else { 0 };
            assert_eq!(loaded[channel * 256 + i], expected, "pixel {i}, channel {channel}");
        }
    }
}

#[test]
fn a_folder_of_mixed_sizes_needs_image_size_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    rgba_folder(dir.path(), 6, 16, 2);
    let big = image::RgbImage::from_pixel(24, 20, image::Rgb([10, 200, 30]));
    big.save(dir.path().join("zz-large.png")).unwrap();
    let error = data::resolve_shape(Some(dir.path()), None, false)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the images are not all one size")
            && error.contains("16x16")
            && error.contains("24x20")
            && error.contains("zz-large.png")
            && error.contains("pass --image-size N")
            && error.contains("--image-size 20"),
        "{error}"
    );
    // Through the command line: one line, and nothing trained.
    let run = dir.path().join("run");
    let output = latent_command(&[
        "train",
        "vae",
        "--data",
        dir.path().to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--image-size"), "{stderr}");
    assert!(!run.join("checkpoint.safetensors").exists());
    // With --image-size every image is fitted to it.
    let splits = data::load_dir(dir.path(), ImageShape::new(3, 16, 16), Fit::default()).unwrap();
    assert_eq!(splits.train.shape(), RGB16);
    assert_eq!(splits.train.len() + splits.test.len(), 7);
}

#[test]
fn a_size_the_convolutions_cannot_take_is_refused_naming_sizes_that_work() {
    let dir = tempfile::tempdir().unwrap();
    rgba_folder(dir.path(), 12, 18, 3);
    let run = dir.path().join("run");
    let output = latent_command(&[
        "train",
        "ae",
        "--data",
        dir.path().to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--steps",
        "1",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("multiples of 4")
            && stderr.contains("3x18x18")
            && stderr.contains("--image-size 16 or --image-size 20"),
        "{stderr}"
    );
    // The vae is fully connected and takes it.
    latent(&[
        "train",
        "vae",
        "--data",
        dir.path().to_str().unwrap(),
        "--run",
        run.to_str().unwrap(),
        "--steps",
        "1",
        "--batch",
        "4",
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["image"],
        serde_json::json!({"channels": 3, "height": 18, "width": 18})
    );
}

/// SGD without momentum: each update is lr times the gradient, so comparing updates compares gradients.
fn sgd(lr: f64) -> Optimizer {
    Optimizer::Sgd {
        lr,
        config: SgdConfig {
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        },
    }
}

/// Two steps of `graph` (SGD, lr 0.01) on the GPU and in the f64 CPU reference from the same initial weights and
/// inputs: the losses agree at both steps (the second through the updated weights), and every tensor's first
/// update (lr times its gradient, or a running statistic's change) agrees to float32 accuracy (1%: a wrong
/// channel or size gives errors of order 1).
fn steps_match_reference(name: &str, graph: &Graph, inputs: &[(TensorId, Vec<f32>)], prefixes: &[&str]) {
    let gpu = check::shared_gpu();
    let (seed, lr) = (5, 0.01);
    let train = TrainOptions {
        optimizer: sgd(lr),
        update_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
    };
    let mut store = ParamStore::new(seed);
    let options = PlanOptions {
        name: name.into(),
        train: Some(train.clone()),
        seed,
    };
    let plan = plan::compile(gpu, graph, &mut store, &options).unwrap();
    let mut reference = Reference::new(graph, seed, train);
    for (id, values) in inputs {
        if graph.tensor(*id).integer {
            let integers: Vec<u32> = values.iter().map(|&v| v as u32).collect();
            plan.write_input(gpu, *id, &integers).unwrap();
        } else {
            plan.write_input(gpu, *id, values).unwrap();
        }
        reference.set_input(*id, values);
    }
    let before: Vec<(Vec<f32>, Vec<f64>)> = store
        .entries
        .iter()
        .map(|e| (gpu.read(&e.value).unwrap(), reference.param(&e.name).unwrap().to_vec()))
        .collect();
    for step in 0..2 {
        plan.run(gpu, step);
        let gpu_losses = plan.read_losses(gpu).unwrap();
        let cpu_losses = reference.step(step).unwrap();
        eprintln!("{name} step {step}: GPU {gpu_losses:?} CPU {cpu_losses:?}");
        assert_eq!(gpu_losses.len(), cpu_losses.len());
        for (g, c) in gpu_losses.iter().zip(&cpu_losses) {
            assert!(
                (*g as f64 - c).abs() <= 1e-5 + 1e-4 * c.abs(),
                "{name} step {step}: losses {gpu_losses:?} vs {cpu_losses:?}"
            );
        }
        if step > 0 {
            continue;
        }
        for (entry, (gpu_before, cpu_before)) in store.entries.iter().zip(&before) {
            let after: Vec<f32> = gpu.read(&entry.value).unwrap();
            let expected = reference.param(&entry.name).unwrap();
            let gpu_update: Vec<f32> = after.iter().zip(gpu_before).map(|(a, b)| a - b).collect();
            let cpu_update: Vec<f64> = expected.iter().zip(cpu_before).map(|(a, b)| a - b).collect();
            // A gradient that is exactly 0 (the bias before the gan's BatchNorm) leaves only rounding noise,
            // for which a relative error means nothing: the elementwise bound alone holds.
            let norm = cpu_update.iter().map(|v| v * v).sum::<f64>().sqrt();
            let tolerance = check::Tolerance {
                atol: lr * 1e-4,
                rtol: 1e-2,
                max_relative_frobenius: (norm > lr * 1e-4).then_some(1e-2),
            };
            check::assert_close(
                &format!("{name}: the update of {}", entry.name),
                &gpu_update[..cpu_update.len()],
                &cpu_update,
                tolerance,
            );
        }
    }
}

/// Every family's training step at 3x16x16 (the ddpm's U-Net at width 8): the input and output layers take and
/// give 3 channels, and two steps match the CPU reference.
#[test]
fn every_family_trains_at_3x16x16_against_the_cpu_reference() {
    let batch = 4;
    let mut rng = TestRng::new(17);
    let unit = rng.uniform_vec(batch * RGB16.numel(), 0.0, 1.0);
    let signed: Vec<f32> = unit.iter().map(|v| 2.0 * v - 1.0).collect();
    for model in [
        ModelKind::Ae,
        ModelKind::Vae,
        ModelKind::Classifier,
        ModelKind::Wae,
        ModelKind::AeKl,
    ] {
        let tg = model.recipe().train_graph(batch, RGB16).unwrap();
        let x_shape = tg.graph.shape(tg.x).to_vec();
        assert_eq!(x_shape.iter().product::<usize>(), batch * RGB16.numel(), "{model:?}");
        let mut inputs = vec![(tg.x, unit.clone())];
        if let Some(labels) = tg.labels {
            inputs.push((labels, vec![0.0, 3.0, 9.0, 3.0]));
        }
        steps_match_reference(model.name(), &tg.graph, &inputs, &[]);
    }
    let ae = models::ae::objective(batch, RGB16).unwrap();
    assert_eq!(ae.graph.shape(ae.logits), &[batch, 3, 16, 16]);
    // The ldm's first stage maps 3x16x16 to a 4x4x4 latent and back to 3 channels; its denoiser diffuses that.
    let (whole, x) = ldm::whole_step(&LdmConfig::default(), batch, RGB16).unwrap();
    assert_eq!(whole.graph.shape(x), &[batch, 3, 16, 16]);
    assert_eq!(whole.graph.shape(whole.z0), &[batch, 4, 4, 4]);
    let dec = whole
        .graph
        .params
        .iter()
        .find(|p| p.name == "first_stage.dec.4.weight")
        .unwrap();
    assert_eq!(dec.shape, [32, 3, 4, 4]);
    let small = LdmConfig {
        width: 16,
        blocks: 1,
        groups: 1,
        ..LdmConfig::default()
    };
    let objective = ldm::objective(&small, batch, RGB16).unwrap();
    let z0 = rng.uniform_vec(batch * ldm::latent_values(RGB16), -2.0, 2.0);
    steps_match_reference(
        "ldm",
        &objective.graph,
        &[(objective.z0, z0), (objective.t, vec![0.0, 250.0, 600.0, 999.0])],
        &[],
    );

    let d_step = models::gan::discriminator_step(batch, RGB16).unwrap();
    assert_eq!(d_step.graph.shape(d_step.fake), &[batch, 3, 16, 16]);
    steps_match_reference(
        "gan D step",
        &d_step.graph,
        &[(d_step.x, signed.clone())],
        &[models::gan::DISCRIMINATOR],
    );

    let config = ddpm::DdpmConfig {
        width: 8,
        groups: 4,
        ..ddpm::DdpmConfig::default()
    };
    let objective = ddpm::objective(&config, batch, RGB16).unwrap();
    assert_eq!(objective.graph.shape(objective.prediction), &[batch, 3, 16, 16]);
    steps_match_reference(
        "ddpm",
        &objective.graph,
        &[(objective.x, signed), (objective.t, vec![0.0, 250.0, 600.0, 999.0])],
        &[],
    );
}

/// The families' graphs on 1x28x28 are those of models.md: the same tensors in the same order as the default
/// training graphs (which tests/models.rs and tests/pinned.rs pin).
#[test]
fn mnist_shaped_graphs_are_the_defaults() {
    for model in ModelKind::ALL {
        let from_shape = model.recipe().train_graph(2, ImageShape::MNIST).unwrap();
        let default = latent::train::train_graph(model, 2).unwrap();
        let names = |g: &Graph| {
            g.params
                .iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&from_shape.graph), names(&default.graph), "{model:?}");
        assert_eq!(from_shape.graph.ops.len(), default.graph.ops.len(), "{model:?}");
    }
}

/// `latent train` on a colour folder, then sample, reconstruct, interpolate and eval with no flags: config.json
/// keeps 3x16x16, the pictures are RGB with colour in them, samples.npy is [N, 3, 16, 16], and eval reports the
/// sliced Wasserstein distance and why there is no FID.
#[test]
fn the_command_line_trains_and_samples_a_colour_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("icons");
    rgba_folder(&data, 40, 16, 4);
    let data_s = data.to_str().unwrap();
    let run = dir.path().join("vae");
    let run_s = run.to_str().unwrap();
    latent(&[
        "train", "vae", "--data", data_s, "--run", run_s, "--batch", "8", "--epochs", "1",
    ]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["image"],
        serde_json::json!({"channels": 3, "height": 16, "width": 16})
    );
    assert!(has_colour(&run.join("samples/epoch-001.png")));
    // Resume needs no flags either.
    latent(&["train", "vae", "--resume", run_s, "--epochs", "2"]);
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    latent(&["sample", "--run", run_s, "--n", "10", "--out", out_s]);
    assert!(npy_header(&out.join("samples.npy")).contains("'shape': (10, 3, 16, 16)"));
    latent(&["reconstruct", "--run", run_s, "--n", "4", "--out", out_s]);
    latent(&[
        "interpolate",
        "--run",
        run_s,
        "--pairs",
        "1",
        "--steps",
        "4",
        "--out",
        out_s,
    ]);
    for file in ["grid.png", "reconstruct.png", "interpolate.png"] {
        assert!(has_colour(&out.join(file)), "{file} has no colour");
    }
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!(
        (grid.width(), grid.height()),
        (8 * 18 + 2, 2 * 18 + 2),
        "16x16 cells, 2-pixel gutters"
    );

    let eval = latent(&[
        "eval",
        "--run",
        run_s,
        "--iwae-k",
        "4",
        "--fid-n",
        "8",
        "--projections",
        "16",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(report["swd"].as_f64().is_some_and(f64::is_finite), "{report}");
    assert!(report["fid"].is_null(), "{report}");
    assert!(
        report["fid_skipped"].as_str().is_some_and(|r| r.contains("no labels")),
        "{report}"
    );
    // A classifier of another shape cannot give this run's features.
    let classifier = dir.path().join("classifier");
    let classifier_s = classifier.to_str().unwrap();
    latent(&[
        "train",
        "classifier",
        "--run",
        classifier_s,
        "--steps",
        "1",
        "--batch",
        "8",
    ]);
    let output = latent_command(&[
        "eval",
        "--run",
        run_s,
        "--iwae-k",
        "1",
        "--fid-n",
        "8",
        "--classifier",
        classifier_s,
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("was trained on 1x28x28 images (C x H x W) and the run's are 3x16x16"),
        "{stderr}"
    );
}

/// The small ddpm on a colour folder: trains, samples in colour at [N, 3, 16, 16], diffuses, inpaints a 16x16
/// image, and refuses an --image of another size naming both sizes.
#[test]
fn the_small_ddpm_trains_samples_and_inpaints_a_colour_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("icons");
    rgba_folder(&data, 24, 16, 5);
    let run = dir.path().join("ddpm");
    let run_s = run.to_str().unwrap();
    latent(&[
        "train",
        "ddpm",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run_s,
        "--batch",
        "4",
        "--steps",
        "2",
        "--width",
        "8",
        "--groups",
        "4",
        "--preview-steps",
        "2",
    ]);
    assert!(has_colour(&run.join("samples/epoch-001.png")));
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    latent(&["sample", "--run", run_s, "--n", "3", "--steps", "2", "--out", out_s]);
    assert!(npy_header(&out.join("samples.npy")).contains("'shape': (3, 3, 16, 16)"));
    assert!(has_colour(&out.join("grid.png")));
    latent(&["diffuse", "--run", run_s, "--n", "2", "--out", out_s]);
    assert!(has_colour(&out.join("diffuse.png")));

    let mask = dir.path().join("mask.png");
    image::GrayImage::from_fn(16, 16, |_, y| image::Luma([if y < 8 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let known = data.join("icon-000.png");
    let inpaint = |image: &Path| {
        latent_command(&[
            "inpaint",
            "--run",
            run_s,
            "--image",
            image.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--n",
            "2",
            "--steps",
            "2",
            "--out",
            out_s,
        ])
    };
    let output = inpaint(&known);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(npy_header(&out.join("inpainted.npy")).contains("'shape': (2, 3, 16, 16)"));
    assert!(has_colour(&out.join("inpaint.png")));
    let wrong = dir.path().join("wrong.png");
    image::RgbImage::new(28, 28).save(&wrong).unwrap();
    let output = inpaint(&wrong);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is 28x28, the run's images are 16x16"), "{stderr}");
}

/// The ldm on a colour folder: its first stage trains at 3x16x16 (a 4x4x4 latent), the diffusion on that, and
/// sample, reconstruct and inpaint give colour pictures and [N, 3, 16, 16] arrays with no flags.
#[test]
fn the_ldm_and_its_first_stage_train_and_sample_a_colour_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("icons");
    rgba_folder(&data, 24, 16, 6);
    let run = dir.path().join("ldm");
    let run_s = run.to_str().unwrap();
    latent(&[
        "train",
        "ldm",
        "--data",
        data.to_str().unwrap(),
        "--run",
        run_s,
        "--batch",
        "4",
        "--steps",
        "2",
        "--autoencoder-epochs",
        "1",
        "--guide-epochs",
        "0",
        "--width",
        "16",
        "--blocks",
        "1",
        "--preview-steps",
        "2",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("autoencoder/config.json")).unwrap()).unwrap();
    assert_eq!(
        first["image"],
        serde_json::json!({"channels": 3, "height": 16, "width": 16})
    );
    assert!(has_colour(&run.join("samples/epoch-001.png")));
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    latent(&["sample", "--run", run_s, "--n", "3", "--steps", "2", "--out", out_s]);
    assert!(npy_header(&out.join("samples.npy")).contains("'shape': (3, 3, 16, 16)"));
    assert!(has_colour(&out.join("grid.png")));
    latent(&["reconstruct", "--run", run_s, "--n", "4", "--out", out_s]);
    assert!(has_colour(&out.join("reconstruct.png")));
    latent(&[
        "sample",
        "--run",
        run.join("autoencoder").to_str().unwrap(),
        "--n",
        "2",
        "--out",
        out_s,
    ]);
    assert!(npy_header(&out.join("samples.npy")).contains("'shape': (2, 3, 16, 16)"));

    let mask = dir.path().join("mask.png");
    image::GrayImage::from_fn(16, 16, |_, y| image::Luma([if y < 8 { 255 } else { 0 }]))
        .save(&mask)
        .unwrap();
    let known = data.join("icon-000.png");
    latent(&[
        "inpaint",
        "--run",
        run_s,
        "--image",
        known.to_str().unwrap(),
        "--mask",
        mask.to_str().unwrap(),
        "--n",
        "2",
        "--steps",
        "2",
        "--out",
        out_s,
    ]);
    assert!(npy_header(&out.join("inpainted.npy")).contains("'shape': (2, 3, 16, 16)"));
    assert!(has_colour(&out.join("inpaint.png")));
}

/// A pixel mask on the latent grid: a cell is known only when its 4x4 pixels are, in every channel.
#[test]
fn the_latent_mask_of_a_colour_image_needs_every_channel_known() {
    let image = ImageShape::new(3, 8, 12);
    let plane = 8 * 12;
    let mut mask = vec![1.0f32; 3 * plane];
    // Pixel (5, 9) of the blue channel unknown: latent cell (1, 2) is unknown, every other is known.
    mask[2 * plane + 5 * 12 + 9] = 0.0;
    let cells = ldm::latent_mask(&mask, image);
    assert_eq!(cells.len(), 4 * 2 * 3);
    for (i, &v) in cells.iter().enumerate() {
        let cell = i % 6;
        assert_eq!(v, if cell == 5 { 0.0 } else { 1.0 }, "value {i}");
    }
}
