//! CoOp's text tower: prompt token embeddings in, text features out, and the token-embedding
//! table the prompts' fixed tokens are read from.
//!
//! The graph (`text_embed.onnx`, exported by `models/export_clip.py`) is CoOp's
//! `TextEncoder.forward`: `[B, context, width]` embeddings + the positional embedding, the
//! transformer with CLIP's causal mask, `ln_final`, the row at each prompt's EOT position
//! (`[B]` i64), `text_projection`. The table (`token_embedding.safetensors`, `[vocab, width]`,
//! f16 or f32) is memory-mapped: building a prompt reads a few dozen rows, so only their pages
//! become resident, not the whole table (about 100 MB for ViT-B/32 in f32).

use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use tract_onnx::prelude::Datum;

use super::graph::{Graph, Inputs};
use super::{read_sidecar, Precision, RunOptions};
use crate::error::{io_reason, Error, Result};
use crate::sidecar::{sha256_hex_of_file, Sidecar, TokenTableSpec, Tower};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    F16,
    F32,
}

/// The token-embedding table `[rows, width]`, memory-mapped from a safetensors file.
pub struct TokenTable {
    map: Mmap,
    /// Byte offset of row 0 in the file.
    start: usize,
    rows: usize,
    width: usize,
    element: Element,
    path: PathBuf,
    sha256: String,
}

impl TokenTable {
    /// Opens the table `spec` describes at `path`: the file's sha256 must be the recorded one
    /// (read in a stream, not through the map, so checking it leaves nothing resident), and its
    /// tensor must have the recorded name, dtype and shape.
    pub fn open(path: &Path, spec: &TokenTableSpec) -> Result<TokenTable> {
        let fail = |why: String| Error::model(path, why);
        let sha256 = sha256_hex_of_file(path)
            .map_err(|e| fail(format!("cannot read the token table: {}", io_reason(&e))))?;
        if sha256 != spec.sha256 {
            return Err(fail(format!(
                "token table sha256 {sha256} is not the sidecar's {} (corrupt, or another model's)",
                spec.sha256
            )));
        }
        let file = File::open(path)
            .map_err(|e| fail(format!("cannot open the token table: {}", io_reason(&e))))?;
        // SAFETY: the file is mapped read-only; tipedge never writes to a model's files. A
        // table replaced on disk while mapped is what a device's model install must not do
        // (it installs a new folder and switches to it).
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| fail(format!("cannot map the token table: {}", io_reason(&e))))?;
        let (header, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
        let info = meta
            .info(&spec.tensor)
            .ok_or_else(|| fail(format!("no tensor {:?} in the file", spec.tensor)))?;
        let element = match (info.dtype, spec.dtype.as_str()) {
            (Dtype::F16, "f16") => Element::F16,
            (Dtype::F32, "f32") => Element::F32,
            (d, s) => {
                return Err(fail(format!(
                    "tensor {:?} is {d:?}, the sidecar says {s}",
                    spec.tensor
                )))
            }
        };
        if info.shape != [spec.rows, spec.width] {
            return Err(fail(format!(
                "tensor {:?} has shape {:?}, the sidecar says [{}, {}]",
                spec.tensor, info.shape, spec.rows, spec.width
            )));
        }
        Ok(TokenTable {
            start: 8 + header + info.data_offsets.0,
            rows: spec.rows,
            width: spec.width,
            element,
            path: path.to_path_buf(),
            sha256,
            map,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn width(&self) -> usize {
        self.width
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Writes token `id`'s embedding (as f32) into `out` (`width` values).
    pub fn row_into(&self, id: usize, out: &mut [f32]) -> Result<()> {
        if id >= self.rows || out.len() != self.width {
            return Err(Error::Invalid(format!(
                "{}: token {id} of {} rows into {} values (width {})",
                self.path.display(),
                self.rows,
                out.len(),
                self.width
            )));
        }
        match self.element {
            Element::F16 => {
                let at = self.start + 2 * id * self.width;
                let bytes = &self.map[at..at + 2 * self.width];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Element::F32 => {
                let at = self.start + 4 * id * self.width;
                let bytes = &self.map[at..at + 4 * self.width];
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        Ok(())
    }
}

/// CoOp's text tower: `n × context × width` prompt embeddings and `n` EOT positions →
/// `n × dim` text features (not normalised). Always run in f32: W is computed once.
pub struct PromptEncoder {
    graph: Graph,
    sidecar: Sidecar,
    table: TokenTable,
    context_length: usize,
}

impl PromptEncoder {
    /// Loads the prompt graph at `path` (`text_embed.onnx`), its sidecar and its token table.
    pub fn load(path: &Path, opts: &RunOptions) -> Result<PromptEncoder> {
        let sidecar = read_sidecar(path, Tower::Prompt)?;
        let spec = sidecar
            .token_table
            .clone()
            .expect("a prompt sidecar has a token table (checked when read)");
        let context_length = sidecar.context_length.unwrap_or(77);
        let table_path = path.with_file_name(&spec.file);
        let table = TokenTable::open(&table_path, &spec)?;
        let opts = RunOptions {
            precision: Precision::F32,
            ..opts.clone()
        };
        let graph = Graph::load(
            path,
            &sidecar,
            Inputs {
                dt: f32::datum_type(),
                item_shape: &[context_length, spec.width],
                positions: true,
            },
            &opts,
        )?;
        Ok(PromptEncoder {
            graph,
            sidecar,
            table,
            context_length,
        })
    }

    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }
    /// The graph's verified sha256: what a CoOp context file records as its text tower.
    pub fn fingerprint(&self) -> &str {
        &self.graph.sha256
    }
    pub fn path(&self) -> &Path {
        &self.graph.path
    }
    pub fn table(&self) -> &TokenTable {
        &self.table
    }
    pub fn context_length(&self) -> usize {
        self.context_length
    }
    /// The token-embedding width (the transformer's).
    pub fn width(&self) -> usize {
        self.table.width
    }
    /// The output (joint embedding) dimension.
    pub fn dim(&self) -> usize {
        self.sidecar.embed_dim
    }

    /// Encodes `n` prompts: `embeddings` holds `n × context × width` values, `eot` each
    /// prompt's EOT position. Returns `n × dim` features.
    pub fn encode(&self, embeddings: &[f32], eot: &[i64], n: usize) -> Result<Vec<f32>> {
        if let Some(bad) = eot
            .iter()
            .find(|&&p| p < 0 || p as usize >= self.context_length)
        {
            return Err(Error::Invalid(format!(
                "EOT position {bad} outside the {}-token context",
                self.context_length
            )));
        }
        self.graph.run_all_with_positions(embeddings, eot, n)
    }
}
