//! Sums along an axis (`shaders/reduce.wgsl`): over the rows of an (R, C) matrix (a linear layer's bias
//! gradient), over its columns, and of all n values (two stages). Deterministic workgroup trees, no atomics.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling, CPU_LOOP_LIMIT};
use crate::shaders::reduce as wgsl;

/// Keep in sync with `struct Params` in shaders/reduce.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReduceParams {
    pub rows: u32,
    pub cols: u32,
    pub n: u32,
    pub _pad: u32,
}

/// Values each workgroup of the full sum's first stage adds up (4 per thread).
pub const SUM_CHUNK: usize = 1024;

fn params(gpu: &Gpu, label: &str, rows: usize, cols: usize, n: usize) -> Result<GpuBuffer, GpuError> {
    let fits = |v: usize| {
        u32::try_from(v).map_err(|_| GpuError::Validation {
            context: label.to_string(),
            message: format!("size {v} does not fit in 32 bits"),
        })
    };
    let p = ReduceParams {
        rows: fits(rows)?,
        cols: fits(cols)?,
        n: fits(n)?,
        _pad: 0,
    };
    gpu.uniform(label, &p)
}

/// out (C) = sum over r of x (R, C): one workgroup per column, or on CPU adapters one thread per column.
pub fn sum_rows(gpu: &Gpu, out: &GpuBuffer, x: &GpuBuffer, rows: usize, cols: usize) -> Result<Dispatch, GpuError> {
    sum_rows_tiled(gpu, gpu.tiling, out, x, rows, cols)
}

/// [`sum_rows`] with a chosen kernel variant (the checks run both).
pub fn sum_rows_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    out: &GpuBuffer,
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
) -> Result<Dispatch, GpuError> {
    let params = params(gpu, "sum_rows", rows, cols, rows * cols)?;
    match tiling {
        Tiling::Workgroup => gpu.dispatch_1d(&wgsl::SUM_ROWS, &[&params, out, x], cols as u64 * 256),
        Tiling::Registers => gpu.dispatch_1d(&wgsl::SUM_ROWS_REGISTERS, &[&params, out, x], cols as u64),
    }
}

/// out (R) = sum over c of x (R, C): one workgroup per row (on CPU adapters one invocation per row walking the same
/// tree, the same bits).
pub fn sum_cols(gpu: &Gpu, out: &GpuBuffer, x: &GpuBuffer, rows: usize, cols: usize) -> Result<Dispatch, GpuError> {
    sum_cols_tiled(gpu, gpu.tiling, out, x, rows, cols)
}

/// [`sum_cols`] with a chosen kernel variant (the checks run both).
pub fn sum_cols_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    out: &GpuBuffer,
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
) -> Result<Dispatch, GpuError> {
    let params = params(gpu, "sum_cols", rows, cols, rows * cols)?;
    chunks(gpu, tiling, &params, out, x, rows, cols)
}

/// sum_chunks over `outputs` chunks of `chunk` values, or its serial twin on CPU adapters where a chunk's loops
/// (its values and 256 leaves, each loop's last test counting too) fit [`CPU_LOOP_LIMIT`].
fn chunks(
    gpu: &Gpu,
    tiling: Tiling,
    params: &GpuBuffer,
    out: &GpuBuffer,
    x: &GpuBuffer,
    outputs: usize,
    chunk: usize,
) -> Result<Dispatch, GpuError> {
    if tiling == Tiling::Registers && chunk + 513 + 1_000 < CPU_LOOP_LIMIT {
        return gpu.dispatch_1d(&wgsl::SUM_CHUNKS_SERIAL, &[params, out, x], outputs as u64);
    }
    gpu.dispatch_1d(&wgsl::SUM_CHUNKS, &[params, out, x], outputs as u64 * 256)
}

/// How many partial sums `sum_all` over `n` values writes in its first stage (the size of its scratch).
pub fn sum_all_partials(n: usize) -> usize {
    n.div_ceil(SUM_CHUNK).max(1)
}

/// out (1) = the sum of x (n), in two stages: partials (`sum_all_partials(n)`) = sums of chunks of 1024
/// values, then out = the sum of the partials in one workgroup. Run both dispatches in order.
pub fn sum_all(
    gpu: &Gpu,
    out: &GpuBuffer,
    partials: &GpuBuffer,
    x: &GpuBuffer,
    n: usize,
) -> Result<[Dispatch; 2], GpuError> {
    sum_all_tiled(gpu, gpu.tiling, out, partials, x, n)
}

/// [`sum_all`] with a chosen kernel variant (the checks run both).
pub fn sum_all_tiled(
    gpu: &Gpu,
    tiling: Tiling,
    out: &GpuBuffer,
    partials: &GpuBuffer,
    x: &GpuBuffer,
    n: usize,
) -> Result<[Dispatch; 2], GpuError> {
    let groups = sum_all_partials(n);
    let first = params(gpu, "sum_all partials", groups, SUM_CHUNK, n)?;
    let second = params(gpu, "sum_all final", 1, groups, groups)?;
    Ok([
        chunks(gpu, tiling, &first, partials, x, groups, SUM_CHUNK)?,
        chunks(gpu, tiling, &second, out, partials, 1, groups)?,
    ])
}

/// Every reduction against the CPU twin on odd shapes and the models' bias-gradient and loss shapes.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    // (R, C): odd shapes, more rows than threads, and the bias gradients at batch 128 (vae.fc1, gan fc).
    let matrices = [(1, 1), (7, 33), (129, 7), (33, 129), (1000, 3), (128, 400), (128, 6272)];
    for (rows, cols) in matrices {
        let input = move || TestRng::new((rows * cols) as u64).uniform_vec(rows * cols, -1.0, 1.0);
        for (tiling, entry) in [
            (Tiling::Workgroup, &wgsl::SUM_ROWS),
            (Tiling::Registers, &wgsl::SUM_ROWS_REGISTERS),
        ] {
            checks.push(KernelCheck::new(
                entry.qualified_name(),
                format!("R={rows} C={cols}"),
                move |gpu| {
                    let x = input();
                    let out = check::poisoned(gpu, "out", cols)?;
                    let x_gpu = check::upload(gpu, "x", &x)?;
                    gpu.run(&[&sum_rows_tiled(gpu, tiling, &out, &x_gpu, rows, cols)?])?;
                    let expected = cpu::reduce::sum_rows(&check::to_f64(&x), rows, cols);
                    Ok(check::compare(
                        &check::download(gpu, &out, cols)?,
                        &expected,
                        Tolerance::ACCUMULATED,
                    ))
                },
            ));
        }
        for (tiling, name) in [
            (Tiling::Workgroup, "reduce::sum_cols"),
            (Tiling::Registers, "reduce::sum_cols serial"),
        ] {
            checks.push(KernelCheck::new(name, format!("R={rows} C={cols}"), move |gpu| {
                let x = input();
                let out = check::poisoned(gpu, "out", rows)?;
                gpu.run(&[&sum_cols_tiled(
                    gpu,
                    tiling,
                    &out,
                    &check::upload(gpu, "x", &x)?,
                    rows,
                    cols,
                )?])?;
                let expected = cpu::reduce::sum_cols(&check::to_f64(&x), rows, cols);
                Ok(check::compare(
                    &check::download(gpu, &out, rows)?,
                    &expected,
                    Tolerance::ACCUMULATED,
                ))
            }));
        }
    }
    // n: tiny, one value past a chunk, an MNIST batch (128 x 784), and more partials than threads.
    for n in [1usize, 7, 1025, 128 * 784, 300_007] {
        for (tiling, name) in [
            (Tiling::Workgroup, "reduce::sum_all"),
            (Tiling::Registers, "reduce::sum_all serial"),
        ] {
            checks.push(KernelCheck::new(name, format!("n={n}"), move |gpu| {
                let x = TestRng::new(n as u64).uniform_vec(n, -1.0, 1.0);
                let out = check::poisoned(gpu, "out", 1)?;
                let partials = check::poisoned(gpu, "partials", sum_all_partials(n))?;
                let [first, second] = sum_all_tiled(gpu, tiling, &out, &partials, &check::upload(gpu, "x", &x)?, n)?;
                gpu.run(&[&first, &second])?;
                let expected = cpu::reduce::sum_all(&check::to_f64(&x));
                Ok(check::compare(
                    &check::download(gpu, &out, 1)?,
                    &[expected],
                    Tolerance::ACCUMULATED,
                ))
            }));
        }
    }
    checks
}
