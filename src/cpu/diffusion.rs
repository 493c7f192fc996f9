//! CPU twin of `shaders/diffusion.wgsl`, in f64 from the same f32 schedule table the GPU reads.

use crate::kernels::diffusion::{SampleStep, ScheduleRow};

fn row(rows: &[ScheduleRow], t: u32) -> ScheduleRow {
    rows[(t as usize).min(rows.len() - 1)]
}

/// (sqrt(alpha_bar), sqrt(1 - alpha_bar)) at a timestep that may be -1 (clean data: 1 and 0).
fn signal_noise(rows: &[ScheduleRow], t: i32) -> (f64, f64) {
    if t < 0 {
        return (1.0, 0.0);
    }
    let r = row(rows, t as u32);
    (r.sqrt_alpha_bar as f64, r.sqrt_one_minus_alpha_bar as f64)
}

/// x_t = sqrt(ab[t_s]) x0 + sqrt(1 - ab[t_s]) eps, sample s = i / per_sample.
pub fn q_sample(rows: &[ScheduleRow], x0: &[f64], eps: &[f64], t: &[u32], per_sample: usize) -> Vec<f64> {
    (0..x0.len())
        .map(|i| {
            let r = row(rows, t[i / per_sample]);
            r.sqrt_alpha_bar as f64 * x0[i] + r.sqrt_one_minus_alpha_bar as f64 * eps[i]
        })
        .collect()
}

/// Algorithm 2's step from t to t - 1, in place.
pub fn ddpm_step(rows: &[ScheduleRow], x: &mut [f64], eps_theta: &[f64], z: &[f64], step: SampleStep, clamp: bool) {
    let r = row(rows, step.t);
    for i in 0..x.len() {
        let mut value = r.inv_sqrt_alpha as f64 * (x[i] - r.eps_coef as f64 * eps_theta[i]);
        if step.t > 0 {
            value += r.sigma as f64 * z[i];
        } else if clamp {
            value = value.clamp(-1.0, 1.0);
        }
        x[i] = value;
    }
}

/// DDIM (eta = 0) from t to t_prev, in place.
pub fn ddim_step(rows: &[ScheduleRow], x: &mut [f64], eps_theta: &[f64], step: SampleStep, clamp: bool) {
    let (sqrt_ab, sqrt_one_minus_ab) = signal_noise(rows, step.t as i32);
    let (sqrt_ab_prev, sqrt_one_minus_ab_prev) = signal_noise(rows, step.t_prev);
    for i in 0..x.len() {
        let x0_pred = (x[i] - sqrt_one_minus_ab * eps_theta[i]) / sqrt_ab;
        x[i] = if step.t_prev < 0 {
            if clamp {
                x0_pred.clamp(-1.0, 1.0)
            } else {
                x0_pred
            }
        } else {
            sqrt_ab_prev * x0_pred + sqrt_one_minus_ab_prev * eps_theta[i]
        };
    }
}

/// The DDIM step with noise eta: x = sqrt(ab') x0_pred + sqrt(1 - ab' - sigma²) eps + sigma z (x0_pred at -1).
pub fn ddim_eta_step(rows: &[ScheduleRow], x: &mut [f64], eps: &[f64], z: &[f64], step: SampleStep, eta: f64) {
    let (sqrt_ab, sqrt_one_minus_ab) = signal_noise(rows, step.t as i32);
    let (sqrt_ab_prev, _) = signal_noise(rows, step.t_prev);
    let (ab, ab_prev) = (sqrt_ab * sqrt_ab, sqrt_ab_prev * sqrt_ab_prev);
    let sigma = eta * ((1.0 - ab_prev) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_prev).max(0.0).sqrt();
    for i in 0..x.len() {
        let x0_pred = (x[i] - sqrt_one_minus_ab * eps[i]) / sqrt_ab;
        x[i] = if step.t_prev < 0 {
            x0_pred
        } else {
            sqrt_ab_prev * x0_pred + (1.0 - ab_prev - sigma * sigma).max(0.0).sqrt() * eps[i] + sigma * z[i]
        };
    }
}

/// x = mask known + (1 - mask) x, known = q_sample(x0, t_prev) with noise z (x0 itself at t_prev = -1).
pub fn inpaint_mix(rows: &[ScheduleRow], x: &mut [f64], x0: &[f64], z: &[f64], mask: &[f64], step: SampleStep) {
    let (sqrt_ab, sqrt_one_minus_ab) = signal_noise(rows, step.t_prev);
    for i in 0..x.len() {
        let known = if step.t_prev < 0 {
            x0[i]
        } else {
            sqrt_ab * x0[i] + sqrt_one_minus_ab * z[i]
        };
        let m = mask[i % mask.len()];
        x[i] = m * known + (1.0 - m) * x[i];
    }
}

/// RePaint's jump back: x at level step.t_prev re-noised to level step.t, x = r x + sqrt(1 - r²) z with
/// r = sqrt(ab_t / ab_t_prev).
pub fn renoise(rows: &[ScheduleRow], x: &mut [f64], z: &[f64], step: SampleStep) {
    let (from, _) = signal_noise(rows, step.t_prev);
    let (to, _) = signal_noise(rows, step.t as i32);
    let r = to / from;
    for (v, e) in x.iter_mut().zip(z) {
        *v = r * *v + (1.0 - r * r).max(0.0).sqrt() * e;
    }
}

/// emb[s] = cat(sin(t_s f), cos(t_s f)), the angle t_s f rounded to f32 as the GPU (and PyTorch) computes it.
pub fn timestep_embedding(t: &[u32], frequencies: &[f32]) -> Vec<f64> {
    let mut emb = Vec::with_capacity(t.len() * 2 * frequencies.len());
    for &timestep in t {
        let angles: Vec<f64> = frequencies.iter().map(|&f| (timestep as f32 * f) as f64).collect();
        emb.extend(angles.iter().map(|a| a.sin()));
        emb.extend(angles.iter().map(|a| a.cos()));
    }
    emb
}
