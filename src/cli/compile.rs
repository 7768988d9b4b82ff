//! `tipedge compile`: the compiled form of a model's graphs, for fast, lean loads.

use std::path::PathBuf;

use clap::Args;
use tipedge::encoder::compile;

use super::common::{print_json, RuntimeArgs};
use super::EXIT_OK;

/// Pre-compile a model's graphs for fast start-up: each ONNX graph is verified, typed and
/// decluttered once (and translated to f16 with --precision f16) and written beside it as
/// tract's NNEF (`image.b1-f32.nnef.tar` + a record with its sha256 and the ONNX graph's).
/// Every later load with the same --batch and --precision reads it instead of the ONNX graph:
/// less time to the first frame and a lower memory peak (the ONNX parse holds the weights twice).
/// A stale or damaged compiled form is never used: tipedge says why and loads the ONNX graph.
///
/// Example:
///   tipedge compile models/fixtures/efficientnet-lite0
///   tipedge bench encoder --model models/fixtures/efficientnet-lite0   # load_ms drops
#[derive(Args, Debug)]
pub struct CompileArgs {
    /// Model folder or image.onnx (text.onnx beside it is compiled too).
    model: PathBuf,
    /// Print one JSON record per compiled graph.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: CompileArgs) -> anyhow::Result<i32> {
    let opts = args.runtime.run_options();
    let json = args.json;
    let done = compile(&args.model, &opts, |graph| {
        if !json {
            eprintln!("compiling {} …", graph.display());
        }
    })?;
    for c in &done {
        if json {
            print_json(c);
        } else {
            println!(
                "{} → {} ({:.1} MB, sha256 {}…, batch {}, {}, {:.1} s)",
                c.graph.display(),
                c.path.display(),
                c.bytes as f64 / 1e6,
                &c.sha256[..12],
                c.batch,
                c.precision,
                c.seconds
            );
        }
    }
    Ok(EXIT_OK)
}
