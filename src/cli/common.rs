//! Options and helpers shared by several subcommands.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tipedge::encoder::{ImageEncoder, Precision, RunOptions};
use tipedge::pack::{EncoderId, Expect};
use tipedge::preprocess::DecodeLimits;

#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Threads for tract's matrix products (1 = single-threaded, the edge default).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Float precision of the graphs: f32, or f16 through tract's f32→f16 transform
    /// (fast on CPUs with native fp16 arithmetic such as the Pi 5; emulated elsewhere).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Images encoded per graph run. The graph is optimised for this fixed batch size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub batch: u16,
    /// Largest image accepted, in megapixels (guards against decompression bombs).
    #[arg(long, default_value_t = 64.0)]
    pub max_megapixels: f64,
}

impl RuntimeArgs {
    pub fn run_options(&self) -> RunOptions {
        RunOptions {
            precision: self.precision,
            batch: self.batch.into(),
            threads: self.threads.into(),
        }
    }
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: (self.max_megapixels * 1e6) as u64,
        }
    }
}

/// A progress bar on stderr with rate and ETA, hidden with `--json` or when stderr is not a
/// terminal (logs and pipes get no control characters).
pub fn progress(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Paths compiled in for `tipedge demo` and the README's first command.
pub fn repo_path(rel: &str) -> PathBuf {
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    if compiled.exists() {
        compiled
    } else {
        PathBuf::from(rel)
    }
}

/// The image encoder's identity as a pack records it: the graph's sha256 (from its sidecar)
/// and its architecture name for messages.
pub fn encoder_id(encoder: &ImageEncoder) -> anyhow::Result<EncoderId> {
    let hex = encoder.fingerprint();
    let mut sha256 = [0u8; 32];
    anyhow::ensure!(
        hex.len() == 64 && hex.is_ascii(),
        "model sidecar: sha256 '{hex}' is not 64 hex digits"
    );
    for (i, b) in sha256.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| anyhow::anyhow!("model sidecar: sha256 '{hex}' is not hex"))?;
    }
    let mut name = encoder.sidecar().arch.clone();
    while name.len() > tipedge::pack::ENCODER_NAME_LEN {
        name.pop();
    }
    Ok(EncoderId { name, sha256 })
}

/// What a pack must match to be used with `encoder`: its feature dimension and graph.
pub fn expect_for(encoder: &ImageEncoder) -> anyhow::Result<Expect> {
    Ok(Expect::model(encoder.dim(), encoder_id(encoder)?))
}
