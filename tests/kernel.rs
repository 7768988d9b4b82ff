//! The affinity kernels against the reference.
//!
//! Every kernel this CPU can run ([`Kernel::available`]: scalar, AVX2, AVX-512 VNNI, NEON, …) is
//! checked against [`scalar::reference_class_affinity`] (f64, dequantised keys, f32 query) for
//! random shapes, with error bounds derived from the arithmetic (f32 accumulation, the i16 query
//! step), and its int8 similarities bit for bit against the scalar kernel's. The accuracy test
//! measures what int8 and fp16 keys cost on realistic unit vectors.
//!
//! Runs without the runtime: `cargo test --no-default-features --test kernel`.

use half::f16;
use proptest::prelude::*;
use tipedge::kernel::{
    l2_normalize_rows, quantize_key_i8, query_i16_max, scalar, Isa, Kernel, KeyData, KeyDtype,
    Keys, Scratch, MAX_BATCH,
};

// ---------------------------------------------------------------------------------------------
// Data

/// splitmix64: deterministic, fast, good enough for test vectors.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn unit_rows(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..rows * dim).map(|_| rng.gauss()).collect();
    l2_normalize_rows(&mut v, dim);
    v
}

/// One set of keys in all three storage types, with their class offsets.
struct KeySet {
    dim: usize,
    offsets: Vec<u32>,
    f32: Vec<f32>,
    f16: Vec<f16>,
    i8: Vec<i8>,
    scales: Vec<f32>,
}

impl KeySet {
    fn new(dim: usize, keys: Vec<f32>, offsets: Vec<u32>) -> KeySet {
        let f16 = keys.iter().map(|&x| f16::from_f32(x)).collect();
        let mut i8 = vec![0i8; keys.len()];
        let scales = keys
            .chunks_exact(dim)
            .zip(i8.chunks_exact_mut(dim))
            .map(|(k, q)| quantize_key_i8(k, q))
            .collect();
        KeySet {
            dim,
            offsets,
            f32: keys,
            f16,
            i8,
            scales,
        }
    }
    fn keys(&self, dtype: KeyDtype) -> Keys<'_> {
        let data = match dtype {
            KeyDtype::F32 => KeyData::F32(&self.f32),
            KeyDtype::F16 => KeyData::F16(&self.f16),
            KeyDtype::I8 => KeyData::I8 {
                values: &self.i8,
                scales: &self.scales,
            },
        };
        Keys::new(self.dim, data, &self.offsets).unwrap()
    }
}

const DTYPES: [KeyDtype; 3] = [KeyDtype::F32, KeyDtype::F16, KeyDtype::I8];

// ---------------------------------------------------------------------------------------------
// Error bounds

/// Largest error a kernel may make on `q·k` (k dequantised, in f64):
/// f32 accumulation — at most `dim/8` terms per lane, then a reduction tree and the tail —
/// `(dim/8 + 24) · 2⁻²³ · Σ|q_t k_t|`; and for int8 keys the i16 query, whose values are off by
/// at most half a step, `Σ|k_t| · step/2`, plus the i32→f32 conversion and scale products.
fn sim_bound(q: &[f32], k: &[f64], dtype: KeyDtype) -> f64 {
    let dim = q.len();
    let abs: f64 = q.iter().zip(k).map(|(&x, y)| (x as f64 * y).abs()).sum();
    let float = (dim as f64 / 8.0 + 24.0) * f64::powi(2.0, -23) * abs + 1e-12;
    if dtype != KeyDtype::I8 {
        return float;
    }
    let absmax = q.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let step = absmax / query_i16_max(dim) as f64;
    let l1: f64 = k.iter().map(|x| x.abs()).sum();
    float + l1 * step * 0.5001 + 4.0 * f64::powi(2.0, -24) * abs
}

/// `q·k` in f64 and its bound, for every query `b` and key `i`: `[b][i]`.
fn truth(queries: &[f32], keys: &Keys<'_>) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let dim = keys.dim();
    let deq: Vec<Vec<f64>> = (0..keys.len()).map(|i| scalar::key_f64(keys, i)).collect();
    let mut sims = Vec::new();
    let mut bounds = Vec::new();
    for q in queries.chunks_exact(dim) {
        sims.push(
            deq.iter()
                .map(|k| k.iter().zip(q).map(|(a, &b)| a * b as f64).sum())
                .collect(),
        );
        bounds.push(deq.iter().map(|k| sim_bound(q, k, keys.dtype())).collect());
    }
    (sims, bounds)
}

/// Checks `got` (batch × classes, from a kernel) against the reference, each class sum within
/// the sum of its keys' affinity bounds `A_i · (e^{β·bound_i} − 1)` plus exp and summation
/// rounding. Empty classes must be exactly 0.
fn check_class_affinity(
    what: &str,
    got: &[f32],
    queries: &[f32],
    keys: &Keys<'_>,
    beta: f32,
    truth: &(Vec<Vec<f64>>, Vec<Vec<f64>>),
) -> Result<(), TestCaseError> {
    let reference = scalar::reference_class_affinity(queries, keys, beta as f64);
    let (sims, bounds) = truth;
    let nc = keys.n_classes();
    let off = keys.class_offsets();
    for (b, row) in reference.iter().enumerate() {
        for (c, &want) in row.iter().enumerate() {
            let have = got[b * nc + c] as f64;
            let keys_c = off[c] as usize..off[c + 1] as usize;
            let n_c = keys_c.len() as f64;
            let bound: f64 = keys_c
                .map(|i| {
                    let a = (-(beta as f64) * (1.0 - sims[b][i])).exp();
                    a * ((beta as f64 * bounds[b][i]).exp_m1() + 2e-6)
                })
                .sum::<f64>()
                + want * (n_c + 8.0) * f64::powi(2.0, -23);
            prop_assert!(
                (have - want).abs() <= bound,
                "{what}: query {b} class {c}: {have} vs reference {want} (bound {bound:e})"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One case: every kernel, every dtype, both entry points

#[derive(Debug, Clone)]
struct Case {
    dim: usize,
    n: usize,
    batch: usize,
    classes: usize,
    seed: u64,
    beta: f32,
}

impl Case {
    fn build(&self) -> (KeySet, Vec<f32>) {
        let mut rng = Rng(self.seed);
        let keys = unit_rows(&mut rng, self.n, self.dim);
        let queries = unit_rows(&mut rng, self.batch, self.dim);
        // Random cut points, duplicates allowed: empty classes, also at either end.
        let mut cuts: Vec<u32> = (1..self.classes)
            .map(|_| rng.below(self.n + 1) as u32)
            .collect();
        cuts.sort_unstable();
        let mut offsets = vec![0];
        offsets.extend(cuts);
        offsets.push(self.n as u32);
        (KeySet::new(self.dim, keys, offsets), queries)
    }
}

fn check_case(case: &Case) -> Result<(), TestCaseError> {
    let (set, queries) = case.build();
    let (n, dim, batch) = (case.n, case.dim, case.batch);
    let kernels = Kernel::available();
    let mut scratch = Scratch::new(dim);
    for dtype in DTYPES {
        let keys = set.keys(dtype);
        let truth = truth(&queries, &keys);
        let mut scalar_sims = vec![0f32; batch * n];
        Kernel::scalar()
            .similarities(&queries, &keys, &mut scratch, &mut scalar_sims)
            .unwrap();
        for kernel in &kernels {
            let what = format!("{} {dtype} {case:?}", kernel.isa());
            let mut out = vec![f32::NAN; batch * keys.n_classes()];
            kernel
                .class_affinity(&queries, &keys, case.beta, &mut scratch, &mut out)
                .unwrap();
            check_class_affinity(&what, &out, &queries, &keys, case.beta, &truth)?;

            let mut sims = vec![f32::NAN; batch * n];
            kernel
                .similarities(&queries, &keys, &mut scratch, &mut sims)
                .unwrap();
            for b in 0..batch {
                for i in 0..n {
                    let (have, want) = (sims[b * n + i] as f64, truth.0[b][i]);
                    prop_assert!(
                        (have - want).abs() <= truth.1[b][i],
                        "{what}: similarity query {b} key {i}: {have} vs {want} (bound {:e})",
                        truth.1[b][i]
                    );
                }
            }
            if dtype == KeyDtype::I8 {
                // Integer dot products are exact and scaled by the same expression.
                for (j, (x, y)) in sims.iter().zip(&scalar_sims).enumerate() {
                    prop_assert!(
                        x.to_bits() == y.to_bits(),
                        "{what}: int8 similarity {j}: {x} vs scalar kernel {y}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Dimensions: small and odd (tails), around the lane widths, up to 2048.
fn dims() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..=70,
        2 => 71usize..=700,
        1 => 701usize..=2048,
        1 => Just(512),
        1 => Just(2048),
    ]
}

/// Key counts: none, a partial tile, several tiles.
fn key_counts() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => 1usize..=70,
        2 => 71usize..=300,
    ]
}

fn cases() -> impl Strategy<Value = Case> {
    (
        dims(),
        key_counts(),
        1..=MAX_BATCH,
        1usize..=12,
        any::<u64>(),
        0.5f32..10.0,
    )
        .prop_map(|(dim, n, batch, classes, seed, beta)| {
            // Keep each case's f64 reference work moderate (debug builds run this).
            let n = n.min(1_500_000 / (dim * batch)).max(usize::from(n > 0));
            Case {
                dim,
                n,
                batch,
                classes,
                seed,
                beta,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// class_affinity and similarities of every available kernel, all dtypes, vs the reference.
    #[test]
    fn kernels_match_the_reference(case in cases()) {
        check_case(&case)?;
    }
}

/// Every tile length 0..=130 around the 64-key tile and the register blocks, with dims around
/// every lane width (tails) and batches around the 4-query block; and key counts whose
/// four-stream walk (batches of 1–3, x86_64) ends in a short tile and leaves `n % 4` keys
/// (259 = 4 × 64 + 3, 263 = 4 × 65 + 3).
#[test]
fn every_tile_length_tail_and_batch() {
    let dims = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100];
    let ns = [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 63, 64, 65, 130, 259, 263];
    let batches = [1, 2, 3, 4, 5, 8, 13, 16, 32];
    let mut seed = 1;
    for &dim in &dims {
        for &n in &ns {
            for &batch in &batches {
                seed += 1;
                let case = Case {
                    dim,
                    n,
                    batch,
                    classes: 1 + (seed as usize % 5),
                    seed,
                    beta: 3.0,
                };
                if let Err(e) = check_case(&case) {
                    panic!("{e}");
                }
            }
        }
    }
}

#[test]
fn empty_classes_are_zero_and_a_single_class_sums_everything() {
    let dim = 40;
    let mut rng = Rng(7);
    let queries = unit_rows(&mut rng, 2, dim);
    for kernel in Kernel::available() {
        let mut scratch = Scratch::new(dim);
        // No keys at all, three (empty) classes.
        let set = KeySet::new(dim, vec![], vec![0, 0, 0, 0]);
        for dtype in DTYPES {
            let mut out = vec![f32::NAN; 2 * 3];
            kernel
                .class_affinity(&queries, &set.keys(dtype), 2.0, &mut scratch, &mut out)
                .unwrap();
            assert_eq!(out, vec![0.0; 6], "{} {dtype}", kernel.isa());
        }
        // One class of 100 keys equal to the first query: 100 · exp(0) for it.
        let keys: Vec<f32> = (0..100).flat_map(|_| queries[..dim].to_vec()).collect();
        let set = KeySet::new(dim, keys, vec![0, 0, 100, 100]);
        for dtype in DTYPES {
            let mut out = vec![f32::NAN; 2 * 3];
            kernel
                .class_affinity(&queries, &set.keys(dtype), 2.0, &mut scratch, &mut out)
                .unwrap();
            assert_eq!((out[0], out[2]), (0.0, 0.0));
            // fp16 and int8 keys differ from the query by their rounding.
            let tol = match dtype {
                KeyDtype::F32 => 1e-3,
                KeyDtype::F16 => 1e-2,
                KeyDtype::I8 => 0.5,
            };
            assert!(
                (out[1] - 100.0).abs() < tol,
                "{} {dtype}: {}",
                kernel.isa(),
                out[1]
            );
        }
    }
}

/// The kernels a CI host should exercise are actually there (a silent fallback to scalar would
/// make the property tests vacuous for SIMD code).
#[test]
fn detected_kernels_are_available() {
    let isas: Vec<Isa> = Kernel::available().iter().map(|k| k.isa()).collect();
    println!(
        "kernels available here: {}; detect() picks {}",
        isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
        Kernel::detect().isa()
    );
    assert!(isas.contains(&Isa::Scalar));
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        assert_eq!(isas.contains(&Isa::Avx2), avx2);
        let vnni = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        assert_eq!(isas.contains(&Isa::Avx512Vnni), vnni);
    }
    assert_eq!(Kernel::detect().isa(), *isas.last().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Accuracy on realistic features

/// Largest relative error of `got` against `want` over all values, and the fraction of rows
/// whose argmax agrees.
fn compare(got: &[Vec<f64>], want: &[Vec<f64>]) -> (f64, f64, f64) {
    let (mut worst, mut sum, mut count, mut agree) = (0f64, 0f64, 0usize, 0usize);
    let argmax = |r: &[f64]| {
        r.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w) {
            let e = ((a - b) / b).abs();
            worst = worst.max(e);
            sum += e;
            count += 1;
        }
        agree += usize::from(argmax(g) == argmax(w));
    }
    (worst, sum / count as f64, agree as f64 / got.len() as f64)
}

/// int8 and fp16 keys against f32 keys on CLIP-like features: 1000 queries × 1024 keys,
/// C = 512, 10 classes; keys and queries are noisy copies of class means that share a common
/// direction (same-class cosine ≈ 0.75, other classes ≈ 0.4), β = 1 and 5.5 (Tip-Adapter's
/// range). The cache logit α·class_sum has the class sum's relative error; α = 1 here.
#[test]
fn int8_and_fp16_keys_are_accurate_on_realistic_features() {
    let (dim, n_keys, n_queries, n_classes) = (512, 1024, 1000, 10);
    let mut rng = Rng(2024);
    let common = unit_rows(&mut rng, 1, dim);
    let mut means = unit_rows(&mut rng, n_classes, dim);
    for m in means.chunks_exact_mut(dim) {
        for (x, g) in m.iter_mut().zip(&common) {
            *x = 0.7 * *x + 0.7 * g;
        }
    }
    l2_normalize_rows(&mut means, dim);
    let noisy = |rng: &mut Rng, class: usize| -> Vec<f32> {
        let z = unit_rows(rng, 1, dim);
        let m = &means[class * dim..(class + 1) * dim];
        let mut v: Vec<f32> = m.iter().zip(&z).map(|(a, b)| a + 0.6 * b).collect();
        l2_normalize_rows(&mut v, dim);
        v
    };
    let per_class = n_keys / n_classes;
    let mut keys = Vec::new();
    let mut offsets = vec![0u32];
    for c in 0..n_classes {
        let count = if c + 1 == n_classes {
            n_keys - per_class * c
        } else {
            per_class
        };
        for _ in 0..count {
            keys.extend(noisy(&mut rng, c));
        }
        offsets.push(offsets[c] + count as u32);
    }
    let queries: Vec<f32> = (0..n_queries)
        .flat_map(|i| noisy(&mut rng, i % n_classes))
        .collect();
    let set = KeySet::new(dim, keys, offsets);

    let kernel = Kernel::detect();
    let run = |dtype: KeyDtype, beta: f32| -> Vec<Vec<f64>> {
        let keys = set.keys(dtype);
        let mut scratch = Scratch::new(dim);
        let mut out = vec![0f32; MAX_BATCH * n_classes];
        let mut rows = Vec::new();
        for q in queries.chunks(MAX_BATCH * dim) {
            let out = &mut out[..q.len() / dim * n_classes];
            kernel
                .class_affinity(q, &keys, beta, &mut scratch, out)
                .unwrap();
            rows.extend(
                out.chunks_exact(n_classes)
                    .map(|r| r.iter().map(|&x| x as f64).collect::<Vec<_>>()),
            );
        }
        rows
    };
    println!(
        "cache-logit accuracy, {} kernel, {n_queries} queries × {n_keys} keys, C = {dim}, \
         {n_classes} classes; errors relative to the f64 reference on f32 keys:",
        kernel.isa()
    );
    // Per similarity (first 100 queries): the i16 query error against the int8 key error.
    {
        let nq = 100;
        let q = &queries[..nq * dim];
        let mut scratch = Scratch::new(dim);
        let (t_f32, _) = truth(q, &set.keys(KeyDtype::F32));
        let (t_i8, _) = truth(q, &set.keys(KeyDtype::I8));
        let mut sims = vec![0f32; MAX_BATCH * n_keys];
        let (mut key_err, mut q_err) = (0f64, 0f64);
        for (chunk, qs) in q.chunks(MAX_BATCH * dim).enumerate() {
            let nb = qs.len() / dim;
            let sims = &mut sims[..nb * n_keys];
            kernel
                .similarities(qs, &set.keys(KeyDtype::I8), &mut scratch, sims)
                .unwrap();
            for b in 0..nb {
                let g = chunk * MAX_BATCH + b;
                for i in 0..n_keys {
                    key_err += (t_i8[g][i] - t_f32[g][i]).powi(2);
                    q_err += (sims[b * n_keys + i] as f64 - t_i8[g][i]).powi(2);
                }
            }
        }
        let count = (nq * n_keys) as f64;
        let (key_rms, q_rms) = ((key_err / count).sqrt(), (q_err / count).sqrt());
        println!(
            "  similarities q·k: int8 keys (exact query) rms error {key_rms:.3e}; the i16 query adds rms {q_rms:.3e} = {:.2}% of it",
            100.0 * q_rms / key_rms
        );
        assert!(q_rms <= 0.02 * key_rms);
    }
    for beta in [1.0f32, 5.5] {
        let truth_f32 =
            scalar::reference_class_affinity(&queries, &set.keys(KeyDtype::F32), beta as f64);
        let truth_i8 =
            scalar::reference_class_affinity(&queries, &set.keys(KeyDtype::I8), beta as f64);
        let int8 = run(KeyDtype::I8, beta);
        let fp16 = run(KeyDtype::F16, beta);
        let f32k = run(KeyDtype::F32, beta);
        let (i8_max, i8_mean, i8_top1) = compare(&int8, &truth_f32);
        let (key_max, key_mean, _) = compare(&truth_i8, &truth_f32);
        let (q_max, q_mean, _) = compare(&int8, &truth_i8);
        let (h_max, h_mean, h_top1) = compare(&fp16, &truth_f32);
        let (f_max, _, _) = compare(&f32k, &truth_f32);
        println!(
            "  β = {beta}: int8 keys + i16 query: max {:.4}% mean {:.5}% top-1 agreement {:.2}% \
             (limit 1%, 99.9%)",
            100.0 * i8_max,
            100.0 * i8_mean,
            100.0 * i8_top1
        );
        println!(
            "           of which int8 keys with the exact f32 query: max {:.4}% mean {:.5}%; \
             the i16 query alone (vs exact query on the same int8 keys): max {:.5}% mean {:.6}% \
             = {:.2}% of the key error",
            100.0 * key_max,
            100.0 * key_mean,
            100.0 * q_max,
            100.0 * q_mean,
            100.0 * q_max / key_max
        );
        println!(
            "           fp16 keys: max {:.5}% mean {:.6}% top-1 {:.2}% (limit 0.05%); \
             f32 keys: max {:.6}%",
            100.0 * h_max,
            100.0 * h_mean,
            100.0 * h_top1,
            100.0 * f_max
        );
        assert!(i8_max <= 0.01, "int8 max relative error {i8_max}");
        assert!(i8_top1 >= 0.999, "int8 top-1 agreement {i8_top1}");
        assert!(h_max <= 5e-4, "fp16 max relative error {h_max}");
        assert!(h_top1 >= 0.999, "fp16 top-1 agreement {h_top1}");
        // The i16 step is 258× finer than the int8 step at C = 512, but its error is common to
        // all keys of a class (one query, correlated keys) while the keys' own errors average
        // over the ~100 keys of a class: √100 / 258 ≈ 4% of the class-sum error.
        assert!(
            q_max <= 0.1 * key_max && q_mean <= 0.1 * key_mean,
            "the i16 query adds {q_max} (mean {q_mean}) against the int8 keys' {key_max} \
             (mean {key_mean})"
        );
        assert!(f_max <= 1e-5, "f32 keys max relative error {f_max}");
    }
}
