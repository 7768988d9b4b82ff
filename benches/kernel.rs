//! The affinity kernel: scalar against the best ISA, int8 / fp16 / f32 keys, batch 1 and 16,
//! C = 512, keys in cache (N = 2,048: 1 MB of int8 keys, in L2/L3) and from DRAM (64 MiB of
//! keys, twice a 32 MB L3).
//!
//! Before the criterion groups, one run of the library harness (`tipedge::kernel::bench`, what
//! `tipedge bench kernel` prints) measures the DRAM cases side by side with the machine's read
//! bandwidth, and prints ns per key per query, GB/s of keys, and the ratio to the bandwidth.
//! Set `TIPEDGE_KERNEL_REPORT=0` to skip it, `=only` to skip criterion.
//!
//! `cargo bench --no-default-features --bench kernel`

use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion, Throughput};
use half::f16;
use tipedge::kernel::bench::{self, BenchConfig};
use tipedge::kernel::{
    l2_normalize_rows, quantize_key_i8, Kernel, KeyData, KeyDtype, Keys, Scratch,
};

const DIM: usize = 512;
const CLASS_SIZE: usize = 16;

fn report() {
    let best = Kernel::detect().isa();
    println!(
        "affinity kernel, C = {DIM}, classes of {CLASS_SIZE} keys, keys from DRAM (≥ {} MiB), \
         median of passes interleaved with a read-bandwidth probe over a buffer of \
         the keys' size",
        bench::DEFAULT_KEY_BYTES >> 20
    );
    println!(
        "{:<8} {:<6} {:>5} {:>7} {:>8} {:>10} {:>9} {:>10} {:>8}",
        "isa", "dtype", "batch", "threads", "N", "ns/key/q", "key GB/s", "read GB/s", "ratio"
    );
    let mut cases = Vec::new();
    for dtype in [KeyDtype::I8, KeyDtype::F16, KeyDtype::F32] {
        for batch in [1, 16] {
            cases.push((best, dtype, batch, 1));
        }
    }
    cases.push((best, KeyDtype::I8, 16, 2));
    for dtype in [KeyDtype::I8, KeyDtype::F16] {
        cases.push((tipedge::kernel::Isa::Scalar, dtype, 1, 1));
    }
    for (isa, dtype, batch, threads) in cases {
        let mut cfg = BenchConfig::new(DIM, dtype, batch);
        cfg.isa = Some(isa);
        cfg.threads = threads;
        cfg.min_time = Duration::from_millis(1500);
        let r = bench::run(&cfg).expect("benchmark run");
        println!(
            "{:<8} {:<6} {:>5} {:>7} {:>8} {:>10.3} {:>9.2} {:>10.2} {:>7.1}%",
            r.isa.name(),
            r.dtype.name(),
            r.batch,
            r.threads,
            r.n,
            r.ns_per_key,
            r.gbps,
            r.read_bandwidth_gbps,
            100.0 * r.bandwidth_ratio()
        );
    }
}

struct Data {
    f32: Vec<f32>,
    f16: Vec<f16>,
    i8: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<u32>,
}

impl Data {
    fn new(n: usize) -> Data {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut f32: Vec<f32> = (0..n * DIM)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        l2_normalize_rows(&mut f32, DIM);
        let f16 = f32.iter().map(|&x| f16::from_f32(x)).collect();
        let mut i8 = vec![0i8; n * DIM];
        let scales = f32
            .chunks_exact(DIM)
            .zip(i8.chunks_exact_mut(DIM))
            .map(|(k, q)| quantize_key_i8(k, q))
            .collect();
        let offsets = (0..=n.div_ceil(CLASS_SIZE))
            .map(|c| (c * CLASS_SIZE).min(n) as u32)
            .collect();
        Data {
            f32,
            f16,
            i8,
            scales,
            offsets,
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
        Keys::new(DIM, data, &self.offsets).unwrap()
    }
}

fn kernels(c: &mut Criterion) {
    let mut isas = vec![Kernel::scalar()];
    if Kernel::detect().isa() != Kernel::scalar().isa() {
        isas.push(Kernel::detect());
    }
    let queries = Data::new(16).f32;
    for (label, n) in [
        ("in-cache", 2048),
        (
            "dram",
            BenchConfig::default_n(DIM, KeyDtype::I8, CLASS_SIZE),
        ),
    ] {
        let data = Data::new(n);
        let mut group = c.benchmark_group(format!("kernel/{label}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
        for dtype in [KeyDtype::I8, KeyDtype::F16, KeyDtype::F32] {
            let keys = data.keys(dtype);
            for batch in [1, 16] {
                group.throughput(Throughput::Elements((n * batch) as u64));
                for kernel in &isas {
                    let q = &queries[..batch * DIM];
                    let mut scratch = Scratch::new(DIM);
                    let mut out = vec![0f32; batch * keys.n_classes()];
                    let id = BenchmarkId::new(
                        format!("{}/{}", kernel.isa(), dtype),
                        format!("batch{batch}"),
                    );
                    group.bench_function(id, |b| {
                        b.iter(|| {
                            kernel
                                .class_affinity(black_box(q), &keys, 5.5, &mut scratch, &mut out)
                                .unwrap();
                            black_box(&out);
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

fn main() {
    let mode = std::env::var("TIPEDGE_KERNEL_REPORT").unwrap_or_default();
    if mode != "0" {
        report();
    }
    if mode != "only" {
        let mut c = Criterion::default().configure_from_args();
        kernels(&mut c);
        c.final_summary();
    }
}
