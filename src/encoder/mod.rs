//! tract-backed image and text towers.
//!
//! A graph is loaded once: its bytes are checked against the sidecar's sha256, its declared
//! input is checked against the sidecar, the input shape is fixed (fixed shapes optimise best in
//! tract), the graph is decluttered, optionally translated to f16, optimised and planned. What
//! precedes the optimisation can be done once ([`compile`]) and loaded from then on.

mod compiled;
mod glue;
mod graph;
mod optimise;
mod packing;
mod prompt;

pub use compiled::{Compiled, Record as CompiledRecord};
pub use graph::{OpTime, Precision, RunOptions};
pub use prompt::{PromptEncoder, TokenTable};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pack::{EncoderId, Expect, ENCODER_NAME_LEN};
use crate::preprocess::Recipe;
use crate::sidecar::{Family, Sidecar, Tower};
use graph::{Graph, Inputs};
use tract_onnx::prelude::Datum;

/// Where a model lives: a folder holding `image.onnx` (+ `image.json`) and, for CLIP,
/// `text.onnx` (+ `text.json`) and, for CoOp, `text_embed.onnx` (+ `text_embed.json` and its
/// token table); or the path of an image graph itself.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub image: PathBuf,
    pub text: Option<PathBuf>,
    /// The prompt tower (text from token embeddings) beside the image graph, if exported.
    pub prompt: Option<PathBuf>,
}

/// The prompt tower's file name in a model folder.
pub const PROMPT_GRAPH: &str = "text_embed.onnx";

impl ModelPaths {
    pub fn resolve(path: &Path) -> Result<ModelPaths> {
        if path.is_dir() {
            let image = path.join("image.onnx");
            if !image.is_file() {
                return Err(Error::model(path, "model folder has no image.onnx"));
            }
            let text = path.join("text.onnx");
            let prompt = path.join(PROMPT_GRAPH);
            Ok(ModelPaths {
                image,
                text: text.is_file().then_some(text),
                prompt: prompt.is_file().then_some(prompt),
            })
        } else if path.is_file() {
            let text = path.with_file_name("text.onnx");
            let text = (text != path && text.is_file()).then_some(text);
            let prompt = path.with_file_name(PROMPT_GRAPH);
            let prompt = (prompt != path && prompt.is_file()).then_some(prompt);
            Ok(ModelPaths {
                image: path.to_path_buf(),
                text,
                prompt,
            })
        } else {
            Err(Error::model(path, "no such model file or folder"))
        }
    }
}

/// The image tower: `[B, 3, H, W]` normalised pixels → `[B, dim]` features (not normalised).
pub struct ImageEncoder {
    graph: Graph,
    sidecar: Sidecar,
    recipe: Recipe,
    id: EncoderId,
}

impl ImageEncoder {
    /// Loads `path` and its sidecar (`path` with `.json`), verifying one against the other.
    pub fn load(path: &Path, opts: &RunOptions) -> Result<ImageEncoder> {
        let sidecar = read_sidecar(path, Tower::Image)?;
        let recipe = sidecar
            .recipe()
            .map_err(|r| Error::model(Sidecar::path_for(path), r))?;
        let side = recipe.crop_size as usize;
        let graph = Graph::load(
            path,
            &sidecar,
            Inputs::one(f32::datum_type(), &[3, side, side]),
            opts,
        )?;
        let id = encoder_id(&graph.sha256, &sidecar.arch);
        Ok(ImageEncoder {
            graph,
            sidecar,
            recipe,
            id,
        })
    }

    /// What a pack must match to be used with the image graph at `path`, from its sidecar and
    /// the graph's verified sha256, without building the graph (a device's `flash` checks packs
    /// against the installed model this way).
    pub fn expect_for(path: &Path) -> Result<Expect> {
        let sidecar = read_sidecar(path, Tower::Image)?;
        // Streamed: a device's flash need not hold the whole graph in memory to check it.
        let digest = crate::sidecar::sha256_hex_of_file(path)
            .map_err(|e| Error::model(path, crate::error::io_reason(&e)))?;
        let sha256 = sidecar.verify_digest(path, digest)?;
        Ok(Expect::model(
            sidecar.embed_dim,
            encoder_id(&sha256, &sidecar.arch),
        ))
    }

    /// The encoder as an adapter pack records it: the graph's sha256 and its architecture name.
    pub fn id(&self) -> &EncoderId {
        &self.id
    }

    /// What a pack must match to be used with this encoder: its feature dimension and graph.
    pub fn expect(&self) -> Expect {
        Expect::model(self.dim(), self.id.clone())
    }

    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }
    pub fn dim(&self) -> usize {
        self.sidecar.embed_dim
    }
    pub fn family(&self) -> Family {
        self.sidecar.family
    }
    /// The sha256 of the graph: the encoder's fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.graph.sha256
    }
    pub fn batch(&self) -> usize {
        self.graph.batch
    }
    pub fn precision(&self) -> Precision {
        self.graph.precision
    }

    /// Whether the graph computes on int8 tensors (found in the graph, whatever the sidecar says).
    pub fn is_int8(&self) -> bool {
        self.graph.int8
    }

    /// Why this encoder will be slow on this CPU, if it will. An int8 graph on an x86_64 CPU without AVX-512 VNNI or AVX-VNNI runs tract
    /// 0.23.9's `avx2_mmm_i32_8x8` kernel, whose inner loop mixes a legacy-SSE load into AVX code:
    /// measured 52-74x slower than the f32 kernel per matrix product (models/QUANTIZATION.md).
    /// f16 without native fp16 arithmetic (every x86 CPU tract supports) is emulated.
    pub fn slow_path_warning(&self) -> Option<String> {
        if self.graph.int8 && !fast_int8_matmul() {
            return Some(
                "int8 graph on an x86_64 CPU without AVX-512 VNNI / AVX-VNNI: tract's \
                 int8 kernel is much slower than f32 here (see models/QUANTIZATION.md); use the \
                 f32 graph on this machine"
                    .into(),
            );
        }
        if self.graph.precision == Precision::F16 && cfg!(target_arch = "x86_64") {
            return Some(
                "f16 on x86_64 is emulated by tract (10-25x slower than f32); it is meant \
                 for ARM CPUs with fp16 arithmetic (Pi 5, Jetson Orin)"
                    .into(),
            );
        }
        None
    }

    /// Where the graph was loaded from: `None` for its compiled form or when nothing was
    /// compiled for this batch and precision; otherwise why the compiled form beside it was not
    /// used (stale, damaged), one line naming the file, for the caller to show.
    pub fn load_note(&self) -> Option<&str> {
        self.graph.load_note()
    }

    /// What a caller should show once after loading, one line each: the
    /// [slow-path warning](Self::slow_path_warning) naming the graph, then the
    /// [load note](Self::load_note). Empty when there is nothing to say. The CLI prints them on
    /// stderr; the C ABI (`tipedge_session_warnings`) and the Python package
    /// (`Session.warnings`) hand them to the application.
    pub fn warnings(&self) -> Vec<String> {
        let slow = self
            .slow_path_warning()
            .map(|w| format!("{}: {w}", self.graph.path.display()));
        slow.into_iter()
            .chain(self.load_note().map(str::to_string))
            .collect()
    }

    /// The compiled form the graph was loaded from, if it was (see [`compile`]).
    pub fn compiled_from(&self) -> Option<&Path> {
        self.graph.compiled_from()
    }

    /// Encodes `n` preprocessed images laid out back to back in `pixels`
    /// (`n × 3 × H × W`), in chunks of the graph's batch size. Returns `n × dim` features (not
    /// normalised). Allocating convenience; the online path uses [`ImageEncoder::run`].
    pub fn encode(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.graph.run_all(pixels, n)
    }

    /// A reusable run state: the input tensor the preprocessor writes into and tract's state.
    pub fn state(&self) -> Result<EncoderState> {
        Ok(EncoderState {
            run: self.graph.state()?,
            pixels: vec![0.0; self.batch() * self.recipe.tensor_len()],
            tensor_len: self.recipe.tensor_len(),
        })
    }

    /// Encodes the first `n` images of `state`'s input (see [`EncoderState::image_mut`]; the
    /// other rows of the batch are zeroed) into `out` (`n × dim`, not normalised). Allocates
    /// nothing of its own; tract's run allocates its intermediate tensors.
    pub fn run(&self, state: &mut EncoderState, n: usize, out: &mut [f32]) -> Result<()> {
        if n == 0 || n > self.batch() || out.len() != n * self.dim() {
            return Err(Error::Invalid(format!(
                "encoder run of {n} images (batch {}) into {} values (dim {})",
                self.batch(),
                out.len(),
                self.dim()
            )));
        }
        state.pixels[n * state.tensor_len..].fill(0.0);
        self.graph.run_into(&mut state.run, &state.pixels, out)
    }

    /// Where one run's time goes, per operator type (median of `runs` runs).
    pub fn profile(&self, runs: usize) -> Result<Vec<OpTime>> {
        self.graph.profile(runs)
    }
}

/// The text tower: `[B, context]` token ids → `[B, dim]` features (not normalised).
pub struct TextEncoder {
    graph: Graph,
    sidecar: Sidecar,
    context_length: usize,
}

impl TextEncoder {
    pub fn load(path: &Path, opts: &RunOptions) -> Result<TextEncoder> {
        let sidecar = read_sidecar(path, Tower::Text)?;
        let context_length = sidecar.context_length.unwrap_or(77);
        let graph = Graph::load(
            path,
            &sidecar,
            Inputs::one(i64::datum_type(), &[context_length]),
            opts,
        )?;
        Ok(TextEncoder {
            graph,
            sidecar,
            context_length,
        })
    }

    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    pub fn dim(&self) -> usize {
        self.sidecar.embed_dim
    }

    /// As [`ImageEncoder::load_note`].
    pub fn load_note(&self) -> Option<&str> {
        self.graph.load_note()
    }

    /// As [`ImageEncoder::compiled_from`].
    pub fn compiled_from(&self) -> Option<&Path> {
        self.graph.compiled_from()
    }

    /// Encodes `n` token rows (`n × context_length` ids). Returns `n × dim` features.
    pub fn encode_tokens(&self, tokens: &[i64], n: usize) -> Result<Vec<f32>> {
        self.graph.run_all(tokens, n)
    }
}

/// The input and run state of an [`ImageEncoder`], reused from run to run: the `batch × 3 × H ×
/// W` input the preprocessor writes into and tract's state. One per thread; `Send`.
pub struct EncoderState {
    run: graph::RunState,
    pixels: Vec<f32>,
    tensor_len: usize,
}

impl EncoderState {
    /// The input of image `i` of the batch (`3 × H × W` normalised values).
    pub fn image_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.pixels[i * self.tensor_len..(i + 1) * self.tensor_len]
    }
    /// How many images one run takes.
    pub fn batch(&self) -> usize {
        self.pixels.len() / self.tensor_len
    }
    /// Values of one image's input (`3 × H × W`).
    pub fn tensor_len(&self) -> usize {
        self.tensor_len
    }
    /// Makes `image` (one image's input, [`EncoderState::tensor_len`] values) image 0 of the next
    /// run: exchanged with the state's buffer when the batch is 1 (no copy; `image` then holds
    /// the previous input, to be refilled), copied otherwise.
    pub fn load_image(&mut self, image: &mut Vec<f32>) {
        assert_eq!(image.len(), self.tensor_len, "one image's input");
        if self.pixels.len() == self.tensor_len {
            std::mem::swap(&mut self.pixels, image);
        } else {
            self.pixels[..self.tensor_len].copy_from_slice(image);
        }
    }
    /// How often a run had to allocate a new input tensor because tract still held the last
    /// one (0 with tract 0.23.9; checked by tests/alloc.rs).
    pub fn input_replacements(&self) -> u64 {
        self.run.replaced
    }
}

/// Compiles the model at `model` (a folder or an image graph; the text graph beside it too) for
/// `opts`' batch size and precision: each graph is verified, typed, decluttered (and translated
/// to f16) once and written beside it as tract's NNEF, with a record (see `compiled.rs`); later
/// loads with the same batch and precision read that instead of the ONNX graph. `on_graph` is
/// called before each graph with its path (for progress).
pub fn compile(
    model: &Path,
    opts: &RunOptions,
    mut on_graph: impl FnMut(&Path),
) -> Result<Vec<Compiled>> {
    if opts.batch == 0 {
        return Err(Error::Invalid("batch size must be at least 1".into()));
    }
    let paths = ModelPaths::resolve(model)?;
    let mut graphs = Vec::new();
    let image = read_sidecar(&paths.image, Tower::Image)?;
    let recipe = image
        .recipe()
        .map_err(|r| Error::model(Sidecar::path_for(&paths.image), r))?;
    let side = recipe.crop_size as usize;
    graphs.push((
        paths.image.clone(),
        image,
        f32::datum_type(),
        vec![3, side, side],
    ));
    if let Some(text) = &paths.text {
        let sidecar = read_sidecar(text, Tower::Text)?;
        let context = sidecar.context_length.unwrap_or(77);
        graphs.push((text.clone(), sidecar, i64::datum_type(), vec![context]));
    }
    let mut done = Vec::new();
    for (path, sidecar, dt, item) in graphs {
        on_graph(&path);
        let t = std::time::Instant::now();
        let (typed, sha256) =
            graph::typed_from_onnx(&path, &sidecar, Inputs::one(dt, &item), opts)?;
        let (out, bytes, digest) = compiled::write(&path, &sha256, &typed, opts)?;
        done.push(Compiled {
            graph: path,
            path: out,
            bytes,
            sha256: digest,
            batch: opts.batch,
            precision: opts.precision.name(),
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    Ok(done)
}

fn read_sidecar(graph: &Path, tower: Tower) -> Result<Sidecar> {
    if !graph.is_file() {
        return Err(Error::model(graph, "no such model file"));
    }
    let sc_path = Sidecar::path_for(graph);
    let sidecar = Sidecar::read(&sc_path)?;
    if sidecar.tower != tower {
        return Err(Error::model(
            &sc_path,
            format!(
                "sidecar describes a {:?} tower, expected {:?}",
                sidecar.tower, tower
            ),
        ));
    }
    Ok(sidecar)
}

/// The pack's record of an encoder: `sha256_hex` is the verified digest of the graph (64 hex
/// digits, as [`crate::sidecar::sha256_hex`] writes it), the name is cut to what a pack holds.
fn encoder_id(sha256_hex: &str, arch: &str) -> EncoderId {
    let mut sha256 = [0u8; 32];
    for (i, b) in sha256.iter_mut().enumerate() {
        *b = u8::from_str_radix(&sha256_hex[2 * i..2 * i + 2], 16)
            .expect("the graph's digest is 64 hex digits");
    }
    let mut name = arch.to_string();
    while name.len() > ENCODER_NAME_LEN {
        name.pop();
    }
    EncoderId { name, sha256 }
}

/// Whether tract has a fast int8 matrix product on this CPU: always on aarch64 (SMLAL, or SDOT
/// with dotprod), on x86_64 only with VNNI.
fn fast_int8_matmul() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512vnni") || is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}
