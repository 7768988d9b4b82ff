//! CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models"): a learned prompt
//! context → each class's prompt embeddings → the prompt tower → W.
//!
//! A context file (written by `models/coop_train.py` or `models/coop_import.py`) is safetensors
//! with one tensor `ctx`, f32 `[M, width]` (generic: one context shared by every class) or
//! `[N, M, width]` (class-specific, CSC), and string metadata: `format` = `tipedge-coop/1`,
//! `n_ctx`, `csc`, `position` (`end`, `middle`, `front`: where the class name's tokens go),
//! `classnames` (JSON), `text_tower_sha256` (the prompt graph it was trained for), `ctx_init`,
//! `source`, optionally `training` (JSON).
//!
//! Each class's prompt is built as the official `PromptLearner` does: the text
//! `"X X … X {name}."` (or `"{ctx_init} {name}."` for a word-initialised context) is tokenised,
//! its token embeddings are looked up in the tower's table, and the M embeddings after SOS are
//! replaced by the context (position `end`); for `middle` the class name's tokens go between
//! the two halves of the context, for `front` before it. The EOT position is the prompt's
//! largest token id, as CoOp takes it. A generic context serves any class name, so a class can
//! be added on the device from its name alone; a CSC context only the classes it was trained on.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::encoder::PromptEncoder;
use crate::error::{io_reason, Error, Result};
use crate::kernel::l2_normalize_rows;
use crate::pack::{Pack, PackDraft};
use crate::text::{Tokenizer, EOT, SOT};

/// The context file's format tag.
pub const CONTEXT_FORMAT: &str = "tipedge-coop/1";

/// Where the class name's tokens go in the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// `[SOS][v]1..[v]M[CLASS][.][EOS]` (CoOp's default).
    End,
    /// `[SOS][v]1..[v]M/2[CLASS][v]M/2+1..[v]M[.][EOS]`.
    Middle,
    /// `[SOS][CLASS][v]1..[v]M[.][EOS]`.
    Front,
}

impl Position {
    pub fn name(self) -> &'static str {
        match self {
            Position::End => "end",
            Position::Middle => "middle",
            Position::Front => "front",
        }
    }
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "end" => Ok(Position::End),
            "middle" => Ok(Position::Middle),
            "front" => Ok(Position::Front),
            other => Err(format!(
                "unknown class token position {other:?} (expected end, middle or front)"
            )),
        }
    }
}

/// A learned prompt context, as read from a context file (or a pack's copy of one).
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// `n_ctx × width` (generic) or `classnames.len() × n_ctx × width` (CSC) values.
    pub ctx: Vec<f32>,
    pub n_ctx: usize,
    pub width: usize,
    /// One context per class (CSC), for exactly the classes in `classnames`.
    pub class_specific: bool,
    /// The classes it was trained on, in order.
    pub classnames: Vec<String>,
    pub position: Position,
    /// The sha256 of the prompt graph it was trained for.
    pub text_tower_sha256: String,
    /// The words a word-initialised context started from ("" = random initialisation).
    pub ctx_init: String,
    /// What wrote the file.
    pub source: String,
}

impl Context {
    /// Reads a context file; errors name the file.
    pub fn read(path: &Path) -> Result<Context> {
        Context::read_with_bytes(path).map(|(c, _)| c)
    }

    /// [`read`](Self::read), also returning the file's bytes (what a pack stores).
    pub fn read_with_bytes(path: &Path) -> Result<(Context, Vec<u8>)> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Invalid(format!(
                "{}: cannot read the CoOp context: {}",
                path.display(),
                io_reason(&e)
            ))
        })?;
        let context = Context::from_bytes(&bytes)
            .map_err(|why| Error::Invalid(format!("{}: {why}", path.display())))?;
        Ok((context, bytes))
    }

    /// Parses a context file's bytes; the error is the reason alone (the caller names the
    /// origin).
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Context, String> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("not a CoOp context file (safetensors: {e})"))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("not a CoOp context file (safetensors: {e})"))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let get = |key: &str| {
            meta.get(key)
                .cloned()
                .ok_or_else(|| format!("context metadata has no {key:?}"))
        };
        let format = get("format")?;
        if format != CONTEXT_FORMAT {
            return Err(format!(
                "context format is {format:?}, this tipedge reads {CONTEXT_FORMAT:?}"
            ));
        }
        let view = st
            .tensor("ctx")
            .map_err(|_| "no tensor \"ctx\" in the context file".to_string())?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("ctx is {:?}, expected F32", view.dtype()));
        }
        let shape = view.shape().to_vec();
        let class_specific = match get("csc")?.as_str() {
            "true" => true,
            "false" => false,
            other => return Err(format!("csc is {other:?}, expected true or false")),
        };
        let classnames: Vec<String> = serde_json::from_str(&get("classnames")?)
            .map_err(|e| format!("classnames is not a JSON list of names: {e}"))?;
        let (n_ctx, width) = match (class_specific, shape.as_slice()) {
            (false, &[m, d]) => (m, d),
            (true, &[n, m, d]) if n == classnames.len() => (m, d),
            (true, &[n, _, _]) => {
                return Err(format!(
                    "class-specific ctx has {n} contexts for {} class names",
                    classnames.len()
                ))
            }
            _ => {
                return Err(format!(
                    "ctx has shape {shape:?}, expected [M, width]{}",
                    if class_specific {
                        " per class ([N, M, width]) for csc"
                    } else {
                        " (csc false)"
                    }
                ))
            }
        };
        if n_ctx == 0 || width == 0 {
            return Err(format!("ctx has shape {shape:?}: empty"));
        }
        let stated: usize = get("n_ctx")?
            .parse()
            .map_err(|_| "n_ctx is not a number".to_string())?;
        if stated != n_ctx {
            return Err(format!("n_ctx says {stated}, ctx has {n_ctx} vectors"));
        }
        let ctx: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if ctx.iter().any(|v| !v.is_finite()) {
            return Err("ctx has non-finite values".into());
        }
        let position = get("position")?.parse::<Position>()?;
        if let Some(i) = classnames.iter().position(|n| n.trim().is_empty()) {
            return Err(format!("class name {} is empty", i + 1));
        }
        Ok(Context {
            ctx,
            n_ctx,
            width,
            class_specific,
            classnames,
            position,
            text_tower_sha256: get("text_tower_sha256")?,
            ctx_init: meta.get("ctx_init").cloned().unwrap_or_default(),
            source: meta.get("source").cloned().unwrap_or_default(),
        })
    }

    /// The context as a context file (what [`from_bytes`](Self::from_bytes) reads back),
    /// written by the `safetensors` crate.
    pub fn to_bytes(&self) -> Vec<u8> {
        let data: Vec<u8> = self.ctx.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = if self.class_specific {
            vec![self.classnames.len(), self.n_ctx, self.width]
        } else {
            vec![self.n_ctx, self.width]
        };
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape, &data)
            .expect("ctx holds shape's values (checked when read or built)");
        let meta = std::collections::HashMap::from([
            ("format".to_string(), CONTEXT_FORMAT.to_string()),
            ("n_ctx".to_string(), self.n_ctx.to_string()),
            ("csc".to_string(), self.class_specific.to_string()),
            ("position".to_string(), self.position.name().to_string()),
            (
                "classnames".to_string(),
                serde_json::to_string(&self.classnames).expect("strings serialise"),
            ),
            (
                "text_tower_sha256".to_string(),
                self.text_tower_sha256.clone(),
            ),
            ("ctx_init".to_string(), self.ctx_init.clone()),
            ("source".to_string(), self.source.clone()),
        ]);
        safetensors::serialize([("ctx", view)], Some(meta)).expect("one f32 tensor serialises")
    }

    /// Refuses a context made for another text tower (dimension or fingerprint).
    pub fn check_tower(&self, tower: &PromptEncoder) -> std::result::Result<(), String> {
        if self.width != tower.width() {
            return Err(format!(
                "context width {} is not the text tower's token width {} ({})",
                self.width,
                tower.width(),
                tower.path().display()
            ));
        }
        if self.text_tower_sha256 != tower.fingerprint() {
            return Err(format!(
                "context was trained for text tower {}, not {} ({})",
                short(&self.text_tower_sha256),
                short(tower.fingerprint()),
                tower.path().display()
            ));
        }
        Ok(())
    }

    /// Which context row serves each of `names`: 0 for a generic context; for a CSC context
    /// the class's own, and the names must be exactly the trained classes, in order.
    fn rows_for(&self, names: &[String]) -> std::result::Result<Vec<usize>, String> {
        if !self.class_specific {
            return Ok(vec![0; names.len()]);
        }
        if names != self.classnames.as_slice() {
            return Err(format!(
                "class-specific context was trained on {} classes [{}], not these {} [{}]",
                self.classnames.len(),
                self.classnames.join(", "),
                names.len(),
                names.join(", ")
            ));
        }
        Ok((0..names.len()).collect())
    }

    fn vectors(&self, row: usize) -> &[f32] {
        let len = self.n_ctx * self.width;
        &self.ctx[row * len..(row + 1) * len]
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The prompts of `names` under `context`: `names.len() × context_length × width` embeddings
/// and each prompt's EOT position, built as the official `PromptLearner`.
pub fn prompt_embeddings(
    tower: &PromptEncoder,
    tokenizer: &Tokenizer,
    context: &Context,
    names: &[String],
) -> std::result::Result<(Vec<f32>, Vec<i64>), String> {
    if context.width != tower.width() {
        return Err(format!(
            "context width {} is not the text tower's token width {}",
            context.width,
            tower.width()
        ));
    }
    let rows = context.rows_for(names)?;
    let (len, width, m) = (tower.context_length(), tower.width(), context.n_ctx);
    let prefix = if context.ctx_init.is_empty() {
        vec!["X"; m].join(" ")
    } else {
        context.ctx_init.clone()
    };
    let mut emb = vec![0f32; names.len() * len * width];
    let mut eot = Vec::with_capacity(names.len());
    let mut tokens = vec![0u32; len];
    let mut slots: Vec<Slot> = Vec::with_capacity(len);
    for (i, (name, &row)) in names.iter().zip(&rows).enumerate() {
        let name_len = tokenizer.encode(name).len();
        if name.trim().is_empty() || name_len == 0 {
            return Err(format!("class name {name:?} is empty"));
        }
        let ids = tokenizer.encode(&format!("{prefix} {name}."));
        if ids.len() + 2 > len {
            return Err(format!(
                "class name {name:?} is {name_len} tokens: with the {m} context tokens the \
                 prompt needs {} of the {len}-token context",
                ids.len() + 2
            ));
        }
        tokens.fill(0);
        tokens[0] = SOT;
        tokens[1..1 + ids.len()].copy_from_slice(&ids);
        tokens[1 + ids.len()] = EOT;
        if 1 + m + name_len > len {
            return Err(format!(
                "class name {name:?} does not fit after the context"
            ));
        }
        // Slot sequence per position mode; suffix index k is token 1 + m + k.
        slots.clear();
        slots.push(Slot::Token(0));
        let suffix = |k: usize| Slot::Token(1 + m + k);
        let half = m / 2;
        match context.position {
            Position::End => {
                slots.extend((0..m).map(Slot::Ctx));
                slots.extend((0..len - 1 - m).map(suffix));
            }
            Position::Middle => {
                slots.extend((0..half).map(Slot::Ctx));
                slots.extend((0..name_len).map(suffix));
                slots.extend((half..m).map(Slot::Ctx));
                slots.extend((name_len..len - 1 - m).map(suffix));
            }
            Position::Front => {
                slots.extend((0..name_len).map(suffix));
                slots.extend((0..m).map(Slot::Ctx));
                slots.extend((name_len..len - 1 - m).map(suffix));
            }
        }
        debug_assert_eq!(slots.len(), len);
        let vectors = context.vectors(row);
        let out = &mut emb[i * len * width..(i + 1) * len * width];
        for (slot, dst) in slots.iter().zip(out.chunks_exact_mut(width)) {
            match *slot {
                Slot::Token(t) => tower
                    .table()
                    .row_into(tokens[t] as usize, dst)
                    .map_err(|e| e.to_string())?,
                Slot::Ctx(j) => dst.copy_from_slice(&vectors[j * width..(j + 1) * width]),
            }
        }
        // CoOp pools at the tokenised prompt's argmax (EOT is the largest id).
        let at = (0..len).max_by_key(|&t| (tokens[t], std::cmp::Reverse(t)));
        eot.push(at.expect("context length > 0") as i64);
    }
    Ok((emb, eot))
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Row of the tokenised prompt (its token's embedding).
    Token(usize),
    /// Context vector j.
    Ctx(usize),
}

/// CoOp's W for `names` (`names.len() × dim`, unit rows): the prompts run through the prompt
/// tower, each feature L2-normalised. The context must have been trained for this tower.
pub fn build_classifier(
    tower: &PromptEncoder,
    tokenizer: &Tokenizer,
    context: &Context,
    names: &[String],
) -> Result<Vec<f32>> {
    context.check_tower(tower).map_err(Error::Invalid)?;
    let (emb, eot) = prompt_embeddings(tower, tokenizer, context, names).map_err(Error::Invalid)?;
    let mut w = tower.encode(&emb, &eot, names.len())?;
    l2_normalize_rows(&mut w, tower.dim());
    Ok(w)
}

/// What `tipedge classes add` makes: the pack with classes added by name, each with its row of
/// W from the pack's stored CoOp context through `tower`, and no keys (their cache term is zero
/// until shots are enrolled). Refused, naming the pack, when the pack has no stored context, when
/// the context is class-specific (it has no context for a new class), when it was trained for
/// another text tower, or when a name is empty, already a class, or too long for the prompt.
pub fn add_classes(
    pack: &Pack,
    tower: &PromptEncoder,
    tokenizer: &Tokenizer,
    names: &[String],
) -> Result<PackDraft> {
    let refuse = |why: String| Error::Invalid(format!("{}: {why}", pack.path().display()));
    let bytes = pack.prompt_context().ok_or_else(|| {
        refuse(
            "the pack has no CoOp prompt context (its W came from templates): build it with \
             cache build --coop, or add the class with shots (tipedge enrol)"
                .into(),
        )
    })?;
    let context =
        Context::from_bytes(bytes).map_err(|why| refuse(format!("prompt context: {why}")))?;
    if context.class_specific {
        return Err(refuse(format!(
            "the pack's CoOp context is class-specific (CSC: one context per class of [{}]), \
             so it has no context for a new class; train a generic context to add classes by \
             name",
            context.classnames.join(", ")
        )));
    }
    context.check_tower(tower).map_err(refuse)?;
    if names.is_empty() {
        return Err(refuse("no class names to add".into()));
    }
    let mut draft = PackDraft::from_pack(pack);
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(refuse(format!("class '{name}' is given twice")));
        }
    }
    let (emb, eot) = prompt_embeddings(tower, tokenizer, &context, names).map_err(refuse)?;
    let mut rows = tower.encode(&emb, &eot, names.len())?;
    l2_normalize_rows(&mut rows, tower.dim());
    for (name, row) in names.iter().zip(rows.chunks_exact(tower.dim())) {
        draft
            .add_class(name, row)
            .map_err(|e| refuse(e.to_string()))?;
    }
    Ok(draft)
}
