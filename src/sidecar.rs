//! The JSON sidecar written next to every exported graph (`image.onnx` → `image.json`).
//!
//! It carries what the graph itself cannot say: which family it is, how images must be prepared,
//! the embedding size, CLIP's logit scale and context length, and the sha256 of the graph bytes,
//! which doubles as the encoder's fingerprint (an adapter pack built with one encoder is refused
//! by another).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io_reason, Error, Result};
use crate::preprocess::{Interpolation, Recipe};

pub const FORMAT: &str = "tipedge-sidecar/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// A CLIP tower: the image tower pairs with a text tower in the same folder.
    Clip,
    /// An image-only backbone (no text tower): only the cache term of Tip-Adapter applies.
    Backbone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tower {
    Image,
    Text,
    /// CoOp's text tower from prompt token embeddings (`text_embed.onnx`): inputs
    /// `[B, context, width]` f32 embeddings and `[B]` i64 EOT positions.
    Prompt,
}

/// The token-embedding table a prompt tower reads its token rows from (a safetensors file
/// beside the graph, memory-mapped).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenTableSpec {
    /// File name, relative to the graph's folder.
    pub file: String,
    /// The tensor's name in the file.
    pub tensor: String,
    /// `f16` or `f32`.
    pub dtype: String,
    pub rows: usize,
    pub width: usize,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// `null` marks the dynamic batch axis.
    pub shape: Vec<Option<usize>>,
    pub dtype: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    pub dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreprocessSpec {
    pub resize: u32,
    pub resize_mode: String,
    pub interpolation: String,
    pub crop: String,
    pub crop_size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub format: String,
    pub family: Family,
    pub arch: String,
    pub tower: Tower,
    #[serde(default)]
    pub pretrained: Option<String>,
    pub graph: String,
    pub sha256: String,
    pub input: TensorSpec,
    pub output: OutputSpec,
    pub embed_dim: usize,
    #[serde(default)]
    pub preprocess: Option<PreprocessSpec>,
    #[serde(default)]
    pub logit_scale: Option<f32>,
    #[serde(default)]
    pub context_length: Option<usize>,
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// For int8 graphs written by models/quantize.py: scheme, per-channel, calibration
    /// (method, image count and digest), the f32 graph's sha256. Informational: tract reads the
    /// quantisation parameters from the graph itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<serde_json::Value>,
    /// Prompt towers: the EOT-position input (`[B]`, i64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eot_input: Option<TensorSpec>,
    /// Prompt towers: the token-embedding table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_table: Option<TokenTableSpec>,
}

impl Sidecar {
    /// The sidecar path for a graph: same stem, `.json`.
    pub fn path_for(graph: &Path) -> PathBuf {
        graph.with_extension("json")
    }

    /// Reads and checks a sidecar file (format tag, fields that must be present for its tower).
    pub fn read(path: &Path) -> Result<Sidecar> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::model(
                path,
                format!("cannot read the model sidecar: {}", io_reason(&e)),
            )
        })?;
        let sc: Sidecar = serde_json::from_slice(&bytes)
            .map_err(|e| Error::model(path, format!("not a valid sidecar: {e}")))?;
        if sc.format != FORMAT {
            return Err(Error::model(
                path,
                format!(
                    "sidecar format is {:?}, this tipedge reads {FORMAT:?}",
                    sc.format
                ),
            ));
        }
        if sc.output.dim != sc.embed_dim || sc.embed_dim == 0 {
            return Err(Error::model(
                path,
                format!(
                    "sidecar says output dim {} but embed_dim {}",
                    sc.output.dim, sc.embed_dim
                ),
            ));
        }
        match sc.tower {
            Tower::Image => {
                let recipe = sc.recipe().map_err(|r| Error::model(path, r))?;
                let expect = [3, recipe.crop_size as usize, recipe.crop_size as usize];
                let dims: Vec<Option<usize>> = sc.input.shape.iter().skip(1).copied().collect();
                if sc.input.shape.len() != 4 || dims != expect.map(Some) {
                    return Err(Error::model(
                        path,
                        format!(
                            "sidecar input shape {:?} disagrees with its crop size {}",
                            sc.input.shape, recipe.crop_size
                        ),
                    ));
                }
            }
            Tower::Prompt => {
                let ctx = sc
                    .context_length
                    .ok_or_else(|| Error::model(path, "prompt sidecar has no context_length"))?;
                let table = sc
                    .token_table
                    .as_ref()
                    .ok_or_else(|| Error::model(path, "prompt sidecar has no token_table"))?;
                let eot = sc
                    .eot_input
                    .as_ref()
                    .ok_or_else(|| Error::model(path, "prompt sidecar has no eot_input"))?;
                if sc.input.shape != [None, Some(ctx), Some(table.width)] || sc.input.dtype != "f32"
                {
                    return Err(Error::model(
                        path,
                        format!(
                            "sidecar input {:?} {} is not f32 [batch, {ctx}, {}] (context_length, \
                             token table width)",
                            sc.input.shape, sc.input.dtype, table.width
                        ),
                    ));
                }
                if eot.shape != [None] || eot.dtype != "i64" {
                    return Err(Error::model(
                        path,
                        format!(
                            "sidecar eot_input {:?} {} is not i64 [batch]",
                            eot.shape, eot.dtype
                        ),
                    ));
                }
                if table.dtype != "f16" && table.dtype != "f32" {
                    return Err(Error::model(
                        path,
                        format!("token table dtype {:?} (expected f16 or f32)", table.dtype),
                    ));
                }
            }
            Tower::Text => {
                let ctx = sc
                    .context_length
                    .ok_or_else(|| Error::model(path, "text sidecar has no context_length"))?;
                if sc.input.shape.len() != 2 || sc.input.shape[1] != Some(ctx) {
                    return Err(Error::model(
                        path,
                        format!(
                            "sidecar input shape {:?} disagrees with context_length {ctx}",
                            sc.input.shape
                        ),
                    ));
                }
            }
        }
        Ok(sc)
    }

    /// The image preprocessing recipe this graph was exported with.
    pub fn recipe(&self) -> std::result::Result<Recipe, String> {
        let p = self
            .preprocess
            .as_ref()
            .ok_or_else(|| "image sidecar has no preprocess section".to_string())?;
        if p.resize_mode != "shortest" {
            return Err(format!(
                "resize_mode {:?} is not supported (only \"shortest\")",
                p.resize_mode
            ));
        }
        if p.crop != "center" {
            return Err(format!(
                "crop {:?} is not supported (only \"center\")",
                p.crop
            ));
        }
        let interpolation = match p.interpolation.as_str() {
            "bicubic" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            other => return Err(format!("interpolation {other:?} is not supported")),
        };
        if p.resize < p.crop_size || p.crop_size == 0 {
            return Err(format!(
                "resize {} is smaller than crop {}",
                p.resize, p.crop_size
            ));
        }
        if p.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || p.mean.iter().any(|m| !m.is_finite())
        {
            return Err("mean/std must be finite and std positive".to_string());
        }
        Ok(Recipe {
            resize: p.resize,
            crop_size: p.crop_size,
            interpolation,
            mean: p.mean,
            std: p.std,
        })
    }

    /// Checks that `graph` hashes to the sidecar's sha256. Returns the hex digest.
    pub fn verify_graph(&self, graph: &Path, bytes: &[u8]) -> Result<String> {
        self.verify_digest(graph, sha256_hex(bytes))
    }

    /// [`verify_graph`](Self::verify_graph) with the graph's digest already computed (e.g.
    /// streamed from the file by [`sha256_hex_of_file`], without holding the graph in memory).
    pub fn verify_digest(&self, graph: &Path, digest: String) -> Result<String> {
        if !digest.eq_ignore_ascii_case(&self.sha256) {
            return Err(Error::model(
                graph,
                format!(
                    "sha256 {} does not match its sidecar ({}): the graph was changed or the sidecar belongs to another export",
                    &digest[..16],
                    self.sha256.get(..16).unwrap_or(&self.sha256)
                ),
            ));
        }
        Ok(digest)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// [`sha256_hex`] of a file, read in 1 MiB blocks (no copy of a 351 MB graph in memory).
pub fn sha256_hex_of_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
