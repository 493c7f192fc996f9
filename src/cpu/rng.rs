//! CPU twin of `shaders/shared/philox.wgsl` and `shaders/rng.wgsl`: the same u32 words, bit for bit, and the
//! same float conversions (uniforms exactly, normals in f64 from the same words).

use crate::kernels::rng::Draw;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// The 64-bit product as (high word, low word).
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let product = a as u64 * b as u64;
    ((product >> 32) as u32, product as u32)
}

fn round(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (hi0, lo0) = mulhilo(M0, counter[0]);
    let (hi1, lo1) = mulhilo(M1, counter[2]);
    [hi1 ^ counter[1] ^ key[0], lo1, hi0 ^ counter[3] ^ key[1], lo0]
}

/// Philox 4x32-10: four u32 words from a 128-bit counter and a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for r in 0..10 {
        if r > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        c = round(c, k);
    }
    c
}

/// The four words of block `block` of a fill.
pub fn block(draw: Draw, block: u32) -> [u32; 4] {
    philox4x32_10(draw.counter(block), draw.key())
}

/// The first `n` words: element i is word i % 4 of block i / 4.
pub fn bits(draw: Draw, n: usize) -> Vec<u32> {
    (0..n).map(|i| block(draw, (i / 4) as u32)[i % 4]).collect()
}

/// The top 24 bits as a float in [0, 1).
pub fn uniform_from_bits(bits: u32) -> f64 {
    (bits >> 8) as f64 / 16_777_216.0
}

/// The top 24 bits as a float in (0, 1], never 0.
pub fn uniform_open_zero_from_bits(bits: u32) -> f64 {
    ((bits >> 8) + 1) as f64 / 16_777_216.0
}

/// Box-Muller: r = sqrt(-2 ln u1), theta = 2 pi u2, (r cos theta, r sin theta), in f64 (the shader has its own
/// log, cos and sin, accurate to a few ulp).
pub fn box_muller(bits1: u32, bits2: u32) -> [f64; 2] {
    let u1 = uniform_open_zero_from_bits(bits1);
    let u2 = uniform_from_bits(bits2);
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    [r * theta.cos(), r * theta.sin()]
}

/// Uniform [0, 1) floats: element i from word i.
pub fn uniform(draw: Draw, n: usize) -> Vec<f64> {
    bits(draw, n).into_iter().map(uniform_from_bits).collect()
}

/// Standard normals: elements 4b, 4b+1 from words (x, y) of block b, 4b+2, 4b+3 from (z, w).
pub fn normal(draw: Draw, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let words = block(draw, (i / 4) as u32);
            let pair = (i % 4) / 2;
            box_muller(words[2 * pair], words[2 * pair + 1])[i % 2]
        })
        .collect()
}
