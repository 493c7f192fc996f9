//! Register-tiled convolutions (`shaders/conv_registers.wgsl`) for CPU adapters ([`Tiling::Registers`]): the
//! Conv2d and ConvTranspose2d launchers in [`conv2d`](super::conv2d) and
//! [`conv_transpose2d`](super::conv_transpose2d) call these when the adapter runs register-tiled kernels.
//!
//! Three kernels cover the six convolution passes, by the role each image plays:
//!
//! | pass                         | kernel            | src | dst (or grad)  |
//! | ---------------------------- | ----------------- | --- | -------------- |
//! | Conv2d forward               | `dense_gather`    | x   | y              |
//! | Conv2d input gradient        | `strided_gather`  | dy  | dx             |
//! | Conv2d weight gradient       | `weight_gradient` | x   | dy (grad)      |
//! | ConvTranspose2d forward      | `strided_gather`  | x   | y              |
//! | ConvTranspose2d input grad.  | `dense_gather`    | dy  | dx             |
//! | ConvTranspose2d weight grad. | `weight_gradient` | dy  | x (grad)       |
//!
//! Conv2d's weight [Co, Ci, KH, KW] and ConvTranspose2d's [Ci, Co, KH, KW] are both [dst channel, src channel]
//! for the dense gather and [src channel, dst channel] for the strided one, so no pass needs a transposed copy.
//!
//! On adapters whose subgroups are 8 lanes wide (lavapipe), the same kernels run from
//! `shaders/conv_subgroup.wgsl`, where each lane reads one channel's weight (or grad) and subgroup broadcasts
//! share it: 9 loads per multiply-add step instead of 16, the same bits. There, at stride 1 with src rows as wide
//! as dst rows, the gathers run from `shaders/conv_rows.wgsl` ([`Roles::takes_rows`]): a thread owns 8
//! consecutive pixels, so a row of taps reads the image as four vec4 loads, again the same bits (a test compares
//! them with conv_subgroup's). The checks (`conv2d`, `conv_transpose2d`) run whichever module the adapter takes;
//! CI's GL-backend check runs conv_registers.
//!
//! A row of 8 lanes computes 8 dst channels, 32 (`*_wide`) past 8 and 64 (`*_wider`) past 32 (the weight
//! gradient from 128); layers of at most [`NARROW_COLUMNS`] weight-gradient columns (first layers) take
//! `weight_gradient_narrow`, a column a thread. Every kernel walks its taps (or its (n, i, j)) in one loop: on
//! lavapipe an inner loop's every entry costs about a step's multiply-adds (PERF-LOG v8).
//!
//! [`Tiling::Registers`]: crate::gpu::Tiling::Registers

use bytemuck::{Pod, Zeroable};

use crate::gpu::{BufferRole, Dispatch, Gpu, GpuBuffer, GpuError, Tiling, CPU_LOOP_LIMIT};
use crate::kernels::matmul::SUBGROUP_LANES;
use crate::shaders::{conv_registers as wgsl, conv_rows as wgsl_rows, conv_subgroup as wgsl_subgroup, EntryPoint};

/// Keep in sync with `struct Params` in shaders/conv_registers.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvRegistersParams {
    pub batch: u32,
    pub src_channels: u32,
    pub src_height: u32,
    pub src_width: u32,
    pub dst_channels: u32,
    pub dst_height: u32,
    pub dst_width: u32,
    pub kernel_h: u32,
    pub kernel_w: u32,
    pub stride: u32,
    pub padding: u32,
    pub has_bias: u32,
    pub first_image: u32,
    pub images: u32,
    pub accumulate: u32,
    pub _pad: u32,
}

/// Pixels one gather workgroup computes, and the channels (or weight-gradient rows; four times as many in the
/// `*_wide` kernels) and weight-gradient columns.
const PIXELS: usize = 512;
const CHANNELS: usize = 8;
const COLUMNS: usize = 512;

/// The images of one pass by role: `src` is read at `dst position * stride - padding + tap`; `dst` is written
/// by the gathers and is the `grad` image of the weight gradient. Sizes are (channels, height, width).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub batch: usize,
    pub src: [usize; 3],
    pub dst: [usize; 3],
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: usize,
}

impl Roles {
    /// src and dst exchanged: the other passes of the same layer.
    pub fn swapped(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            ..self
        }
    }

    fn params(&self, has_bias: bool) -> ConvRegistersParams {
        ConvRegistersParams {
            batch: self.batch as u32,
            src_channels: self.src[0] as u32,
            src_height: self.src[1] as u32,
            src_width: self.src[2] as u32,
            dst_channels: self.dst[0] as u32,
            dst_height: self.dst[1] as u32,
            dst_width: self.dst[2] as u32,
            kernel_h: self.kernel[0] as u32,
            kernel_w: self.kernel[1] as u32,
            stride: self.stride as u32,
            padding: self.padding as u32,
            has_bias: has_bias as u32,
            first_image: 0,
            images: self.batch as u32,
            accumulate: 0,
            _pad: 0,
        }
    }

    /// Whether a gather at this shape runs conv_rows (8 consecutive pixels of a phase per thread, the image read as
    /// vec4): on 8-lane subgroups with src a whole number of vec4, where every phase's rows are as wide as src's
    /// and a row of taps has at most 5 columns. The dense gather (`transposed` false) at stride 1 with src rows as
    /// wide as dst rows; the strided one where dst rows are S times as wide as src rows, at stride 1, or past it
    /// for at most 8 dst channels. (Measured on lavapipe, the gan's stride-2 layers: 1-channel outputs 1.25x
    /// faster than conv_subgroup's, 64 channels 1.04-1.11x slower, a row of taps being only 2 columns there.)
    pub fn takes_rows(&self, gpu: &Gpu, src: &GpuBuffer, transposed: bool) -> bool {
        let s = self.stride;
        let fits = if transposed {
            self.dst[2] == s * self.src[2] && self.kernel[1].div_ceil(s) <= 5 && (s == 1 || self.dst[0] <= CHANNELS)
        } else {
            s == 1 && self.src[2] == self.dst[2] && self.kernel[1] <= 5
        };
        fits && gpu.has_subgroups_of(SUBGROUP_LANES) && src.len_words().is_multiple_of(4)
    }

    fn grid(&self, entry: &EntryPoint, gpu: &Gpu, grid: [usize; 3]) -> Result<[u32; 3], GpuError> {
        let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
        if grid.iter().any(|&g| g > max) {
            return Err(GpuError::Validation {
                context: entry.qualified_name(),
                message: format!(
                    "{self:?} needs {grid:?} workgroups, over the adapter's {max} per dimension: use a smaller batch"
                ),
            });
        }
        Ok(grid.map(|g| g.max(1) as u32))
    }
}

/// The three kernels.
#[derive(Clone, Copy)]
enum Kernel {
    DenseGather,
    StridedGather,
    WeightGradient,
}

/// The entry point of `kernel` from the module the adapter runs (`conv_subgroup` where its subgroups are 8 lanes
/// wide) for `channels` dst (or grad) channels, and the channels per workgroup row: 8; 32 (`*_wide`) past 8; 64
/// (`*_wider`) past 32, or for the weight gradient from 128 (measured on lavapipe: 64 channels a thread made the
/// gan's 128-channel weight gradients 13% faster and the ddpm's 64-channel ones at batch 16 slower, having half
/// the workgroups).
fn entry(gpu: &Gpu, kernel: Kernel, channels: usize) -> (&'static EntryPoint, usize) {
    let blocks = match (kernel, channels) {
        (_, c) if c <= CHANNELS => 1,
        (_, c) if c <= 4 * CHANNELS => 4,
        (Kernel::WeightGradient, c) if c < 16 * CHANNELS => 4,
        _ => 8,
    };
    let subgroup = gpu.has_subgroups_of(SUBGROUP_LANES);
    let entry = match (subgroup, kernel, blocks) {
        (false, Kernel::DenseGather, 1) => &wgsl::DENSE_GATHER,
        (false, Kernel::DenseGather, 4) => &wgsl::DENSE_GATHER_WIDE,
        (false, Kernel::DenseGather, _) => &wgsl::DENSE_GATHER_WIDER,
        (false, Kernel::StridedGather, 1) => &wgsl::STRIDED_GATHER,
        (false, Kernel::StridedGather, 4) => &wgsl::STRIDED_GATHER_WIDE,
        (false, Kernel::StridedGather, _) => &wgsl::STRIDED_GATHER_WIDER,
        (false, Kernel::WeightGradient, 1) => &wgsl::WEIGHT_GRADIENT,
        (false, Kernel::WeightGradient, 4) => &wgsl::WEIGHT_GRADIENT_WIDE,
        (false, Kernel::WeightGradient, _) => &wgsl::WEIGHT_GRADIENT_WIDER,
        (true, Kernel::DenseGather, 1) => &wgsl_subgroup::DENSE_GATHER,
        (true, Kernel::DenseGather, 4) => &wgsl_subgroup::DENSE_GATHER_WIDE,
        (true, Kernel::DenseGather, _) => &wgsl_subgroup::DENSE_GATHER_WIDER,
        (true, Kernel::StridedGather, 1) => &wgsl_subgroup::STRIDED_GATHER,
        (true, Kernel::StridedGather, 4) => &wgsl_subgroup::STRIDED_GATHER_WIDE,
        (true, Kernel::StridedGather, _) => &wgsl_subgroup::STRIDED_GATHER_WIDER,
        (true, Kernel::WeightGradient, 1) => &wgsl_subgroup::WEIGHT_GRADIENT,
        (true, Kernel::WeightGradient, 4) => &wgsl_subgroup::WEIGHT_GRADIENT_WIDE,
        (true, Kernel::WeightGradient, _) => &wgsl_subgroup::WEIGHT_GRADIENT_WIDER,
    };
    (entry, blocks * CHANNELS)
}

/// The gathers' dispatch: the bias binding holds `bias`, or a one-word placeholder the shader does not read.
fn gather(
    gpu: &Gpu,
    entry: &'static EntryPoint,
    buffers: [&GpuBuffer; 4],
    bias: Option<&GpuBuffer>,
    grid: [u32; 3],
) -> Result<Dispatch, GpuError> {
    let placeholder;
    let bias = match bias {
        Some(b) => b,
        None => {
            placeholder = gpu.buffer("conv no bias", BufferRole::Scratch, 4)?;
            &placeholder
        }
    };
    let [params, dst, src, weight] = buffers;
    gpu.dispatch(entry, &[params, dst, src, weight, bias], grid)
}

/// dst[n, c, h, w] = bias[c] + sum_{s, kh, kw} src[n, s, h*S - P + kh, w*S - P + kw] * weight[c, s, kh, kw].
pub fn dense_gather(
    gpu: &Gpu,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    dense_gather_as(gpu, roles.takes_rows(gpu, src, false), dst, src, weight, bias, roles)
}

/// [`dense_gather`] with conv_rows' kernel (`rows`, where [`Roles::takes_rows`] at `transposed` false) or the plain
/// one.
pub fn dense_gather_as(
    gpu: &Gpu,
    rows: bool,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    if rows {
        return rows_gather(gpu, false, [dst, src, weight], bias, roles);
    }
    let (entry, channels) = entry(gpu, Kernel::DenseGather, roles.dst[0]);
    let params = gpu.uniform(entry.name, &roles.params(bias.is_some()))?;
    let pixels = roles.batch * roles.dst[1] * roles.dst[2];
    let grid = roles.grid(
        entry,
        gpu,
        [pixels.div_ceil(PIXELS), roles.dst[0].div_ceil(channels), 1],
    )?;
    gather(gpu, entry, [&params, dst, src, weight], bias, grid)
}

/// dst[n, c, h, w] = bias[c] + sum of src[n, s, i, j] * weight[s, c, kh, kw] over i*S - P + kh = h and
/// j*S - P + kw = w: one workgroup layer (z) per phase (h mod S, w mod S).
pub fn strided_gather(
    gpu: &Gpu,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    strided_gather_as(gpu, roles.takes_rows(gpu, src, true), dst, src, weight, bias, roles)
}

/// [`strided_gather`] with conv_rows' kernel (`rows`, where [`Roles::takes_rows`] at `transposed` true) or the
/// plain one.
pub fn strided_gather_as(
    gpu: &Gpu,
    rows: bool,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    if rows {
        return rows_gather(gpu, true, [dst, src, weight], bias, roles);
    }
    let (entry, channels) = entry(gpu, Kernel::StridedGather, roles.dst[0]);
    let params = gpu.uniform(entry.name, &roles.params(bias.is_some()))?;
    let s = roles.stride;
    let phase_pixels = roles.batch * roles.dst[1].div_ceil(s) * roles.dst[2].div_ceil(s);
    let grid = roles.grid(
        entry,
        gpu,
        [phase_pixels.div_ceil(PIXELS), roles.dst[0].div_ceil(channels), s * s],
    )?;
    gather(gpu, entry, [&params, dst, src, weight], bias, grid)
}

/// conv_rows' dense (or, `transposed`, strided) gather: one thread per block of 8 consecutive pixels of an image.
fn rows_gather(
    gpu: &Gpu,
    transposed: bool,
    [dst, src, weight]: [&GpuBuffer; 3],
    bias: Option<&GpuBuffer>,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    // 32 channels per row of lanes past 8; one dst channel sums 8 values a thread instead of 64 (`*_single`).
    let wide = roles.dst[0] > CHANNELS;
    let entry = match (transposed, wide, roles.dst[0] == 1) {
        (false, _, true) => &wgsl_rows::DENSE_ROWS_SINGLE,
        (true, _, true) => &wgsl_rows::STRIDED_ROWS_SINGLE,
        (false, false, false) => &wgsl_rows::DENSE_ROWS,
        (false, true, false) => &wgsl_rows::DENSE_ROWS_WIDE,
        (true, false, false) => &wgsl_rows::STRIDED_ROWS,
        (true, true, false) => &wgsl_rows::STRIDED_ROWS_WIDE,
    };
    if !roles.takes_rows(gpu, src, transposed) {
        return Err(GpuError::Validation {
            context: entry.qualified_name(),
            message: format!("{roles:?} does not fit the conv_rows kernels (see Roles::takes_rows)"),
        });
    }
    let channels = if wide { 4 * CHANNELS } else { CHANNELS };
    let params = gpu.uniform(entry.name, &roles.params(bias.is_some()))?;
    // Blocks of 8 members of a phase, each image's last one partial (phase (0, 0) has the most); 64 blocks (512
    // pixels) per workgroup, one layer of workgroups per phase.
    let s = if transposed { roles.stride } else { 1 };
    let members = roles.dst[1].div_ceil(s) * roles.dst[2].div_ceil(s);
    let blocks = roles.batch * members.div_ceil(8);
    let grid = roles.grid(
        entry,
        gpu,
        [blocks.div_ceil(PIXELS / 8), roles.dst[0].div_ceil(channels), s * s],
    )?;
    gather(gpu, entry, [&params, dst, src, weight], bias, grid)
}

/// dst[c, s, kh, kw] = sum_{n, i, j} grad[n, c, i, j] * src[n, s, i*S - P + kh, j*S - P + kw]; grad has the
/// `dst` sizes of `roles`. Overwrites dst.
///
/// A thread loops over every (n, i, j) of grad, and Mesa's CPU drivers end a shader's loops after
/// [`CPU_LOOP_LIMIT`] iterations: so there the batch is split into launches of as many images as fit, each going
/// on from the sums the one before it stored (the same additions in the same order: the same bits), all in one
/// dispatch step. (The classifier's first layer at batch 128 loops 100,352 times.)
pub fn weight_gradient(
    gpu: &Gpu,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    grad: &GpuBuffer,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    let columns = roles.src[0] * roles.kernel[0] * roles.kernel[1];
    weight_gradient_as(gpu, columns <= NARROW_COLUMNS, dst, src, grad, roles)
}

/// Layers of at most this many weight-gradient columns (src channels x taps: a first layer's 9 or 16) take the
/// narrow kernel, a column a thread: the 8-columns-a-thread kernel would fill at most half of one workgroup's
/// 64 and run on one core. (Measured on lavapipe at batch 128: the classifier's first layer, 9 columns, about 27 -> 9.6
/// ms a step; the gan's and ae's 16-column layers 3-4x faster.)
pub const NARROW_COLUMNS: usize = 32;

/// [`weight_gradient`] with the narrow kernel (`narrow`: one column a thread, a workgroup of 8) or the one of 8
/// columns a thread.
pub fn weight_gradient_as(
    gpu: &Gpu,
    narrow: bool,
    dst: &GpuBuffer,
    src: &GpuBuffer,
    grad: &GpuBuffer,
    roles: &Roles,
) -> Result<Dispatch, GpuError> {
    let wide = roles.dst[0] > CHANNELS;
    let (entry, channels) = match (narrow, wide, gpu.has_subgroups_of(SUBGROUP_LANES)) {
        (false, _, _) => entry(gpu, Kernel::WeightGradient, roles.dst[0]),
        (true, false, false) => (&wgsl::WEIGHT_GRADIENT_NARROW, CHANNELS),
        (true, true, false) => (&wgsl::WEIGHT_GRADIENT_NARROW_WIDE, 4 * CHANNELS),
        (true, false, true) => (&wgsl_subgroup::WEIGHT_GRADIENT_NARROW, CHANNELS),
        (true, true, true) => (&wgsl_subgroup::WEIGHT_GRADIENT_NARROW_WIDE, 4 * CHANNELS),
    };
    let columns = roles.src[0] * roles.kernel[0] * roles.kernel[1];
    let per_group = if narrow { CHANNELS } else { COLUMNS };
    let grid = roles.grid(
        entry,
        gpu,
        [columns.div_ceil(per_group), roles.dst[0].div_ceil(channels), 1],
    )?;
    let images = images_per_launch(gpu, roles);
    let mut launches = Vec::new();
    for first in (0..roles.batch).step_by(images) {
        let params = ConvRegistersParams {
            first_image: first as u32,
            images: images.min(roles.batch - first) as u32,
            accumulate: (first > 0) as u32,
            ..roles.params(false)
        };
        let params = gpu.uniform(entry.name, &params)?;
        launches.push(gpu.dispatch(entry, &[&params, dst, src, grad], grid)?);
    }
    let mut launches = launches.into_iter();
    let first = launches.next().expect("a batch of at least one image");
    Ok(launches.fold(first, Dispatch::followed_by))
}

/// Images one weight-gradient launch sums: the whole batch, or on CPU adapters as many as keep a thread's loop
/// iterations under [`CPU_LOOP_LIMIT`]: per image of grad (H x W), H + 1 passes of its row loop and W + 1 of each
/// column loop (a loop's last test counts too), and 2,000 to spare for the stores' loops. (Measured on lavapipe:
/// 28 x 28 images, 74 per launch give the twin's result, 80 do not.)
pub fn images_per_launch(gpu: &Gpu, roles: &Roles) -> usize {
    if gpu.info.device_type != wgpu::DeviceType::Cpu {
        return roles.batch.max(1);
    }
    let per_image = (roles.dst[1] + 1) * (roles.dst[2] + 2);
    ((CPU_LOOP_LIMIT - 2_000) / per_image).clamp(1, roles.batch.max(1))
}

/// The name a check of a convolution pass goes by: the workgroup-tiled entry point, or the register-tiled one
/// with the pass it stands in for ("conv_registers::dense_gather as conv2d_forward").
pub fn check_name(tiling: Tiling, workgroup: &EntryPoint, registers: &EntryPoint) -> String {
    match tiling {
        Tiling::Workgroup => workgroup.qualified_name(),
        Tiling::Registers => format!("{} as {}", registers.qualified_name(), workgroup.name),
    }
}
