//! RePaint's resampling schedule (Lugmayr et al. 2022, `get_schedule_jump` of their code) over any sampler's
//! steps: walking down the S levels of the sampler, at every j-th level (0, j, 2j, ... below S - j) the walk jumps
//! back up j levels (re-noising with q(x_{t+j} | x_t)) and denoises them again, r - 1 times, so that the
//! generated region harmonises with the known one. r = 1 is plain inpainting.

use crate::error::TrainError;
use crate::kernels::diffusion::SampleStep;

/// One network evaluation of the walk: first an optional jump back (`renoise`: from level `t_prev` up to `t`;
/// equal levels when there is none), then the sampler's step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Iteration {
    pub renoise: SampleStep,
    pub step: SampleStep,
}

/// The levels visited, top to bottom, as RePaint's code lists them: S - 1 .. 0 with the jumps, then -1 (clean).
/// Level v is the state before step S - 1 - v of the sampler.
pub fn levels(steps: usize, jump: usize, resample: usize) -> Result<Vec<i64>, TrainError> {
    if resample == 0 {
        return Err(TrainError::Config(
            "--resample 0: give 1 for plain inpainting or more resamplings (RePaint uses 10)".into(),
        ));
    }
    if resample > 1 && (jump == 0 || jump >= steps) {
        return Err(TrainError::Config(format!(
            "--jump {jump}: the jump length must be between 1 and {} (one less than the sampler's {steps} steps)",
            steps.saturating_sub(1)
        )));
    }
    let mut jumps = vec![0usize; steps];
    if resample > 1 {
        for level in (0..steps - jump).step_by(jump) {
            jumps[level] = resample - 1;
        }
    }
    let mut t = steps as i64;
    let mut visited = Vec::new();
    while t >= 1 {
        t -= 1;
        visited.push(t);
        if jumps[t as usize] > 0 {
            jumps[t as usize] -= 1;
            for _ in 0..jump {
                t += 1;
                visited.push(t);
            }
        }
    }
    visited.push(-1);
    Ok(visited)
}

/// The walk over `steps` (a sampler's steps, top to bottom) with jump length `jump` and `resample` resamplings:
/// one [`Iteration`] per network evaluation.
pub fn schedule(steps: &[SampleStep], jump: usize, resample: usize) -> Result<Vec<Iteration>, TrainError> {
    let s = steps.len();
    let visited = levels(s, jump, resample)?;
    // The diffusion timestep of level v (-1 for clean data).
    let timestep = |v: i64| -> i32 {
        if v < 0 {
            -1
        } else {
            steps[s - 1 - v as usize].t as i32
        }
    };
    let mut iterations = Vec::new();
    let mut pending: Option<(i64, i64)> = None; // a jump from level a up to level b, not yet applied
    for pair in visited.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b > a {
            pending = Some((pending.map_or(a, |(from, _)| from), b));
            continue;
        }
        let step = steps[s - 1 - a as usize];
        let renoise = match pending.take() {
            Some((from, to)) => SampleStep::new(timestep(to) as u32, timestep(from)),
            None => SampleStep::new(step.t, step.t as i32),
        };
        iterations.push(Iteration { renoise, step });
    }
    Ok(iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S = 4 levels, j = 2, r = 2: one jump point at level 0, by hand from RePaint's loop.
    #[test]
    fn levels_match_a_hand_computed_walk() {
        assert_eq!(levels(4, 2, 2).unwrap(), vec![3, 2, 1, 0, 1, 2, 1, 0, -1]);
        // r = 3: the jump point at level 0 is revisited twice.
        assert_eq!(levels(4, 2, 3).unwrap(), vec![3, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1, 0, -1]);
        // S = 6, j = 2, r = 2: jump points at levels 0 and 2 (below S - j = 4).
        assert_eq!(
            levels(6, 2, 2).unwrap(),
            vec![5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
        );
        assert_eq!(
            levels(5, 2, 1).unwrap(),
            vec![4, 3, 2, 1, 0, -1],
            "r = 1 is the plain walk"
        );
    }

    #[test]
    fn the_schedule_re_noises_then_denoises_again() {
        // DDPM over T = 4: steps t -> t - 1.
        let steps: Vec<SampleStep> = (0..4).rev().map(SampleStep::ddpm).collect();
        let walk = schedule(&steps, 2, 2).unwrap();
        let denoised: Vec<(u32, i32)> = walk.iter().map(|i| (i.step.t, i.step.t_prev)).collect();
        assert_eq!(
            denoised,
            vec![(3, 2), (2, 1), (1, 0), (2, 1), (1, 0), (0, -1)],
            "3 steps, then back up to timestep 2 and down again, then the last step"
        );
        let jumps: Vec<(i32, u32)> = walk
            .iter()
            .filter(|i| i.renoise.t as i32 != i.renoise.t_prev)
            .map(|i| (i.renoise.t_prev, i.renoise.t))
            .collect();
        assert_eq!(jumps, vec![(0, 2)], "one jump, from timestep 0 up to timestep 2");
        assert_eq!(walk.len(), 4 + 2, "S + (jump points) (r - 1) j network evaluations");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(levels(10, 3, 0).is_err());
        assert!(levels(10, 0, 2).is_err());
        assert!(levels(10, 10, 2).is_err());
        assert!(levels(10, 10, 1).is_ok(), "the jump is not used without resampling");
    }
}
