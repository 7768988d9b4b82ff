//! The online path allocates nothing after warm-up: scoring (zero-shot term + affinity kernel)
//! plus top-k, checked with a counting global allocator, for every kernel this CPU has and every
//! key dtype, single queries and batches.

use tipedge::adapter::{top_k, AdapterParams, ScoreScratch, TipAdapter};
use tipedge::kernel::{quantize_key_i8, Kernel, KeyData, Keys, MAX_BATCH};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;

/// Deterministic pseudo-random unit vectors (no allocation-heavy RNG needed).
fn unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..n * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    tipedge::kernel::l2_normalize_rows(&mut v, dim);
    v
}

#[test]
fn scoring_and_top_k_allocate_nothing_after_warm_up() {
    let (dim, n_classes, per_class) = (96, 7, 5);
    let n = n_classes * per_class;
    let keys_f32 = unit_vectors(n, dim, 1);
    let offsets: Vec<u32> = (0..=n_classes).map(|c| (c * per_class) as u32).collect();
    let keys_f16: Vec<half::f16> = keys_f32.iter().map(|&x| half::f16::from_f32(x)).collect();
    let mut keys_i8 = vec![0i8; n * dim];
    let scales: Vec<f32> = keys_f32
        .chunks(dim)
        .zip(keys_i8.chunks_mut(dim))
        .map(|(k, q)| quantize_key_i8(k, q))
        .collect();
    let w = unit_vectors(n_classes, dim, 2);
    let queries = unit_vectors(MAX_BATCH, dim, 3);
    let datas = [
        KeyData::F32(&keys_f32),
        KeyData::F16(&keys_f16),
        KeyData::I8 {
            values: &keys_i8,
            scales: &scales,
        },
    ];
    let mut logits = vec![0f32; MAX_BATCH * n_classes];
    for kernel in Kernel::available() {
        for data in datas {
            let keys = Keys::new(dim, data, &offsets).unwrap();
            let adapter = TipAdapter::new(keys, Some(&w), AdapterParams::default()).unwrap();
            let mut scratch = ScoreScratch::new(dim, n_classes);
            // Warm-up: the first calls may initialise lazily (dispatch, thread-locals).
            adapter
                .logits_batch(
                    &kernel,
                    &mut scratch,
                    &queries[..dim],
                    &mut logits[..n_classes],
                )
                .unwrap();
            let mut best = 0usize;
            let allocs = allocations_during(|| {
                for round in 0..50 {
                    let b = 1 + round % MAX_BATCH;
                    adapter
                        .logits_batch(
                            &kernel,
                            &mut scratch,
                            &queries[..b * dim],
                            &mut logits[..b * n_classes],
                        )
                        .unwrap();
                    for row in logits[..b * n_classes].chunks(n_classes) {
                        best += top_k(row, 5)[0].class;
                    }
                }
            });
            println!(
                "{} {}: {allocs} allocations in 50 scoring + top-k rounds (checksum {best})",
                kernel.isa(),
                data.dtype()
            );
            assert_eq!(allocs, 0, "{} {} allocated", kernel.isa(), data.dtype());
        }
    }
}

/// A whole `Session::classify` call, frame in → prediction out, with the bundled EfficientNet-
/// Lite0: after warm-up, tipedge's own code allocates nothing per frame, whatever the pixel
/// format. What is counted per frame is exactly what tract's run of the graph allocates by itself
/// (its intermediate tensors and their bookkeeping; measured here with the same counter on
/// `ImageEncoder::run` alone, whose only work outside tract is two copies), and the session never
/// had to replace the input tensor tract was given (it would allocate if tract kept a reference).
/// Measured with tract 0.23.9 on this graph: 741 allocations per run, all of them tract's
/// (printed with `--nocapture`; the number is not asserted, only that ours add none).
/// The JPEG frame's decoding runs in libjpeg-turbo's C code, whose `malloc`s this counter cannot
/// see; the Rust side of it (the decode buffer) is reused.
#[cfg(feature = "runtime")]
#[test]
fn a_whole_session_classify_allocates_nothing_beyond_tract() {
    use std::sync::Arc;
    use tipedge::classifier::Classifier;
    use tipedge::encoder::{ImageEncoder, RunOptions};
    use tipedge::kernel::KeyDtype;
    use tipedge::pack::{PackDraft, Provenance};
    use tipedge::preprocess::{FrameRef, PixelFormat};
    use tipedge::session::{Session, SessionOptions};

    let graph = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/fixtures/efficientnet-lite0/image.onnx");
    let encoder = Arc::new(ImageEncoder::load(&graph, &RunOptions::default()).unwrap());
    let dim = encoder.dim();
    let labels: Vec<u32> = (0..12).map(|i| i / 4).collect();
    let mut draft = PackDraft::from_f32_keys(
        dim,
        unit_vectors(12, dim, 7),
        labels,
        vec!["a".into(), "b".into(), "c".into()],
        None,
        AdapterParams::default(),
        encoder.id().clone(),
        Provenance::default(),
    )
    .unwrap();
    draft.convert_keys(KeyDtype::I8).unwrap();
    let classifier = Arc::new(Classifier::from_draft(draft));
    // With test-time adaptation on: its caches fill and evict as the frames go by, without an
    // allocation either.
    let options = SessionOptions {
        tda: Some(tipedge::tda::TdaConfig::default()),
        ..SessionOptions::default()
    };
    let mut session = Session::new(encoder.clone(), classifier, options).unwrap();

    // tract alone: the encoder's run on a state of its own.
    let mut state = encoder.state().unwrap();
    let mut out = vec![0f32; dim];
    encoder.run(&mut state, 1, &mut out).unwrap();
    let tract_per_run = allocations_during(|| encoder.run(&mut state, 1, &mut out).unwrap());
    let tract_again = allocations_during(|| encoder.run(&mut state, 1, &mut out).unwrap());
    assert_eq!(
        tract_per_run, tract_again,
        "tract's allocations vary from run to run"
    );

    let (w, h) = (640u32, 480u32);
    let mut bytes = vec![0u8; (w * h * 4) as usize];
    let mut s = 0x9E37_79B9u32;
    for b in &mut bytes {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        *b = (s >> 24) as u8;
    }
    let jpeg = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/images/chelsea.jpg"),
    )
    .unwrap();
    for format in PixelFormat::ALL {
        let frame = match format {
            PixelFormat::Jpeg => FrameRef::jpeg(&jpeg),
            f => FrameRef::packed(&bytes, w, h, f).unwrap(),
        };
        for _ in 0..2 {
            session.classify(&frame).unwrap();
        }
        let frames = 5;
        let mut best = 0;
        let total = allocations_during(|| {
            for _ in 0..frames {
                best += session.classify(&frame).unwrap().top[0].class;
            }
        });
        println!(
            "{format}: {} allocations per Session::classify, tract's run alone {tract_per_run} \
             (checksum {best})",
            total / frames
        );
        assert_eq!(
            total,
            frames * tract_per_run,
            "{format}: tipedge's own code allocated per frame"
        );
    }
    assert_eq!(session.input_replacements(), 0);
}
