//! `tipedge classes add`: classes added to a pack by name, from its stored CoOp context.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;
use tipedge::coop::add_classes;
use tipedge::encoder::{ImageEncoder, ModelPaths, PromptEncoder};
use tipedge::pack::Pack;
use tipedge::text::Tokenizer;

use super::common::{print_json, RuntimeArgs};
use super::EXIT_OK;

#[derive(Subcommand, Debug)]
pub enum ClassesCommand {
    Add(AddArgs),
}

impl ClassesCommand {
    pub fn json(&self) -> bool {
        match self {
            ClassesCommand::Add(a) => a.json,
        }
    }
}

/// Add classes to a pack by name alone: each new class's row of W is computed on the device from
/// the CoOp context the pack was built with (cache build --coop; a generic context, not a
/// class-specific one) through the model's prompt tower (text_embed.onnx). The new classes have
/// no keys until shots of them are enrolled, so they are recognised by W alone. The pack is
/// written atomically (a temporary file renamed over the target): an interrupted or refused
/// add leaves the old pack as it was.
///
/// Example:
///   tipedge cache build --model M --shots shots --coop ctx.safetensors --out p.pack
///   tipedge classes add --pack p.pack --model M --name "hairline crack" --name "oil stain"
#[derive(Args, Debug)]
pub struct AddArgs {
    /// The pack to add to (built with --coop).
    #[arg(long)]
    pack: PathBuf,
    /// The model the pack was built for (its folder, with text_embed.onnx).
    #[arg(long)]
    model: PathBuf,
    /// A class name to add; repeat for several.
    #[arg(long = "name", required = true, value_name = "NAME")]
    names: Vec<String>,
    /// Where to write the new pack [default: replace --pack].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print one JSON record instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "classes_add")]
struct Added<'a> {
    pack: &'a PathBuf,
    added: &'a [String],
    classes: &'a [String],
}

pub fn run(cmd: ClassesCommand) -> anyhow::Result<i32> {
    let ClassesCommand::Add(args) = cmd;
    let paths = ModelPaths::resolve(&args.model)?;
    let pack = Pack::open(&args.pack, &ImageEncoder::expect_for(&paths.image)?)?;
    let prompt = paths.prompt.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no prompt tower text_embed.onnx beside the image graph (models/export_clip.py \
             exports it)",
            args.model.display()
        )
    })?;
    let tower = PromptEncoder::load(prompt, &args.runtime.run_options())?;
    let draft = add_classes(&pack, &tower, &Tokenizer::new(), &args.names)?;
    drop(pack);
    let out = args.out.unwrap_or(args.pack);
    draft.write(&out)?;
    if args.json {
        print_json(&Added {
            pack: &out,
            added: &args.names,
            classes: draft.class_names(),
        });
    } else {
        println!(
            "{}: added {} ({} classes: {})",
            out.display(),
            args.names.join(", "),
            draft.n_classes(),
            draft.class_names().join(", ")
        );
    }
    Ok(EXIT_OK)
}
