//! `tipedge inspect PACK`: what an adapter pack holds and whether it is intact.

use std::path::PathBuf;

use clap::Args;
use tipedge::pack::{inspect, Inspection};
use tipedge::record::InspectionRecord;

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
    match &r.problem {
        None => println!("  verdict     OK: passes full verification"),
        Some(p) => println!("  verdict     REFUSED: {p}"),
    }
}
