//! Matrix multiplication (`shaders/matmul.wgsl`): C = op(A) · op(B) in three layouts, batched, with a fused
//! epilogue (bias per output column, an activation, and an accumulate mode), and the linear layer built on it.
//!
//! Tiling (see the shader): a 64 x 64 tile of C per workgroup of 256 threads, 4 x 4 outputs per thread in
//! registers, K staged 16 at a time through 8 KiB of workgroup memory. On CPU adapters ([`Tiling::Registers`])
//! the `*_registers` kernels run instead: no workgroup memory, 8 x 8 outputs per thread. 16 outputs per thread cut the
//! workgroup-memory reads to 8 per 16 multiply-adds; 256 threads and 8 KiB fit every adapter (and leave room
//! for double buffering).
//!
//! On CPU adapters whose subgroups are 8 lanes wide (lavapipe), the `matmul_subgroup` kernels
//! (`shaders/matmul_subgroup.wgsl`) take every product whose B and C are vec4-aligned ([`Variant::Subgroup`]):
//! they read A once per 8 uses through subgroup broadcasts and B and C as vec4, 2-3x faster there, with the
//! same bits.

use bytemuck::{Pod, Zeroable};

use crate::check::{self, Comparison, KernelCheck, TestRng, Tolerance};
use crate::cpu;
use crate::gpu::{Dispatch, Gpu, GpuBuffer, GpuError, Tiling};
use crate::kernels::activation::Activation;
use crate::shaders::{matmul as wgsl, matmul_subgroup as wgsl_subgroup, EntryPoint};

/// Keep in sync with `struct Params` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub has_bias: u32,
    pub stride_a: u32,
    pub stride_b: u32,
    pub stride_c: u32,
    pub accumulate: u32,
    pub activation: u32,
    pub slope: f32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Edge of the square tile of C that one workgroup of the tiled kernels computes.
pub const TILE: usize = 64;
/// The C tile of one workgroup of the register-tiled kernels (`*_registers`): 32 rows x 64 columns.
pub const REGISTER_TILE_M: usize = 32;
pub const REGISTER_TILE_N: usize = 64;

/// The C tile of one workgroup of the subgroup kernels (`*_subgroup`): 16 rows x 64 columns.
pub const SUBGROUP_TILE_M: usize = 16;
pub const SUBGROUP_TILE_N: usize = 64;
/// Rows of C one workgroup of the column kernels (`*_column`, N = 1) computes, a thread each.
pub const COLUMN_TILE_M: usize = 64;
/// The subgroup width the `*_subgroup` kernels are written for.
pub const SUBGROUP_LANES: u32 = 8;

/// Floating-point operations of one (M, N, K) product: a multiply and an add per term.
pub fn flops(m: usize, n: usize, k: usize) -> u64 {
    2 * m as u64 * n as u64 * k as u64
}

/// Which operands are transposed (BLAS names; all matrices are stored row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// C (M, N) = A (M, K) · B (K, N): a linear layer's input gradient dx = dy · W.
    NN,
    /// C (M, N) = A (M, K) · B (N, K)ᵀ: a linear layer's forward y = x · Wᵀ.
    NT,
    /// C (M, N) = A (K, M)ᵀ · B (K, N): a linear layer's weight gradient dW = dyᵀ · x.
    TN,
}

impl Layout {
    pub const ALL: [Layout; 3] = [Self::NN, Self::NT, Self::TN];

    pub fn entry(self, variant: Variant) -> &'static EntryPoint {
        match (variant, self) {
            (Variant::Workgroup, Self::NN) => &wgsl::MATMUL_NN,
            (Variant::Workgroup, Self::NT) => &wgsl::MATMUL_NT,
            (Variant::Workgroup, Self::TN) => &wgsl::MATMUL_TN,
            (Variant::Registers, Self::NN) => &wgsl::MATMUL_NN_REGISTERS,
            (Variant::Registers, Self::NT) => &wgsl::MATMUL_NT_REGISTERS,
            (Variant::Registers, Self::TN) => &wgsl::MATMUL_TN_REGISTERS,
            (Variant::Subgroup, Self::NN) => &wgsl_subgroup::MATMUL_NN_SUBGROUP,
            (Variant::Subgroup, Self::NT) => &wgsl_subgroup::MATMUL_NT_SUBGROUP,
            (Variant::Subgroup, Self::TN) => &wgsl_subgroup::MATMUL_TN_SUBGROUP,
            (Variant::Column, Self::NN) => &wgsl::MATMUL_NN_COLUMN,
            (Variant::Column, Self::NT) => &wgsl::MATMUL_NT_COLUMN,
            (Variant::Column, Self::TN) => &wgsl::MATMUL_TN_COLUMN,
        }
    }

    /// Whether A is stored (K, M).
    pub fn a_transposed(self) -> bool {
        self == Self::TN
    }

    /// Whether B is stored (N, K).
    pub fn b_transposed(self) -> bool {
        self == Self::NT
    }
}

/// The three kernels of every layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Tiles staged in workgroup memory (GPUs).
    Workgroup,
    /// No workgroup memory, 8 x 8 outputs per thread (CPU drivers).
    Registers,
    /// Registers plus 8-lane subgroup broadcasts of A and vec4 loads of B (CPU drivers with 8-lane subgroups,
    /// products whose B is vec4-aligned).
    Subgroup,
    /// A thread per row of C, for products of one column (N = 1) on CPU drivers; the registers kernels' bits.
    Column,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Self::Workgroup, Self::Registers, Self::Subgroup, Self::Column];

    /// The kernel `tiling` runs for this product on this adapter: on CPU adapters the subgroup kernel wherever
    /// the adapter and the shape allow it.
    pub fn choose(gpu: &Gpu, tiling: Tiling, layout: Layout, shape: MatmulShape) -> Variant {
        match tiling {
            Tiling::Workgroup => Self::Workgroup,
            Tiling::Registers => Self::on_cpu(gpu, layout, shape),
        }
    }

    /// The CPU adapters' kernel: `Column` for one column of C, `Subgroup` where the adapter's subgroups are 8
    /// lanes and the shape is vec4-aligned, else `Registers`.
    fn on_cpu(gpu: &Gpu, layout: Layout, shape: MatmulShape) -> Variant {
        if shape.n == 1 {
            Self::Column
        } else if Self::subgroup_takes(layout, shape) && gpu.has_subgroups_of(SUBGROUP_LANES) {
            Self::Subgroup
        } else {
            Self::Registers
        }
    }

    /// Whether the subgroup kernel can take the product: it reads B as vec4 along N (nn, tn) or along K (nt)
    /// and writes C as vec4 along N, so those dimensions must be multiples of 4, and every product of the batch
    /// must start on a vec4.
    pub fn subgroup_takes(layout: Layout, shape: MatmulShape) -> bool {
        let b_along = if layout.b_transposed() { shape.k } else { shape.n };
        let strides = shape.batch == 1 || (shape.stride_b.is_multiple_of(4) && shape.stride_c.is_multiple_of(4));
        b_along.is_multiple_of(4) && shape.n.is_multiple_of(4) && strides
    }

    /// The C tile (rows, columns) of one workgroup.
    fn tile(self) -> (usize, usize) {
        match self {
            Self::Workgroup => (TILE, TILE),
            Self::Registers => (REGISTER_TILE_M, REGISTER_TILE_N),
            Self::Subgroup => (SUBGROUP_TILE_M, SUBGROUP_TILE_N),
            Self::Column => (COLUMN_TILE_M, 1),
        }
    }
}

/// The sizes of a (batched) product. Strides are in elements between consecutive products of the batch;
/// a stride of 0 shares one matrix across the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl MatmulShape {
    /// One product, C (M, N) from K terms each.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self {
            m,
            n,
            k,
            batch: 1,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }

    /// `batch` products, each operand at its own stride.
    pub fn batched(self, batch: usize, stride_a: usize, stride_b: usize, stride_c: usize) -> Self {
        Self {
            batch,
            stride_a,
            stride_b,
            stride_c,
            ..self
        }
    }

    /// Elements each operand must hold: the last product's offset plus one matrix.
    pub fn lens(&self) -> [usize; 3] {
        let last = self.batch.saturating_sub(1);
        [
            last * self.stride_a + self.m * self.k,
            last * self.stride_b + self.k * self.n,
            last * self.stride_c + self.m * self.n,
        ]
    }

    pub fn flops(&self) -> u64 {
        self.batch as u64 * flops(self.m, self.n, self.k)
    }
}

impl std::fmt::Display for MatmulShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "M={} N={} K={}", self.m, self.n, self.k)?;
        if self.batch != 1 {
            write!(f, " batch={}", self.batch)?;
        }
        Ok(())
    }
}

/// What happens to each element of A · B before it lands in C: `v = act(acc + bias[n])`, then `C = v` or
/// `C = C + v`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// (N), added to every row.
    pub bias: Option<&'a GpuBuffer>,
    pub activation: Option<Activation>,
    /// C = C + result (beta = 1), for gradient accumulation.
    pub accumulate: bool,
}

impl Epilogue<'_> {
    /// Plain C = A · B.
    pub const NONE: Epilogue<'static> = Epilogue {
        bias: None,
        activation: None,
        accumulate: false,
    };

    /// C = C + A · B.
    pub const ACCUMULATE: Epilogue<'static> = Epilogue {
        bias: None,
        activation: None,
        accumulate: true,
    };
}

/// The shader's activation code (see `struct Params` in shaders/matmul.wgsl).
fn activation_code(activation: Option<Activation>) -> (u32, f32) {
    match activation {
        None => (0, 0.0),
        Some(Activation::Relu) => (1, 0.0),
        Some(Activation::LeakyRelu { slope }) => (2, slope),
        Some(Activation::Sigmoid) => (3, 0.0),
        Some(Activation::Tanh) => (4, 0.0),
        Some(Activation::Silu) => (5, 0.0),
    }
}

fn require_len(buffer: &GpuBuffer, elements: usize) -> Result<(), GpuError> {
    let bytes = elements as u64 * 4;
    if bytes > buffer.bytes {
        return Err(GpuError::BufferSize {
            label: buffer.label.clone(),
            capacity: buffer.bytes,
            bytes,
        });
    }
    Ok(())
}

fn to_u32(what: &str, value: usize, context: &str) -> Result<u32, GpuError> {
    u32::try_from(value).map_err(|_| GpuError::Validation {
        context: context.to_string(),
        message: format!("{what} = {value} does not fit in 32 bits"),
    })
}

/// C = act(op(A) · op(B) + bias), or C = C + act(...), for every product of the batch, with the adapter's
/// kernel variant.
pub fn matmul(
    gpu: &Gpu,
    c: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    layout: Layout,
    shape: MatmulShape,
    epilogue: &Epilogue,
) -> Result<Dispatch, GpuError> {
    let variant = Variant::choose(gpu, gpu.tiling, layout, shape);
    matmul_variant(gpu, variant, c, a, b, layout, shape, epilogue)
}

/// [`matmul`] with a chosen kernel (the checks run all three). `Variant::Subgroup` falls back to the registers
/// kernel where the adapter or the shape does not allow it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_variant(
    gpu: &Gpu,
    variant: Variant,
    c: &GpuBuffer,
    a: &GpuBuffer,
    b: &GpuBuffer,
    layout: Layout,
    shape: MatmulShape,
    epilogue: &Epilogue,
) -> Result<Dispatch, GpuError> {
    let variant = match variant {
        Variant::Subgroup => Variant::on_cpu(gpu, layout, shape),
        Variant::Column if shape.n != 1 => Variant::Registers,
        other => other,
    };
    let entry = layout.entry(variant);
    let context = format!("{} ({shape})", entry.qualified_name());
    if shape.m == 0 || shape.n == 0 || shape.k == 0 || shape.batch == 0 {
        return Err(GpuError::Validation {
            context,
            message: "every dimension must be at least 1".into(),
        });
    }
    let [len_a, len_b, len_c] = shape.lens();
    require_len(a, len_a)?;
    require_len(b, len_b)?;
    require_len(c, len_c)?;
    if let Some(bias) = epilogue.bias {
        require_len(bias, shape.n)?;
    }
    let (activation, slope) = activation_code(epilogue.activation);
    let params = MatmulParams {
        m: to_u32("M", shape.m, &context)?,
        n: to_u32("N", shape.n, &context)?,
        k: to_u32("K", shape.k, &context)?,
        has_bias: epilogue.bias.is_some() as u32,
        stride_a: to_u32("stride_a", shape.stride_a, &context)?,
        stride_b: to_u32("stride_b", shape.stride_b, &context)?,
        stride_c: to_u32("stride_c", shape.stride_c, &context)?,
        accumulate: epilogue.accumulate as u32,
        activation,
        slope,
        ..Default::default()
    };
    let (tile_m, tile_n) = variant.tile();
    let workgroups = [shape.n.div_ceil(tile_n), shape.m.div_ceil(tile_m), shape.batch];
    let max = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if workgroups.iter().any(|&w| w > max) {
        return Err(GpuError::Validation {
            context,
            message: format!(
                "needs {workgroups:?} workgroups of {tile_m}x{tile_n} outputs, over the adapter's {max} per \
                 dimension; split the product into several calls"
            ),
        });
    }
    let params = gpu.uniform(entry.name, &params)?;
    // Without a bias the binding still needs a buffer; A is read-only already and is never read in its place.
    let bias = epilogue.bias.unwrap_or(a);
    gpu.dispatch(entry, &[&params, c, a, b, bias], workgroups.map(|w| w as u32))
}

/// A linear layer's forward: y (B, out) = act(x (B, in) · weight (out, in)ᵀ + bias (out)).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    gpu: &Gpu,
    y: &GpuBuffer,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: Option<&GpuBuffer>,
    activation: Option<Activation>,
    batch: usize,
    in_features: usize,
    out_features: usize,
) -> Result<Dispatch, GpuError> {
    let epilogue = Epilogue {
        bias,
        activation,
        accumulate: false,
    };
    let shape = MatmulShape::new(batch, out_features, in_features);
    matmul(gpu, y, x, weight, Layout::NT, shape, &epilogue)
}

/// A linear layer's input gradient: dx (B, in) = dy (B, out) · weight (out, in); with `accumulate`,
/// dx = dx + dy · weight.
#[allow(clippy::too_many_arguments)]
pub fn linear_input_backward(
    gpu: &Gpu,
    dx: &GpuBuffer,
    dy: &GpuBuffer,
    weight: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    in_features: usize,
    out_features: usize,
) -> Result<Dispatch, GpuError> {
    let epilogue = Epilogue {
        accumulate,
        ..Epilogue::NONE
    };
    let shape = MatmulShape::new(batch, in_features, out_features);
    matmul(gpu, dx, dy, weight, Layout::NN, shape, &epilogue)
}

/// A linear layer's weight gradient: dweight (out, in) = dy (B, out)ᵀ · x (B, in); with `accumulate`,
/// dweight = dweight + dyᵀ · x. (The bias gradient is `reduce::sum_rows` of dy.)
#[allow(clippy::too_many_arguments)]
pub fn linear_weight_backward(
    gpu: &Gpu,
    dweight: &GpuBuffer,
    dy: &GpuBuffer,
    x: &GpuBuffer,
    accumulate: bool,
    batch: usize,
    in_features: usize,
    out_features: usize,
) -> Result<Dispatch, GpuError> {
    let epilogue = Epilogue {
        accumulate,
        ..Epilogue::NONE
    };
    let shape = MatmulShape::new(out_features, in_features, batch);
    matmul(gpu, dweight, dy, x, Layout::TN, shape, &epilogue)
}

/// Runs one product on random inputs and compares it with the CPU twin. C starts random when accumulating
/// (so the old value matters) and NaN otherwise (so an unwritten element shows).
#[allow(clippy::too_many_arguments)]
pub fn run_check(
    gpu: &Gpu,
    variant: Variant,
    layout: Layout,
    shape: MatmulShape,
    with_bias: bool,
    activation: Option<Activation>,
    accumulate: bool,
    seed: u64,
) -> Result<Comparison, GpuError> {
    let [len_a, len_b, len_c] = shape.lens();
    let mut rng = TestRng::new(seed);
    let a = rng.uniform_vec(len_a, -1.0, 1.0);
    let b = rng.uniform_vec(len_b, -1.0, 1.0);
    let bias = rng.uniform_vec(shape.n, -1.0, 1.0);
    let c_start = if accumulate {
        rng.uniform_vec(len_c, -1.0, 1.0)
    } else {
        vec![f32::NAN; len_c]
    };
    let (a_gpu, b_gpu) = (check::upload(gpu, "a", &a)?, check::upload(gpu, "b", &b)?);
    let bias_gpu = check::upload(gpu, "bias", &bias)?;
    let c_gpu = check::upload(gpu, "c", &c_start)?;
    let epilogue = Epilogue {
        bias: with_bias.then_some(&bias_gpu),
        activation,
        accumulate,
    };
    gpu.run(&[&matmul_variant(
        gpu, variant, &c_gpu, &a_gpu, &b_gpu, layout, shape, &epilogue,
    )?])?;

    let mut expected = check::to_f64(&c_start);
    let bias64 = check::to_f64(&bias);
    cpu::matmul::matmul(
        &mut expected,
        &check::to_f64(&a),
        &check::to_f64(&b),
        with_bias.then_some(&bias64[..]),
        layout,
        shape,
        activation,
        accumulate,
    );
    let got = check::download(gpu, &c_gpu, len_c)?;
    Ok(check::compare(
        &owned(&got, shape),
        &owned(&expected, shape),
        Tolerance::ACCUMULATED,
    ))
}

/// The elements of C that the products write: gaps between strided products are never written.
fn owned<T: Copy>(c: &[T], shape: MatmulShape) -> Vec<T> {
    (0..shape.batch)
        .flat_map(|z| {
            c[z * shape.stride_c..z * shape.stride_c + shape.m * shape.n]
                .iter()
                .copied()
        })
        .collect()
}

/// The default models' linear layers (in, out), run at batch 128.
pub const MODEL_LINEAR_LAYERS: [(&str, usize, usize); 12] = [
    ("vae.fc1", 784, 400),
    ("vae.fc21", 400, 20),
    ("vae.fc3", 20, 400),
    ("vae.fc4", 400, 784),
    ("ae.enc.5", 3136, 16),
    ("ae.dec.0", 16, 3136),
    ("gan.generator.fc", 64, 6272),
    ("gan.discriminator.net.6", 6272, 1),
    ("classifier.f1", 3136, 128),
    ("classifier.f2", 128, 10),
    ("ddpm.net.te.0", 64, 256),
    ("ddpm.net.te.2", 256, 256),
];

/// Odd (M, N, K): 1, sizes just around the tile edge, and primes.
pub const ODD_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (129, 1, 67),
    (7, 33, 129),
    (129, 7, 33),
    (33, 129, 7),
    (65, 63, 17),
    (1, 130, 1),
];

/// Shapes whose B is vec4-aligned in every layout (N and K multiples of 4), so the subgroup kernels take them:
/// partial tiles, a remainder of K % 8, and a single row.
pub const ALIGNED_SHAPES: [(usize, usize, usize); 5] =
    [(7, 36, 132), (129, 8, 36), (33, 132, 12), (65, 64, 20), (1, 4, 4)];

/// Every layout on odd and real shapes, each epilogue, accumulation, and batches against the CPU twin, for both
/// kernel variants.
pub fn checks() -> Vec<KernelCheck> {
    let mut checks = Vec::new();
    let mut add = |layout: Layout,
                   shape: MatmulShape,
                   bias: bool,
                   activation: Option<Activation>,
                   accumulate: bool,
                   label: String| {
        for variant in Variant::ALL {
            // The subgroup kernel's checks are the shapes it takes (elsewhere it would run the registers kernel
            // again). On an adapter without 8-lane subgroups they run the registers kernel.
            if variant == Variant::Subgroup && !Variant::subgroup_takes(layout, shape) {
                continue;
            }
            if variant == Variant::Column && shape.n != 1 {
                continue;
            }
            let seed = checks.len() as u64 + 1;
            let label = label.clone();
            checks.push(KernelCheck::new(
                layout.entry(variant).qualified_name(),
                label,
                move |gpu| run_check(gpu, variant, layout, shape, bias, activation, accumulate, seed),
            ));
        }
    };
    for layout in Layout::ALL {
        for (m, n, k) in ODD_SHAPES {
            let shape = MatmulShape::new(m, n, k);
            add(layout, shape, false, None, false, shape.to_string());
        }
        for (m, n, k) in ALIGNED_SHAPES {
            let shape = MatmulShape::new(m, n, k);
            add(layout, shape, false, None, false, shape.to_string());
        }
        let shape = MatmulShape::new(33, 36, 132);
        add(
            layout,
            shape,
            true,
            Some(Activation::Relu),
            true,
            format!("{shape} bias relu accumulate"),
        );
        let shape = MatmulShape::new(7, 36, 68).batched(3, 7 * 68 + 5, 36 * 68 + 4, 7 * 36 + 4);
        add(layout, shape, true, None, false, format!("{shape} strided"));
        let shape = MatmulShape::new(33, 7, 129);
        add(layout, shape, false, None, true, format!("{shape} accumulate"));
        // Three products with gaps between them in C, and B shared by all (stride 0).
        let shape = MatmulShape::new(7, 33, 65).batched(3, 7 * 65 + 5, 0, 7 * 33 + 3);
        add(layout, shape, true, None, false, format!("{shape} shared B"));
    }
    for activation in Activation::ALL {
        let shape = MatmulShape::new(67, 129, 33);
        add(
            Layout::NT,
            shape,
            true,
            Some(activation),
            false,
            format!("{shape} bias {}", activation.name()),
        );
    }
    let shape = MatmulShape::new(65, 63, 17);
    add(
        Layout::NT,
        shape,
        true,
        Some(Activation::Silu),
        true,
        format!("{shape} bias silu accumulate"),
    );
    // The models' linear layers at batch 128: forward (x Wᵀ + b), input gradient (dy W), weight gradient (dyᵀ x).
    const BATCH: usize = 128;
    for (name, inputs, outputs) in MODEL_LINEAR_LAYERS {
        add(
            Layout::NT,
            MatmulShape::new(BATCH, outputs, inputs),
            true,
            None,
            false,
            format!("{name} forward"),
        );
        add(
            Layout::NN,
            MatmulShape::new(BATCH, inputs, outputs),
            false,
            None,
            false,
            format!("{name} dx"),
        );
        add(
            Layout::TN,
            MatmulShape::new(outputs, inputs, BATCH),
            false,
            None,
            false,
            format!("{name} dW"),
        );
    }
    checks
}
