//! Zero-shot classifier and Tip-Adapter logits against the Python re-implementation of the
//! official functions (models/make_references.py), and the textile example end to end.
#![cfg(feature = "runtime")]

mod common;

use tipedge::adapter::{AdapterParams, ScoreScratch, TipAdapter};
use tipedge::dataset::LabelledSet;
use tipedge::encoder::{ImageEncoder, RunOptions, TextEncoder};
use tipedge::kernel::{l2_normalize_rows, Kernel, KeyData, Keys};
use tipedge::preprocess::DecodeLimits;
use tipedge::text::Tokenizer;
use tipedge::train::keys::{build_keys, KeyRecipe};
use tipedge::zeroshot::{build_classifier, Templates, TIP_ADAPTER_IMAGENET};

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::reference("manifest.json")).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// α = β = 1 (the reference's), CLIP's logit scale (unused without W).
fn unit_params() -> AdapterParams {
    AdapterParams::default().with_alpha_beta(1.0, 1.0)
}

/// Keys in a pack draft: normalised and sorted by class, as a pack holds them.
fn cache_of(dim: usize, keys: Vec<f32>, labels: Vec<u32>, n: usize) -> tipedge::pack::PackDraft {
    tipedge::pack::PackDraft::from_f32_keys(
        dim,
        keys,
        labels,
        (0..n).map(|c| format!("class {c}")).collect(),
        None,
        unit_params(),
        tipedge::pack::EncoderId {
            name: "test".into(),
            sha256: [0; 32],
        },
        tipedge::pack::Provenance::default(),
    )
    .unwrap()
}

#[test]
fn zero_shot_classifier_and_logits_match_official() {
    let m = manifest();
    let classes = strings(&m["zeroshot"]["classnames"]);
    assert_eq!(
        strings(&m["zeroshot"]["templates"]),
        TIP_ADAPTER_IMAGENET.map(String::from)
    );
    let templates = Templates::resolve("tip").unwrap();

    // The prompts tokenize exactly as open_clip did for the reference.
    let tok = Tokenizer::new();
    let expected = common::read_i64(&common::reference("zeroshot_tokens.npy")).data;
    let prompts: Vec<String> = classes.iter().flat_map(|c| templates.fill(c)).collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    assert_eq!(tok.tokenize_batch(&refs, 77), expected);

    let text = TextEncoder::load(
        &common::fixture("clip-tiny/text.onnx"),
        &RunOptions::default(),
    )
    .unwrap();
    let w = build_classifier(&text, &tok, &classes, &templates, |_| {}).unwrap();
    let w_ref = common::read_f32(&common::reference("zeroshot_classifier_torch.npy")).data;
    let diff = common::max_abs_diff(&w, &w_ref);
    println!("W vs official clip_classifier: max |Δ| {diff:.2e}");
    assert!(diff <= 1e-4, "{diff}");

    // logits = 100 · normalize(f) · Wᵀ on the reference image features.
    let image = ImageEncoder::load(
        &common::fixture("clip-tiny/image.onnx"),
        &RunOptions::default(),
    )
    .unwrap();
    let input: Vec<f32> = ["chelsea_jpg", "astronaut_jpg", "camera_png"]
        .iter()
        .flat_map(|n| common::read_f32(&common::reference(&format!("pre_clip_{n}.npy"))).data)
        .collect();
    let mut f = image.encode(&input, 3).unwrap();
    l2_normalize_rows(&mut f, image.dim());
    let offsets = vec![0u32; classes.len() + 1];
    let no_keys = Keys::new(image.dim(), KeyData::F32(&[]), &offsets).unwrap();
    let adapter = TipAdapter::new(no_keys, Some(&w), AdapterParams::default()).unwrap();
    let mut scratch = ScoreScratch::new(image.dim(), classes.len());
    let expected = common::read_f32(&common::reference("zeroshot_logits.npy")).data;
    let mut logits = vec![0.0; classes.len()];
    for (row, q) in f.chunks(image.dim()).enumerate() {
        adapter
            .logits_batch(&Kernel::detect(), &mut scratch, q, &mut logits)
            .unwrap();
        let want = &expected[row * classes.len()..(row + 1) * classes.len()];
        let diff = common::max_abs_diff(&logits, want);
        println!("zero-shot logits row {row}: max |Δ| {diff:.2e}");
        assert!(diff <= 2e-3, "row {row}: {logits:?} vs {want:?}");
    }
}

/// The cache term on reference features: our arithmetic vs the NumPy re-implementation of
/// `exp(−β(1 − f·Kᵀ))·L` (≤ 1e-4 relative).
#[test]
fn cache_logits_match_reference_on_reference_features() {
    let keys = common::read_f32(&common::reference("textile_shot_keys.npy"));
    let labels: Vec<u32> = common::read_i64(&common::reference("textile_shot_labels.npy"))
        .data
        .iter()
        .map(|&l| l as u32)
        .collect();
    let mut queries = common::read_f32(&common::reference("textile_query_features.npy"));
    let dim = keys.shape[1];
    l2_normalize_rows(&mut queries.data, dim);
    let cache = cache_of(dim, keys.data.clone(), labels, 3);
    let adapter = TipAdapter::new(cache.keys(), None, unit_params()).unwrap();
    let mut scratch = ScoreScratch::new(dim, 3);
    let expected = common::read_f32(&common::reference("textile_cache_logits.npy")).data;
    let mut logits = [0f32; 3];
    for (i, q) in queries.data.chunks(dim).enumerate() {
        adapter
            .logits_batch(&Kernel::detect(), &mut scratch, q, &mut logits)
            .unwrap();
        for (a, b) in logits.iter().zip(&expected[i * 3..i * 3 + 3]) {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "query {i}: {logits:?} vs {:?}",
                &expected[i * 3..i * 3 + 3]
            );
        }
    }
}

/// The whole pipeline on the committed textile example: cache keys from our decoding and tract
/// agree with PyTorch's, and the cache-only classifier gets the reference accuracy.
#[test]
fn textile_example_end_to_end() {
    let m = manifest();
    let enc = ImageEncoder::load(
        &common::fixture("efficientnet-lite0/image.onnx"),
        &RunOptions::default(),
    )
    .unwrap();
    let shots = LabelledSet::read(&common::repo("examples/textile/shots")).unwrap();
    assert_eq!(
        shots
            .classes
            .iter()
            .map(|c| c.folder.clone())
            .collect::<Vec<_>>(),
        strings(&m["textile"]["classes"])
    );
    let built = build_keys(
        &enc,
        &shots,
        &KeyRecipe::plain(),
        DecodeLimits::default(),
        |_| {},
    )
    .unwrap();
    assert!(built.skipped.is_empty());
    let cache = cache_of(enc.dim(), built.keys, built.labels, 3);
    let ref_keys = common::read_f32(&common::reference("textile_shot_keys.npy")).data;
    let mut worst = 1.0f64;
    for (a, b) in cache
        .key_data()
        .to_f32(enc.dim())
        .chunks(enc.dim())
        .zip(ref_keys.chunks(enc.dim()))
    {
        worst = worst.min(common::cosine(a, b));
    }
    println!("textile keys: min cosine vs PyTorch {worst:.6}");
    assert!(worst >= 0.999, "{worst}");

    let adapter = TipAdapter::new(cache.keys(), None, unit_params()).unwrap();
    let mut scratch = ScoreScratch::new(enc.dim(), 3);
    let queries = LabelledSet::read(&common::repo("examples/textile/query")).unwrap();
    let mut correct = 0;
    let mut logits = vec![0.0; 3];
    let paths: Vec<_> = queries.items();
    let files: Vec<_> = paths.iter().map(|(p, _)| p.clone()).collect();
    let mut i = 0;
    let mut embedder = tipedge::embed::Embedder::new(&enc, DecodeLimits::default()).unwrap();
    embedder.embed_all(&files, |e| {
        adapter
            .logits_batch(
                &Kernel::detect(),
                &mut scratch,
                e.result.unwrap(),
                &mut logits,
            )
            .unwrap();
        let top = tipedge::adapter::top_k(&logits, 1)[0].class;
        correct += usize::from(top == paths[i].1);
        i += 1;
    });
    let accuracy = correct as f64 / paths.len() as f64;
    let reference = m["textile"]["cache_only_top1_accuracy"].as_f64().unwrap();
    println!("textile cache-only accuracy {accuracy:.4} (PyTorch reference {reference:.4})");
    assert_eq!(accuracy, reference);
}
