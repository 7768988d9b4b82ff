//! The affinity kernel's benchmark, as a library: `tipedge bench kernel` prints what [`run`]
//! returns.
//!
//! One run measures, interleaved pass by pass so that both see the same machine state:
//!
//! - the kernel: [`Kernel::class_affinity`] of `batch` queries over `n` class-sorted keys
//!   (classes of [`BenchConfig::class_size`] keys, the layout of a K-shot cache), split at class
//!   boundaries over `threads` threads, each with its own [`Scratch`];
//! - the machine's read bandwidth, the kernel's physical limit: the same threads summing a
//!   buffer of the keys' size with the widest loads the CPU has (AVX2 on x86_64; elsewhere a
//!   loop the compiler vectorises), each thread reading its share as four streams side by
//!   side, which one core reads faster than one stream (see `Streams` in the kernel module).
//!
//! Both report the median of the timed passes after one warm-up pass. After them, a probe of the
//! kernel's dot-product instruction (x86_64) gives the compute floor; with the bandwidth, the
//! memory floor ([`BenchResult::floor_ns`]). By default the keys
//! occupy at least [`DEFAULT_KEY_BYTES`] (64 MiB), twice a 32 MB L3, so every pass reads them
//! from DRAM. (The reference point, C = 512 and N = 16,384, is 8.5 MB of int8 keys,
//! which fits in such an L3: pass `n` to measure it.)

use std::time::{Duration, Instant};

use half::f16;

use super::{Isa, Kernel, KernelError, KeyData, KeyDtype, Keys, Scratch, MAX_BATCH, STREAMS};

/// Smallest key storage of the default `n`: far beyond the last-level cache.
pub const DEFAULT_KEY_BYTES: usize = 64 << 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Number of keys.
    pub n: usize,
    /// Key and query dimension C.
    pub dim: usize,
    pub dtype: KeyDtype,
    /// Queries per pass (1..=`MAX_BATCH`).
    pub batch: usize,
    /// Threads the keys are split over (at class boundaries).
    pub threads: usize,
    /// Kernel to run; `None` is the detected best.
    pub isa: Option<Isa>,
    /// Keys per class.
    pub class_size: usize,
    /// Timed passes: at least `min_runs`, and more until `min_time` has elapsed.
    pub min_runs: usize,
    pub min_time: Duration,
    /// Tip-Adapter's β (does not change the work).
    pub beta: f32,
}

impl BenchConfig {
    /// Defaults: [`BenchConfig::default_n`] keys, one thread, the detected kernel, classes of
    /// 16 keys, at least 10 passes and 1 s.
    pub fn new(dim: usize, dtype: KeyDtype, batch: usize) -> BenchConfig {
        BenchConfig {
            n: BenchConfig::default_n(dim, dtype, 16),
            dim,
            dtype,
            batch,
            threads: 1,
            isa: None,
            class_size: 16,
            min_runs: 10,
            min_time: Duration::from_secs(1),
            beta: 5.5,
        }
    }

    /// The smallest multiple of `class_size` keys whose storage reaches [`DEFAULT_KEY_BYTES`]
    /// (C = 512: 130,064 int8 keys, 65,536 fp16, 32,768 f32).
    pub fn default_n(dim: usize, dtype: KeyDtype, class_size: usize) -> usize {
        let per_key = dtype.key_bytes(dim.max(1));
        let class_size = class_size.max(1);
        DEFAULT_KEY_BYTES.div_ceil(per_key).div_ceil(class_size) * class_size
    }
}

/// What was measured. Plain fields; the CLI serialises them.
#[derive(Clone, Debug)]
pub struct BenchResult {
    pub n: usize,
    pub dim: usize,
    pub dtype: KeyDtype,
    pub batch: usize,
    pub threads: usize,
    pub isa: Isa,
    /// Median pass time over `n` keys and `batch` queries, nanoseconds.
    pub median_ns: f64,
    /// `median_ns / (n · batch)`: per key per query.
    pub ns_per_key: f64,
    /// Bytes of key storage read per pass (int8 counts the scales).
    pub key_bytes: usize,
    /// `key_bytes / median_ns`: key bytes read per second / 1e9.
    pub gbps: f64,
    /// The read-bandwidth probe over a buffer of `key_bytes`, same threads, same run.
    pub read_bandwidth_gbps: f64,
    /// Timed passes behind each median.
    pub runs: usize,
    /// Multiply-accumulates per nanosecond of the kernel's dot-product instruction on this core,
    /// same run (`vpdpwssd` for int8 keys on AVX-512 VNNI, …; see `x86_64/peak.rs`); `None`
    /// where no probe exists (aarch64, scalar).
    pub macs_per_ns: Option<f64>,
}

impl BenchResult {
    /// `gbps / read_bandwidth_gbps`: how close the kernel comes to streaming the keys at the
    /// machine's read bandwidth (1.0 = at the limit).
    pub fn bandwidth_ratio(&self) -> f64 {
        self.gbps / self.read_bandwidth_gbps
    }

    /// The memory floor, ns per key per query: one key's bytes at the measured read bandwidth,
    /// shared by the batch's queries.
    pub fn memory_floor_ns(&self) -> f64 {
        self.key_bytes as f64 / self.n as f64 / self.read_bandwidth_gbps / self.batch as f64
    }

    /// The compute floor, ns per key per query: `dim` multiply-accumulates at the probe's rate.
    pub fn compute_floor_ns(&self) -> Option<f64> {
        self.macs_per_ns.map(|r| self.dim as f64 / r)
    }

    /// The larger floor: the least time per key per query this machine allows.
    pub fn floor_ns(&self) -> f64 {
        self.compute_floor_ns()
            .unwrap_or(0.0)
            .max(self.memory_floor_ns())
    }
}

/// Deterministic xorshift64* for the synthetic keys (content does not change the work).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [−1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Key storage of one dtype.
enum Storage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8 { values: Vec<i8>, scales: Vec<f32> },
}

impl Storage {
    /// Random keys of roughly unit norm; every byte written (no shared zero pages).
    fn random(n: usize, dim: usize, dtype: KeyDtype, rng: &mut Rng) -> Storage {
        let amp = 1.0 / (dim as f32).sqrt();
        match dtype {
            KeyDtype::F32 => Storage::F32((0..n * dim).map(|_| rng.unit() * amp).collect()),
            KeyDtype::F16 => Storage::F16(
                (0..n * dim)
                    .map(|_| f16::from_f32(rng.unit() * amp))
                    .collect(),
            ),
            KeyDtype::I8 => Storage::I8 {
                values: (0..n * dim)
                    .map(|_| (((rng.next() >> 32) % 255) as i32 - 127) as i8)
                    .collect(),
                scales: (0..n).map(|_| amp / 127.0).collect(),
            },
        }
    }

    /// Keys `start..end` as kernel input.
    fn data(&self, dim: usize, start: usize, end: usize) -> KeyData<'_> {
        let r = start * dim..end * dim;
        match self {
            Storage::F32(v) => KeyData::F32(&v[r]),
            Storage::F16(v) => KeyData::F16(&v[r]),
            Storage::I8 { values, scales } => KeyData::I8 {
                values: &values[r],
                scales: &scales[start..end],
            },
        }
    }
}

/// One thread's share: whole classes `[start, end)` of keys, class offsets rebased to 0.
struct Part {
    start: usize,
    end: usize,
    offsets: Vec<u32>,
}

/// Cut `n` keys in classes of `class_size` into `threads` shares of whole classes.
fn split(n: usize, class_size: usize, threads: usize) -> Vec<Part> {
    let n_classes = n.div_ceil(class_size);
    let threads = threads.clamp(1, n_classes.max(1));
    (0..threads)
        .map(|t| {
            let (c0, c1) = (n_classes * t / threads, n_classes * (t + 1) / threads);
            let (start, end) = ((c0 * class_size).min(n), (c1 * class_size).min(n));
            let offsets = (c0..=c1)
                .map(|c| ((c * class_size).min(n) - start) as u32)
                .collect();
            Part {
                start,
                end,
                offsets,
            }
        })
        .collect()
}

/// The dot-product probe for `isa`'s `dtype` tile, where this build has one.
fn macs_per_ns(isa: Isa, dtype: KeyDtype) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    return super::x86_64::macs_per_ns(isa, dtype != KeyDtype::I8);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, dtype);
        None
    }
}

/// Sum of `bytes` (the bandwidth probe), with the widest loads available, read as [`STREAMS`]
/// streams side by side like the kernel's small batches (see [`Streams`](super::Streams)).
fn stream_sum(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if let Some(s) = super::x86_64::stream_sum(bytes) {
        return s;
    }
    // Portable: u64 lanes, four independent sums per stream; the compiler vectorises this.
    let part = bytes.len() / STREAMS / 32 * 32;
    let mut acc = [[0u64; 4]; STREAMS];
    for off in (0..part).step_by(32) {
        for (s, acc) in acc.iter_mut().enumerate() {
            let c = &bytes[s * part + off..s * part + off + 32];
            for (l, a) in acc.iter_mut().enumerate() {
                let w = u64::from_ne_bytes(c[8 * l..8 * l + 8].try_into().unwrap());
                *a = a.wrapping_add(w);
            }
        }
    }
    bytes[STREAMS * part..].iter().fold(
        acc.iter().flatten().fold(0u64, |t, a| t.wrapping_add(*a)),
        |t, &b| t.wrapping_add(b as u64),
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Run `f(t)` for every thread index, on this thread when there is one.
fn on_threads(threads: usize, f: impl Fn(usize) + Sync) {
    if threads == 1 {
        f(0);
    } else {
        std::thread::scope(|s| {
            let f = &f;
            for t in 0..threads {
                s.spawn(move || f(t));
            }
        });
    }
}

/// Measure the kernel and the read bandwidth as `cfg` says (see the module documentation).
pub fn run(cfg: &BenchConfig) -> Result<BenchResult, KernelError> {
    let kernel = match cfg.isa {
        None => Kernel::detect(),
        Some(isa) => Kernel::with_isa(isa).ok_or_else(|| {
            KernelError(format!("this CPU (or build) cannot run the {isa} kernel"))
        })?,
    };
    if cfg.dim == 0 || cfg.n == 0 || cfg.class_size == 0 {
        return Err(KernelError(
            "benchmark needs at least one key, a dimension and a class size".into(),
        ));
    }
    if cfg.batch == 0 || cfg.batch > MAX_BATCH {
        return Err(KernelError(format!(
            "batch {} outside 1..={MAX_BATCH}",
            cfg.batch
        )));
    }
    let (n, dim, batch) = (cfg.n, cfg.dim, cfg.batch);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let storage = Storage::random(n, dim, cfg.dtype, &mut rng);
    let mut queries: Vec<f32> = (0..batch * dim).map(|_| rng.unit()).collect();
    super::l2_normalize_rows(&mut queries, dim);

    let parts = split(n, cfg.class_size, cfg.threads);
    let threads = parts.len();
    let keys: Vec<Keys<'_>> = parts
        .iter()
        .map(|p| Keys::new(dim, storage.data(dim, p.start, p.end), &p.offsets))
        .collect::<Result<_, _>>()?;
    let key_bytes: usize = keys.iter().map(|k| k.bytes()).sum();
    // Per-thread scratch and output, allocated before timing (scoring itself allocates
    // nothing).
    let work: Vec<std::sync::Mutex<(Scratch, Vec<f32>)>> = keys
        .iter()
        .map(|k| std::sync::Mutex::new((Scratch::new(dim), vec![0.0; batch * k.n_classes()])))
        .collect();
    // Probe buffer: as many bytes as the keys, every byte written so that it is backed by
    // real pages; read in `threads` contiguous shares.
    let probe: Vec<u8> = (0..key_bytes).map(|i| (i as u8) | 1).collect();
    let share = key_bytes.div_ceil(threads);

    let kernel_pass = || -> Result<(), KernelError> {
        let failed = std::sync::Mutex::new(None);
        on_threads(threads, |t| {
            let mut w = work[t].lock().unwrap();
            let (scratch, out) = &mut *w;
            if let Err(e) = kernel.class_affinity(&queries, &keys[t], cfg.beta, scratch, out) {
                *failed.lock().unwrap() = Some(e);
            }
            std::hint::black_box(&out);
        });
        match failed.into_inner().unwrap() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    };
    let probe_pass = || {
        on_threads(threads, |t| {
            let a = (t * share).min(key_bytes);
            let b = ((t + 1) * share).min(key_bytes);
            std::hint::black_box(stream_sum(std::hint::black_box(&probe[a..b])));
        });
    };

    kernel_pass()?;
    probe_pass();
    let (mut kernel_ns, mut probe_ns) = (Vec::new(), Vec::new());
    let started = Instant::now();
    while kernel_ns.len() < cfg.min_runs.max(1)
        || (started.elapsed() < cfg.min_time && kernel_ns.len() < 100_000)
    {
        let t0 = Instant::now();
        probe_pass();
        let t1 = Instant::now();
        kernel_pass()?;
        let t2 = Instant::now();
        probe_ns.push((t1 - t0).as_nanos() as f64);
        kernel_ns.push((t2 - t1).as_nanos() as f64);
    }
    let runs = kernel_ns.len();
    let macs_per_ns = macs_per_ns(kernel.isa(), cfg.dtype);
    let median_ns = median(&mut kernel_ns);
    let probe_median = median(&mut probe_ns);
    Ok(BenchResult {
        n,
        dim,
        dtype: cfg.dtype,
        batch,
        threads,
        isa: kernel.isa(),
        median_ns,
        ns_per_key: median_ns / (n * batch) as f64,
        key_bytes,
        gbps: key_bytes as f64 / median_ns,
        read_bandwidth_gbps: key_bytes as f64 / probe_median,
        runs,
        macs_per_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_class_once() {
        for (n, cs, t) in [(100, 16, 3), (16, 16, 4), (1000, 7, 2), (5, 16, 1)] {
            let parts = split(n, cs, t);
            let mut next = 0;
            for p in &parts {
                assert_eq!(p.start, next);
                assert_eq!(*p.offsets.last().unwrap() as usize, p.end - p.start);
                assert_eq!(p.offsets[0], 0);
                next = p.end;
            }
            assert_eq!(next, n);
        }
    }

    #[test]
    fn small_run_reports_consistent_numbers() {
        let mut cfg = BenchConfig::new(33, KeyDtype::I8, 3);
        cfg.n = 200;
        cfg.threads = 2;
        cfg.min_runs = 3;
        cfg.min_time = Duration::ZERO;
        let r = run(&cfg).unwrap();
        assert_eq!(r.key_bytes, 200 * (33 + 4));
        assert_eq!(r.threads, 2);
        assert!(r.median_ns > 0.0 && r.gbps > 0.0 && r.read_bandwidth_gbps > 0.0);
        assert!((r.ns_per_key - r.median_ns / 600.0).abs() < 1e-9);
        let memory = 37.0 / r.read_bandwidth_gbps / 3.0;
        assert!((r.memory_floor_ns() - memory).abs() < 1e-9 * memory);
        assert!(r.floor_ns() >= memory);
    }

    #[test]
    fn default_n_exceeds_the_last_level_cache() {
        let n = BenchConfig::default_n(512, KeyDtype::I8, 16);
        assert_eq!(n % 16, 0);
        assert!(n * 516 >= DEFAULT_KEY_BYTES && (n - 16) * 516 < DEFAULT_KEY_BYTES);
    }
}
