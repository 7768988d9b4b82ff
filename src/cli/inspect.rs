//! `tipedge inspect PACK`: what an adapter pack holds and whether it is intact.

use std::path::PathBuf;

use clap::Args;
use tipedge::pack::{inspect, Inspection};
use tipedge::record::{InspectionRecord, PromptContextRecord};

use super::common::print_json;
use super::{EXIT_FATAL, EXIT_OK};

/// Show an adapter pack: header (dims, key dtype, α, β, encoder, provenance), classes with their
/// key counts, every section's size and checksum status, and whether the pack passes full
/// verification. Exit code 0 when it does, 2 when a device would refuse it.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The pack file.
    pack: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<i32> {
    let r = inspect(&args.pack)?;
    if args.json {
        print_json(&InspectionRecord::new(&r));
    } else {
        print_text(&args.pack, &r);
    }
    Ok(if r.problem.is_none() {
        EXIT_OK
    } else {
        EXIT_FATAL
    })
}

/// The parts of the choice record the text form shows.
#[derive(serde::Deserialize)]
struct Choice {
    val_images: usize,
    recipe: String,
    head: String,
    candidates: Vec<ChoiceRow>,
}

#[derive(serde::Deserialize)]
struct ChoiceRow {
    recipe: String,
    head: String,
    val_top1: Option<f64>,
    chosen: bool,
}

fn print_text(path: &std::path::Path, r: &Inspection) {
    let h = &r.header;
    println!("{}", path.display());
    println!(
        "  format      tipedge pack v{}, {} bytes",
        h.version, r.file_len
    );
    println!(
        "  keys        {} × dim {} as {}, {} classes",
        h.n_keys, h.dim, h.key_dtype, h.n_classes
    );
    println!(
        "  scoring     logit scale {}, α {}, β {}",
        h.logit_scale, h.alpha, h.beta
    );
    if h.head.uses_gda() {
        println!(
            "  head        {}: GDA layer ({} × dim {}) with α {}{}",
            h.head,
            h.n_classes,
            h.dim,
            h.gda_alpha,
            if h.head.uses_cache() {
                ", plus the cache"
            } else {
                "; the keys are kept but not scored"
            }
        );
    } else {
        println!("  head        tip: the Tip-Adapter cache");
    }
    match h.temperature {
        Some(t) => {
            println!("  calibrated  temperature {t}: probabilities are softmax(logits / {t})")
        }
        None => {
            println!("  calibrated  no (no temperature fitted): probabilities are softmax(logits)")
        }
    }
    println!(
        "  encoder     {} (sha256 {})",
        h.encoder.name,
        h.encoder.sha256_hex()
    );
    let p = &h.provenance;
    println!(
        "  provenance  {} shots/class, {} augmentation epochs, seed {}, {}, created {} (unix)",
        p.shots, p.augment_epochs, p.seed, p.tool_version, p.created_unix
    );
    println!("  header      checksum {}", r.header_checksum);
    println!("  sections");
    for s in &r.sections {
        println!(
            "    {:<16} {:>12} bytes at {:>10}  crc32c {}",
            s.name(),
            s.length,
            s.offset,
            s.checksum
        );
    }
    if !r.classes.is_empty() {
        println!("  classes");
        for (i, c) in r.classes.iter().enumerate() {
            println!(
                "    {i:>4}  {:<32} {} keys",
                c.name.as_deref().unwrap_or("?"),
                c.keys
            );
        }
    }
    if let Some(bytes) = r.prompt_context.as_deref() {
        let p = PromptContextRecord::new(bytes);
        match (&p.problem, p.n_ctx, p.class_specific, p.position) {
            (None, Some(m), Some(csc), Some(pos)) => println!(
                "  prompt      CoOp context ({} bytes): {m} {} vectors, class tokens at the {pos}, \
                 for text tower {}{}",
                p.bytes,
                if csc { "class-specific" } else { "generic" },
                &p.text_tower_sha256.as_deref().unwrap_or("?")[..12],
                if csc {
                    ""
                } else {
                    "; classes can be added by name (classes add)"
                }
            ),
            _ => println!(
                "  prompt      CoOp context ({} bytes) that cannot be read: {}",
                p.bytes,
                p.problem.as_deref().unwrap_or("?")
            ),
        }
    }
    if let Some(c) = r
        .choice
        .as_deref()
        .and_then(|c| serde_json::from_str::<Choice>(c).ok())
    {
        println!(
            "  chosen on   {} validation images: recipe {}, head {}",
            c.val_images, c.recipe, c.head
        );
        for row in &c.candidates {
            let score = match row.val_top1 {
                Some(t) => format!("{t:>5.1}%"),
                None => "   — ".into(),
            };
            println!(
                "    {:<9} {:<4} val top-1 {score}{}",
                row.recipe,
                row.head,
                if row.chosen { "  ← kept" } else { "" }
            );
        }
    }
    match &r.problem {
        None => println!("  verdict     OK: passes full verification"),
        Some(p) => println!("  verdict     REFUSED: {p}"),
    }
}
