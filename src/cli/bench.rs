//! `tipedge bench`: measurements, printed as JSON for comparison scripts.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use tipedge::dataset::expand_inputs;
use tipedge::encoder::ModelPaths;
use tipedge::kernel::bench::{run as run_kernel_bench, BenchConfig};
use tipedge::kernel::{Isa, KeyDtype, MAX_BATCH};
use tipedge::preprocess::{load_rgb, Preprocessor};

use super::common::{load_image_encoder, RuntimeArgs};
use super::EXIT_OK;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time an image encoder: load time, median latency per run, peak memory; optionally
    /// decode + preprocess time per image on real files (compare with the encode time).
    Encoder(EncoderArgs),
    /// Time the affinity kernel (the cache term: s = f·Kᵀ, exp, per-class sums) on synthetic
    /// class-sorted keys, and the machine's read bandwidth in the same run: the kernel's
    /// physical limit. By default the keys take 64 MiB, more than the last-level cache, so they
    /// stream from DRAM as a large cache would.
    ///
    /// Prints ns per key per query and GB/s of key bytes read, with the ratio to the measured
    /// read bandwidth. Example:
    ///   tipedge bench kernel --dim 512 --dtype int8 --batch 1 --json
    #[command(verbatim_doc_comment)]
    Kernel(KernelArgs),
}

#[derive(Args, Debug)]
pub struct KernelArgs {
    /// Number of keys [default: as many as fill 64 MiB].
    #[arg(long)]
    keys: Option<usize>,
    /// Feature dimension C.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Key storage: int8, fp16 or f32.
    #[arg(long, default_value = "int8")]
    dtype: KeyDtype,
    /// Queries scored per pass over the keys (1..=32).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads the keys are split over (at class boundaries).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Kernel: scalar, avx2, avx512vnni, neon, neon-dotprod [default: the best this CPU has].
    #[arg(long)]
    isa: Option<Isa>,
    /// Keys per class.
    #[arg(long, default_value_t = 16)]
    class_size: usize,
    /// Minimum seconds of timed passes.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EncoderArgs {
    /// Model folder or image.onnx.
    #[arg(long)]
    model: PathBuf,
    /// Timed runs after warm-up.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Images or folders: also time decode + preprocess of each file with the model's recipe.
    #[arg(long)]
    images: Vec<PathBuf>,
    /// Also time every node of the optimised graph and report the time per operator type
    /// (where tract spends its time: depthwise convs, matrix products, ...).
    #[arg(long)]
    profile: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<i32> {
    match cmd {
        BenchCommand::Encoder(args) => encoder(args),
        BenchCommand::Kernel(args) => kernel(args),
    }
}

fn encoder(args: EncoderArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let opts = args.runtime.run_options();
    let t0 = Instant::now();
    let enc = load_image_encoder(&paths.image, &opts)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let n = enc.batch();
    // A fixed pseudo-random input: the timing of dense graphs does not depend on the values.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let input: Vec<f32> = (0..n * enc.recipe().tensor_len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    for _ in 0..args.warmup {
        enc.encode(&input, n)?;
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        enc.encode(&input, n)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let encode = Summary::of(&mut times);

    let files = expand_inputs(&args.images)?;
    let mut decode = Vec::new();
    let mut prep = Vec::new();
    let mut pre = Preprocessor::new(enc.recipe().clone());
    let mut out = vec![0f32; enc.recipe().tensor_len()];
    for f in &files {
        let t = Instant::now();
        let img = load_rgb(f, &args.runtime.limits())?;
        decode.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        pre.run(&img, &mut out);
        prep.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let decode = (!decode.is_empty()).then(|| Summary::of(&mut decode));
    let prep = (!prep.is_empty()).then(|| Summary::of(&mut prep));
    let rss = peak_rss_mib();
    let profile = if args.profile {
        Some(enc.profile(args.runs)?)
    } else {
        None
    };

    if args.json {
        let mut obj = serde_json::json!({
            "runtime": "tract", "model": paths.image, "threads": args.runtime.threads,
            "precision": format!("{:?}", opts.precision).to_lowercase(), "batch": n,
            "load_ms": load_ms, "median_ms": encode.median, "p10_ms": encode.p10, "p90_ms": encode.p90,
            "runs": times.len(), "peak_rss_mib": rss,
        });
        if let Some(p) = &profile {
            obj["profile"] = serde_json::to_value(p)?;
        }
        if let (Some(d), Some(p)) = (&decode, &prep) {
            obj["images"] = files.len().into();
            obj["decode_median_ms"] = d.median.into();
            obj["preprocess_median_ms"] = p.median.into();
            obj["decode_preprocess_over_encode"] =
                ((d.median + p.median) / (encode.median / n as f64)).into();
        }
        println!("{obj}");
    } else {
        println!("model        {}", paths.image.display());
        println!(
            "config       {:?}, batch {n}, {} thread(s)",
            opts.precision, args.runtime.threads
        );
        println!("load         {load_ms:.0} ms");
        println!(
            "encode       median {:.2} ms per run (p10 {:.2}, p90 {:.2}, {} runs) = {:.2} ms per image",
            encode.median, encode.p10, encode.p90, times.len(), encode.median / n as f64
        );
        if let (Some(d), Some(p)) = (&decode, &prep) {
            println!(
                "decode       median {:.2} ms, preprocess median {:.2} ms over {} files ({:.1}% of encode per image)",
                d.median, p.median, files.len(),
                100.0 * (d.median + p.median) / (encode.median / n as f64)
            );
        }
        if let Some(r) = rss {
            println!("peak RSS     {r:.0} MiB");
        }
        if let Some(p) = &profile {
            let total: f64 = p.iter().map(|o| o.ms).sum();
            println!("profile      per operator type, median per node summed ({total:.2} ms):");
            for o in p {
                println!(
                    "  {:<28} {:>4} nodes {:>9.3} ms {:>5.1}%",
                    o.op,
                    o.nodes,
                    o.ms,
                    100.0 * o.ms / total
                );
            }
        }
    }
    Ok(super::EXIT_OK)
}

struct Summary {
    median: f64,
    p10: f64,
    p90: f64,
}

impl Summary {
    fn of(v: &mut [f64]) -> Summary {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Summary {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }
}

/// Peak resident set size (VmHWM) of this process, Linux only.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn kernel(args: KernelArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (1..=MAX_BATCH).contains(&args.batch),
        "--batch must be 1..={MAX_BATCH}"
    );
    anyhow::ensure!(args.dim > 0, "--dim must be positive");
    anyhow::ensure!(args.threads > 0, "--threads must be positive");
    anyhow::ensure!(args.class_size > 0, "--class-size must be positive");
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be positive"
    );
    let mut cfg = BenchConfig::new(args.dim, args.dtype, args.batch);
    cfg.n = args
        .keys
        .unwrap_or_else(|| BenchConfig::default_n(args.dim, args.dtype, args.class_size));
    cfg.threads = args.threads;
    cfg.isa = args.isa;
    cfg.class_size = args.class_size;
    cfg.min_time = std::time::Duration::from_secs_f64(args.seconds);
    let r = run_kernel_bench(&cfg).map_err(|e| anyhow::anyhow!("bench kernel: {e}"))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "n": r.n, "dim": r.dim, "dtype": r.dtype.name(), "batch": r.batch,
                "threads": r.threads, "isa": r.isa.name(), "ns_per_key": r.ns_per_key,
                "gbps": r.gbps, "key_bytes": r.key_bytes, "median_ns": r.median_ns,
                "read_bandwidth_gbps": r.read_bandwidth_gbps,
                "bandwidth_ratio": r.bandwidth_ratio(), "runs": r.runs,
            })
        );
    } else {
        println!(
            "{} keys × dim {} ({}, {:.1} MiB), batch {}, {} thread(s), kernel {}",
            r.n,
            r.dim,
            r.dtype,
            r.key_bytes as f64 / (1 << 20) as f64,
            r.batch,
            r.threads,
            r.isa
        );
        println!(
            "  {:.2} ns per key per query, {:.1} GB/s of keys; machine read bandwidth {:.1} GB/s \
             (same run): {:.0}% of it",
            r.ns_per_key,
            r.gbps,
            r.read_bandwidth_gbps,
            100.0 * r.bandwidth_ratio()
        );
    }
    Ok(EXIT_OK)
}
