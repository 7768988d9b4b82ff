//! Argument parsing and printing; the work lives in the library.

mod bench;
mod cache;
mod classes;
mod classify;
mod common;
mod compile;
mod device;
mod embed;
mod eval;
mod finetune;
mod info;
mod inspect;
mod plot;
mod stream;
mod tokenize;
mod tune;

use clap::{Parser, Subcommand};

/// Exit code: everything succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit code: the run finished but some inputs failed (they are listed at the end).
pub const EXIT_SOME_FAILED: i32 = 1;
/// Exit code: nothing could be done (bad arguments, missing or invalid model, empty data set).
pub const EXIT_FATAL: i32 = 2;

#[derive(Parser)]
#[command(
    name = "tipedge",
    version,
    about = "Few-shot image classification with CLIP / Tip-Adapter on edge CPUs",
    long_about = "Few-shot image classification with CLIP / Tip-Adapter on edge CPUs.\n\n\
        Give it a few labelled example images per class (a folder per class) and it classifies \
        new images by comparing them with those examples (Tip-Adapter's key-value cache) and, \
        for CLIP models, with a text description of each class (zero-shot). Models are ONNX \
        graphs with a JSON sidecar, run by tract on the CPU.\n\n\
        Quick start (from the repository):\n  \
        tipedge demo                      # classify the bundled textile example\n  \
        tipedge classify --model models/fixtures/efficientnet-lite0 \\\n      \
        --shots examples/textile/shots examples/textile/query\n  \
        tipedge cache build --model models/fixtures/efficientnet-lite0 \\\n      \
        --shots examples/textile/shots --val examples/textile/val --out textile.pack\n  \
        tipedge classify --model models/fixtures/efficientnet-lite0 \\\n      \
        --pack textile.pack examples/textile/query\n\n\
        Few-shot workflow: cache build --val (key recipe, head — cache, GDA layer or both — and \
        α/β chosen on a validation split) → finetune (Tip-Adapter-F) → eval (test split, \
        --plot); tune re-searches α/β of an existing pack.\n\n\
        Exit codes: 0 success; 1 finished but some inputs failed (listed at the end); \
        2 nothing could be done (bad arguments, missing or invalid model or data set)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Classify(classify::ClassifyArgs),
    Demo(classify::DemoArgs),
    /// Build adapter packs (the few-shot cache as one verified, memory-mapped file).
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Add classes to a pack by name (from its CoOp context).
    #[command(subcommand)]
    Classes(classes::ClassesCommand),
    Tune(tune::TuneArgs),
    Finetune(finetune::FinetuneArgs),
    Eval(eval::EvalArgs),
    Stream(stream::StreamArgs),
    Flash(device::FlashArgs),
    Rollback(device::RollbackArgs),
    Status(device::StatusArgs),
    Enrol(device::EnrolArgs),
    Embed(embed::EmbedArgs),
    Inspect(inspect::InspectArgs),
    Info(info::InfoArgs),
    Compile(compile::CompileArgs),
    Tokenize(tokenize::TokenizeArgs),
    /// Measure: encoders (load time, latency, peak memory, decode + preprocess) and the
    /// affinity kernel (ns per key, GB/s against the machine's read bandwidth); --json for
    /// comparison scripts such as models/bench_compare.py.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Command {
    /// Whether the command prints JSON records (then a fatal error is one too).
    fn json(&self) -> bool {
        match self {
            Command::Classify(a) => a.json(),
            Command::Demo(a) => a.json(),
            Command::Cache(c) => c.json(),
            Command::Classes(c) => c.json(),
            Command::Tune(a) => a.json,
            Command::Finetune(a) => a.json,
            Command::Eval(a) => a.json,
            Command::Embed(_) => false,
            Command::Stream(_) => true,
            Command::Flash(a) => a.json,
            Command::Rollback(a) => a.json,
            Command::Status(a) => a.json,
            Command::Enrol(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::Info(a) => a.json,
            Command::Compile(a) => a.json,
            Command::Tokenize(a) => a.json,
            Command::Bench(c) => c.json(),
        }
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_FATAL } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.command.json();
    let result = match cli.command {
        Command::Classify(args) => classify::run(args),
        Command::Demo(args) => classify::demo(args),
        Command::Cache(cmd) => cache::run(cmd),
        Command::Classes(cmd) => classes::run(cmd),
        Command::Tune(args) => tune::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Stream(args) => stream::run(args),
        Command::Flash(args) => device::flash(args),
        Command::Rollback(args) => device::rollback(args),
        Command::Status(args) => device::status(args),
        Command::Enrol(args) => device::enrol(args),
        Command::Embed(args) => embed::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Info(args) => info::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if json {
                let record = match e.downcast_ref::<tipedge::Error>() {
                    Some(err) => tipedge::record::ErrorRecord::new(err),
                    None => tipedge::record::ErrorRecord::message(&e),
                };
                common::print_json(&record);
            }
            EXIT_FATAL
        }
    }
}
