//! `Session`: frames in, predictions out; swapping the classifier at a frame boundary (from the
//! owner and from another thread); bad frames named by index while the session goes on;
//! batches equal to single frames; classifiers of another encoder refused.
#![cfg(feature = "runtime")]

mod common;

use std::sync::Arc;

use tipedge::adapter::AdapterParams;
use tipedge::classifier::Classifier;
use tipedge::encoder::{ImageEncoder, RunOptions};
use tipedge::kernel::KeyDtype;
use tipedge::pack::{EncoderId, PackDraft, Provenance};
use tipedge::preprocess::{load_rgb, DecodeLimits, FrameRef, PixelFormat};
use tipedge::session::{Session, SessionOptions};
use tipedge::tda::{Tda, TdaConfig};

fn clip_tiny() -> Arc<ImageEncoder> {
    Arc::new(
        ImageEncoder::load(
            &common::fixture("clip-tiny/image.onnx"),
            &RunOptions::default(),
        )
        .unwrap(),
    )
}

/// A classifier whose keys are the features of `photos` (one class each, named after the
/// file), with a sharp cache so that each photo is recognised as its own class.
fn classifier_of(encoder: &ImageEncoder, photos: &[&str], names: &[&str]) -> Arc<Classifier> {
    Arc::new(Classifier::from_draft(draft_of(encoder, photos, names)))
}

/// The draft [`classifier_of`] scores with.
fn draft_of(encoder: &ImageEncoder, photos: &[&str], names: &[&str]) -> PackDraft {
    let mut keys = Vec::new();
    let mut pre = tipedge::preprocess::Preprocessor::new(encoder.recipe().clone());
    for p in photos {
        let img = load_rgb(
            &common::fixture(&format!("images/{p}")),
            &DecodeLimits::default(),
        )
        .unwrap();
        keys.extend(encoder.encode(&pre.tensor(&img), 1).unwrap());
    }
    let mut draft = PackDraft::from_f32_keys(
        encoder.dim(),
        keys,
        (0..photos.len() as u32).collect(),
        names.iter().map(|n| n.to_string()).collect(),
        None,
        AdapterParams::default().with_alpha_beta(1.0, 50.0),
        encoder.id().clone(),
        Provenance::default(),
    )
    .unwrap();
    draft.convert_keys(KeyDtype::I8).unwrap();
    draft
}

fn rgb(name: &str) -> image::RgbImage {
    load_rgb(
        &common::fixture(&format!("images/{name}")),
        &DecodeLimits::default(),
    )
    .unwrap()
}

/// The photos the batch tests send, in this order: known classes and strangers.
const STREAM: [&str; 5] = [
    "coffee.jpg",
    "chelsea.jpg",
    "rocket.jpg",
    "astronaut.jpg",
    "camera.png",
];

/// clip-tiny optimised for batches of `batch`.
fn clip_tiny_batched(batch: usize) -> Arc<ImageEncoder> {
    let run = RunOptions {
        batch,
        ..RunOptions::default()
    };
    Arc::new(ImageEncoder::load(&common::fixture("clip-tiny/image.onnx"), &run).unwrap())
}

/// The fixture photos `names`, decoded.
fn decoded(names: &[&str]) -> Vec<image::RgbImage> {
    names.iter().map(|n| rgb(n)).collect()
}

/// Each image as an RGB frame.
fn frames_of(images: &[image::RgbImage]) -> Vec<FrameRef<'_>> {
    images
        .iter()
        .map(|i| FrameRef::packed(i.as_raw(), i.width(), i.height(), PixelFormat::Rgb24).unwrap())
        .collect()
}

#[test]
fn swaps_take_effect_at_the_next_frame() {
    let encoder = clip_tiny();
    let a = classifier_of(&encoder, &["chelsea.jpg", "rocket.jpg"], &["cat", "rocket"]);
    let b = classifier_of(
        &encoder,
        &["chelsea.jpg", "rocket.jpg"],
        &["kitten", "launch"],
    );
    let mut session = Session::new(encoder.clone(), a.clone(), SessionOptions::default()).unwrap();
    let cat = rgb("chelsea.jpg");
    let frame =
        FrameRef::packed(cat.as_raw(), cat.width(), cat.height(), PixelFormat::Rgb24).unwrap();

    let first = session.classify(&frame).unwrap();
    assert_eq!(first.best().unwrap().0, "cat");
    // The owner swaps: the next frame is scored by b; the earlier prediction keeps a's names.
    let old = session.swap(b.clone()).unwrap();
    assert!(Arc::ptr_eq(&old, &a));
    let second = session.classify(&frame).unwrap();
    assert_eq!(second.best().unwrap().0, "kitten");
    assert_eq!(first.best().unwrap().0, "cat");
    assert!(Arc::ptr_eq(first.classifier(), &a));
    assert_eq!(
        (first.frame, second.frame),
        (0, 1),
        "frames are counted per session"
    );

    // Another thread swaps back through a Swapper; it takes effect at the next frame boundary.
    let swapper = session.swapper();
    std::thread::spawn(move || swapper.swap(a).unwrap())
        .join()
        .unwrap();
    assert_eq!(session.classify(&frame).unwrap().best().unwrap().0, "cat");
}

#[test]
fn a_classifier_of_another_encoder_is_refused_and_the_old_one_stays() {
    let encoder = clip_tiny();
    let good = classifier_of(&encoder, &["chelsea.jpg", "rocket.jpg"], &["cat", "rocket"]);
    let foreign = {
        let draft = PackDraft::from_f32_keys(
            encoder.dim(),
            vec![1.0; encoder.dim()],
            vec![0],
            vec!["x".into()],
            None,
            AdapterParams::default(),
            EncoderId {
                name: "other".into(),
                sha256: [9; 32],
            },
            Provenance::default(),
        )
        .unwrap();
        Arc::new(Classifier::from_draft(draft))
    };
    let err = Session::new(encoder.clone(), foreign.clone(), SessionOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("cannot serve"), "{err}");
    let mut session = Session::new(encoder, good.clone(), SessionOptions::default()).unwrap();
    assert!(session.swap(foreign.clone()).is_err());
    assert!(session.swapper().swap(foreign).is_err());
    assert!(Arc::ptr_eq(session.classifier(), &good));
}

#[test]
fn bad_frames_are_named_by_index_and_the_session_goes_on() {
    let encoder = clip_tiny();
    let c = classifier_of(&encoder, &["chelsea.jpg", "rocket.jpg"], &["cat", "rocket"]);
    let mut session = Session::new(encoder, c, SessionOptions::default()).unwrap();
    let cat = rgb("chelsea.jpg");
    let good =
        FrameRef::packed(cat.as_raw(), cat.width(), cat.height(), PixelFormat::Rgb24).unwrap();
    let jpeg = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
    let truncated = FrameRef::jpeg(&jpeg[..jpeg.len() / 3]);
    let garbage = FrameRef::jpeg(b"\xff\xd8\xff\xe0 definitely not a JPEG");

    assert_eq!(session.classify(&good).unwrap().frame, 0);
    for (index, bad) in [(1, &truncated), (2, &garbage)] {
        let err = session.classify(bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("frame {index}: JPEG frame")),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
    let next = session.classify(&good).unwrap();
    assert_eq!((next.frame, next.best().unwrap().0), (3, "cat"));

    // A batch: each frame gets its own result, the bad one its error, in order.
    let rocket = rgb("rocket.jpg");
    let rocket = FrameRef::packed(
        rocket.as_raw(),
        rocket.width(),
        rocket.height(),
        PixelFormat::Rgb24,
    )
    .unwrap();
    let results = session.classify_batch(&[good, garbage, rocket, FrameRef::jpeg(&jpeg)]);
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().best().unwrap().0, "cat");
    assert!(results[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .starts_with("frame 5: "));
    assert_eq!(results[2].as_ref().unwrap().best().unwrap().0, "rocket");
    // A JPEG frame gives what the decoded file gives.
    let as_jpeg = results[3].as_ref().unwrap();
    assert_eq!(as_jpeg.best().unwrap().0, "cat");
    let single = session.classify(&good).unwrap();
    assert_eq!(as_jpeg.top, single.top);
}

#[test]
fn batches_give_the_single_frame_results() {
    let batched = clip_tiny_batched(3);
    let single = clip_tiny();
    let names = ["cat", "rocket", "coffee"];
    let photos = ["chelsea.jpg", "rocket.jpg", "coffee.jpg"];
    let c = classifier_of(&single, &photos, &names);
    let mut one = Session::new(single, c.clone(), SessionOptions::default()).unwrap();
    let mut many = Session::new(batched, c, SessionOptions::default()).unwrap();
    let images = decoded(&STREAM);
    let frames = frames_of(&images);
    // Five frames in runs of three (the last run padded); each equals its single-frame result.
    let results = many.classify_batch(&frames);
    for (frame, batched) in frames.iter().zip(results) {
        let (b, s) = (batched.unwrap(), one.classify(frame).unwrap());
        assert_eq!(b.best().unwrap().0, s.best().unwrap().0);
        for (x, y) in b.top.iter().zip(&s.top) {
            assert!(
                (x.logit - y.logit).abs() <= 1e-4 * y.logit.abs().max(1.0),
                "{x:?} {y:?}"
            );
        }
    }
}

/// A classifier's temperature sharpens or flattens the probabilities without changing the
/// ranking; with `min_prob` a frame whose best probability falls below it is "unknown" (and
/// still carries its ranking); overriding α/β drops a temperature fitted for the old ones.
#[test]
fn calibrated_probabilities_and_the_reject_option() {
    let encoder = clip_tiny();
    let plain = classifier_of(&encoder, &["chelsea.jpg", "rocket.jpg"], &["cat", "rocket"]);
    let sharp = {
        let photos = ["chelsea.jpg", "rocket.jpg"];
        let mut pre = tipedge::preprocess::Preprocessor::new(encoder.recipe().clone());
        let mut keys = Vec::new();
        for p in photos {
            keys.extend(encoder.encode(&pre.tensor(&rgb(p)), 1).unwrap());
        }
        let mut draft = PackDraft::from_f32_keys(
            encoder.dim(),
            keys,
            vec![0, 1],
            vec!["cat".into(), "rocket".into()],
            None,
            AdapterParams::default().with_alpha_beta(1.0, 50.0),
            encoder.id().clone(),
            Provenance::default(),
        )
        .unwrap();
        draft.convert_keys(KeyDtype::I8).unwrap();
        draft.temperature = Some(0.01);
        Arc::new(Classifier::from_draft(draft))
    };
    let cat = rgb("chelsea.jpg");
    let frame =
        FrameRef::packed(cat.as_raw(), cat.width(), cat.height(), PixelFormat::Rgb24).unwrap();
    let mut s = Session::new(encoder.clone(), plain.clone(), SessionOptions::default()).unwrap();
    let p1 = s.classify(&frame).unwrap();
    s.swap(sharp.clone()).unwrap();
    let p2 = s.classify(&frame).unwrap();
    assert_eq!(p1.best().unwrap().0, p2.best().unwrap().0);
    assert_eq!(p1.top[0].logit, p2.top[0].logit);
    assert!(p2.top[0].prob > p1.top[0].prob, "{p1:?} {p2:?}");
    assert!(p2.top[0].prob > 0.99);

    // Reject: at T = 1 the best probability is modest; a threshold above it says unknown.
    let options = SessionOptions {
        min_prob: Some(0.999),
        ..SessionOptions::default()
    };
    let mut strict = Session::new(encoder.clone(), plain.clone(), options).unwrap();
    let p = strict.classify(&frame).unwrap();
    assert!(p.unknown && p.top[0].prob < 0.999, "{p:?}");
    assert_eq!(p.best().unwrap().0, "cat");
    for bad in [0.0, 1.0, -0.5, f32::NAN] {
        let options = SessionOptions {
            min_prob: Some(bad),
            ..SessionOptions::default()
        };
        let err = Session::new(encoder.clone(), plain.clone(), options)
            .err()
            .unwrap();
        assert!(err.to_string().contains("between 0 and 1"), "{err}");
    }

    let c = (*sharp).clone();
    assert_eq!(c.temperature(), Some(0.01));
    let same = c.clone().with_params(c.params()).unwrap();
    assert_eq!(same.temperature(), Some(0.01));
    let other = c.with_params(AdapterParams::default()).unwrap();
    assert_eq!(other.temperature(), None);
}

/// Test-time adaptation in the session: each frame's logits are the head's with TDA's terms
/// (the same as `Tda::adapt` on the features and logits of a session without it), frames enter
/// the caches in order in batches too, and a swap or `reset_tda` empties the caches.
#[test]
fn tda_adapts_each_frame_in_order_single_and_batched() {
    let single = clip_tiny();
    let batched = clip_tiny_batched(3);
    let names = ["cat", "rocket", "coffee"];
    let c = classifier_of(
        &single,
        &["chelsea.jpg", "rocket.jpg", "coffee.jpg"],
        &names,
    );
    let with_tda = SessionOptions {
        tda: Some(TdaConfig::default()),
        ..SessionOptions::default()
    };
    let mut plain = Session::new(single.clone(), c.clone(), SessionOptions::default()).unwrap();
    let mut adapted = Session::new(single.clone(), c.clone(), with_tda).unwrap();
    let mut many = Session::new(batched, c.clone(), with_tda).unwrap();
    let mut reference = Tda::new(TdaConfig::default(), single.dim(), names.len()).unwrap();
    let images = decoded(&[&STREAM[..], &["chelsea.jpg", "coffee.jpg"]].concat());
    let frames = frames_of(&images);
    let results = many.classify_batch(&frames);
    let mut changed = 0;
    for (frame, batched) in frames.iter().zip(results) {
        plain.classify(frame).unwrap();
        let mut want = plain.last_logits().to_vec();
        reference.adapt(plain.last_feature(), &mut want).unwrap();
        let p = adapted.classify(frame).unwrap();
        assert_eq!(adapted.last_logits(), &want[..]);
        changed += usize::from(plain.last_logits() != adapted.last_logits());
        let b = batched.unwrap();
        for (x, y) in b.top.iter().zip(&p.top) {
            assert_eq!(x.class, y.class);
            assert!(
                (x.logit - y.logit).abs() <= 1e-4 * y.logit.abs().max(1.0),
                "{x:?} {y:?}"
            );
        }
    }
    assert_eq!(
        changed,
        frames.len(),
        "every frame is in its own positive cache"
    );
    let tda = adapted.tda().unwrap();
    assert_eq!(tda.len(), reference.len());
    assert_eq!(many.tda().unwrap().len(), reference.len());
    assert!(plain.tda().is_none());
    adapted.swap(c).unwrap();
    assert!(adapted.tda().unwrap().is_empty());
    adapted.classify(&frames[0]).unwrap();
    assert_eq!(adapted.tda().unwrap().len().0, 1);
    adapted.reset_tda();
    assert!(adapted.tda().unwrap().is_empty());
}

/// A classifier with a GDA layer scores with the pack's head: `gda` is the zero-shot-free
/// `α_g(f·W_gᵀ + b)` alone (the cache is not read), `both` adds it to the cache term; single
/// frames and batches agree. A layer whose logits overflow to infinity gets a frame error, never
/// a prediction from non-finite logits, and the session goes on.
#[test]
fn gda_heads_score_as_the_equation_says_and_non_finite_logits_are_refused() {
    use tipedge::adapter::Head;
    use tipedge::pack::OwnedGda;
    let encoder = clip_tiny();
    let base = draft_of(&encoder, &["chelsea.jpg", "rocket.jpg"], &["cat", "rocket"]);
    let tip = Arc::new(Classifier::from_draft(base.clone()));
    let dim = encoder.dim();
    let gda = |scale: f32| OwnedGda {
        weights: (0..2 * dim)
            .map(|i| scale * ((i % 7) as f32 - 3.0))
            .collect(),
        bias: vec![0.5, -0.25],
        alpha: 0.1,
    };
    let with_head = |head: Head, g: OwnedGda| {
        let mut d = base.clone();
        d.set_head(head, Some(g)).unwrap();
        Arc::new(Classifier::from_draft(d))
    };
    let img = rgb("chelsea.jpg");
    let frame =
        FrameRef::packed(img.as_raw(), img.width(), img.height(), PixelFormat::Rgb24).unwrap();
    let mut s = Session::new(encoder.clone(), tip.clone(), SessionOptions::default()).unwrap();
    s.classify(&frame).unwrap();
    let f = s.last_feature().to_vec();
    let tip_logits = s.last_logits().to_vec();
    let g = gda(0.01);
    let term: Vec<f32> = (0..2)
        .map(|c| {
            let row = &g.weights[c * dim..(c + 1) * dim];
            g.alpha * (f.iter().zip(row).map(|(a, b)| a * b).sum::<f32>() + g.bias[c])
        })
        .collect();
    for head in [Head::Gda, Head::Both] {
        let c = with_head(head, g.clone());
        assert_eq!(c.model().head(), head);
        s.swap(c).unwrap();
        s.classify(&frame).unwrap();
        for k in 0..2 {
            let want = term[k]
                + if head == Head::Both {
                    tip_logits[k]
                } else {
                    0.0
                };
            let got = s.last_logits()[k];
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{head}: {got} vs {want}"
            );
        }
    }
    // Overflow: every frame refused with its index, single and batched; the session goes on.
    // Rows along the feature at 3e38: f·W_gᵀ ≈ 3e38, times α 10 overflows.
    let huge = OwnedGda {
        weights: f.iter().chain(&f).map(|v| v * 3e38).collect(),
        bias: vec![0.0, 0.0],
        alpha: 10.0,
    };
    s.swap(with_head(Head::Gda, huge)).unwrap();
    let e = s.classify(&frame).unwrap_err().to_string();
    assert!(e.contains("the logits are not finite"), "{e}");
    let images = decoded(&STREAM[..2]);
    for r in s.classify_batch(&frames_of(&images)) {
        let e = r.unwrap_err().to_string();
        assert!(e.starts_with("frame ") && e.contains("not finite"), "{e}");
    }
    s.swap(tip).unwrap();
    assert!(s.classify(&frame).is_ok());
}
