//! Options and helpers shared by several subcommands.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tipedge::dataset::LabelledSet;
use tipedge::encoder::{ImageEncoder, Precision, RunOptions};
use tipedge::pack::{EncoderId, Expect};
use tipedge::preprocess::DecodeLimits;
use tipedge::train::features::{encode_split, EncodedSplit, FeatureStore};

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

/// Loads an image encoder and warns on stderr (one line naming the graph) when it will be
/// slow on this CPU: an int8 graph without VNNI on x86_64, f16 on x86_64.
pub fn load_image_encoder(
    path: &std::path::Path,
    opts: &RunOptions,
) -> tipedge::error::Result<ImageEncoder> {
    let encoder = ImageEncoder::load(path, opts)?;
    if let Some(w) = encoder.slow_path_warning() {
        eprintln!("warning: {}: {w}", path.display());
    }
    Ok(encoder)
}

/// A progress bar on stderr with rate and ETA, hidden with `--json` or when stdout or stderr is
/// not a terminal (output redirected to a file or a pipe, logs: no control characters).
pub fn progress(len: usize, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
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

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn tool_version() -> String {
    format!("tipedge {}", env!("CARGO_PKG_VERSION"))
}

/// Where encoded validation / test features are kept between runs.
#[derive(Args, Debug, Clone)]
pub struct FeatureStoreArgs {
    /// Folder of the feature store (features of val/test images, keyed by encoder and file
    /// content, reused by tune, finetune and eval) [default: $TIPEDGE_FEATURES, else
    /// $XDG_CACHE_HOME/tipedge/features, else ~/.cache/tipedge/features].
    #[arg(long, value_name = "DIR")]
    pub features: Option<PathBuf>,
    /// Encode every image again and keep nothing.
    #[arg(long, conflicts_with = "features")]
    pub no_feature_store: bool,
}

/// The unit-norm features of a labelled split (through the feature store unless disabled),
/// with the labels mapped onto `classes` (the pack's class names): a split class the pack
/// does not know is an error. Unreadable images are reported on stderr and left out.
pub fn encode_labelled(
    encoder: &ImageEncoder,
    split: &std::path::Path,
    classes: &[String],
    store_args: &FeatureStoreArgs,
    runtime: &RuntimeArgs,
    what: &str,
    quiet: bool,
) -> anyhow::Result<EncodedSplit> {
    let set = LabelledSet::read(split)?;
    let mut map = Vec::with_capacity(set.classes.len());
    for c in &set.classes {
        let Some(i) = classes.iter().position(|n| *n == c.name) else {
            anyhow::bail!(
                "{}: class '{}' is not one of the pack's classes ({})",
                split.join(&c.folder).display(),
                c.name,
                classes.join(", ")
            );
        };
        map.push(i as u32);
    }
    let mut store = if store_args.no_feature_store {
        None
    } else {
        let dir = store_args
            .features
            .clone()
            .unwrap_or_else(FeatureStore::default_dir);
        let s = FeatureStore::open(
            &dir,
            encoder.fingerprint(),
            encoder.precision().name(),
            encoder.dim(),
        )?;
        if s.dropped_tail() {
            eprintln!(
                "{}: cut off a damaged tail (an interrupted run); the damaged features will be encoded again",
                s.path().display()
            );
        }
        Some(s)
    };
    let bar = progress(set.len(), what, quiet);
    let mut out = encode_split(encoder, &set, store.as_mut(), runtime.limits(), |n| {
        bar.set_position(n as u64)
    })?;
    bar.finish_and_clear();
    for s in &out.skipped {
        eprintln!("skipped {what} image: {}", s.reason);
    }
    anyhow::ensure!(
        !out.labels.is_empty(),
        "{}: no image could be encoded",
        split.display()
    );
    for l in &mut out.labels {
        *l = map[*l as usize];
    }
    Ok(out)
}
