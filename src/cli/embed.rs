//! `tipedge embed`: image files → feature vectors, one JSON line per image.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tipedge::dataset::expand_inputs;
use tipedge::embed::Embedder;
use tipedge::encoder::ModelPaths;
use tipedge::record::{to_json_line, EmbeddingRecord};

use super::common::{load_image_encoder, progress, RuntimeArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Print each image's feature vector as a JSON line {"path", "features"} (L2-normalised unless
/// --raw): for comparing encoders (f32 vs int8, x86 vs ARM), for models/accuracy_report.py, and
/// for anything downstream that wants the embeddings. Unreadable images are reported on stderr
/// and the others go on (exit code 1).
#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model folder or image.onnx.
    #[arg(long)]
    model: PathBuf,
    /// Image files or folders (walked recursively).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The graph's output as it is, not L2-normalised.
    #[arg(long)]
    raw: bool,
    /// Write the JSON lines to this file instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = load_image_encoder(&paths.image, &args.runtime.run_options())?;
    let files = expand_inputs(&args.inputs)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no image files found in the given inputs"
    );
    let mut sink: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| anyhow::anyhow!("{}: cannot create ({e})", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress(files.len(), "embed", args.out.is_none());
    let mut embedder = Embedder::new(&encoder, args.runtime.limits())?;
    embedder.set_normalize(!args.raw);
    let (mut n_ok, mut failed) = (0usize, Vec::new());
    let mut write_err = None;
    embedder.embed_all(&files, |item| {
        bar.inc(1);
        match item.result {
            Ok(f) => {
                let record = EmbeddingRecord {
                    path: &item.path,
                    features: f,
                };
                if let Err(e) = writeln!(sink, "{}", to_json_line(&record)) {
                    write_err.get_or_insert(e);
                }
                n_ok += 1;
            }
            Err(e) => failed.push(e.to_string()),
        }
    });
    bar.finish_and_clear();
    if let Some(e) = write_err {
        anyhow::bail!("cannot write the features: {e}");
    }
    sink.flush()?;
    for f in &failed {
        eprintln!("failed: {f}");
    }
    eprintln!("{n_ok} images embedded, {} failed", failed.len());
    Ok(if failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_SOME_FAILED
    })
}
