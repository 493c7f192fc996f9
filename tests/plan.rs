//! Plans: GPU training traces against the CPU reference, determinism, resume, checkpoints.

use latent::check::{self, TestRng};
use latent::checkpoint::Checkpoint;
use latent::graph::{ConvGeometry, Graph, TensorId};
use latent::kernels::activation::Activation;
use latent::optim::Optimizer;
use latent::plan::reference::Reference;
use latent::plan::{self, ParamStore, Phase, Plan, PlanOptions, TrainOptions};

const SEED: u64 = 5;

fn train_options(optimizer: Optimizer) -> TrainOptions {
    TrainOptions {
        optimizer,
        update_prefixes: vec![],
    }
}

fn options(name: &str, optimizer: Optimizer) -> PlanOptions {
    PlanOptions {
        name: name.into(),
        train: Some(train_options(optimizer)),
        seed: SEED,
    }
}

/// A two-layer MLP with a ReLU, trained by MSE on a fixed synthetic regression target. The hidden layer feeds
/// two heads whose sum is the output, so a gradient is accumulated from two consumers.
fn mlp(batch: usize) -> (Graph, TensorId, TensorId) {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 7]);
    let target = g.input("target", &[batch, 3]);
    let h = g.linear("fc1", x, 33).unwrap();
    let h = g.activation(Activation::Relu, h);
    let a = g.linear("head_a", h, 3).unwrap();
    let b = g.linear("head_b", h, 3).unwrap();
    let y = g.add(a, b).unwrap();
    g.mean_squared_error(y, target).unwrap();
    (g, x, target)
}

/// A small conv net classifier: conv, ReLU, max-pool, flatten, linear, cross-entropy.
fn conv_net(batch: usize) -> (Graph, TensorId, TensorId) {
    let mut g = Graph::new();
    let x = g.input("x", &[batch, 2, 8, 8]);
    let labels = g.integer_input("labels", &[batch]);
    let h = g.conv2d("c1", x, 4, ConvGeometry::new(3, 1, 1)).unwrap();
    let h = g.activation(Activation::LeakyRelu { slope: 0.2 }, h);
    let h = g.max_pool2(h).unwrap();
    let h = g.reshape(h, &[batch, 4 * 4 * 4]).unwrap();
    let logits = g.linear("f1", h, 5).unwrap();
    g.cross_entropy(logits, labels).unwrap();
    (g, x, labels)
}

/// Runs `steps` training steps on the GPU and on the CPU reference with the same data; returns the loss traces
/// and compares every parameter at the end.
fn compare_traces(graph: &Graph, inputs: &[(TensorId, Vec<f32>)], optimizer: Optimizer, steps: u64) {
    let gpu = check::shared_gpu();
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, graph, &mut store, &options("trace", optimizer.clone())).unwrap();
    let mut reference = Reference::new(graph, SEED, train_options(optimizer));
    for (id, data) in inputs {
        plan.write_input(gpu, *id, data).unwrap();
        reference.set_input(*id, data);
    }
    let mut gpu_losses = Vec::new();
    let mut cpu_losses = Vec::new();
    for step in 0..steps {
        plan.run(gpu, step);
        gpu_losses.push(plan.read_losses(gpu).unwrap()[0] as f64);
        cpu_losses.push(reference.step(step).unwrap()[0]);
    }
    eprintln!("GPU losses {gpu_losses:?}\nCPU losses {cpu_losses:?}");
    assert!(
        gpu_losses.last() < gpu_losses.first(),
        "the loss must fall over {steps} steps: {gpu_losses:?}"
    );
    for (step, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(
            (g - c).abs() <= 1e-4 * c.abs().max(1e-3),
            "step {step}: GPU loss {g} vs CPU reference {c}"
        );
    }
    for entry in &store.entries {
        let gpu_values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let cpu_values = reference.param(&entry.name).unwrap();
        let tolerance = check::Tolerance {
            atol: 1e-5,
            rtol: 1e-3,
            max_relative_frobenius: Some(1e-4),
        };
        check::assert_close(
            &format!("{} after {steps} steps", entry.name),
            &gpu_values[..cpu_values.len()],
            cpu_values,
            tolerance,
        );
    }
}

#[test]
fn mlp_training_matches_the_cpu_reference() {
    let batch = 16;
    let (graph, x, target) = mlp(batch);
    let mut rng = TestRng::new(1);
    let xs = rng.uniform_vec(batch * 7, -1.0, 1.0);
    // A fixed smooth target: y_j = sin(x_0 + j x_1)
    let ys: Vec<f32> = (0..batch)
        .flat_map(|b| (0..3).map(move |j| (b, j)))
        .map(|(b, j)| (xs[b * 7] + j as f32 * xs[b * 7 + 1]).sin())
        .collect();
    compare_traces(&graph, &[(x, xs), (target, ys)], Optimizer::adam(1e-2), 20);
}

#[test]
fn conv_net_training_matches_the_cpu_reference() {
    let batch = 6;
    let (graph, x, labels) = conv_net(batch);
    let mut rng = TestRng::new(2);
    let xs = rng.uniform_vec(batch * 2 * 8 * 8, 0.0, 1.0);
    let ys: Vec<f32> = (0..batch).map(|b| (b % 5) as f32).collect();
    let gpu = check::shared_gpu();
    // Labels are u32 on the GPU; the reference reads them as f64.
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, &graph, &mut store, &options("conv", Optimizer::adam(1e-2))).unwrap();
    let mut reference = Reference::new(&graph, SEED, train_options(Optimizer::adam(1e-2)));
    plan.write_input(gpu, x, &xs).unwrap();
    plan.write_input(gpu, labels, &ys.iter().map(|&l| l as u32).collect::<Vec<u32>>())
        .unwrap();
    reference.set_input(x, &xs);
    reference.set_input(labels, &ys);
    let mut first = None;
    for step in 0..20 {
        plan.run(gpu, step);
        let g = plan.read_losses(gpu).unwrap()[0] as f64;
        let c = reference.step(step).unwrap()[0];
        first.get_or_insert(g);
        assert!(
            (g - c).abs() <= 1e-4 * c.abs(),
            "step {step}: GPU loss {g} vs CPU reference {c}"
        );
        if step == 19 {
            assert!(
                g < first.unwrap() * 0.5,
                "cross-entropy should at least halve in 20 steps: {first:?} -> {g}"
            );
        }
    }
    for entry in &store.entries {
        let gpu_values: Vec<f32> = gpu.read(&entry.value).unwrap();
        let cpu_values = reference.param(&entry.name).unwrap();
        let tolerance = check::Tolerance {
            atol: 1e-5,
            rtol: 1e-3,
            max_relative_frobenius: Some(1e-4),
        };
        check::assert_close(&entry.name, &gpu_values[..cpu_values.len()], cpu_values, tolerance);
    }
}

fn mlp_data(batch: usize, step: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = TestRng::new(100 + step);
    (
        rng.uniform_vec(batch * 7, -1.0, 1.0),
        rng.uniform_vec(batch * 3, -1.0, 1.0),
    )
}

/// Trains the MLP over steps `range` with fresh data per step; returns each step's loss.
fn run_steps(plan: &Plan, x: TensorId, target: TensorId, range: std::ops::Range<u64>) -> Vec<f32> {
    let gpu = check::shared_gpu();
    range
        .map(|step| {
            let (xs, ys) = mlp_data(16, step);
            plan.write_input(gpu, x, &xs).unwrap();
            plan.write_input(gpu, target, &ys).unwrap();
            plan.run(gpu, step);
            plan.read_losses(gpu).unwrap()[0]
        })
        .collect()
}

fn all_weights(store: &ParamStore) -> Vec<Vec<f32>> {
    let gpu = check::shared_gpu();
    store
        .entries
        .iter()
        .map(|e| gpu.read::<f32>(&e.value).unwrap())
        .collect()
}

#[test]
fn same_seed_gives_bit_identical_losses_and_weights() {
    let gpu = check::shared_gpu();
    let (graph, x, target) = mlp(16);
    let run = || {
        let mut store = ParamStore::new(SEED);
        let plan = plan::compile(gpu, &graph, &mut store, &options("determinism", Optimizer::adam(1e-2))).unwrap();
        let losses = run_steps(&plan, x, target, 0..10);
        (losses, all_weights(&store))
    };
    let (losses_a, weights_a) = run();
    let (losses_b, weights_b) = run();
    assert_eq!(
        losses_a.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        losses_b.iter().map(|l| l.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        weights_a == weights_b,
        "weights differ between two runs with the same seed"
    );
}

#[test]
fn resume_from_a_checkpoint_is_bit_identical() {
    let gpu = check::shared_gpu();
    let (graph, x, target) = mlp(16);
    let (n, m) = (6, 5);

    // N + M steps in one run.
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, &graph, &mut store, &options("straight", Optimizer::adam(1e-2))).unwrap();
    let straight = run_steps(&plan, x, target, 0..n + m);
    let straight_weights = all_weights(&store);

    // N steps, save, then a fresh store and plan resumed from the file for M steps.
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("checkpoint.safetensors");
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, &graph, &mut store, &options("first", Optimizer::adam(1e-2))).unwrap();
    let first = run_steps(&plan, x, target, 0..n);
    let mut checkpoint = Checkpoint::new("mlp");
    store.save_into(gpu, &mut checkpoint).unwrap();
    checkpoint.metadata.insert("step".into(), n.to_string());
    checkpoint.save(&path).unwrap();
    drop((plan, store));

    let loaded = Checkpoint::load(&path).unwrap();
    let mut store = ParamStore::new(999); // a different seed: every value must come from the file
    let plan = plan::compile(gpu, &graph, &mut store, &options("resumed", Optimizer::adam(1e-2))).unwrap();
    store.load_from(gpu, &loaded).unwrap();
    let step: u64 = loaded.meta("step").unwrap();
    let second = run_steps(&plan, x, target, step..n + m);

    let resumed: Vec<u32> = first.iter().chain(&second).map(|l| l.to_bits()).collect();
    assert_eq!(
        resumed,
        straight.iter().map(|l| l.to_bits()).collect::<Vec<_>>(),
        "losses differ after resume"
    );
    assert!(all_weights(&store) == straight_weights, "weights differ after resume");
}

#[test]
fn plan_reports_dispatches_and_memory_by_role() {
    let gpu = check::shared_gpu();
    let (graph, _, _) = mlp(16);
    let mut store = ParamStore::new(SEED);
    let plan = plan::compile(gpu, &graph, &mut store, &options("counts", Optimizer::adam(1e-3))).unwrap();
    let counts = plan.dispatch_counts();
    // Forward: 3 linear + relu + add + mse (2 dispatches) = 7.
    assert_eq!(counts[&Phase::Forward], 7, "{counts:?}");
    // One Adam update per parameter tensor (3 layers x weight and bias).
    assert_eq!(counts[&Phase::Optimizer], 6, "{counts:?}");
    let memory = plan::store_memory(&store);
    let weights = memory[&latent::gpu::BufferRole::Weights];
    assert_eq!(weights as usize, 4 * graph.parameter_count());
    assert_eq!(memory[&latent::gpu::BufferRole::OptimizerState], 2 * weights);
}
