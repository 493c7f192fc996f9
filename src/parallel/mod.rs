//! Data parallelism: a training step whose global batch is split into parts, micro-batches on one adapter
//! (`--micro-batches M`) and ranks under `mpirun -n K`, with the gradients summed before one update.
//!
//! Part j = rank·M + m holds samples j·n .. (j+1)·n of the step's global batch of N (n = N / (K·M)). Every
//! random draw is keyed by the global sample index (noise fills by `Plan::run_part`'s first sample, the ddpm's
//! timesteps by `Batch::first`), so the split does not change what is drawn. Each plan of the step then runs:
//!
//! 1. compute: for each of the rank's M micro-batches, the plan's gradients part (forward, backward, loss sums),
//!    every micro-batch starting from the step's persistent state (BatchNorm's running statistics);
//! 2. gradient readback: its gradients and the state its forward updated, to the host, summed over the
//!    micro-batches in order;
//! 3. waiting for ranks: a barrier, so that the time the slowest rank's compute takes is not counted as the
//!    exchange's;
//! 4. all-reduce: every rank's sums gathered and added in rank order, then divided by K·M. Losses are batch
//!    means, so the mean of the parts' gradients is the whole batch's gradient; the state is the mean of the
//!    parts' states (running statistics updated with the mean of the parts' batch statistics);
//! 5. upload: the result written into every rank's gradient and state buffers;
//! 6. optimizer: the plan's update part, the same on every rank.
//!
//! The additions run in one fixed order (a rank's micro-batches, then the ranks), so `mpirun -n K` computes bit
//! for bit what one process computes with `--micro-batches K`, and every rank ends with the same weights. That is
//! why the all-reduce is an all-gather and a sum in rank order: MPI_Allreduce leaves the order open.

pub mod group;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::error::TrainError;
use crate::gpu::{Gpu, GpuBuffer, GpuError};
use crate::plan::{ParamStore, Part, Plan};
use crate::recipe::{Batch, Training};
pub use group::{join, launcher_ranks, Group, Solo};

/// Where the time of split steps went, summed over the steps (wall clock; the GPU is waited for after each part).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Breakdown {
    pub steps: u64,
    pub compute: Duration,
    pub readback: Duration,
    /// Until the slowest rank reaches the exchange (a barrier before it).
    pub waiting: Duration,
    pub all_reduce: Duration,
    pub upload: Duration,
    pub optimizer: Duration,
}

impl Breakdown {
    /// Each part's name and total time.
    pub fn parts(&self) -> [(&'static str, Duration); 6] {
        [
            ("compute", self.compute),
            ("gradient readback", self.readback),
            ("waiting for ranks", self.waiting),
            ("all-reduce", self.all_reduce),
            ("upload", self.upload),
            ("optimizer", self.optimizer),
        ]
    }

    /// The table `--profile` prints: milliseconds per step and share of each part.
    pub fn table(&self, title: &str) -> String {
        let total: Duration = self.parts().iter().map(|(_, d)| *d).sum();
        let per_step = |d: Duration| d.as_secs_f64() * 1e3 / self.steps.max(1) as f64;
        let mut lines = vec![
            format!("step breakdown, {title}, {} steps:", self.steps),
            format!("  {:<18} {:>10} {:>7}", "part", "ms/step", "share"),
        ];
        for (name, time) in self.parts() {
            let share = 100.0 * time.as_secs_f64() / total.as_secs_f64().max(1e-12);
            lines.push(format!("  {name:<18} {:>10.2} {share:>6.1}%", per_step(time)));
        }
        lines.push(format!("  {:<18} {:>10.2}", "total", per_step(total)));
        lines.join("\n")
    }
}

/// One plan's host side of the exchange: its gradient and state buffers' readback and their running sums.
struct Exchange {
    /// (total words) MAP_READ buffer the gradients and states are copied into, in the plan's order.
    staging: Option<wgpu::Buffer>,
    /// The plan's gradient buffers, then its state buffers, each with its words.
    buffers: Vec<(std::sync::Arc<GpuBuffer>, usize)>,
    /// (total words) this rank's sums over its micro-batches, then the mean over every part.
    sums: Vec<f32>,
    /// The state at the start of the step, restored before each micro-batch after the first.
    start_state: Vec<f32>,
}

impl Exchange {
    fn new(gpu: &Gpu, plan: &Plan) -> Result<Self, GpuError> {
        let buffers: Vec<_> = plan
            .gradients
            .iter()
            .chain(&plan.states)
            .map(|b| (b.clone(), b.len_words()))
            .collect();
        let words: usize = buffers.iter().map(|(_, n)| n).sum();
        let staging = (words > 0)
            .then(|| {
                gpu.create_buffer_checked(&wgpu::BufferDescriptor {
                    label: Some(&format!("{} gradient readback", plan.name)),
                    size: (words * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .transpose()?;
        Ok(Self {
            staging,
            buffers,
            sums: vec![0.0; words],
            start_state: Vec::new(),
        })
    }

    fn state_words(&self, plan: &Plan) -> usize {
        self.buffers[plan.gradients.len()..].iter().map(|(_, n)| n).sum()
    }

    /// Every gradient and state of the last submitted part (waits for the GPU).
    fn read(&self, gpu: &Gpu, plan: &Plan) -> Result<Vec<f32>, GpuError> {
        plan.submit_error()?;
        let Some(staging) = &self.staging else {
            return Ok(Vec::new());
        };
        let mut encoder = gpu.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("gradient readback"),
        });
        let mut offset = 0;
        for (buffer, words) in &self.buffers {
            encoder.copy_buffer_to_buffer(&buffer.buffer, 0, staging, offset, (*words * 4) as u64);
            offset += (*words * 4) as u64;
        }
        gpu.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (sender, receiver) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = sender.send(r);
        });
        gpu.wait()?;
        let fail = |message: String| GpuError::Readback {
            label: format!("{} gradients", plan.name),
            message,
        };
        receiver
            .recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let values = bytemuck::pod_collect_to_vec(&slice.get_mapped_range().map_err(|e| fail(e.to_string()))?);
        staging.unmap();
        Ok(values)
    }

    /// Writes `values` (gradients then states, as `read` returns them) from buffer `from` on.
    fn upload(&self, gpu: &Gpu, values: &[f32], from: usize) -> Result<(), GpuError> {
        let mut offset = 0;
        for (index, (buffer, words)) in self.buffers.iter().enumerate() {
            if index >= from {
                gpu.write(buffer, &values[offset..offset + words])?;
                offset += words;
            }
        }
        Ok(())
    }
}

/// The split training step of one rank (see the module documentation).
pub struct DataParallel<'g> {
    group: &'g dyn Group,
    micro_batches: usize,
    /// Samples per part (n).
    part: usize,
    /// Samples per global batch (N).
    global: usize,
    exchanges: RefCell<Vec<Exchange>>,
    breakdown: RefCell<Breakdown>,
}

impl<'g> DataParallel<'g> {
    /// The split step of `training`, whose plans were compiled at batch `global / (ranks · micro_batches)`.
    pub fn new(
        gpu: &Gpu,
        training: &dyn Training,
        group: &'g dyn Group,
        micro_batches: usize,
        global: usize,
    ) -> Result<Self, TrainError> {
        let parts = group.size() * micro_batches;
        let exchanges = training
            .plans()
            .iter()
            .map(|p| {
                p.plan.check_split(global)?;
                Exchange::new(gpu, &p.plan)
            })
            .collect::<Result<_, GpuError>>()?;
        Ok(Self {
            group,
            micro_batches,
            part: global / parts,
            global,
            exchanges: RefCell::new(exchanges),
            breakdown: RefCell::default(),
        })
    }

    /// Where the time of the steps so far went.
    pub fn breakdown(&self) -> Breakdown {
        self.breakdown.borrow().clone()
    }

    /// Samples per part.
    pub fn part_batch(&self) -> usize {
        self.part
    }

    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Parts of each global batch: ranks × micro-batches.
    pub fn parts(&self) -> usize {
        self.group.size() * self.micro_batches
    }

    /// Trains global step `step` on the global batch `images` (N, C, H, W) with `labels` (N) and training-set
    /// `indices` (N): this rank's micro-batches, the exchange, the update.
    pub fn step(
        &self,
        gpu: &Gpu,
        training: &dyn Training,
        images: &[f32],
        labels: Option<&[u32]>,
        indices: &[usize],
        step: u64,
    ) -> Result<(), TrainError> {
        let per_image = images.len() / self.global;
        let (part, parts) = (self.part, self.parts());
        let mut exchanges = self.exchanges.borrow_mut();
        let mut breakdown = self.breakdown.borrow_mut();
        for (step_plan, exchange) in training.plans().iter().zip(exchanges.iter_mut()) {
            let plan = &step_plan.plan;
            let gradient_count = plan.gradients.len();
            let state_words = exchange.state_words(plan);
            for m in 0..self.micro_batches {
                let first = (self.group.rank() * self.micro_batches + m) * part;
                if state_words > 0 && self.micro_batches > 1 {
                    if m == 0 {
                        let all = exchange.read(gpu, plan)?;
                        exchange.start_state = all[all.len() - state_words..].to_vec();
                    } else {
                        exchange.upload(gpu, &exchange.start_state, gradient_count)?;
                    }
                }
                let batch = Batch {
                    images: &images[first * per_image..(first + part) * per_image],
                    labels: labels.map(|l| &l[first..first + part]),
                    indices: &indices[first..first + part],
                    first,
                    global: self.global,
                };
                training.write_batch(gpu, &batch, step)?;
                let start = Instant::now();
                plan.run_part(gpu, step, first as u64, Part::Gradients);
                gpu.wait()?;
                breakdown.compute += start.elapsed();

                let start = Instant::now();
                let values = exchange.read(gpu, plan)?;
                if m == 0 {
                    exchange.sums.copy_from_slice(&values);
                } else {
                    exchange.sums.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
                }
                breakdown.readback += start.elapsed();
            }

            if self.group.size() > 1 {
                let start = Instant::now();
                self.group.barrier();
                breakdown.waiting += start.elapsed();
            }
            let start = Instant::now();
            let mean = mean_over_ranks(self.group, &exchange.sums, parts);
            exchange.sums = mean;
            breakdown.all_reduce += start.elapsed();

            let start = Instant::now();
            exchange.upload(gpu, &exchange.sums, 0)?;
            gpu.queue.submit(std::iter::empty());
            gpu.wait()?;
            breakdown.upload += start.elapsed();

            let start = Instant::now();
            plan.run_part(gpu, step, 0, Part::Update);
            gpu.wait()?;
            plan.submit_error()?;
            breakdown.optimizer += start.elapsed();
        }
        breakdown.steps += 1;
        Ok(())
    }

    /// Each plan's loss sums since the last reset, as one process with the whole batch would report them: every
    /// part's sums added (micro-batches, then ranks in order) and divided by the parts.
    pub fn loss_sums(&self, gpu: &Gpu, training: &dyn Training) -> Result<Vec<Vec<f32>>, GpuError> {
        let local = training
            .plans()
            .iter()
            .map(|p| p.plan.read_loss_sums(gpu))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.mean_of(&local, self.parts()))
    }

    /// The last micro-batch's losses of each plan, averaged over the ranks: the same values on every rank, so the
    /// ranks agree on a NaN.
    pub fn losses(&self, gpu: &Gpu, training: &dyn Training) -> Result<Vec<Vec<f32>>, GpuError> {
        let local = training
            .plans()
            .iter()
            .map(|p| p.plan.read_losses(gpu))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.mean_of(&local, self.group.size()))
    }

    /// Per-plan values summed over the ranks in order and divided by `count`.
    fn mean_of(&self, local: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
        let flat: Vec<f32> = local.iter().flatten().copied().collect();
        let mut mean = mean_over_ranks(self.group, &flat, count).into_iter();
        local
            .iter()
            .map(|values| mean.by_ref().take(values.len()).collect())
            .collect()
    }

    /// Whether any rank raised `flag` (Ctrl-C): every rank stops at the same step.
    pub fn any(&self, flag: bool) -> bool {
        self.group.all_gather_u64(&[flag as u64]).contains(&1)
    }
}

/// Every rank's `local` added in rank order, divided by `count` (the identity for one rank and a count of 1).
pub fn mean_over_ranks(group: &dyn Group, local: &[f32], count: usize) -> Vec<f32> {
    let mut total = local.to_vec();
    if group.size() > 1 {
        let all = group.all_gather_f32(local);
        if !local.is_empty() {
            let mut ranks = all.chunks_exact(local.len());
            total.copy_from_slice(ranks.next().expect("rank 0's values"));
            for theirs in ranks {
                total.iter_mut().zip(theirs).for_each(|(t, v)| *t += v);
            }
        }
    }
    if count > 1 {
        let divisor = count as f32;
        total.iter_mut().for_each(|t| *t /= divisor);
    }
    total
}

/// Every buffer of `store` (values, optimizer state, EMA) in store order, with its parameter's name and elements.
fn store_buffers(store: &ParamStore) -> impl Iterator<Item = (&str, &GpuBuffer, usize)> {
    store.entries.iter().flat_map(|entry| {
        std::iter::once(&entry.value)
            .chain(entry.optimizer_state.iter().map(|(_, b)| b))
            .chain(entry.ema.iter())
            .map(move |b| (entry.name.as_str(), b.as_ref(), entry.len()))
    })
}

/// Makes every rank's store rank 0's: weights, optimizer state, EMA (waits for the GPU).
pub fn broadcast_store(gpu: &Gpu, store: &ParamStore, group: &dyn Group) -> Result<(), GpuError> {
    if group.size() == 1 {
        return Ok(());
    }
    for (_, buffer, _) in store_buffers(store) {
        let mut values: Vec<f32> = gpu.read(buffer)?;
        group.broadcast_f32(&mut values);
        gpu.write(buffer, &values)?;
    }
    gpu.wait()
}

/// FNV-1a (64 bits) over every name and tensor of `store`, the bytes of its elements (waits for the GPU).
pub fn store_hash(gpu: &Gpu, store: &ParamStore) -> Result<u64, GpuError> {
    let mut hash = Fnv::default();
    for (name, buffer, elements) in store_buffers(store) {
        hash.feed(name.as_bytes());
        let bytes = gpu.read::<u8>(buffer)?;
        hash.feed(&bytes[..(elements * 4).min(bytes.len())]);
    }
    Ok(hash.0)
}

/// Checks that every rank holds rank 0's weights after step `step`; where one does not (ranks on adapters that
/// round differently), says so and sends rank 0's store to every rank. Returns the weights' hash.
pub fn keep_ranks_agreed(gpu: &Gpu, store: &ParamStore, group: &dyn Group, step: u64) -> Result<u64, GpuError> {
    let hash = store_hash(gpu, store)?;
    let hashes = group.all_gather_u64(&[hash]);
    let differing: Vec<usize> = (1..hashes.len()).filter(|&r| hashes[r] != hashes[0]).collect();
    if !differing.is_empty() {
        if group.rank() == 0 {
            eprintln!(
                "warning: after step {step} the weights of rank(s) {differing:?} differ from rank 0's (hashes {:#018x} \
                 and {:#018x}): their adapters or drivers round differently; rank 0's weights were sent to every rank",
                hashes[differing[0]], hashes[0]
            );
        }
        broadcast_store(gpu, store, group)?;
    }
    Ok(hashes[0])
}

/// FNV-1a, 64 bits.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Refuses to start unless every rank runs the same binary with the same configuration and got through its setup:
/// each rank gives its setup's outcome (the configuration that must agree, as JSON text, or its error's message).
/// On failure every rank returns the same error, naming the first rank at fault; rank 0 prints it.
pub fn agree_on_start(group: &dyn Group, setup: Result<String, String>) -> Result<(), TrainError> {
    let binary = binary_hash();
    let (failed, text) = match setup {
        Ok(config) => (0u64, config),
        Err(message) => (1u64, message),
    };
    let status = group.all_gather_u64(&[failed, binary]);
    let texts = group.all_gather_text(&text);
    let ranks = group.size();
    if let Some(rank) = (0..ranks).find(|&r| status[2 * r] == 1) {
        return Err(TrainError::Ranks(format!("rank {rank} of {ranks}: {}", texts[rank])));
    }
    if let Some(rank) = (1..ranks).find(|&r| status[2 * r + 1] != status[1]) {
        return Err(TrainError::Ranks(format!(
            "rank {rank} runs a different latent binary from rank 0's (file hashes {:#018x} and {:#018x}); install \
             the same build on every machine",
            status[2 * rank + 1],
            status[1]
        )));
    }
    if let Some(rank) = (1..ranks).find(|&r| texts[r] != texts[0]) {
        return Err(TrainError::Ranks(format!(
            "rank {rank}'s training configuration differs from rank 0's ({}); give every rank the same command line",
            differences(&texts[0], &texts[rank])
        )));
    }
    Ok(())
}

/// The fields two configurations (JSON objects) disagree on, as `name: rank 0's vs the other's`.
fn differences(first: &str, second: &str) -> String {
    let parse =
        |text: &str| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text).unwrap_or_default();
    let (a, b) = (parse(first), parse(second));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} vs {}", a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A hash of this process's executable file (0 if it cannot be read): FNV-1a over its 64-bit words, as a debug
/// build is some 200 MB.
fn binary_hash() -> u64 {
    let Ok(bytes) = std::env::current_exe().and_then(std::fs::read) else {
        return 0;
    };
    let mut hash = Fnv::default().0 ^ bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for word in words.by_ref() {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        hash = (hash ^ word).wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &byte in words.remainder() {
        hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rank_means_divide_by_the_count_and_keep_the_order() {
        assert_eq!(mean_over_ranks(&Solo, &[2.0, -4.0], 2), vec![1.0, -2.0]);
        // A count of 1 leaves the bits alone (a negative zero stays negative).
        let same = mean_over_ranks(&Solo, &[-0.0, 3.0], 1);
        assert_eq!(same[0].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn texts_of_different_lengths_round_trip_through_the_gather() {
        assert_eq!(Solo.all_gather_text("héllo"), vec!["héllo".to_string()]);
    }

    #[test]
    fn differences_name_the_fields_that_disagree() {
        let text = differences(r#"{"seed":1,"batch":16}"#, r#"{"seed":2,"batch":16}"#);
        assert_eq!(text, "seed: 1 vs 2");
    }
}
