//! Options and printing shared by the subcommands; no library logic.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tipedge::encoder::{ImageEncoder, Precision, RunOptions};
use tipedge::preprocess::DecodeLimits;
use tipedge::progress::Progress;
use tipedge::train::features::FeatureStore;
use tipedge::train::search::{Grid, TieBreak, DEFAULT_SEARCH_SCALE, DEFAULT_SEARCH_STEPS};

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
/// slow on this CPU (an int8 graph without VNNI on x86_64, f16 on x86_64), or when a compiled
/// form beside it could not be used.
pub fn load_image_encoder(path: &Path, opts: &RunOptions) -> tipedge::Result<ImageEncoder> {
    let encoder = ImageEncoder::load(path, opts)?;
    print_load_warnings(&encoder);
    Ok(encoder)
}

pub fn print_load_warnings(encoder: &ImageEncoder) {
    for w in encoder.warnings() {
        eprintln!("warning: {w}");
    }
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

/// The library's progress as bars (one per stage); notes go to stderr between the bars, also
/// with `--json` (stdout stays machine-readable). Clones share the current bar, so a callback
/// can print beside it.
#[derive(Clone)]
pub struct Bars {
    quiet: bool,
    bar: Rc<RefCell<Option<ProgressBar>>>,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        Bars {
            quiet,
            bar: Rc::default(),
        }
    }
    /// Prints a line to stderr without tearing the current bar.
    pub fn println(&self, line: &str) {
        match &*self.bar.borrow() {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Progress for Bars {
    fn start(&mut self, stage: &str, total: usize) {
        self.finish();
        *self.bar.borrow_mut() = Some(progress(total, stage, self.quiet));
    }
    fn set(&mut self, done: usize) {
        if let Some(b) = &*self.bar.borrow() {
            b.set_position(done as u64);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
    fn note(&mut self, line: &str) {
        self.println(line);
    }
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

pub use tipedge::record::now_unix;

/// Prints one record as a JSON line on stdout.
pub fn print_json<T: serde::Serialize>(record: &T) {
    println!("{}", tipedge::record::to_json_line(record));
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

impl FeatureStoreArgs {
    /// The store's folder, or `None` for no store.
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_feature_store).then(|| {
            self.features
                .clone()
                .unwrap_or_else(FeatureStore::default_dir)
        })
    }
}

/// Whether `tune` / `finetune` fit the temperature of calibrated probabilities.
#[derive(Args, Debug, Clone)]
pub struct CalibrationArgs {
    /// Do not fit a temperature: the pack's probabilities stay softmax(logits), as in the
    /// official Tip-Adapter (and the pack is written as format version 1). By default T is
    /// fitted on the validation split at the chosen α/β, minimising its negative
    /// log-likelihood, so that a probability of 0.9 is right about 9 times in 10.
    #[arg(long)]
    pub no_calibration: bool,
}

/// The search grid's extent.
#[derive(Args, Debug, Clone)]
pub struct GridArgs {
    /// Largest β and largest α of the grid (Tip-Adapter's search_scale).
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = DEFAULT_SEARCH_SCALE, value_name = "BETA_MAX,ALPHA_MAX")]
    pub search_scale: Vec<f64>,
    /// Number of β and of α values (Tip-Adapter's search_step).
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = DEFAULT_SEARCH_STEPS, value_name = "BETA_STEPS,ALPHA_STEPS")]
    pub search_step: Vec<usize>,
    /// Which of equally accurate grid points to keep: official (the first in β-then-α order:
    /// the smallest β and α, Tip-Adapter's search_hp) or plateau (the point deepest inside the
    /// best region, so that a small shift of α or β stays on it).
    #[arg(long, value_enum, default_value_t = TieArg::Official)]
    pub tie_break: TieArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TieArg {
    Official,
    Plateau,
}

impl GridArgs {
    pub fn grid(&self) -> anyhow::Result<Grid> {
        let (&[bmax, amax], &[bs, a_s]) = (&self.search_scale[..], &self.search_step[..]) else {
            anyhow::bail!("--search-scale and --search-step take two values each");
        };
        anyhow::ensure!(
            bmax.is_finite() && amax.is_finite() && bmax > 0.1 && amax > 0.1,
            "--search-scale values must be finite and above 0.1 (the grid starts at 0.1)"
        );
        anyhow::ensure!(
            bs >= 1 && a_s >= 1,
            "--search-step values must be at least 1"
        );
        let tie = match self.tie_break {
            TieArg::Official => TieBreak::Official,
            TieArg::Plateau => TieBreak::Plateau,
        };
        Ok(Grid::official(bmax, amax, bs, a_s).with_tie(tie))
    }
}
