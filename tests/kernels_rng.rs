//! Philox random fills and the VAE reparameterisation: known-answer vectors, the GPU against the CPU twin bit for
//! bit, the statistics of the draws, the independence of streams, and the reparameterisation's backward twin
//! against finite differences.

use latent::check::{self, finite_difference_gradient, TestRng};
use latent::cpu;
use latent::field_offsets;
use latent::gpu::Gpu;
use latent::kernels::params_layout_mismatch;
use latent::kernels::reparam::{self, ReparamParams};
use latent::kernels::rng::{self, Draw, DrawParams, RngParams};
use latent::shaders;

/// Random123's known-answer vectors for philox4x32-10 (kat_vectors): (counter, key, expected words).
const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    ([0; 4], [0; 2], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    (
        [0xffffffff; 4],
        [0xffffffff; 2],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

/// The draw whose first block has the given counter and key.
fn draw_for(counter: [u32; 4], key: [u32; 2]) -> Draw {
    Draw {
        seed: key[0] as u64 | (key[1] as u64) << 32,
        step: counter[2] as u64 | (counter[3] as u64) << 32,
        stream: counter[1],
        offset: counter[0],
    }
}

fn gpu_bits(gpu: &Gpu, draw: &Draw, n: usize) -> Vec<u32> {
    let out = check::poisoned(gpu, "bits", n).unwrap();
    let params = DrawParams::new(gpu, draw, n).unwrap();
    gpu.run(&[&rng::bits(gpu, &out, &params).unwrap()]).unwrap();
    let mut words: Vec<u32> = gpu.read(&out).unwrap();
    words.truncate(n);
    words
}

fn gpu_fill(gpu: &Gpu, normal: bool, draw: &Draw, n: usize) -> Vec<f64> {
    let out = check::poisoned(gpu, "fill", n).unwrap();
    let params = DrawParams::new(gpu, draw, n).unwrap();
    let dispatch = if normal {
        rng::normal(gpu, &out, &params)
    } else {
        rng::uniform(gpu, &out, &params)
    };
    gpu.run(&[&dispatch.unwrap()]).unwrap();
    check::to_f64(&check::download(gpu, &out, n).unwrap())
}

#[test]
fn philox_twin_matches_random123_known_answers() {
    for (counter, key, expected) in KNOWN_ANSWERS {
        assert_eq!(
            cpu::rng::philox4x32_10(counter, key),
            expected,
            "counter {counter:08x?} key {key:08x?}"
        );
        let draw = draw_for(counter, key);
        assert_eq!(draw.counter(0), counter);
        assert_eq!(draw.key(), key);
    }
}

#[test]
fn philox_shader_matches_random123_known_answers() {
    let gpu = check::shared_gpu();
    for (counter, key, expected) in KNOWN_ANSWERS {
        let words = gpu_bits(gpu, &draw_for(counter, key), 4);
        assert_eq!(words, expected, "counter {counter:08x?} key {key:08x?}");
    }
}

#[test]
fn fills_match_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), rng::checks());
}

#[test]
fn reparam_matches_cpu_twin() {
    check::assert_checks_pass(check::shared_gpu(), reparam::checks());
}

#[test]
fn params_structs_match_their_wgsl_twins() {
    let fields = field_offsets!(
        RngParams,
        [n, offset, stream, _pad0, seed_lo, seed_hi, step_lo, step_hi]
    );
    for entry in [
        &shaders::rng::PHILOX_BITS,
        &shaders::rng::UNIFORM_FILL,
        &shaders::rng::NORMAL_FILL,
    ] {
        let mismatch = params_layout_mismatch(entry, size_of::<RngParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
    let fields = field_offsets!(ReparamParams, [n, _pad0, _pad1, _pad2]);
    for entry in [&shaders::reparam::REPARAM_FORWARD, &shaders::reparam::REPARAM_BACKWARD] {
        let mismatch = params_layout_mismatch(entry, size_of::<ReparamParams>(), &fields);
        assert!(mismatch.is_none(), "{}", mismatch.unwrap());
    }
}

/// Element i depends only on (seed, step, stream, offset + i / 4): a fill done in two parts, the second
/// starting at counter block 125, equals the fill done at once.
#[test]
fn a_fill_in_parts_equals_the_whole() {
    let gpu = check::shared_gpu();
    let draw = Draw::new(99, 5, 2);
    let whole = gpu_fill(gpu, true, &draw, 1000);
    let first = gpu_fill(gpu, true, &draw, 500);
    let second = gpu_fill(gpu, true, &Draw { offset: 125, ..draw }, 500);
    assert_eq!(whole, [first, second].concat());
    assert_eq!(
        gpu_bits(gpu, &draw, 1001),
        gpu_bits(gpu, &draw, 1001),
        "not reproducible"
    );
}

/// A recorded fill replayed with a new draw (the next step) gives that draw's numbers.
#[test]
fn a_recorded_fill_replays_with_the_next_draw() {
    let gpu = check::shared_gpu();
    let n = 77;
    let out = check::poisoned(gpu, "eps", n).unwrap();
    let params = DrawParams::new(gpu, &Draw::new(3, 0, 1), n).unwrap();
    let fill = rng::normal(gpu, &out, &params).unwrap();
    for step in 0..3 {
        params.set(gpu, &Draw::new(3, step, 1)).unwrap();
        gpu.run(&[&fill]).unwrap();
        let got = check::to_f64(&check::download(gpu, &out, n).unwrap());
        assert_eq!(got, gpu_fill(gpu, true, &Draw::new(3, step, 1), n), "step {step}");
    }
}

/// The float conversions: uniforms are multiples of 2^-24 in [0, 1); Box-Muller's u1 is never 0.
#[test]
fn float_conversions_at_the_extremes() {
    assert_eq!(cpu::rng::uniform_from_bits(0), 0.0);
    assert_eq!(cpu::rng::uniform_from_bits(u32::MAX), 1.0 - 2f64.powi(-24));
    assert_eq!(cpu::rng::uniform_from_bits(0x8000_0000), 0.5);
    assert_eq!(cpu::rng::uniform_open_zero_from_bits(0), 2f64.powi(-24));
    assert_eq!(cpu::rng::uniform_open_zero_from_bits(u32::MAX), 1.0);
    // The largest radius: sqrt(-2 ln 2^-24) = sqrt(48 ln 2), finite.
    let [z0, z1] = cpu::rng::box_muller(0, 0);
    assert!((z0 - (48.0 * 2f64.ln()).sqrt()).abs() < 1e-12 && z1 == 0.0, "{z0} {z1}");
}

/// Mean, variance and excess kurtosis of the sample against their standard errors (5 sigma).
fn assert_moments(what: &str, values: &[f64], mean: f64, variance: f64, kurtosis: f64) {
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    let v = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    let k = values.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n / (v * v);
    // Standard errors: sqrt(var / n) for the mean; sqrt((mu4 - var^2) / n) for the variance.
    let mean_bound = 5.0 * (variance / n).sqrt();
    let variance_bound = 5.0 * ((kurtosis - 1.0) * variance * variance / n).sqrt();
    assert!(
        (m - mean).abs() < mean_bound,
        "{what}: mean {m}, expected {mean} +- {mean_bound}"
    );
    assert!(
        (v - variance).abs() < variance_bound,
        "{what}: variance {v}, expected {variance} +- {variance_bound}"
    );
    // The kurtosis' standard error is sqrt(24 / n) for a normal; 5 sigma of it is loose enough for both.
    let kurtosis_bound = 5.0 * (24.0 / n).sqrt();
    assert!(
        (k - kurtosis).abs() < kurtosis_bound,
        "{what}: kurtosis {k}, expected {kurtosis} +- {kurtosis_bound}"
    );
}

const SAMPLES: usize = 1_000_000;

#[test]
fn normal_and_uniform_fills_have_the_right_moments() {
    let gpu = check::shared_gpu();
    let normal = gpu_fill(gpu, true, &Draw::new(1234, 0, 0), SAMPLES);
    assert_moments("normal", &normal, 0.0, 1.0, 3.0);
    assert!(normal.iter().all(|z| z.is_finite()));
    let uniform = gpu_fill(gpu, false, &Draw::new(1234, 0, 0), SAMPLES);
    // U[0, 1): mean 1/2, variance 1/12, kurtosis 9/5.
    assert_moments("uniform", &uniform, 0.5, 1.0 / 12.0, 1.8);
    assert!(uniform.iter().all(|&u| (0.0..1.0).contains(&u)));
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Different streams, steps and seeds give uncorrelated draws (|r| < 5 / sqrt(n)), and so do neighbouring
/// elements of one draw (including the cos and sin halves of one Box-Muller pair).
#[test]
fn streams_steps_and_neighbours_are_uncorrelated() {
    let gpu = check::shared_gpu();
    let n = SAMPLES;
    let bound = 5.0 / (n as f64).sqrt();
    let base = gpu_fill(gpu, true, &Draw::new(7, 100, 0), n);
    for (what, other) in [
        ("another stream", Draw::new(7, 100, 1)),
        ("the next step", Draw::new(7, 101, 0)),
        ("a step 2^32 later", Draw::new(7, 100 + (1 << 32), 0)),
        ("another seed", Draw::new(8, 100, 0)),
        ("a seed 2^32 apart", Draw::new(7 + (1 << 32), 100, 0)),
    ] {
        let values = gpu_fill(gpu, true, &other, n);
        let r = correlation(&base, &values);
        assert!(r.abs() < bound, "{what}: correlation {r} (bound {bound})");
    }
    for lag in [1, 2, 3, 4] {
        let r = correlation(&base[..n - lag], &base[lag..]);
        assert!(r.abs() < bound, "lag {lag}: correlation {r} (bound {bound})");
    }
    // The squares of a Box-Muller pair are uncorrelated too (cos^2 + sin^2 = 1 couples only through r).
    let squares: Vec<f64> = base.iter().map(|z| z * z).collect();
    let (even, odd): (Vec<f64>, Vec<f64>) = squares.chunks(2).map(|p| (p[0], p[1])).unzip();
    let r = correlation(&even, &odd);
    assert!(r.abs() < 2.0 * bound, "squares within a pair: correlation {r}");
}

/// The backward twin against central differences of L = sum(dz * z(mu, logvar)).
#[test]
fn reparam_backward_twin_matches_finite_differences() {
    let mut rng = TestRng::new(5);
    let eps = check::to_f64(&rng.uniform_vec(12, -2.0, 2.0));
    let mu = check::to_f64(&rng.uniform_vec(12, -1.0, 1.0));
    let logvar = check::to_f64(&rng.uniform_vec(12, -3.0, 1.0));
    let dz = check::to_f64(&rng.uniform_vec(12, -1.0, 1.0));
    let loss = |z: Vec<f64>| z.iter().zip(&dz).map(|(z, g)| z * g).sum::<f64>();
    let (dmu, dlogvar) = cpu::reparam::backward(&eps, &logvar, &dz);
    let numeric_mu = finite_difference_gradient(&mu, 1e-6, |m| loss(cpu::reparam::forward(&eps, m, &logvar)));
    let numeric_logvar = finite_difference_gradient(&logvar, 1e-6, |l| loss(cpu::reparam::forward(&eps, &mu, l)));
    for i in 0..12 {
        assert!(
            (dmu[i] - numeric_mu[i]).abs() <= 1e-6 + 1e-6 * numeric_mu[i].abs(),
            "dmu[{i}]"
        );
        assert!(
            (dlogvar[i] - numeric_logvar[i]).abs() <= 1e-6 + 1e-6 * numeric_logvar[i].abs(),
            "dlogvar[{i}]: {} vs {}",
            dlogvar[i],
            numeric_logvar[i]
        );
    }
}

/// Hand-derived: logvar = 0 (sigma 1), eps = 2, mu = 1: z = 3; dz = 1 gives dmu = 1 and
/// dlogvar = eps * exp(0) / 2 = 1. With logvar = 2 ln 3 (sigma 3): z = 1 + 2 * 3 = 7, dlogvar = 2 * 3 / 2 = 3.
#[test]
fn reparam_known_values() {
    let logvar = [0.0, 2.0 * 3f64.ln()];
    let z = cpu::reparam::forward(&[2.0, 2.0], &[1.0, 1.0], &logvar);
    assert_eq!(z[0], 3.0);
    assert!((z[1] - 7.0).abs() < 1e-14);
    let (dmu, dlogvar) = cpu::reparam::backward(&[2.0, 2.0], &logvar, &[1.0, 1.0]);
    assert_eq!(dmu, vec![1.0, 1.0]);
    assert_eq!(dlogvar[0], 1.0);
    assert!((dlogvar[1] - 3.0).abs() < 1e-14);
}
