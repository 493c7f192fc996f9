// Philox 4x32-10, the counter-based random generator of Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3" (SC 2011), with the constants of Random123, cuRAND and PyTorch. Stateless: a 128-bit counter and a
// 64-bit key give four independent uniform u32 values. Give every draw its own counter and the result does not
// depend on the launch (workgroup size, GPU).
//
// latent's convention (src/kernels/rng.rs, src/cpu/rng.rs): key = the 64-bit seed as (low word, high word);
// counter = (block, stream, step low word, step high word), where element i of a filled buffer is word i % 4
// of block (offset + i / 4).
//
// Usage:  let words = philox4x32_10(vec4<u32>(block, stream, step_lo, step_hi), vec2<u32>(seed_lo, seed_hi));
//         let u = uniform_from_bits(words.x);   // in [0, 1)

const PHILOX_M0: u32 = 0xD2511F53u;  // round multipliers
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;  // key schedule increments (golden ratio, sqrt(3) - 1)
const PHILOX_W1: u32 = 0xBB67AE85u;

// The full 64-bit product a * b as (high word, low word), from 16-bit halves (WGSL has no 64-bit integers).
fn philox_mulhilo(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_lo = a_hi * b_lo;
    let hi_hi = a_hi * b_hi;
    // Carry out of the low word: the middle terms' low halves added to the top half of lo_lo (< 3 * 2^16).
    let middle = (lo_lo >> 16u) + (lo_hi & 0xFFFFu) + (hi_lo & 0xFFFFu);
    let high = hi_hi + (lo_hi >> 16u) + (hi_lo >> 16u) + (middle >> 16u);
    return vec2<u32>(high, a * b);
}

// One round: two multiplications mix the counter words, the key is xored in.
fn philox_round(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    let p0 = philox_mulhilo(PHILOX_M0, counter.x);
    let p1 = philox_mulhilo(PHILOX_M1, counter.z);
    return vec4<u32>(p1.x ^ counter.y ^ key.x, p1.y, p0.x ^ counter.w ^ key.y, p0.y);
}

// Ten rounds, the key bumped by the Weyl increments between rounds.
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if round > 0u {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        c = philox_round(c, k);
    }
    return c;
}

// The top 24 bits as a float in [0, 1): exact, every value a multiple of 2^-24, never 1.
fn uniform_from_bits(bits: u32) -> f32 {
    return f32(bits >> 8u) * (1.0 / 16777216.0);
}

// The top 24 bits as a float in (0, 1]: never 0, so log() of it is finite (Box-Muller's radius).
fn uniform_open_zero_from_bits(bits: u32) -> f32 {
    return f32((bits >> 8u) + 1u) * (1.0 / 16777216.0);
}

// ln(u) for u in (0, 1], to a few ulp relative everywhere (also near u = 1, where ln u is tiny and a builtin log
// with an absolute error bound, as WGSL allows, would lose every digit), from + - * / only, so that it varies
// little between GPUs. u = m 2^e with m in [sqrt(1/2), sqrt(2)):
// ln u = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, and 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...).
const LN2_HI: f32 = 0.693145751953125;         // ln 2 to 16 bits: e * LN2_HI is exact
const LN2_LO: f32 = 1.4286068203094172321e-6;  // ln 2 - LN2_HI
fn philox_ln_unit(u: f32) -> f32 {
    let parts = frexp(u);  // u = fract 2^exp, fract in [0.5, 1)
    var m = parts.fract;
    var e = f32(parts.exp);
    if m < 0.70710678 {
        m = 2.0 * m;
        e = e - 1.0;
    }
    let s = (m - 1.0) / (m + 1.0);  // m - 1 is exact
    let s2 = s * s;
    // Terms to s^11: the first left out is under 2e-12 relative.
    let series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 / 11.0)))));
    return e * LN2_HI + (e * LN2_LO + series);
}

// (cos 2 pi t, sin 2 pi t) for t in [0, 1) a multiple of 2^-24, to about 1e-7 absolute, from + - * only.
// Builtin cos and sin only promise 2^-11 absolute in [-pi, pi] (and nothing outside): too coarse near zero.
// 2 pi t = q pi/2 + a with q an integer and |a| <= pi/4 (4 t is exact, so is the split), then Taylor series.
const HALF_PI: f32 = 1.5707963267948966;
fn philox_sincos_turns(t: f32) -> vec2<f32> {
    let quarters = 4.0 * t;
    var q = floor(quarters);
    var f = quarters - q;  // in [0, 1), exact
    if f >= 0.5 {
        f = f - 1.0;
        q = q + 1.0;
    }
    let a = f * HALF_PI;  // |a| <= pi/4
    let a2 = a * a;
    // Terms to a^9 and a^10: the first left out is under 2e-9.
    let s = a * (1.0 + a2 * (-1.0 / 6.0 + a2 * (1.0 / 120.0 + a2 * (-1.0 / 5040.0 + a2 / 362880.0))));
    let c = 1.0 + a2 * (-0.5 + a2 * (1.0 / 24.0 + a2 * (-1.0 / 720.0 + a2 * (1.0 / 40320.0 - a2 / 3628800.0))));
    // cos and sin of q pi/2 + a.
    switch u32(q) % 4u {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

// Box-Muller: two uniform words to two independent standard normals,
// r = sqrt(-2 ln u1), theta = 2 pi u2, (r cos theta, r sin theta), with u1 in (0, 1] and u2 in [0, 1).
fn box_muller(bits1: u32, bits2: u32) -> vec2<f32> {
    let r = sqrt(-2.0 * philox_ln_unit(uniform_open_zero_from_bits(bits1)));
    return r * philox_sincos_turns(uniform_from_bits(bits2));
}
