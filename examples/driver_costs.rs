//! What a kernel's pieces cost on the adapter: a load by kind (storage, uniform or texture; one value or four;
//! addresses that differ between lanes) and multiply-adds by the number of accumulators a thread keeps. The
//! figures behind PERF-LOG.md's v8 (lavapipe: why the convolutions run at a third of the FMA ceiling).
//!
//! ```text
//! cargo run --release --example driver_costs               # both tables
//! cargo run --release --example driver_costs -- 8x32 4x4   # the FMA table for these tiles (values x channels)
//! ```
//! Each figure is the median of 5 dispatches after one warm-up; `LATENT_ADAPTER` picks the adapter.

use std::time::Instant;

use latent::gpu::{Gpu, GpuOptions};
use wgpu::util::DeviceExt;

/// Invocations of every load kernel, and the values (f32) its sources hold: 2 MB, a power of two.
const LOAD_INVOCATIONS: u32 = 1 << 18;
const SOURCE_WORDS: u32 = 1 << 19;
/// The uniform source: 64 KiB, the largest binding wgpu allows by default.
const UNIFORM_VEC4S: u32 = 4096;
/// Texture width in texels (one texel per value, or four values per texel).
const TEXELS_PER_ROW: u32 = 64;

/// Every kernel walks addresses `at = 8 id + k step` (mod the source), so neighbouring lanes read 8 values apart
/// and no two loads of a lane are adjacent: the gathers of the convolutions.
const LOADS: &str = r#"
struct Params { step: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<storage, read> words: array<f32>;
@group(0) @binding(3) var<storage, read> quads: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> uniform_quads: array<vec4<f32>, 4096>;
@group(0) @binding(5) var texels: texture_2d<f32>;
@group(0) @binding(6) var texel_quads: texture_2d<f32>;

@compute @workgroup_size(64)
fn storage_f32(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = 0.0;
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        acc += words[at & 524287u];
        at += params.step;
    }
    dst[id.x] = acc;
}

@compute @workgroup_size(64)
fn storage_vec4(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        acc += quads[(at >> 2u) & 131071u];
        at += params.step;
    }
    dst[id.x] = acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(64)
fn uniform_f32(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = 0.0;
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        let i = at & 16383u;
        acc += uniform_quads[i >> 2u][i & 3u];
        at += params.step;
    }
    dst[id.x] = acc;
}

@compute @workgroup_size(64)
fn uniform_vec4(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        acc += uniform_quads[(at >> 2u) & 4095u];
        at += params.step;
    }
    dst[id.x] = acc.x + acc.y + acc.z + acc.w;
}

@compute @workgroup_size(64)
fn texture_f32(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = 0.0;
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        let i = at & 524287u;
        acc += textureLoad(texels, vec2<u32>(i & 63u, i >> 6u), 0).x;
        at += params.step;
    }
    dst[id.x] = acc;
}

@compute @workgroup_size(64)
fn texture_vec4(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = vec4<f32>(0.0);
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        let i = (at >> 2u) & 131071u;
        acc += textureLoad(texel_quads, vec2<u32>(i & 15u, i >> 4u), 0);
        at += params.step;
    }
    dst[id.x] = acc.x + acc.y + acc.z + acc.w;
}

// The loop alone: the same address arithmetic, no load.
@compute @workgroup_size(64)
fn no_load(@builtin(global_invocation_id) id: vec3<u32>) {
    var acc = 0.0;
    var at = id.x * 8u;
    for (var k = 0u; k < 64u; k++) {
        acc += f32(at & 524287u);
        at += params.step;
    }
    dst[id.x] = acc;
}
"#;

const LOAD_KERNELS: [(&str, &str); 7] = [
    ("no_load", "the loop alone"),
    ("storage_f32", "storage buffer, f32"),
    ("storage_vec4", "storage buffer, vec4"),
    ("uniform_f32", "uniform buffer, f32"),
    ("uniform_vec4", "uniform buffer, vec4"),
    ("texture_f32", "texture r32float"),
    ("texture_vec4", "texture rgba32float"),
];

/// A kernel whose threads keep `values` x `channels` accumulators (channels a multiple of 4, as vec4s) and do
/// `rounds` rank-1 updates of them with no load: per round, values + channels multiply-adds make the operands
/// and values x channels go into the accumulators.
fn accumulator_kernel(values: usize, channels: usize, rounds: usize) -> String {
    let quads = channels / 4;
    let mut s = String::from(
        "@group(0) @binding(0) var<uniform> params: vec4<f32>;\n\
         @group(0) @binding(1) var<storage, read_write> dst: array<f32>;\n\
         @compute @workgroup_size(64)\n\
         fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    let m = params.x;\n    let d = params.y;\n",
    );
    for i in 0..values {
        s += &format!("    var a{i} = f32(id.x) * 0.001 + {i}.0;\n");
    }
    for j in 0..quads {
        s += &format!("    var b{j} = vec4<f32>(f32(id.x) * 0.002) + vec4<f32>({j}.0, 0.5, 0.25, 0.125);\n");
    }
    for i in 0..values {
        for j in 0..quads {
            s += &format!("    var acc{i}_{j} = vec4<f32>(0.0);\n");
        }
    }
    s += &format!("    for (var k = 0u; k < {rounds}u; k++) {{\n");
    for i in 0..values {
        s += &format!("        a{i} = a{i} * m + d;\n");
    }
    for j in 0..quads {
        s += &format!("        b{j} = b{j} * m + d;\n");
    }
    for i in 0..values {
        for j in 0..quads {
            s += &format!("        acc{i}_{j} += a{i} * b{j};\n");
        }
    }
    s += "    }\n    var total = vec4<f32>(0.0);\n";
    for i in 0..values {
        for j in 0..quads {
            s += &format!("    total += acc{i}_{j};\n");
        }
    }
    s += "    dst[id.x] = total.x + total.y + total.z + total.w;\n}\n";
    s
}

/// Median seconds of 5 runs of one dispatch of `groups` workgroups, after a warm-up.
fn time_dispatch(gpu: &Gpu, pipeline: &wgpu::ComputePipeline, bind_group: &wgpu::BindGroup, groups: u32) -> f64 {
    let run = || {
        let start = Instant::now();
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(groups, 1, 1);
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("the dispatch finishes");
        start.elapsed().as_secs_f64()
    };
    run();
    let mut times: Vec<f64> = (0..5).map(|_| run()).collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn pipeline(gpu: &Gpu, source: &str, entry: &str) -> wgpu::ComputePipeline {
    let module = gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(entry),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

fn storage(gpu: &Gpu, contents: &[u8], extra: wgpu::BufferUsages) -> wgpu::Buffer {
    gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents,
        usage: wgpu::BufferUsages::STORAGE | extra,
    })
}

fn texture(gpu: &Gpu, values: &[f32], format: wgpu::TextureFormat, per_texel: u32) -> wgpu::TextureView {
    let size = wgpu::Extent3d {
        width: TEXELS_PER_ROW / per_texel,
        height: SOURCE_WORDS / TEXELS_PER_ROW,
        depth_or_array_layers: 1,
    };
    let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    gpu.queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        bytemuck::cast_slice(values),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(TEXELS_PER_ROW * 4),
            rows_per_image: Some(size.height),
        },
        size,
    );
    texture.create_view(&Default::default())
}

fn load_table(gpu: &Gpu) {
    let values: Vec<f32> = (0..SOURCE_WORDS).map(|i| (i % 97) as f32 * 0.01).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&values);
    let params = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&[4099u32, 0, 0, 0]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let uniform = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: &bytes[..UNIFORM_VEC4S as usize * 16],
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let dst = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: LOAD_INVOCATIONS as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let source = storage(gpu, bytes, wgpu::BufferUsages::empty());
    let texels = texture(gpu, &values, wgpu::TextureFormat::R32Float, 1);
    let texel_quads = texture(gpu, &values, wgpu::TextureFormat::Rgba32Float, 4);
    println!("Loads at addresses that differ between lanes, 64 a thread, {LOAD_INVOCATIONS} threads:");
    println!("{:<22} {:>10} {:>16} {:>16}", "source", "ms", "ns a load", "ns a value");
    for (entry, what) in LOAD_KERNELS {
        let pipeline = pipeline(gpu, LOADS, entry);
        // Each entry point's layout holds only the bindings it uses.
        let layout = pipeline.get_bind_group_layout(0);
        let resources: [(u32, wgpu::BindingResource); 7] = [
            (0, params.as_entire_binding()),
            (1, dst.as_entire_binding()),
            (2, source.as_entire_binding()),
            (3, source.as_entire_binding()),
            (4, uniform.as_entire_binding()),
            (5, wgpu::BindingResource::TextureView(&texels)),
            (6, wgpu::BindingResource::TextureView(&texel_quads)),
        ];
        let used: &[u32] = match entry {
            "no_load" => &[0, 1],
            "storage_f32" => &[0, 1, 2],
            "storage_vec4" => &[0, 1, 3],
            "uniform_f32" | "uniform_vec4" => &[0, 1, 4],
            "texture_f32" => &[0, 1, 5],
            _ => &[0, 1, 6],
        };
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .into_iter()
            .filter(|(binding, _)| used.contains(binding))
            .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let seconds = time_dispatch(gpu, &pipeline, &bind_group, LOAD_INVOCATIONS / 64);
        let loads = LOAD_INVOCATIONS as f64 * 64.0;
        let per_load = seconds * 1e9 / loads;
        let width = if entry.ends_with("vec4") { 4.0 } else { 1.0 };
        println!(
            "{what:<22} {:>10.2} {per_load:>16.3} {:>16.3}",
            seconds * 1e3,
            per_load / width
        );
    }
}

fn accumulator_table(gpu: &Gpu, tiles: &[(usize, usize)]) {
    let threads = 64u32 * 256;
    let rounds = 2048usize;
    let params = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&[0.999f32, 0.001, 0.0, 0.0]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let dst = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: threads as u64 * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    println!("\nMultiply-adds with no loads, {threads} threads of {rounds} rounds:");
    println!(
        "{:<16} {:>13} {:>10} {:>24} {:>22}",
        "values x chans", "accumulators", "ms", "accumulating GFLOP/s", "all FMAs GFLOP/s"
    );
    for &(values, channels) in tiles {
        let pipeline = pipeline(gpu, &accumulator_kernel(values, channels, rounds), "main");
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: dst.as_entire_binding(),
                },
            ],
        });
        let seconds = time_dispatch(gpu, &pipeline, &bind_group, threads / 64);
        let per_thread = (threads as usize * rounds) as f64;
        let accumulating = 2.0 * per_thread * (values * channels) as f64 / seconds * 1e-9;
        let all = 2.0 * per_thread * (values * channels + values + channels) as f64 / seconds * 1e-9;
        println!(
            "{:<16} {:>13} {:>10.1} {accumulating:>24.1} {all:>22.1}",
            format!("{values} x {channels}"),
            values * channels,
            seconds * 1e3
        );
    }
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::from_env().expect("LATENT_* settings")).expect("an adapter");
    println!("{}\n", gpu.describe());
    let tiles: Vec<(usize, usize)> = std::env::args()
        .skip(1)
        .map(|tile| {
            let (values, channels) = tile.split_once('x').expect("a tile is VALUESxCHANNELS, e.g. 8x32");
            let channels: usize = channels.parse().expect("CHANNELS is a number");
            assert!(channels % 4 == 0, "CHANNELS is a multiple of 4");
            (values.parse().expect("VALUES is a number"), channels)
        })
        .collect();
    if tiles.is_empty() {
        load_table(&gpu);
        accumulator_table(&gpu, &[(4, 4), (6, 4), (8, 4), (8, 8), (8, 16), (8, 32), (16, 32)]);
    } else {
        accumulator_table(&gpu, &tiles);
    }
}
