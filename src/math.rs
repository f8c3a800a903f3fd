//! Elementary functions with the same result on every machine.
//!
//! The standard library's `exp`, `ln`, `ln_1p` and `powf` call the platform's C library, and
//! glibc picks its implementation when the process starts by what the processor offers: on this
//! project's VM, its FMA variants and its plain ones disagree in the last bit on about one input
//! in 1 500 (`exp` 194, `log1p` 237 and `log` 70 of 300 000 random inputs). A model learned on
//! one machine would then not be the model replay computes on another. Everything that decides
//! the model's bits — the sigmoid and log loss, the feature transform, the learning-rate
//! schedule, the quality metrics the guard reads — goes through these instead: `exp` below,
//! and the `libm` crate's pure-Rust ports of musl's `log`, `log1p` and `pow`, all of which
//! compile to the same arithmetic everywhere (Rust never contracts a multiply and an add into
//! an FMA on its own). Drift statistics and the
//! simulator still use the standard library: they report, and generate test data.

/// e^x within 1 ulp (2 in the subnormal range), as 2^m · 2^(j/64) · e^r: k = round(x·64/ln 2)
/// = 64m + j, r = x − k·ln 2/64 (|r| ≤ ln 2/128, reduced in two steps so that k·ln 2/64 is
/// exact to well below an ulp), e^r − 1 by its Taylor polynomial of degree 5 (the next term is
/// below 4·10⁻¹⁷), 2^(j/64) from a table. The same scheme as glibc's `exp`, with a smaller
/// table and no tail correction; `libm::exp` (fdlibm's rational approximation) kept the bits
/// portable too but cost 20 ns more per call, a seventh of a score and update.
#[inline]
pub fn exp(x: f64) -> f64 {
    // Beyond these, e^x is above f64::MAX or below half the smallest subnormal (one test on
    // the common path; NaN fails it too).
    if !(-745.133_219_101_941_2..=709.782_712_893_384).contains(&x) {
        return if x.is_nan() {
            x
        } else if x > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
    }
    // 64/ln 2, and ln 2/64 split in two: the high part (fdlibm's ln2_hi / 64) has its low 21
    // bits zero, so k·hi is exact for every |k| < 2^21 (here |k| ≤ 68 800).
    const INV: f64 = 92.332_482_616_893_66;
    const HI: f64 = 6.931_471_803_691_238e-1 / 64.0;
    const LO: f64 = 1.908_214_929_270_587_7e-10 / 64.0;
    // Round to the nearest integer by adding 1.5·2^52: k sits in the low bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let kd = x * INV + SHIFT;
    let k = kd.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    let kf = kd - SHIFT;
    let r = (x - kf * HI) - kf * LO;
    let r2 = r * r;
    let p = r + r2 * (0.5 + r * (1.0 / 6.0)) + (r2 * r2) * (1.0 / 24.0 + r * (1.0 / 120.0));
    let (t, m) = (EXP2_64[(k & 63) as usize], k >> 6);
    if (-1021..=1022).contains(&m) {
        // 2^m folded into the table entry's exponent: t·2^m and the result are normal, so this
        // rounds exactly as (t + t·p)·2^m does.
        let st = f64::from_bits(t.wrapping_add((m as u64) << 52));
        return st + st * p;
    }
    let t = f64::from_bits(t);
    scale(t + t * p, m)
}

/// y · 2^m for the exponents `exp` leaves to it (m < −1021 or m > 1022, |m| ≤ 1100), in two
/// normal factors, so a subnormal result is rounded once.
#[inline]
fn scale(y: f64, m: i64) -> f64 {
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    let half = m / 2;
    y * pow2(half) * pow2(m - half)
}

/// 2^(j/64), j = 0..63, each the nearest double: `float(Decimal(2) ** (Decimal(j) / 64))` in
/// Python with `getcontext().prec = 60`.
const EXP2_64: [u64; 64] = [
    0x3ff0000000000000,
    0x3ff02c9a3e778061,
    0x3ff059b0d3158574,
    0x3ff0874518759bc8,
    0x3ff0b5586cf9890f,
    0x3ff0e3ec32d3d1a2,
    0x3ff11301d0125b51,
    0x3ff1429aaea92de0,
    0x3ff172b83c7d517b,
    0x3ff1a35beb6fcb75,
    0x3ff1d4873168b9aa,
    0x3ff2063b88628cd6,
    0x3ff2387a6e756238,
    0x3ff26b4565e27cdd,
    0x3ff29e9df51fdee1,
    0x3ff2d285a6e4030b,
    0x3ff306fe0a31b715,
    0x3ff33c08b26416ff,
    0x3ff371a7373aa9cb,
    0x3ff3a7db34e59ff7,
    0x3ff3dea64c123422,
    0x3ff4160a21f72e2a,
    0x3ff44e086061892d,
    0x3ff486a2b5c13cd0,
    0x3ff4bfdad5362a27,
    0x3ff4f9b2769d2ca7,
    0x3ff5342b569d4f82,
    0x3ff56f4736b527da,
    0x3ff5ab07dd485429,
    0x3ff5e76f15ad2148,
    0x3ff6247eb03a5585,
    0x3ff6623882552225,
    0x3ff6a09e667f3bcd,
    0x3ff6dfb23c651a2f,
    0x3ff71f75e8ec5f74,
    0x3ff75feb564267c9,
    0x3ff7a11473eb0187,
    0x3ff7e2f336cf4e62,
    0x3ff82589994cce13,
    0x3ff868d99b4492ed,
    0x3ff8ace5422aa0db,
    0x3ff8f1ae99157736,
    0x3ff93737b0cdc5e5,
    0x3ff97d829fde4e50,
    0x3ff9c49182a3f090,
    0x3ffa0c667b5de565,
    0x3ffa5503b23e255d,
    0x3ffa9e6b5579fdbf,
    0x3ffae89f995ad3ad,
    0x3ffb33a2b84f15fb,
    0x3ffb7f76f2fb5e47,
    0x3ffbcc1e904bc1d2,
    0x3ffc199bdd85529c,
    0x3ffc67f12e57d14b,
    0x3ffcb720dcef9069,
    0x3ffd072d4a07897c,
    0x3ffd5818dcfba487,
    0x3ffda9e603db3285,
    0x3ffdfc97337b9b5f,
    0x3ffe502ee78b3ff6,
    0x3ffea4afa2a490da,
    0x3ffefa1bee615a27,
    0x3fff50765b6e4540,
    0x3fffa7c1819e90d8,
];

/// ln(x).
#[inline]
pub fn ln(x: f64) -> f64 {
    libm::log(x)
}

/// ln(1 + x), accurate near 0.
#[inline]
pub fn ln_1p(x: f64) -> f64 {
    libm::log1p(x)
}

/// x^y.
#[inline]
pub fn powf(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite doubles of the same sign.
    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    /// Against the C library's `exp` (glibc: < 0.52 ulp), on a million arguments spread over
    /// the whole range and dense where the sigmoid lives: within 1 ulp, 2 for subnormal results.
    #[test]
    fn exp_is_within_an_ulp_of_the_c_library() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut worst = 0;
        for i in 0..1_000_000 {
            let x = match i % 3 {
                0 => -745.0 + 1454.7 * next(),
                1 => -40.0 + 80.0 * next(),
                _ => -1.0 + 2.0 * next(),
            };
            let (got, want) = (exp(x), x.exp());
            let tol = if want < f64::MIN_POSITIVE { 2 } else { 1 };
            let d = ulps(got, want);
            assert!(
                d <= tol,
                "exp({x:e}) = {got:e}, C library {want:e}: {d} ulps"
            );
            worst = worst.max(d);
        }
        assert!(worst <= 1);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert!(ulps(exp(1.0), std::f64::consts::E) <= 1);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(710.0), f64::INFINITY);
        assert_eq!(exp(-746.0), 0.0);
        assert!(exp(709.78).is_finite() && exp(709.78) > 1e308);
        assert!(exp(-745.0) > 0.0, "the smallest subnormal");
        // The table: 2^(32/64) = √2, 2^(16/64) = ⁴√2.
        assert_eq!(f64::from_bits(EXP2_64[32]), std::f64::consts::SQRT_2);
        assert_eq!(f64::from_bits(EXP2_64[16]), 2f64.sqrt().sqrt());
    }

    /// The bits every machine must produce, pinned so that a change of implementation (or of
    /// the `libm` crate's version) that would re-map learned models shows up here. Computed once
    /// with these functions on 2026-11-30; `exp`'s are within 1 ulp of glibc's (test above),
    /// `ln`, `ln_1p` and `powf` are the `libm` crate 0.2.16's (musl's algorithms).
    #[test]
    fn golden_bits() {
        let exp_golden = [
            (-700.5, 0x00c4_ff47_5c68_ca02u64),
            (-40.0, 0x3c53_9792_499b_1a24),
            (-2.5, 0x3fb5_0385_c094_f425),
            (-1e-9, 0x3fef_ffff_ff76_8fa1),
            (0.5, 0x3ffa_6129_8e1e_069c),
            (1.0, 0x4005_bf0a_8b14_5769),
            (3.75, 0x4045_42b2_d0a2_66e7),
            (20.0, 0x41bc_eb08_8b68_e804),
            (700.25, 0x7f12_fd8e_4cbf_a413),
        ];
        for (x, bits) in exp_golden {
            assert_eq!(exp(x).to_bits(), bits, "exp({x})");
        }
        let ln_golden = [
            (1e-12, 0x3d71_9799_812d_e065u64, 0xc03b_a18a_998f_ffa0u64),
            (0.25, 0x3fcc_8ff7_c79a_9a22, 0xbff6_2e42_fefa_39ef),
            (12.5, 0x4004_d24e_f844_f614, 0x4004_34b1_382e_feb8),
            (1234.5678, 0x401c_7a26_1545_ef30, 0x401c_7951_d517_91d7),
        ];
        for (x, log1p_bits, log_bits) in ln_golden {
            assert_eq!(ln_1p(x).to_bits(), log1p_bits, "ln_1p({x})");
            assert_eq!(ln(x).to_bits(), log_bits, "ln({x})");
        }
        assert_eq!(powf(1001.0, 0.25).to_bits(), 0x4016_7fd0_70ff_6be9);
        assert_eq!(powf(12345.0, 0.5).to_bits(), 0x405b_c6ea_61ac_33c6);
    }
}
