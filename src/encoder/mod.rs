//! tract-backed image and text towers.
//!
//! A graph is loaded once: its bytes are checked against the sidecar's sha256, its declared
//! input is checked against the sidecar, the input shape is fixed (fixed shapes optimise best in
//! tract), the graph is decluttered, optionally translated to f16, optimised and planned.

mod graph;
pub mod tokenizer;

pub use graph::{OpTime, Precision, RunOptions};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::preprocess::Recipe;
use crate::sidecar::{Family, Sidecar, Tower};
use graph::Graph;
use tract_onnx::prelude::Datum;

/// Where a model lives: a folder holding `image.onnx` (+ `image.json`) and, for CLIP,
/// `text.onnx` (+ `text.json`); or the path of an image graph itself.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub image: PathBuf,
    pub text: Option<PathBuf>,
}

impl ModelPaths {
    pub fn resolve(path: &Path) -> Result<ModelPaths> {
        if path.is_dir() {
            let image = path.join("image.onnx");
            if !image.is_file() {
                return Err(Error::model(path, "model folder has no image.onnx"));
            }
            let text = path.join("text.onnx");
            Ok(ModelPaths {
                image,
                text: text.is_file().then_some(text),
            })
        } else if path.is_file() {
            let text = path.with_file_name("text.onnx");
            let text = (text != path && text.is_file()).then_some(text);
            Ok(ModelPaths {
                image: path.to_path_buf(),
                text,
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
}

impl ImageEncoder {
    /// Loads `path` and its sidecar (`path` with `.json`), verifying one against the other.
    pub fn load(path: &Path, opts: &RunOptions) -> Result<ImageEncoder> {
        let sidecar = read_sidecar(path, Tower::Image)?;
        let recipe = sidecar
            .recipe()
            .map_err(|r| Error::model(Sidecar::path_for(path), r))?;
        let side = recipe.crop_size as usize;
        let graph = Graph::load(path, &sidecar, f32::datum_type(), &[3, side, side], opts)?;
        Ok(ImageEncoder {
            graph,
            sidecar,
            recipe,
        })
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

    /// Encodes `n` preprocessed images laid out back to back in `pixels`
    /// (`n × 3 × H × W`), in chunks of the graph's batch size. Returns `n × dim` features.
    pub fn encode(&self, pixels: &[f32], n: usize) -> Result<Vec<f32>> {
        self.graph.run_f32(pixels, n)
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
        let graph = Graph::load(path, &sidecar, i64::datum_type(), &[context_length], opts)?;
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

    /// Encodes `n` token rows (`n × context_length` ids). Returns `n × dim` features.
    pub fn encode_tokens(&self, tokens: &[i64], n: usize) -> Result<Vec<f32>> {
        self.graph.run_i64(tokens, n)
    }
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

pub use crate::kernel::l2_normalize_rows;
