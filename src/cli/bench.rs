//! `tipedge bench`: measurements, printed as JSON for comparison scripts.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tipedge::bench::{
    bench_encoder, bench_heads, bench_prompts, bench_stream, EncoderBench, HeadBench, PromptBench,
    StreamBench,
};
use tipedge::dataset::expand_inputs;
use tipedge::encoder::ModelPaths;
use tipedge::kernel::bench::{run as run_kernel_bench, BenchConfig};
use tipedge::kernel::{Isa, KeyDtype, MAX_BATCH};
use tipedge::preprocess::PixelFormat;
use tipedge::record::KernelBenchRecord;

use super::common::{print_json, print_load_warnings, RuntimeArgs};
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
    /// Frames per second of `tipedge stream`'s pipeline (every frame of a synthetic raw
    /// stream, from memory) against the encoder alone on a ready input (the ceiling) and a plain
    /// frame-by-frame Session::classify loop, measured interleaved in one run; latency p50/p99
    /// and peak RSS. Example:
    ///   tipedge bench stream --model models/fixtures/efficientnet-lite0 --threads 2 --json
    #[command(verbatim_doc_comment)]
    Stream(StreamBenchArgs),
    /// Time scoring one frame (logits from a feature) with each head — the Tip-Adapter cache
    /// (tip), the GDA layer (gda), both — on synthetic data of one shape, interleaved in one
    /// run; with the bytes each reads per frame and the ratio to the cache's time. Example:
    ///   tipedge bench head --classes 100 --shots 16 --dim 512 --json
    #[command(verbatim_doc_comment)]
    Head(HeadArgs),
    /// What CoOp's W costs on the device: W for N class names through the prompt tower
    /// (text_embed.onnx: prompts built from a context and the memory-mapped token table)
    /// against the token-id text tower on the same prompts, interleaved in one run; adding one
    /// class by name to a pack of 100; how much of the token table is resident (its mapping's
    /// RSS) against its size. Example:
    ///   tipedge bench prompts --model models/fixtures/clip-tiny --classes 10,100,1000 --json
    #[command(verbatim_doc_comment)]
    Prompts(PromptArgs),
}

#[derive(Args, Debug)]
pub struct PromptArgs {
    /// Model folder with text.onnx and text_embed.onnx (+ token_embedding.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Class counts to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    classes: Vec<usize>,
    /// Context vectors M (CoOp's default 16).
    #[arg(long, default_value_t = 16)]
    n_ctx: usize,
    /// Timed rounds per class count (each times both towers).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub struct StreamBenchArgs {
    /// Model folder or image.onnx.
    #[arg(long)]
    model: PathBuf,
    /// A pack to score with [default: a small synthetic cache].
    #[arg(long)]
    pack: Option<PathBuf>,
    /// Raw frame format.
    #[arg(long, default_value = "nv12")]
    format: PixelFormat,
    /// Frame width and height.
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Frames per measurement.
    #[arg(long, default_value_t = 60)]
    frames: u64,
    /// Rounds of the three measurements (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
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
pub struct HeadArgs {
    /// Classes N.
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// Keys (shots) per class.
    #[arg(long, default_value_t = 16)]
    shots: usize,
    /// Feature dimension C (512 for CLIP ViT-B/32, 1280 for EfficientNet-Lite0).
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Key storage: int8, fp16 or f32.
    #[arg(long, default_value = "int8")]
    dtype: KeyDtype,
    /// Without CLIP's zero-shot W (an image-only backbone).
    #[arg(long)]
    no_text_classifier: bool,
    /// Timed rounds (each head scores --frames frames per round).
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    #[arg(long, default_value_t = 2000)]
    frames: usize,
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
    /// (where tract spends its time: depthwise convs, matrix products, ...), with each type's
    /// work: multiply-accumulates, values written and the matrix kernels tract chose on this CPU
    /// (the work and kernels hold under qemu, where the times mean nothing).
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
        BenchCommand::Stream(args) => stream(args),
        BenchCommand::Head(args) => head(args),
        BenchCommand::Prompts(args) => prompts(args),
    }
}

fn head(args: HeadArgs) -> anyhow::Result<i32> {
    let r = bench_heads(&HeadBench {
        classes: args.classes,
        shots: args.shots,
        dim: args.dim,
        dtype: args.dtype,
        text_classifier: !args.no_text_classifier,
        rounds: args.rounds,
        frames: args.frames,
    })?;
    if args.json {
        print_json(&r);
    } else {
        println!(
            "{} classes × {} shots, dim {}, {} keys{}, kernel {}; {} rounds of {} frames per head",
            r.classes,
            r.shots,
            r.dim,
            r.key_dtype,
            if r.text_classifier { ", with W" } else { "" },
            r.kernel,
            r.rounds,
            r.frames_per_round
        );
        for h in &r.heads {
            println!(
                "  {:<5} {:>10.0} ns per frame (p10 {:.0}, p90 {:.0}), {:>9} bytes read, {:.2}× the cache's time",
                h.head, h.ns_per_frame, h.p10_ns, h.p90_ns, h.bytes_read_per_frame, h.vs_tip
            );
        }
    }
    Ok(EXIT_OK)
}

fn prompts(args: PromptArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let missing = |what: &str| anyhow::anyhow!("{}: no {what} in the model", args.model.display());
    let r = bench_prompts(&PromptBench {
        prompt: paths
            .prompt
            .as_deref()
            .ok_or_else(|| missing("text_embed.onnx"))?,
        text: paths.text.as_deref().ok_or_else(|| missing("text.onnx"))?,
        run: args.runtime.run_options(),
        classes: args.classes,
        n_ctx: args.n_ctx,
        rounds: args.rounds,
    })?;
    if args.json {
        print_json(&r);
        return Ok(EXIT_OK);
    }
    println!(
        "{}: token width {}, dim {}, {} context vectors, batch {}, {} rounds; prompt tower loaded in {:.0} ms",
        r.arch, r.width, r.dim, r.n_ctx, r.batch, r.rounds, r.load_ms
    );
    for row in &r.rows {
        println!(
            "  {:>5} classes: W by the prompt tower {:>9.1} ms (prompts built in {:.1} ms), by token ids {:>9.1} ms: {:.2}×",
            row.classes, row.coop_ms, row.build_ms, row.token_ids_ms, row.ratio
        );
    }
    println!(
        "  one class added by name to a pack of 100: {:.1} ms",
        r.add_class_ms
    );
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "  token table {:.1} MiB on disk, {} resident ({} distinct tokens read); RSS after load {}, peak {}",
        mib(r.token_table_bytes),
        r.token_table_resident_bytes
            .map_or("?".into(), |b| format!("{:.2} MiB", mib(b))),
        r.distinct_tokens,
        r.rss_after_load_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
        r.peak_rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB")),
    );
    Ok(EXIT_OK)
}

fn stream(args: StreamBenchArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let b = StreamBench {
        image: &paths.image,
        pack: args.pack.as_deref(),
        run: args.runtime.run_options(),
        format: args.format,
        width: args.width,
        height: args.height,
        frames: args.frames,
        rounds: args.rounds,
    };
    let r = bench_stream(&b, print_load_warnings)?;
    if args.json {
        print_json(&r);
        return Ok(EXIT_OK);
    }
    println!("model        {}", r.model.display());
    println!(
        "config       {}, {} thread(s); {} {}x{} frames, {} per measurement, {} rounds",
        r.precision, r.threads, r.format, r.width, r.height, r.frames, r.rounds
    );
    println!(
        "encoder      {:.1} frames/s (a ready input: the ceiling)",
        r.encoder_fps
    );
    println!(
        "classify     {:.1} frames/s ({:.0}% of the encoder): preprocessing, then the encoder",
        r.serial_fps,
        100.0 * r.serial_over_encoder
    );
    println!(
        "stream       {:.1} frames/s ({:.0}% of the encoder): pipelined; latency p50 {:.1} ms, p99 {:.1} ms",
        r.stream_fps,
        100.0 * r.stream_over_encoder,
        r.latency_p50_ms,
        r.latency_p99_ms
    );
    if let Some(rss) = r.peak_rss_mib {
        println!("peak RSS     {rss:.0} MiB");
    }
    Ok(EXIT_OK)
}

fn encoder(args: EncoderArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let files = expand_inputs(&args.images)?;
    let opts = args.runtime.run_options();
    let b = EncoderBench {
        image: &paths.image,
        run: opts.clone(),
        runs: args.runs,
        warmup: args.warmup,
        files: &files,
        limits: args.runtime.limits(),
        profile: args.profile,
    };
    let r = bench_encoder(&b, print_load_warnings)?;
    if args.json {
        print_json(&r);
        return Ok(EXIT_OK);
    }
    let n = r.batch as f64;
    println!("model        {}", r.model.display());
    println!(
        "config       {}, batch {}, {} thread(s)",
        r.precision, r.batch, r.threads
    );
    let from = match &r.compiled {
        Some(p) => format!("compiled form {}", p.display()),
        None => "ONNX graph (`tipedge compile` makes a faster-loading form)".into(),
    };
    println!("load         {:.0} ms from the {from}", r.load_ms);
    if let (Some(peak), Some(rss)) = (r.load_peak_rss_mib, r.rss_after_load_mib) {
        println!("load memory  peak {peak:.0} MiB, {rss:.0} MiB resident after it");
    }
    println!(
        "encode       median {:.2} ms per run (p10 {:.2}, p90 {:.2}, {} runs) = {:.2} ms per image",
        r.median_ms,
        r.p10_ms,
        r.p90_ms,
        r.runs,
        r.median_ms / n
    );
    if let (Some(d), Some(p), Some(ratio)) = (
        r.decode_median_ms,
        r.preprocess_median_ms,
        r.decode_preprocess_over_encode,
    ) {
        println!(
            "decode       median {d:.2} ms, preprocess median {p:.2} ms over {} files ({:.1}% of encode per image)",
            files.len(),
            100.0 * ratio
        );
    }
    if let Some(rss) = r.peak_rss_mib {
        println!("peak RSS     {rss:.0} MiB");
    }
    if let Some(p) = &r.profile {
        let total: f64 = p.iter().map(|o| o.ms).sum();
        println!("profile      per operator type, median per node summed ({total:.2} ms):");
        println!(
            "  {:<28} {:>5} {:>9} {:>6} {:>9} {:>9} {:>8}  kernels",
            "operator", "nodes", "ms", "%", "M MACs", "M values", "products"
        );
        for o in p {
            let products = if o.kernels.is_empty() {
                String::new()
            } else {
                o.products.to_string()
            };
            println!(
                "  {:<28} {:>5} {:>9.3} {:>5.1}% {:>9.1} {:>9.3} {:>8}  {}",
                o.op,
                o.nodes,
                o.ms,
                100.0 * o.ms / total,
                o.macs as f64 / 1e6,
                o.elements as f64 / 1e6,
                products,
                o.kernels.join(" ")
            );
        }
    }
    Ok(EXIT_OK)
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
        print_json(&KernelBenchRecord::new(&r));
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
        let compute = match (r.compute_floor_ns(), r.macs_per_ns) {
            (Some(f), Some(rate)) => format!("{f:.2} ns ({rate:.0} MACs/ns, same run)"),
            _ => "not probed on this ISA".to_string(),
        };
        println!(
            "  floors per key per query: memory {:.2} ns (read bandwidth, batch {}), compute {}: \
             the kernel takes {:.1}× the larger",
            r.memory_floor_ns(),
            r.batch,
            compute,
            r.ns_per_key / r.floor_ns()
        );
    }
    Ok(EXIT_OK)
}

impl BenchCommand {
    pub fn json(&self) -> bool {
        match self {
            BenchCommand::Encoder(a) => a.json,
            BenchCommand::Kernel(a) => a.json,
            BenchCommand::Stream(a) => a.json,
            BenchCommand::Head(a) => a.json,
            BenchCommand::Prompts(a) => a.json,
        }
    }
}
