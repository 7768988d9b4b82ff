//! CoOp on the device: W from a learned context against the official construction in PyTorch
//! (models/make_coop_refs.py), the word-initialised context against zero-shot CLIP, and every
//! refusal of the bad-input list.
#![cfg(feature = "runtime")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{fixture, max_abs_diff, read_f32};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tipedge::coop::{build_classifier, Context, Position};
use tipedge::encoder::{PromptEncoder, RunOptions, TextEncoder};
use tipedge::text::Tokenizer;
use tipedge::zeroshot::{self, Templates};

fn tower(batch: usize) -> PromptEncoder {
    PromptEncoder::load(
        &fixture("clip-tiny/text_embed.onnx"),
        &RunOptions {
            batch,
            ..RunOptions::default()
        },
    )
    .unwrap()
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("coop/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn classes() -> Vec<String> {
    manifest()["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tipedge-coop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes a context file as the Python side does, with `meta` over the defaults of `base`.
fn write_context(
    path: &Path,
    tensor: &str,
    shape: Vec<usize>,
    values: &[f32],
    meta: HashMap<String, String>,
) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, shape, &bytes).unwrap();
    let out = safetensors::serialize([(tensor, view)], Some(meta)).unwrap();
    std::fs::write(path, out).unwrap();
}

fn meta_of(c: &Context) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "tipedge-coop/1".to_string()),
        ("n_ctx".to_string(), c.n_ctx.to_string()),
        ("csc".to_string(), c.class_specific.to_string()),
        ("position".to_string(), c.position.name().to_string()),
        (
            "classnames".to_string(),
            serde_json::to_string(&c.classnames).unwrap(),
        ),
        ("text_tower_sha256".to_string(), c.text_tower_sha256.clone()),
    ])
}

#[test]
fn w_matches_the_official_construction_for_every_position_generic_and_csc() {
    let names = classes();
    let tokenizer = Tokenizer::new();
    // Batch 3 for 4 classes: a padded last chunk as well.
    let tower = tower(3);
    let mut worst = 0f32;
    for position in ["end", "middle", "front"] {
        for kind in ["generic", "csc"] {
            let case = format!("{position}_{kind}");
            let ctx = Context::read(&fixture(&format!("coop/ctx_{case}.safetensors"))).unwrap();
            assert_eq!(ctx.position, position.parse::<Position>().unwrap());
            assert_eq!(ctx.class_specific, kind == "csc");
            assert_eq!(ctx.classnames, names);
            // What to_bytes writes reads back as the same context.
            assert_eq!(Context::from_bytes(&ctx.to_bytes()).unwrap(), ctx);
            let w = build_classifier(&tower, &tokenizer, &ctx, &names).unwrap();
            let want = read_f32(&fixture(&format!("coop/w_{case}.npy")));
            assert_eq!(want.shape, [names.len(), 32]);
            let d = max_abs_diff(&w, &want.data);
            assert!(d <= 1e-5, "{case}: max |W - reference| = {d:e}");
            worst = worst.max(d);
        }
    }
    eprintln!("worst max |W - PyTorch| over 6 cases: {worst:e}");
}

/// CoOp's word initialisation "a photo of a" without training is the zero-shot classifier of
/// the single template "a photo of a {}.": same tokens, same embeddings, same tower.
#[test]
fn word_initialised_context_is_the_single_template_zero_shot_w() {
    let names: Vec<String> = ["nominal", "hairline crack", "oil stain", "global defect"]
        .map(String::from)
        .to_vec();
    let tokenizer = Tokenizer::new();
    let tower = tower(2);
    let init = tokenizer.encode("a photo of a");
    assert_eq!(init.len(), 4);
    let width = tower.width();
    let mut ctx = vec![0f32; init.len() * width];
    for (id, row) in init.iter().zip(ctx.chunks_exact_mut(width)) {
        tower.table().row_into(*id as usize, row).unwrap();
    }
    let text = TextEncoder::load(&fixture("clip-tiny/text.onnx"), &RunOptions::default()).unwrap();
    let photo = Templates::resolve("photo").unwrap();
    let zs = zeroshot::build_classifier(&text, &tokenizer, &names, &photo, |_| {}).unwrap();
    // As CoOp builds it ("a photo of a {name}." tokenised) and with placeholder tokens whose
    // embeddings the context replaces ("X X X X {name}."): both must give the zero-shot W.
    for ctx_init in ["a photo of a", ""] {
        let context = Context {
            ctx: ctx.clone(),
            n_ctx: init.len(),
            width,
            class_specific: false,
            classnames: names.clone(),
            position: Position::End,
            text_tower_sha256: tower.fingerprint().to_string(),
            ctx_init: ctx_init.to_string(),
            source: "test".into(),
        };
        let w = build_classifier(&tower, &tokenizer, &context, &names).unwrap();
        let d = max_abs_diff(&w, &zs);
        eprintln!("ctx_init {ctx_init:?}: max |W_coop - W_zero-shot| = {d:e}");
        assert!(d <= 1e-6, "ctx_init {ctx_init:?}: {d:e}");
    }
}

#[test]
fn bad_contexts_are_refused_with_the_file_and_the_reason() {
    let names = classes();
    let tokenizer = Tokenizer::new();
    let tower = tower(1);
    let good = Context::read(&fixture("coop/ctx_end_generic.safetensors")).unwrap();
    let csc = Context::read(&fixture("coop/ctx_end_csc.safetensors")).unwrap();
    let err = |path: &Path| Context::read(path).unwrap_err().to_string();

    // Another text tower: fingerprint, and width.
    let other = Context {
        text_tower_sha256: "ab".repeat(32),
        ..good.clone()
    };
    let e = build_classifier(&tower, &tokenizer, &other, &names)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("context was trained for text tower abababababab"),
        "{e}"
    );
    let p = tmp("wide.safetensors");
    write_context(
        &p,
        "ctx",
        vec![16, 8],
        &vec![0.01; 128],
        meta_of(&Context {
            width: 8,
            ..good.clone()
        }),
    );
    let wide = Context::read(&p).unwrap();
    let e = build_classifier(&tower, &tokenizer, &wide, &names)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("context width 8 is not the text tower's token width 16"),
        "{e}"
    );

    // CSC: other class names, other count (in the file itself).
    let mut swapped = names.clone();
    swapped.swap(0, 1);
    let e = build_classifier(&tower, &tokenizer, &csc, &swapped)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("class-specific context was trained on 4 classes"),
        "{e}"
    );
    let p = tmp("csc-count.safetensors");
    write_context(
        &p,
        "ctx",
        vec![3, 16, 16],
        &csc.ctx[..3 * 256],
        meta_of(&csc),
    );
    let e = err(&p);
    assert!(e.starts_with(&p.display().to_string()), "{e}");
    assert!(
        e.ends_with("class-specific ctx has 3 contexts for 4 class names"),
        "{e}"
    );

    // A class name too long for the 77-token context after 16 context tokens, an empty one.
    let long = vec!["very ".repeat(60) + "long name"];
    let e = build_classifier(&tower, &tokenizer, &good, &long)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tokens: with the 16 context tokens the prompt needs 81 of the 77-token"),
        "{e}"
    );
    for empty in ["", "   "] {
        let e = build_classifier(&tower, &tokenizer, &good, &[empty.to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    // Corrupt, truncated, not a context, no ctx tensor.
    let bytes = std::fs::read(fixture("coop/ctx_end_generic.safetensors")).unwrap();
    let p = tmp("truncated.safetensors");
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(
        err(&p).contains(": not a CoOp context file (safetensors:"),
        "{}",
        err(&p)
    );
    let p = tmp("garbage.safetensors");
    std::fs::write(&p, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json").unwrap();
    assert!(err(&p).contains("not a CoOp context file"), "{}", err(&p));
    let p = tmp("no-ctx.safetensors");
    write_context(&p, "prompt", vec![16, 16], &good.ctx, meta_of(&good));
    assert!(
        err(&p).ends_with("no tensor \"ctx\" in the context file"),
        "{}",
        err(&p)
    );
    let p = tmp("no-format.safetensors");
    let mut meta = meta_of(&good);
    meta.remove("format");
    write_context(&p, "ctx", vec![16, 16], &good.ctx, meta);
    assert!(
        err(&p).ends_with("context metadata has no \"format\""),
        "{}",
        err(&p)
    );
    let p = tmp("nan.safetensors");
    let mut nan = good.ctx.clone();
    nan[7] = f32::NAN;
    write_context(&p, "ctx", vec![16, 16], &nan, meta_of(&good));
    assert!(
        err(&p).ends_with("ctx has non-finite values"),
        "{}",
        err(&p)
    );
    let missing = tmp("missing.safetensors");
    assert!(
        err(&missing).contains("cannot read the CoOp context"),
        "{}",
        err(&missing)
    );
}

#[test]
fn a_token_table_that_is_not_the_sidecars_is_refused() {
    let dir = tmp("model");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "text_embed.onnx",
        "text_embed.json",
        "token_embedding.safetensors",
    ] {
        std::fs::copy(fixture(&format!("clip-tiny/{f}")), dir.join(f)).unwrap();
    }
    let table = dir.join("token_embedding.safetensors");
    let mut bytes = std::fs::read(&table).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    std::fs::write(&table, &bytes).unwrap();
    let e = PromptEncoder::load(&dir.join("text_embed.onnx"), &RunOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("token_embedding.safetensors"), "{e}");
    assert!(e.contains("is not the sidecar's"), "{e}");
}

/// A checkpoint in the official format (Dassl's save_checkpoint dict), converted by
/// models/coop_import.py, gives on the device the W PyTorch computes from the checkpoint's ctx.
#[test]
fn an_imported_official_checkpoint_gives_the_official_w() {
    let names = classes();
    let tokenizer = Tokenizer::new();
    let tower = tower(4);
    for kind in ["generic", "csc"] {
        let ctx =
            Context::read(&fixture(&format!("coop/ctx_imported_{kind}.safetensors"))).unwrap();
        assert_eq!(ctx.source, "coop_import.py");
        assert_eq!(ctx.position, Position::Middle);
        assert_eq!(ctx.n_ctx, 8);
        let w = build_classifier(&tower, &tokenizer, &ctx, &names).unwrap();
        let want = read_f32(&fixture(&format!("coop/w_imported_{kind}.npy")));
        let d = max_abs_diff(&w, &want.data);
        assert!(d <= 1e-5, "imported {kind}: {d:e}");
    }
}

/// The contexts after 3 steps of models/coop_train.py's own step function
/// (models/make_coop_train_refs.py) give on the device the W the trainer computed with them.
#[test]
fn trained_contexts_give_the_trainers_w() {
    let text = std::fs::read_to_string(fixture("coop/train/manifest.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let names: Vec<String> = m["classnames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().replace('_', " "))
        .collect();
    let tokenizer = Tokenizer::new();
    let tower = tower(2);
    let cases = m["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 6);
    for (case, c) in cases {
        let ctx = read_f32(&fixture(&format!("coop/train/{case}_ctx3.npy")));
        let context = Context {
            ctx: ctx.data,
            n_ctx: c["n_ctx"].as_u64().unwrap() as usize,
            width: tower.width(),
            class_specific: c["csc"].as_bool().unwrap(),
            classnames: names.clone(),
            position: c["position"].as_str().unwrap().parse().unwrap(),
            text_tower_sha256: tower.fingerprint().to_string(),
            ctx_init: c["ctx_init"].as_str().unwrap().to_string(),
            source: "test".into(),
        };
        let w = build_classifier(&tower, &tokenizer, &context, &names).unwrap();
        let want = read_f32(&fixture(&format!("coop/train/{case}_w3.npy")));
        let d = max_abs_diff(&w, &want.data);
        assert!(d <= 1e-5, "{case}: {d:e}");
    }
}
