//! `tipedge info`: what a model is, and whether it loads.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tipedge::encoder::{ModelPaths, TextEncoder};
use tipedge::record::{ModelInfo, TowerInfo};

use super::common::{load_image_encoder, print_json, RuntimeArgs};

/// Show a model's sidecar, verify its graph hash and shapes, and time its loading.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model folder or image.onnx.
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: InfoArgs) -> anyhow::Result<i32> {
    let paths = ModelPaths::resolve(&args.model)?;
    let opts = args.runtime.run_options();
    let t0 = Instant::now();
    let image = load_image_encoder(&paths.image, &opts)?;
    let image_ms = t0.elapsed().as_secs_f64() * 1e3;
    let text = match &paths.text {
        Some(p) => {
            let t1 = Instant::now();
            let t = TextEncoder::load(p, &opts)?;
            Some((t, t1.elapsed().as_secs_f64() * 1e3))
        }
        None => None,
    };
    let sc = image.sidecar();
    if args.json {
        print_json(&ModelInfo {
            image: TowerInfo {
                path: paths.image.clone(),
                sidecar: sc.clone(),
                fingerprint: Some(image.fingerprint().to_string()),
                load_ms: image_ms,
            },
            text: text.as_ref().map(|(t, ms)| TowerInfo {
                path: paths.text.clone().unwrap_or_default(),
                sidecar: t.sidecar().clone(),
                fingerprint: None,
                load_ms: *ms,
            }),
        });
    } else {
        let r = image.recipe();
        println!("image tower   {}", paths.image.display());
        println!(
            "  family      {:?} ({}), pretrained {}",
            sc.family,
            sc.arch,
            sc.pretrained.as_deref().unwrap_or("?")
        );
        println!("  sha256      {} (verified)", image.fingerprint());
        if let Some(q) = &sc.quantization {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "?".into(),
                other => other.to_string(),
            };
            let calibration = match q.get("calibration") {
                Some(c) => format!("{} on {} images", text(&c["method"]), text(&c["images"])),
                None => "none (dynamic)".into(),
            };
            println!(
                "  quantised   {} (per-channel {}), calibration {calibration}",
                text(&q["scheme"]),
                text(&q["per_channel"]),
            );
        } else if image.is_int8() {
            println!("  quantised   int8 graph (no quantization block in the sidecar)");
        }
        println!(
            "  input       [{}, 3, {}, {}] f32, output [{}, {}]",
            opts.batch,
            r.crop_size,
            r.crop_size,
            opts.batch,
            image.dim()
        );
        println!(
            "  preprocess  resize short side {} ({:?}), centre crop {}, mean {:?}, std {:?}",
            r.resize, r.interpolation, r.crop_size, r.mean, r.std
        );
        println!("  loaded in   {image_ms:.0} ms ({:?})", opts.precision);
        if let Some((t, ms)) = &text {
            println!(
                "text tower    {}",
                paths
                    .text
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
            println!(
                "  context     {} tokens, output dim {}, logit scale {:?}",
                t.context_length(),
                t.dim(),
                t.sidecar().logit_scale
            );
            println!("  loaded in   {ms:.0} ms");
        }
    }
    Ok(super::EXIT_OK)
}
