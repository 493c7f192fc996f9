//! Kernel profiles of compiled plans: how long every dispatch of a training step takes on the GPU.
//!
//! A [`Profiler`] replays a [`Plan`] like [`Plan::run`] does, with GPU timestamps around every dispatch:
//! - inside the plan's one compute pass where the device has `TIMESTAMP_QUERY_INSIDE_PASSES`
//!   ([`TimingMethod::InsidePass`]: the step is encoded exactly as in training, plus the timestamps);
//! - otherwise one compute pass per dispatch, timed by the pass's own timestamps ([`TimingMethod::PassPerDispatch`]);
//! - without timestamps at all, every dispatch submitted alone and waited for, timed on the CPU
//!   ([`TimingMethod::CpuWallClock`]: includes submit and wake-up latency, so small kernels look slow).
//!
//! Each dispatch takes two queries (start, end); a query set holds at most [`MAX_QUERIES`], so longer plans use
//! several sets. A [`Profile`] groups the times by kernel (registry entry point) and by op (the step's label),
//! and writes a Chrome trace-event file that Perfetto (ui.perfetto.dev) and chrome://tracing open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::gpu::{Dispatch, Gpu, GpuError};
use crate::graph::GraphError;
use crate::peak::Peak;
use crate::plan::{Phase, Plan};

/// The most queries one wgpu query set may hold.
pub const MAX_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Everything that can stop a profile or a benchmark. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Gpu(#[from] GpuError),

    #[error("building the model's graph failed: {0}")]
    Graph(#[from] GraphError),

    #[error("{0}")]
    Model(String),

    #[error("nothing to measure: ask for at least one step (--steps N with N >= 1)")]
    NoSteps,

    #[error("unknown model {name:?}: choose one of {}", known.join(", "))]
    UnknownModel { name: String, known: Vec<&'static str> },

    #[error("could not write the trace to {}: {source}; check that the directory exists and is writable", path.display())]
    Trace { path: PathBuf, source: std::io::Error },
}

/// How dispatch times are measured on this device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingMethod {
    /// GPU timestamps written between the dispatches of the plan's one compute pass.
    InsidePass,
    /// One compute pass per dispatch, timed by the pass's begin and end timestamps.
    PassPerDispatch,
    /// No GPU timestamps: each dispatch submitted alone and waited for, timed on the CPU.
    CpuWallClock,
}

impl TimingMethod {
    /// The most faithful method the device supports.
    pub fn for_gpu(gpu: &Gpu) -> Self {
        if gpu.timestamps_inside_passes() {
            Self::InsidePass
        } else if gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            Self::PassPerDispatch
        } else {
            Self::CpuWallClock
        }
    }

    /// What a reader of the table should know about the numbers, if anything.
    pub fn notice(self) -> Option<&'static str> {
        match self {
            Self::InsidePass => None,
            Self::PassPerDispatch => Some(
                "this device cannot write timestamps inside a compute pass: each dispatch ran in its own pass, \
                 so the step was not encoded exactly as in training",
            ),
            Self::CpuWallClock => Some(
                "this device has no GPU timestamps (TIMESTAMP_QUERY): each dispatch was submitted alone and \
                 timed on the CPU, submit and wait included, so short kernels look slower than they are",
            ),
        }
    }
}

/// Which query set and index hold query `query` (queries are numbered across sets of `MAX_QUERIES`).
pub fn query_slot(query: u32) -> (usize, u32) {
    ((query / MAX_QUERIES) as usize, query % MAX_QUERIES)
}

/// Query sets and buffers for `capacity` timestamps, grown on demand.
struct Timestamps {
    capacity: u32,
    sets: Vec<wgpu::QuerySet>,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    period_ns: f64,
}

impl Timestamps {
    fn new(gpu: &Gpu, capacity: u32) -> Self {
        let capacity = capacity.max(2);
        let sets = (0..capacity.div_ceil(MAX_QUERIES))
            .map(|i| {
                let count = (capacity - i * MAX_QUERIES).min(MAX_QUERIES);
                gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profile timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                })
            })
            .collect();
        let bytes = capacity as u64 * wgpu::QUERY_SIZE as u64;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile timestamps staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            capacity,
            sets,
            resolve,
            staging,
            period_ns: gpu.queue.get_timestamp_period() as f64,
        }
    }

    fn ensure(&mut self, gpu: &Gpu, queries: u32) {
        if queries > self.capacity {
            *self = Self::new(gpu, queries);
        }
    }

    fn slot(&self, query: u32) -> (&wgpu::QuerySet, u32) {
        let (set, index) = query_slot(query);
        (&self.sets[set], index)
    }

    /// Copies the first `queries` timestamps to the staging buffer.
    fn resolve(&self, encoder: &mut wgpu::CommandEncoder, queries: u32) {
        let mut first = 0;
        while first < queries {
            let (set, _) = query_slot(first);
            let end = queries.min(first + MAX_QUERIES);
            let offset = first as u64 * wgpu::QUERY_SIZE as u64;
            encoder.resolve_query_set(&self.sets[set], 0..end - first, &self.resolve, offset);
            first = end;
        }
        let bytes = queries as u64 * wgpu::QUERY_SIZE as u64;
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, bytes);
    }

    /// Reads the resolved timestamps as nanoseconds, and releases the staging buffer.
    fn read(&self, gpu: &Gpu, queries: u32) -> Result<Vec<f64>, GpuError> {
        let bytes = queries as u64 * wgpu::QUERY_SIZE as u64;
        let slice = self.staging.slice(..bytes);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        gpu.wait()?;
        let fail = |message: String| GpuError::Readback {
            label: "profile timestamps".into(),
            message,
        };
        receiver
            .recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&slice.get_mapped_range().map_err(|e| fail(e.to_string()))?);
        self.staging.unmap();
        Ok(ticks.iter().map(|&t| t as f64 * self.period_ns).collect())
    }
}

/// What the profiler keeps about one dispatch of a plan.
#[derive(Clone, Debug)]
struct DispatchInfo {
    label: String,
    kernel: String,
    phase: Phase,
    flops: u64,
    bytes: u64,
    workgroups: [u32; 3],
}

/// One profiled run of one plan.
#[derive(Clone, Debug)]
struct Run {
    /// Index into `Profiler::plans`.
    plan: usize,
    step: u64,
    /// When the run started on the CPU, in µs since the profiler was made.
    cpu_start_us: f64,
    wall_ns: f64,
    /// (start relative to the run's first dispatch, duration), ns, per dispatch.
    times: Vec<(f64, f64)>,
}

/// Times every dispatch of the plans it runs. Use [`Profiler::run`] in place of [`Plan::run`], then
/// [`Profiler::finish`].
pub struct Profiler {
    method: TimingMethod,
    adapter: String,
    timestamps: Option<Timestamps>,
    plans: Vec<(String, Vec<DispatchInfo>)>,
    runs: Vec<Run>,
    origin: Instant,
}

impl Profiler {
    /// A profiler with the best timing method `gpu` supports.
    pub fn new(gpu: &Gpu) -> Self {
        Self::with_method(gpu, TimingMethod::for_gpu(gpu))
    }

    /// A profiler with a chosen method (a method the device lacks falls back to the best it has).
    pub fn with_method(gpu: &Gpu, method: TimingMethod) -> Self {
        let best = TimingMethod::for_gpu(gpu);
        let method = match (method, best) {
            (TimingMethod::InsidePass, TimingMethod::InsidePass) => TimingMethod::InsidePass,
            (TimingMethod::InsidePass | TimingMethod::PassPerDispatch, TimingMethod::CpuWallClock) => {
                TimingMethod::CpuWallClock
            }
            (TimingMethod::InsidePass, _) => TimingMethod::PassPerDispatch,
            (chosen, _) => chosen,
        };
        Self {
            method,
            adapter: gpu.describe(),
            timestamps: None,
            plans: Vec::new(),
            runs: Vec::new(),
            origin: Instant::now(),
        }
    }

    pub fn method(&self) -> TimingMethod {
        self.method
    }

    /// Runs global step `step` of `plan` (its per-step writes included) with every dispatch timed, and waits
    /// for it. Plans are told apart by name: each gets its own track in the trace.
    pub fn run(&mut self, gpu: &Gpu, plan: &Plan, step: u64) -> Result<(), ProfileError> {
        let plan_index = self.plan_index(plan);
        let count = plan.steps.len();
        let start = Instant::now();
        let cpu_start_us = start.duration_since(self.origin).as_secs_f64() * 1e6;
        plan.write_step_values(gpu, step, 0);
        let times = match self.method {
            TimingMethod::CpuWallClock => {
                let mut times = Vec::with_capacity(count);
                for s in &plan.steps {
                    let begin = Instant::now();
                    gpu.run(&[&s.dispatch])?;
                    let end = Instant::now();
                    times.push((
                        begin.duration_since(start).as_secs_f64() * 1e9,
                        end.duration_since(begin).as_secs_f64() * 1e9,
                    ));
                }
                times
            }
            method => {
                let queries = 2 * count as u32;
                let timestamps = match &mut self.timestamps {
                    Some(t) => {
                        t.ensure(gpu, queries);
                        t
                    }
                    none => none.insert(Timestamps::new(gpu, queries)),
                };
                let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some(&plan.name),
                });
                if method == TimingMethod::InsidePass {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&plan.name),
                        timestamp_writes: None,
                    });
                    for (i, s) in plan.steps.iter().enumerate() {
                        let (set, index) = timestamps.slot(2 * i as u32);
                        pass.write_timestamp(set, index);
                        s.dispatch.record(&mut pass);
                        let (set, index) = timestamps.slot(2 * i as u32 + 1);
                        pass.write_timestamp(set, index);
                    }
                } else {
                    for (i, s) in plan.steps.iter().enumerate() {
                        // 2i and 2i + 1 fall in the same set: MAX_QUERIES is even.
                        let (set, index) = timestamps.slot(2 * i as u32);
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(&s.label),
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: set,
                                beginning_of_pass_write_index: Some(index),
                                end_of_pass_write_index: Some(index + 1),
                            }),
                        });
                        s.dispatch.record(&mut pass);
                    }
                }
                timestamps.resolve(&mut encoder, queries);
                gpu.queue.submit([encoder.finish()]);
                gpu.wait()?;
                let wall_ns = start.elapsed().as_secs_f64() * 1e9;
                let ns = timestamps.read(gpu, queries)?;
                let origin = ns.first().copied().unwrap_or(0.0);
                let times = ns
                    .chunks_exact(2)
                    .map(|pair| ((pair[0] - origin).max(0.0), (pair[1] - pair[0]).max(0.0)))
                    .collect();
                self.runs.push(Run {
                    plan: plan_index,
                    step,
                    cpu_start_us,
                    wall_ns,
                    times,
                });
                return Ok(());
            }
        };
        self.runs.push(Run {
            plan: plan_index,
            step,
            cpu_start_us,
            wall_ns: start.elapsed().as_secs_f64() * 1e9,
            times,
        });
        Ok(())
    }

    fn plan_index(&mut self, plan: &Plan) -> usize {
        if let Some(i) = self.plans.iter().position(|(name, _)| *name == plan.name) {
            return i;
        }
        let infos = plan
            .steps
            .iter()
            .map(|s| DispatchInfo {
                label: s.label.clone(),
                kernel: s.dispatch.name(),
                phase: s.phase,
                flops: s.flops,
                bytes: s.bytes,
                workgroups: s.dispatch.workgroups,
            })
            .collect();
        self.plans.push((plan.name.clone(), infos));
        self.plans.len() - 1
    }

    /// The report of every run so far.
    pub fn finish(self) -> Result<Profile, ProfileError> {
        if self.runs.is_empty() {
            return Err(ProfileError::NoSteps);
        }
        Ok(Profile::new(self))
    }
}

/// How many steps to run before measuring, and how many to measure.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// Untimed steps first (pipelines warm, caches filled).
    pub warmup: u64,
    /// Timed steps.
    pub steps: u64,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        Self { warmup: 2, steps: 10 }
    }
}

/// Runs `options.warmup` plain steps of `plans` (in order, every step), then `options.steps` timed ones.
/// The plans' inputs are whatever was written before; the caller fills them.
pub fn profile(gpu: &Gpu, plans: &[&Plan], options: &ProfileOptions) -> Result<Profile, ProfileError> {
    if options.steps == 0 || plans.is_empty() {
        return Err(ProfileError::NoSteps);
    }
    for step in 0..options.warmup {
        for plan in plans {
            plan.run(gpu, step);
        }
        gpu.wait()?;
    }
    let mut profiler = Profiler::new(gpu);
    for step in options.warmup..options.warmup + options.steps {
        for plan in plans {
            profiler.run(gpu, plan, step)?;
        }
    }
    profiler.finish()
}

/// One kernel (registry entry point) over every profiled step.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    /// e.g. `matmul::matmul_nt`
    pub kernel: String,
    pub calls: u64,
    pub total_ms: f64,
    pub mean_us: f64,
    /// Percent of the summed GPU time of every dispatch.
    pub share_percent: f64,
    /// Achieved GFLOP/s (None where the dispatches' flops are not counted).
    pub gflops: Option<f64>,
    /// Achieved GB/s of the bytes bound (an estimate: each buffer read or written once).
    pub gb_per_s: f64,
    /// Percent of the roofline limit reached (see [`Peak::share_percent`]), once ceilings are attached.
    pub roofline_percent: Option<f64>,
}

/// One op of one plan (the dispatches that share a step label).
#[derive(Clone, Debug, Serialize)]
pub struct OpRow {
    pub plan: String,
    /// e.g. `fc1.out linear` or `fc1.weight adam`
    pub label: String,
    pub phase: Phase,
    pub kernel: String,
    pub calls: u64,
    pub total_ms: f64,
    pub mean_us: f64,
    pub share_percent: f64,
    pub gflops: Option<f64>,
    pub gb_per_s: f64,
    pub roofline_percent: Option<f64>,
}

/// GPU time beside wall time for one profiled step (every plan run in it).
#[derive(Clone, Debug, Serialize)]
pub struct StepTime {
    pub step: u64,
    /// Sum of the step's dispatch times.
    pub kernels_ms: f64,
    /// Submit to finish on the CPU (timestamp resolve and readback excluded).
    pub wall_ms: f64,
}

/// A profile's report: tables by kernel and by op, per-step totals, and the trace.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub adapter: String,
    pub method: TimingMethod,
    pub notice: Option<String>,
    pub plans: Vec<String>,
    /// Distinct global steps profiled.
    pub steps: usize,
    /// Dispatches timed in all.
    pub dispatches: u64,
    /// Mean over the steps.
    pub kernels_ms_per_step: f64,
    pub wall_ms_per_step: f64,
    pub per_step: Vec<StepTime>,
    /// Sorted by total time, longest first.
    pub kernels: Vec<KernelRow>,
    /// Sorted by total time, longest first.
    pub ops: Vec<OpRow>,
    /// The adapter's measured ceilings the roofline columns use.
    pub ceilings: Option<Peak>,
    #[serde(skip)]
    runs: Vec<Run>,
    #[serde(skip)]
    infos: Vec<(String, Vec<DispatchInfo>)>,
}

#[derive(Default)]
struct Totals {
    calls: u64,
    ns: f64,
    flops: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, info: &DispatchInfo, ns: f64) {
        self.calls += 1;
        self.ns += ns;
        self.flops += info.flops;
        self.bytes += info.bytes;
    }

    fn gflops(&self) -> Option<f64> {
        (self.flops > 0 && self.ns > 0.0).then(|| self.flops as f64 / self.ns)
    }

    fn gb_per_s(&self) -> f64 {
        if self.ns > 0.0 {
            self.bytes as f64 / self.ns
        } else {
            0.0
        }
    }
}

impl Profile {
    fn new(profiler: Profiler) -> Self {
        let Profiler {
            method,
            adapter,
            plans: infos,
            runs,
            ..
        } = profiler;
        let mut kernels: Vec<(String, Totals)> = Vec::new();
        let mut ops: Vec<((usize, String), (Phase, String, Totals))> = Vec::new();
        let mut kernel_index: HashMap<String, usize> = HashMap::new();
        let mut op_index: HashMap<(usize, String), usize> = HashMap::new();
        let mut per_step: Vec<StepTime> = Vec::new();
        let mut total_ns = 0.0;
        let mut dispatches = 0;
        for run in &runs {
            let plan_infos = &infos[run.plan].1;
            let mut run_ns = 0.0;
            for (info, &(_, ns)) in plan_infos.iter().zip(&run.times) {
                let k = *kernel_index.entry(info.kernel.clone()).or_insert_with(|| {
                    kernels.push((info.kernel.clone(), Totals::default()));
                    kernels.len() - 1
                });
                kernels[k].1.add(info, ns);
                let key = (run.plan, info.label.clone());
                let o = *op_index.entry(key.clone()).or_insert_with(|| {
                    ops.push((key, (info.phase, info.kernel.clone(), Totals::default())));
                    ops.len() - 1
                });
                ops[o].1 .2.add(info, ns);
                run_ns += ns;
                dispatches += 1;
            }
            total_ns += run_ns;
            match per_step.iter_mut().find(|s| s.step == run.step) {
                Some(s) => {
                    s.kernels_ms += run_ns / 1e6;
                    s.wall_ms += run.wall_ns / 1e6;
                }
                None => per_step.push(StepTime {
                    step: run.step,
                    kernels_ms: run_ns / 1e6,
                    wall_ms: run.wall_ns / 1e6,
                }),
            }
        }
        let share = |ns: f64| if total_ns > 0.0 { 100.0 * ns / total_ns } else { 0.0 };
        let mut kernels: Vec<KernelRow> = kernels
            .into_iter()
            .map(|(kernel, t)| KernelRow {
                kernel,
                calls: t.calls,
                total_ms: t.ns / 1e6,
                mean_us: t.ns / 1e3 / t.calls as f64,
                share_percent: share(t.ns),
                gflops: t.gflops(),
                gb_per_s: t.gb_per_s(),
                roofline_percent: None,
            })
            .collect();
        kernels.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        let mut ops: Vec<OpRow> = ops
            .into_iter()
            .map(|((plan, label), (phase, kernel, t))| OpRow {
                plan: infos[plan].0.clone(),
                label,
                phase,
                kernel,
                calls: t.calls,
                total_ms: t.ns / 1e6,
                mean_us: t.ns / 1e3 / t.calls as f64,
                share_percent: share(t.ns),
                gflops: t.gflops(),
                gb_per_s: t.gb_per_s(),
                roofline_percent: None,
            })
            .collect();
        ops.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        let steps = per_step.len().max(1);
        Self {
            adapter,
            method,
            notice: method.notice().map(str::to_string),
            plans: infos.iter().map(|(name, _)| name.clone()).collect(),
            steps: per_step.len(),
            dispatches,
            kernels_ms_per_step: per_step.iter().map(|s| s.kernels_ms).sum::<f64>() / steps as f64,
            wall_ms_per_step: per_step.iter().map(|s| s.wall_ms).sum::<f64>() / steps as f64,
            per_step,
            kernels,
            ops,
            ceilings: None,
            runs,
            infos,
        }
    }

    /// Fills the roofline columns from the adapter's ceilings: each row's share of the time it would take at
    /// the FLOP ceiling or the bandwidth ceiling for its bytes, whichever is longer.
    pub fn with_ceilings(mut self, peak: Peak) -> Self {
        let share = |gflops: Option<f64>, gb_per_s: f64| {
            let compute = gflops.unwrap_or(0.0) / peak.fma_f32_gflops;
            let memory = gb_per_s / peak.bandwidth();
            Some(100.0 * compute.max(memory))
        };
        for k in &mut self.kernels {
            k.roofline_percent = share(k.gflops, k.gb_per_s);
        }
        for o in &mut self.ops {
            o.roofline_percent = share(o.gflops, o.gb_per_s);
        }
        self.ceilings = Some(peak);
        self
    }

    /// The per-kernel table (and, with `ops`, the per-op table) as text for people.
    pub fn table(&self, ops: bool) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "Profile of {} on {}", self.plans.join(", "), self.adapter);
        let _ = writeln!(
            out,
            "{} steps, {} dispatches timed ({})",
            self.steps,
            self.dispatches,
            match self.method {
                TimingMethod::InsidePass => "GPU timestamps inside the compute pass",
                TimingMethod::PassPerDispatch => "GPU timestamps, one pass per dispatch",
                TimingMethod::CpuWallClock => "CPU wall clock per dispatch",
            }
        );
        if let Some(notice) = &self.notice {
            let _ = writeln!(out, "note: {notice}");
        }
        if let Some(peak) = &self.ceilings {
            let _ = writeln!(
                out,
                "ceilings: {}; roofline = share of the time at the FLOP or bandwidth ceiling, whichever binds",
                peak.summary()
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<36} {:>6} {:>11} {:>11} {:>7} {:>9} {:>8} {:>9}",
            "kernel", "calls", "total ms", "mean µs", "share", "GFLOP/s", "GB/s", "roofline"
        );
        for k in &self.kernels {
            let _ = writeln!(
                out,
                "{:<36} {:>6} {:>11.3} {:>11.1} {:>6.1}% {:>9} {:>8.2} {:>9}",
                k.kernel,
                k.calls,
                k.total_ms,
                k.mean_us,
                k.share_percent,
                k.gflops.map_or("-".into(), |g| format!("{g:.2}")),
                k.gb_per_s,
                percent(k.roofline_percent)
            );
        }
        let _ = writeln!(
            out,
            "\nper step: kernels {:.3} ms, wall {:.3} ms (kernels / wall = {:.0}%)",
            self.kernels_ms_per_step,
            self.wall_ms_per_step,
            if self.wall_ms_per_step > 0.0 {
                100.0 * self.kernels_ms_per_step / self.wall_ms_per_step
            } else {
                0.0
            }
        );
        if ops {
            let _ = writeln!(
                out,
                "\n{:<40} {:<9} {:<30} {:>11} {:>7} {:>9} {:>8} {:>9}",
                "op", "phase", "kernel", "mean µs", "share", "GFLOP/s", "GB/s", "roofline"
            );
            for o in &self.ops {
                let label = if self.plans.len() > 1 {
                    format!("{}: {}", o.plan, o.label)
                } else {
                    o.label.clone()
                };
                let _ = writeln!(
                    out,
                    "{:<40} {:<9} {:<30} {:>11.1} {:>6.1}% {:>9} {:>8.2} {:>9}",
                    label,
                    format!("{:?}", o.phase).to_lowercase(),
                    o.kernel,
                    o.mean_us,
                    o.share_percent,
                    o.gflops.map_or("-".into(), |g| format!("{g:.2}")),
                    o.gb_per_s,
                    percent(o.roofline_percent)
                );
            }
        }
        out
    }

    /// The Chrome trace-event JSON: one complete ("X") event per timed dispatch, one track (tid) per plan,
    /// times in µs. Each run sits at its CPU start time; its dispatches at their GPU offsets within the run.
    pub fn trace(&self) -> serde_json::Value {
        let mut events = Vec::with_capacity(self.dispatches as usize + self.infos.len());
        for (i, (name, _)) in self.infos.iter().enumerate() {
            events.push(json!({
                "name": "thread_name", "ph": "M", "pid": 1, "tid": i + 1, "args": { "name": name },
            }));
        }
        for run in &self.runs {
            for (info, &(start_ns, ns)) in self.infos[run.plan].1.iter().zip(&run.times) {
                events.push(json!({
                    "name": info.kernel,
                    "cat": format!("{:?}", info.phase).to_lowercase(),
                    "ph": "X",
                    "ts": run.cpu_start_us + start_ns / 1e3,
                    "dur": ns / 1e3,
                    "pid": 1,
                    "tid": run.plan + 1,
                    "args": {
                        "label": info.label,
                        "step": run.step,
                        "flops": info.flops,
                        "bytes": info.bytes,
                        "workgroups": info.workgroups,
                    },
                }));
            }
        }
        json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": { "adapter": self.adapter, "method": self.method },
        })
    }

    /// Writes [`trace`](Self::trace) to `path`.
    pub fn write_trace(&self, path: &Path) -> Result<(), ProfileError> {
        let text = serde_json::to_string(&self.trace()).expect("a JSON value always serialises");
        std::fs::write(path, text).map_err(|source| ProfileError::Trace {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Times one dispatch `repeats` times (after `warmup` untimed runs), each alone in a pass; returns ns per run.
/// GPU timestamps of the pass where the device has them, otherwise submit-to-finish on the CPU.
pub fn time_dispatch(gpu: &Gpu, dispatch: &Dispatch, warmup: usize, repeats: usize) -> Result<Vec<f64>, ProfileError> {
    if repeats == 0 {
        return Err(ProfileError::NoSteps);
    }
    for _ in 0..warmup {
        gpu.run(&[dispatch])?;
    }
    let mut times = Vec::with_capacity(repeats);
    if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        for _ in 0..repeats {
            let start = Instant::now();
            gpu.run(&[dispatch])?;
            times.push(start.elapsed().as_secs_f64() * 1e9);
        }
        return Ok(times);
    }
    let timestamps = Timestamps::new(gpu, 2);
    for _ in 0..repeats {
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("bench") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &timestamps.sets[0],
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            dispatch.record(&mut pass);
        }
        timestamps.resolve(&mut encoder, 2);
        gpu.queue.submit([encoder.finish()]);
        let ns = timestamps.read(gpu, 2)?;
        times.push((ns[1] - ns[0]).max(0.0));
    }
    Ok(times)
}

/// A roofline share for a table: `12.3%`, or `-` without ceilings.
pub fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |p| format!("{p:.1}%"))
}

/// The median of `values` (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}
