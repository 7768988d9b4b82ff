//! CLIP's text classifier W from class names: with prompt templates (zero-shot CLIP) or with a
//! learned CoOp context ([`crate::coop`]).

use std::path::{Path, PathBuf};

use crate::coop::{self, Context};
use crate::encoder::{ImageEncoder, ModelPaths, PromptEncoder, RunOptions, TextEncoder};
use crate::error::{Error, Result};
use crate::kernel::l2_normalize_rows;
use crate::progress::Progress;
use crate::sidecar::Family;
use crate::text::Tokenizer;

/// Tip-Adapter's 7 ImageNet templates (the official repo's `imagenet_templates`).
pub const TIP_ADAPTER_IMAGENET: [&str; 7] = [
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
];

/// CLIP's 80 ImageNet prompt templates (OpenAI, as shipped in open_clip's `zero_shot_metadata`).
pub const CLIP_IMAGENET: [&str; 80] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// A set of prompt templates, each with one `{}` where the class name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates(pub Vec<String>);

impl Templates {
    /// `tip` (7 templates), `clip` (80), `photo` ("a photo of a {}."), or a file with one
    /// template per line (blank lines and lines starting with `#` ignored).
    pub fn resolve(spec: &str) -> Result<Templates> {
        let owned = |t: &[&str]| Templates(t.iter().map(|s| s.to_string()).collect());
        match spec {
            "tip" => Ok(owned(&TIP_ADAPTER_IMAGENET)),
            "clip" => Ok(owned(&CLIP_IMAGENET)),
            "photo" => Ok(owned(&["a photo of a {}."])),
            path => Self::read(Path::new(path)),
        }
    }

    fn read(path: &Path) -> Result<Templates> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a template set (tip, clip, photo) nor a readable file: {}",
                path.display(),
                crate::error::io_reason(&e)
            ))
        })?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.matches("{}").count() != 1 {
                return Err(Error::Invalid(format!(
                    "{}:{}: a template needs exactly one {{}} for the class name",
                    path.display(),
                    i + 1
                )));
            }
            out.push(line.to_string());
        }
        if out.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no templates in file",
                path.display()
            )));
        }
        Ok(Templates(out))
    }

    pub fn fill(&self, class_name: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|t| t.replacen("{}", class_name, 1))
            .collect()
    }
}

/// What W is made from.
#[derive(Debug, Clone)]
pub enum Prompts {
    /// Prompt templates through the token-id text tower (`text.onnx`): zero-shot CLIP.
    Templates(Templates),
    /// A learned CoOp context through the prompt tower (`text_embed.onnx`).
    Coop(CoopPrompts),
}

/// A CoOp context, the file it came from (named in errors) and the file's bytes (what a pack
/// stores, so that classes can be added by name later).
#[derive(Debug, Clone)]
pub struct CoopPrompts {
    pub context: Context,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl Prompts {
    /// `--coop FILE` when given (a context file), else `--templates SPEC`.
    pub fn resolve(templates: &str, coop: Option<&Path>) -> Result<Prompts> {
        match coop {
            Some(path) => {
                let (context, bytes) = Context::read_with_bytes(path)?;
                Ok(Prompts::Coop(CoopPrompts {
                    context,
                    path: path.to_path_buf(),
                    bytes,
                }))
            }
            None => Templates::resolve(templates).map(Prompts::Templates),
        }
    }

    /// The context file's bytes, for a CoOp context.
    pub fn context_bytes(&self) -> Option<&[u8]> {
        match self {
            Prompts::Templates(_) => None,
            Prompts::Coop(c) => Some(&c.bytes),
        }
    }

    /// One line for progress and reports.
    pub fn describe(&self) -> String {
        match self {
            Prompts::Templates(t) => format!("{} prompt templates", t.0.len()),
            Prompts::Coop(c) => format!(
                "CoOp context {} ({} {} vectors, class tokens at the {})",
                c.path.display(),
                c.context.n_ctx,
                if c.context.class_specific {
                    "class-specific"
                } else {
                    "generic"
                },
                c.context.position.name()
            ),
        }
    }
}

impl From<Templates> for Prompts {
    fn from(t: Templates) -> Prompts {
        Prompts::Templates(t)
    }
}

/// Builds W (`n_classes × dim`, rows unit-norm) as the official Tip-Adapter `clip_classifier`:
/// for each class, encode every template, L2-normalise each embedding, average, renormalise.
pub fn build_classifier(
    text: &TextEncoder,
    tokenizer: &Tokenizer,
    class_names: &[String],
    templates: &Templates,
    mut progress: impl FnMut(usize),
) -> Result<Vec<f32>> {
    let dim = text.dim();
    let ctx = text.context_length();
    let mut w = Vec::with_capacity(class_names.len() * dim);
    for (i, name) in class_names.iter().enumerate() {
        let prompts = templates.fill(name);
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let tokens = tokenizer.tokenize_batch(&refs, ctx);
        let mut emb = text.encode_tokens(&tokens, refs.len())?;
        l2_normalize_rows(&mut emb, dim);
        let mut mean = vec![0f32; dim];
        for row in emb.chunks_exact(dim) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= refs.len() as f32);
        l2_normalize_rows(&mut mean, dim);
        w.extend_from_slice(&mean);
        progress(i + 1);
    }
    Ok(w)
}

/// CLIP's classifier W for `encoder` from class names and `prompts`: templates through the
/// text tower beside the image tower (`model.text`), or a CoOp context through the prompt tower
/// (`model.prompt`); `None` for an image-only backbone, which has no text tower and uses the
/// cache term alone.
pub fn text_classifier(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    class_names: &[String],
    prompts: &Prompts,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<Option<Vec<f32>>> {
    if encoder.family() != Family::Clip {
        if let Prompts::Coop(c) = prompts {
            return Err(Error::model(
                &model.image,
                format!(
                    "an image-only backbone has no text tower for the CoOp context {}",
                    c.path.display()
                ),
            ));
        }
        return Ok(None);
    }
    let templates = match prompts {
        Prompts::Templates(t) => t,
        Prompts::Coop(c) => return coop_classifier(encoder, model, class_names, c, run, progress),
    };
    let text_path = model
        .text
        .as_ref()
        .ok_or_else(|| Error::model(&model.image, "CLIP model without text.onnx beside it"))?;
    let text = TextEncoder::load(text_path, run)?;
    if text.dim() != encoder.dim() {
        return Err(Error::model(
            text_path,
            format!(
                "text features have {} dims, image features {}",
                text.dim(),
                encoder.dim()
            ),
        ));
    }
    progress.start("prompts", class_names.len());
    let w = build_classifier(&text, &Tokenizer::new(), class_names, templates, |n| {
        progress.set(n)
    });
    progress.finish();
    w.map(Some)
}

fn coop_classifier(
    encoder: &ImageEncoder,
    model: &ModelPaths,
    class_names: &[String],
    coop: &CoopPrompts,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<Option<Vec<f32>>> {
    let path = model.prompt.as_ref().ok_or_else(|| {
        Error::model(
            &model.image,
            "a CoOp context needs the prompt tower text_embed.onnx beside the image graph \
             (models/export_clip.py exports it)",
        )
    })?;
    let tower = PromptEncoder::load(path, run)?;
    if tower.dim() != encoder.dim() {
        return Err(Error::model(
            path,
            format!(
                "text features have {} dims, image features {}",
                tower.dim(),
                encoder.dim()
            ),
        ));
    }
    progress.start("prompts", class_names.len());
    let w = coop::build_classifier(&tower, &Tokenizer::new(), &coop.context, class_names).map_err(
        |e| match e {
            Error::Invalid(why) => Error::Invalid(format!("{}: {why}", coop.path.display())),
            other => other,
        },
    );
    progress.finish();
    w.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_sets_and_files() {
        assert_eq!(Templates::resolve("tip").unwrap().0.len(), 7);
        assert_eq!(Templates::resolve("clip").unwrap().0.len(), 80);
        assert!(CLIP_IMAGENET.iter().all(|t| t.matches("{}").count() == 1));
        let t = Templates::resolve("photo").unwrap();
        assert_eq!(t.fill("tabby cat"), ["a photo of a tabby cat."]);

        let dir = std::env::temp_dir().join(format!("tipedge-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(
            &good,
            "# mine\n\na close-up of {} fabric.\n  {} texture  \n",
        )
        .unwrap();
        let t = Templates::resolve(good.to_str().unwrap()).unwrap();
        assert_eq!(
            t.fill("woven"),
            ["a close-up of woven fabric.", "woven texture"]
        );
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, "a photo of {}.\nno placeholder here\n").unwrap();
        let err = Templates::resolve(bad.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("bad.txt:2: a template needs exactly one {} for the class name"),
            "{err}"
        );
        let err = Templates::resolve("/nonexistent/t.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a template set (tip, clip, photo)"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
