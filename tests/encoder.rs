//! tract encoders against onnxruntime and PyTorch reference features on the committed graphs.
#![cfg(feature = "runtime")]

mod common;

use std::path::PathBuf;

use tipedge::encoder::{ImageEncoder, Precision, RunOptions, TextEncoder};
use tipedge::preprocess::{load_rgb, DecodeLimits, Preprocessor};

const IMAGES: [&str; 3] = ["chelsea_jpg", "astronaut_jpg", "camera_png"];
const FILES: [&str; 3] = [
    "images/chelsea.jpg",
    "images/astronaut.jpg",
    "images/camera.png",
];

struct Tower {
    graph: PathBuf,
    pre: &'static str,
    ort: &'static str,
    torch: &'static str,
    ort_batch3: &'static str,
}

fn towers() -> [Tower; 2] {
    [
        Tower {
            graph: common::fixture("clip-tiny/image.onnx"),
            pre: "clip",
            ort: "clip_tiny_image_features_ort.npy",
            torch: "clip_tiny_image_features_torch.npy",
            ort_batch3: "clip_tiny_image_features_ort_batch3.npy",
        },
        Tower {
            graph: common::fixture("efficientnet-lite0/image.onnx"),
            pre: "eff",
            ort: "effnet_image_features_ort.npy",
            torch: "effnet_image_features_torch.npy",
            ort_batch3: "effnet_image_features_ort_batch3.npy",
        },
    ]
}

/// The stored reference input tensors (PIL pipeline), stacked: [3, 3, 224, 224].
fn reference_inputs(pre: &str) -> Vec<f32> {
    IMAGES
        .iter()
        .flat_map(|n| common::read_f32(&common::reference(&format!("pre_{pre}_{n}.npy"))).data)
        .collect()
}

fn check_rows(what: &str, ours: &[f32], reference: &[f32], dim: usize, min_cos: f64, max_rel: f32) {
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in ours.chunks(dim).zip(reference.chunks(dim)).enumerate() {
        let cos = common::cosine(a, b);
        let rel = common::max_abs_diff(a, b) / scale;
        println!("{what} row {i}: cosine {cos:.7}, max rel diff {rel:.2e}");
        assert!(cos >= min_cos, "{what} row {i}: cosine {cos}");
        assert!(rel <= max_rel, "{what} row {i}: max rel diff {rel}");
    }
}

/// Same graph, same input: tract f32 vs onnxruntime and PyTorch (issue: cosine ≥ 0.9999).
#[test]
fn image_towers_match_onnxruntime_and_pytorch() {
    for t in towers() {
        let enc = ImageEncoder::load(&t.graph, &RunOptions::default()).unwrap();
        let feats = enc.encode(&reference_inputs(t.pre), 3).unwrap();
        let dim = enc.dim();
        check_rows(
            t.ort,
            &feats,
            &common::read_f32(&common::reference(t.ort)).data,
            dim,
            0.9999,
            2e-4,
        );
        check_rows(
            t.torch,
            &feats,
            &common::read_f32(&common::reference(t.torch)).data,
            dim,
            0.9999,
            2e-4,
        );
    }
}

/// A graph optimised for batch 3 (and batch 2, with a zero-padded remainder) gives the same
/// features as onnxruntime's batch of 3; two threads give the same as one.
#[test]
fn batching_and_threads_do_not_change_features() {
    for t in towers() {
        let reference = common::read_f32(&common::reference(t.ort_batch3)).data;
        let input = reference_inputs(t.pre);
        for (batch, threads) in [(3, 1), (2, 1), (1, 2)] {
            let opts = RunOptions {
                batch,
                threads,
                ..RunOptions::default()
            };
            let enc = ImageEncoder::load(&t.graph, &opts).unwrap();
            let feats = enc.encode(&input, 3).unwrap();
            let what = format!("{} batch {batch} threads {threads}", t.ort_batch3);
            check_rows(&what, &feats, &reference, enc.dim(), 0.9999, 2e-4);
        }
    }
}

/// tract's f32→f16 transform: close to f32, as a half-precision network can be.
#[test]
fn f16_precision_stays_close_to_f32() {
    for t in towers() {
        let opts = RunOptions {
            precision: Precision::F16,
            ..RunOptions::default()
        };
        let enc = ImageEncoder::load(&t.graph, &opts).unwrap();
        let feats = enc.encode(&reference_inputs(t.pre), 3).unwrap();
        let reference = common::read_f32(&common::reference(t.ort)).data;
        for (i, (a, b)) in feats
            .chunks(enc.dim())
            .zip(reference.chunks(enc.dim()))
            .enumerate()
        {
            let cos = common::cosine(a, b);
            println!("{} f16 row {i}: cosine {cos:.6}", t.ort);
            assert!(cos >= 0.995, "{} f16 row {i}: cosine {cos}", t.ort);
        }
    }
}

/// End to end from the image files with our decoder and preprocessing vs PyTorch on PIL's
/// tensors (issue: feature cosine ≥ 0.999).
#[test]
fn end_to_end_from_files_matches_pytorch() {
    for t in towers() {
        let enc = ImageEncoder::load(&t.graph, &RunOptions::default()).unwrap();
        let mut pre = Preprocessor::new(enc.recipe().clone());
        let input: Vec<f32> = FILES
            .iter()
            .flat_map(|f| {
                pre.tensor(&load_rgb(&common::fixture(f), &DecodeLimits::default()).unwrap())
            })
            .collect();
        let feats = enc.encode(&input, 3).unwrap();
        let reference = common::read_f32(&common::reference(t.torch)).data;
        for (i, (a, b)) in feats
            .chunks(enc.dim())
            .zip(reference.chunks(enc.dim()))
            .enumerate()
        {
            let cos = common::cosine(a, b);
            println!(
                "{} end-to-end row {i} ({}): cosine {cos:.7}",
                t.torch, FILES[i]
            );
            assert!(cos >= 0.999, "{}: cosine {cos}", FILES[i]);
        }
    }
}

#[test]
fn text_tower_matches_onnxruntime_and_pytorch() {
    let enc = TextEncoder::load(
        &common::fixture("clip-tiny/text.onnx"),
        &RunOptions::default(),
    )
    .unwrap();
    let tokens = common::read_i64(&common::reference("clip_tiny_text_tokens.npy"));
    let n = tokens.shape[0];
    let feats = enc.encode_tokens(&tokens.data, n).unwrap();
    for name in [
        "clip_tiny_text_features_ort.npy",
        "clip_tiny_text_features_torch.npy",
    ] {
        let reference = common::read_f32(&common::reference(name)).data;
        check_rows(name, &feats, &reference, enc.dim(), 0.9999, 2e-4);
    }
}

/// The int8 graphs of models/quantize.py (QOperator form) run on tract's integer kernels and
/// give onnxruntime's result on the same graph. For the static symmetric form that is bit for bit
/// on the AVX2 development machine; the bound leaves room for one quantisation step (1/127 of a
/// tensor's range) where another ISA computes the f32 parts between the integer products (LayerNorm,
/// attention) in another order and a value on a rounding boundary flips. The dynamic form's
/// activation quantisation is computed differently (tract's result is the one closer to f32), so
/// it gets a looser bound. Both stay close to the f32 graph they were made from.
#[test]
fn int8_graphs_match_onnxruntime_and_stay_close_to_f32() {
    let x = reference_inputs("clip");
    let f32_graph = ImageEncoder::load(
        &common::fixture("clip-tiny/image.onnx"),
        &RunOptions::default(),
    )
    .unwrap();
    let f32_feats = f32_graph.encode(&x, 3).unwrap();
    assert!(!f32_graph.is_int8());
    let quant = |name: &str| common::fixture(&format!("quant/{name}"));
    for (dir, ort, (ort_cos, ort_rel), (f32_cos, f32_rel)) in [
        (
            "clip-tiny-int8",
            "clip_tiny_int8_ort.npy",
            (0.9999, 0.02),
            (0.9995, 0.05),
        ),
        (
            "clip-tiny-int8-integer",
            "clip_tiny_int8_integer_ort.npy",
            (0.9999, 0.02),
            (0.9995, 0.05),
        ),
        (
            "clip-tiny-int8-dynamic",
            "clip_tiny_int8_dynamic_ort.npy",
            (0.99, 0.15),
            (0.999, 0.05),
        ),
    ] {
        let enc = ImageEncoder::load(
            &common::fixture(&format!("{dir}/image.onnx")),
            &RunOptions::default(),
        )
        .unwrap();
        assert!(enc.is_int8(), "{dir}: int8 tensors not found in the graph");
        let q = enc
            .sidecar()
            .quantization
            .as_ref()
            .unwrap_or_else(|| panic!("{dir}: sidecar without a quantization block"));
        assert_eq!(
            q["source_sha256"].as_str(),
            Some(f32_graph.fingerprint()),
            "{dir}: not quantised from the committed f32 graph"
        );
        let feats = enc.encode(&x, 3).unwrap();
        let dim = enc.dim();
        let reference = common::read_f32(&quant(ort)).data;
        check_rows(
            &format!("{dir} vs onnxruntime"),
            &feats,
            &reference,
            dim,
            ort_cos,
            ort_rel,
        );
        check_rows(
            &format!("{dir} vs f32"),
            &feats,
            &f32_feats,
            dim,
            f32_cos,
            f32_rel,
        );
    }
}

/// A 1×1 ConvInteger (quantize.py's integer form) runs as one matrix product: tract 0.23.9 alone
/// makes it H products of W columns (32 here), which tipedge's load-time rewrite of plain integer
/// products avoids. The features are onnxruntime's (integer sums are exact).
#[test]
fn pointwise_integer_products_run_as_one_product_each() {
    let graph = common::fixture("pointwise-int8/image.onnx");
    let x = common::read_f32(&common::fixture("quant/pointwise_int8_input.npy")).data;
    let want = common::read_f32(&common::fixture("quant/pointwise_int8_ort.npy")).data;
    let enc = ImageEncoder::load(&graph, &RunOptions::default()).unwrap();
    assert!(enc.is_int8());
    let half = x.len() / 2;
    for (i, image) in [&x[..half], &x[half..]].into_iter().enumerate() {
        let got = enc.encode(image, 1).unwrap();
        check_rows(
            "pointwise-int8 vs onnxruntime",
            &got,
            &want[i * 16..(i + 1) * 16],
            16,
            0.999_999,
            1e-5,
        );
    }
    let profile = enc.profile(1).unwrap();
    let products = profile.iter().find(|o| o.op == "OptMatMul").unwrap();
    assert_eq!(products.nodes, 3, "{profile:?}");
    // 32 × 32 pixels: 3 → 8 (1×1), 8 → 8 (3×3), 8 → 16 (1×1).
    assert_eq!(
        products.macs,
        32 * 32 * (8 * 3 + 8 * 8 * 9 + 16 * 8),
        "{profile:?}"
    );
    assert_eq!(
        products.products, 3,
        "one matrix product per node: {profile:?}"
    );
    assert!(!products.kernels.is_empty());
}

/// A copy of fixture model folder `name` in a temporary directory (`tipedge compile` writes
/// beside the graphs).
fn model_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = common::fixture(name);
    for entry in std::fs::read_dir(&src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn compiled_graphs_load_instead_of_onnx_and_compute_the_same_bits() {
    let x = reference_inputs("clip");
    let tokens: Vec<i64> = (0..77)
        .map(|i| if i < 5 { 49406 + i % 2 } else { 0 })
        .collect();
    for (name, precision, text) in [
        ("clip-tiny", Precision::F32, true),
        ("clip-tiny", Precision::F16, true),
        ("clip-tiny-int8", Precision::F32, false),
        ("clip-tiny-int8-integer", Precision::F32, false),
    ] {
        let (_tmp, dir) = model_copy(name);
        let opts = RunOptions {
            precision,
            ..RunOptions::default()
        };
        let image = dir.join("image.onnx");
        let onnx = ImageEncoder::load(&image, &opts).unwrap();
        assert!(onnx.compiled_from().is_none() && onnx.load_note().is_none());
        let want = onnx.encode(&x, 3).unwrap();

        let done = tipedge::encoder::compile(&dir, &opts, |_| {}).unwrap();
        assert_eq!(
            done.len(),
            1 + text as usize,
            "{name}: one compiled form per graph"
        );
        let compiled = ImageEncoder::load(&image, &opts).unwrap();
        assert_eq!(
            compiled.compiled_from(),
            Some(done[0].path.as_path()),
            "{name} {precision:?}: {:?}",
            compiled.load_note()
        );
        assert_eq!(compiled.fingerprint(), onnx.fingerprint());
        assert_eq!(compiled.is_int8(), onnx.is_int8());
        // The same optimised graph from both forms.
        let ops = |e: &ImageEncoder| {
            let mut ops: Vec<(String, usize, u64)> = (e.profile(1).unwrap().into_iter())
                .map(|o| (o.op, o.nodes, o.products))
                .collect();
            ops.sort();
            ops
        };
        let mut same = ops(&onnx);
        if onnx.is_int8() {
            // An int8 graph through NNEF keeps one more Cast node (so did c1c8a22, before the
            // integer-product rewrite and the concurrent hash: 20 against 19 for the QLinear
            // form, 11 against 10 for the integer form). It is no i32 → f32 cast, which tipedge
            // swaps for its own "Cast (tipedge)" (src/encoder/glue.rs): in the integer form it
            // is the only plain Cast left.
            match same.iter_mut().find(|o| o.0 == "Cast") {
                Some(cast) => cast.1 += 1,
                None => {
                    same.push(("Cast".into(), 1, 0));
                    same.sort();
                }
            }
        }
        assert_eq!(ops(&compiled), same, "{name} {precision:?}");
        assert_eq!(
            compiled.encode(&x, 3).unwrap(),
            want,
            "{name} {precision:?}"
        );

        if text {
            // The copy's text graph loads compiled; the fixture's (nothing compiled) from ONNX.
            let t = TextEncoder::load(&dir.join("text.onnx"), &opts).unwrap();
            let tar = dir.join(format!("text.b1-{}.nnef.tar", precision.name()));
            assert_eq!(
                t.compiled_from(),
                Some(tar.as_path()),
                "{:?}",
                t.load_note()
            );
            let fixture = TextEncoder::load(&common::fixture("clip-tiny/text.onnx"), &opts)
                .unwrap()
                .encode_tokens(&tokens, 1)
                .unwrap();
            assert_eq!(t.encode_tokens(&tokens, 1).unwrap(), fixture);
        }

        // Another batch size has no compiled form: the ONNX graph, and nothing to say.
        let b2 = RunOptions { batch: 2, ..opts };
        let other = ImageEncoder::load(&image, &b2).unwrap();
        assert!(other.compiled_from().is_none() && other.load_note().is_none());
    }
}

#[test]
fn a_stale_or_damaged_compiled_graph_is_never_used() {
    let three = reference_inputs("eff");
    let x = &three[..three.len() / 3];
    let (_tmp, dir) = model_copy("efficientnet-lite0");
    let opts = RunOptions::default();
    let image = dir.join("image.onnx");
    let want = ImageEncoder::load(&image, &opts)
        .unwrap()
        .encode(x, 1)
        .unwrap();
    let done = tipedge::encoder::compile(&dir, &opts, |_| {}).unwrap();
    let (tar, record) = (done[0].path.clone(), done[0].path.with_extension("json"));
    let good_tar = std::fs::read(&tar).unwrap();
    let good_record = std::fs::read_to_string(&record).unwrap();

    let expect_fallback = |what: &str, needle: &str| {
        let enc = ImageEncoder::load(&image, &opts).unwrap();
        let note = enc.load_note().unwrap_or_else(|| panic!("{what}: no note"));
        assert!(enc.compiled_from().is_none(), "{what}");
        assert!(
            note.contains(needle) && !note.contains('\n'),
            "{what}: {note}"
        );
        assert!(
            note.contains("loaded the ONNX graph instead"),
            "{what}: {note}"
        );
        // What the bindings hand to applications: the note, after a slow-path warning if any.
        assert_eq!(
            enc.warnings().last().map(String::as_str),
            Some(note),
            "{what}"
        );
        assert_eq!(enc.encode(x, 1).unwrap(), want, "{what}");
    };

    // One flipped bit in a weight.
    let mut bad = good_tar.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x10;
    std::fs::write(&tar, &bad).unwrap();
    expect_fallback("flipped bit", "does not match its record");
    // Truncated.
    std::fs::write(&tar, &good_tar[..n / 3]).unwrap();
    expect_fallback("truncated", "does not match its record");
    // Missing.
    std::fs::remove_file(&tar).unwrap();
    expect_fallback("missing tar", "image.b1-f32.nnef.tar");
    std::fs::write(&tar, &good_tar).unwrap();

    let edit = |from: &str, to: &str| {
        assert!(good_record.contains(from), "{from}");
        std::fs::write(&record, good_record.replacen(from, to, 1)).unwrap();
    };
    let graph_sha = ImageEncoder::load(&image, &opts)
        .unwrap()
        .fingerprint()
        .to_string();
    edit(&graph_sha, &"0".repeat(64));
    expect_fallback("made from another graph", "stale");
    edit("\"tract\": \"0.23.9\"", "\"tract\": \"0.21.0\"");
    expect_fallback("other tract", "tract 0.21.0");
    edit("\"batch\": 1", "\"batch\": 2");
    expect_fallback("other batch", "stale");
    edit(&graph_sha, "zz");
    expect_fallback("not hex", "64 hex digits");
    std::fs::write(&record, "{ not json").unwrap();
    expect_fallback("garbage record", "not a compiled-graph record");

    // Restored: used again; and compiling again gives the same bytes (no timestamps inside).
    std::fs::write(&record, &good_record).unwrap();
    let again = tipedge::encoder::compile(&dir, &opts, |_| {}).unwrap();
    assert_eq!(again[0].sha256, done[0].sha256);
    let enc = ImageEncoder::load(&image, &opts).unwrap();
    assert!(enc.compiled_from().is_some() && enc.load_note().is_none());
    assert_eq!(enc.encode(x, 1).unwrap(), want);
}
