//! The stream's own stages allocate nothing per frame after warm-up (per run, a few one-time
//! allocations may depend on thread timing): the reader, the latest-
//! frame slot, the prepare thread and the hand-over to the encoder, counted on every thread of
//! the process (this binary runs this one measurement; the counter's self-test is brief and
//! done before the model is loaded).
#![cfg(feature = "runtime")]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tipedge::adapter::AdapterParams;
use tipedge::classifier::Classifier;
use tipedge::encoder::{ImageEncoder, RunOptions};
use tipedge::pack::{PackDraft, Provenance};
use tipedge::preprocess::{Colorimetry, PixelFormat};
use tipedge::session::{Session, SessionOptions};
use tipedge::stream::{self, FrameKind, FramePolicy, Output, RepeatSource, StreamOptions};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_on_all_threads_during;

#[test]
fn the_stream_allocates_nothing_per_frame_beyond_tract() {
    let graph = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/fixtures/efficientnet-lite0/image.onnx");
    let encoder = Arc::new(ImageEncoder::load(&graph, &RunOptions::default()).unwrap());
    let dim = encoder.dim();
    let keys: Vec<f32> = (0..6 * dim)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let mut keys = keys;
    tipedge::kernel::l2_normalize_rows(&mut keys, dim);
    let draft = PackDraft::from_f32_keys(
        dim,
        keys,
        vec![0, 0, 1, 1, 2, 2],
        vec!["a".into(), "b".into(), "c".into()],
        None,
        AdapterParams::default(),
        encoder.id().clone(),
        Provenance::default(),
    )
    .unwrap();
    let classifier = Arc::new(Classifier::from_draft(draft));

    // tract's own allocations per run of the graph.
    let mut state = encoder.state().unwrap();
    let mut out = vec![0f32; dim];
    encoder.run(&mut state, 1, &mut out).unwrap();
    let tract = allocations_on_all_threads_during(|| encoder.run(&mut state, 1, &mut out).unwrap());

    let (w, h) = (640u32, 480u32);
    let frame: Vec<u8> = (0..(w * h * 3 / 2) as usize)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let options = StreamOptions {
        kind: FrameKind::Raw {
            format: PixelFormat::Nv12,
            width: w,
            height: h,
            colorimetry: Colorimetry::default(),
        },
        policy: FramePolicy::All,
        every: 1,
        max_fps: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut session =
        Some(Session::new(encoder.clone(), classifier, SessionOptions::default()).unwrap());
    // The same run setup (threads, buffers, channels) with `n` frames: the difference between
    // two lengths is what frames cost.
    let mut run = |n: u64| -> (usize, u64) {
        let source = Box::new(RepeatSource::new(frame.clone(), n));
        let mut classified = 0;
        let s = session.take().unwrap();
        let mut result = None;
        let allocations = allocations_on_all_threads_during(|| {
            result = Some(
                stream::run(s, source, &options, &stop, |o| {
                    if let Output::Frame { prediction, .. } = o {
                        classified += u64::from(prediction.top[0].class < 3);
                    }
                })
                .unwrap(),
            );
        });
        let (stats, back) = result.unwrap();
        assert_eq!(stats.classified, n);
        session = Some(back);
        (allocations, classified)
    };
    run(3); // warm-up: the session's buffers, tract's lazy state
    let (short, a) = run(5);
    let (long, b) = run(25);
    assert_eq!((a, b), (5, 25));
    let per_frame = (long as f64 - short as f64) / 20.0;
    println!(
        "stream::run: {short} allocations for 5 frames, {long} for 25: {per_frame} per frame; \
         tract's run alone {tract}"
    );
    // One allocation per frame would add 20. A handful may come once per run and not per
    // frame: std's channels allocate their waiter list the first time a thread has to block on
    // one, which depends on thread timing (measured: 0 or 1 extra in a run).
    let extra = long as i64 - short as i64 - 20 * tract as i64;
    assert!(
        (0..5).contains(&extra),
        "the stream's own stages allocated {extra} times in 20 frames"
    );
}
