//! Criterion benchmarks of the online path with the bundled EfficientNet-Lite0 (real weights):
//!
//! - `frame → prediction`: a 640×480 picture as an NV12 and a YUYV camera frame through
//!   `Session::classify`, against today's file path for the same picture as a JPEG file
//!   (`load_rgb` + `Session::classify_image`), and each stage alone: frame → tensor, the encoder
//!   (tract), scoring + top-k. After the criterion groups, one table of per-stage means from the
//!   sessions' own timings (`Prediction::timings`, same run, frames interleaved) and the share
//!   of each frame that is not the encoder.
//! - `frame → tensor`: every pixel format into the model's input (no encoder), against decoding
//!   the same picture from JPEG bytes.
//! - `scoring`: the Tip-Adapter logits (zero-shot + f32 cache, detected kernel).
//!
//! Run:
//!
//!     cargo bench --bench online_path
//!     TIPEDGE_STAGE_REPORT=only cargo bench --bench online_path   # the stage table alone

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

mod support;

use criterion::{black_box, criterion_group, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use support::values;
use tipedge::adapter::{top_k, AdapterParams};
use tipedge::classifier::Classifier;
use tipedge::encoder::{ImageEncoder, RunOptions};
use tipedge::kernel::l2_normalize_rows;
use tipedge::pack::{EncoderId, PackDraft, Provenance};
use tipedge::preprocess::{
    decode_rgb_bytes, load_rgb, DecodeLimits, FrameRef, PixelFormat, Preprocessor,
};
use tipedge::session::{FrameTimings, Session, SessionOptions};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/fixtures")
        .join(rel)
}

/// BT.601 limited range with 8-bit integer weights; chroma from the top-left pixel of each
/// block. Only the frame's content is needed here, not an accurate conversion.
fn yuv(p: &[u8]) -> [u8; 3] {
    let [r, g, b] = [p[0], p[1], p[2]].map(i32::from);
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [y, u, v].map(|c| c.clamp(0, 255) as u8)
}

fn nv12(img: &RgbImage) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut out: Vec<u8> = img.pixels().map(|p| yuv(&p.0)[0]).collect();
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let [_, u, v] = yuv(&img.get_pixel(x, y).0);
            out.extend([u, v]);
        }
    }
    out
}

fn yuyv(img: &RgbImage) -> Vec<u8> {
    img.as_raw()
        .chunks_exact(6)
        .flat_map(|pair| {
            let ([y0, u, v], [y1, _, _]) = (yuv(&pair[..3]), yuv(&pair[3..]));
            [y0, u, y1, v]
        })
        .collect()
}

/// One picture in every form: a real photo (rocket.jpg) stretched to 640×480, as RGB, NV12,
/// YUYV and a quality-90 JPEG (bytes, and a file for the file path).
struct Picture {
    rgb: RgbImage,
    nv12: Vec<u8>,
    yuyv: Vec<u8>,
    jpeg: Vec<u8>,
    jpeg_file: PathBuf,
}

fn picture() -> Picture {
    let rocket = load_rgb(&fixture("images/rocket.jpg"), &DecodeLimits::default()).unwrap();
    let rgb = image::imageops::resize(&rocket, 640, 480, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&rgb)
        .unwrap();
    let jpeg_file = std::env::temp_dir().join(format!("tipedge-bench-{}.jpg", std::process::id()));
    std::fs::write(&jpeg_file, &jpeg).unwrap();
    Picture {
        nv12: nv12(&rgb),
        yuyv: yuyv(&rgb),
        rgb,
        jpeg,
        jpeg_file,
    }
}

/// A session over the bundled EfficientNet-Lite0 with 3 classes × 16 random int8 keys.
fn session() -> Session {
    let encoder = Arc::new(
        ImageEncoder::load(
            &fixture("efficientnet-lite0/image.onnx"),
            &RunOptions::default(),
        )
        .unwrap(),
    );
    let draft = support::textile_sized_draft(&encoder);
    let classifier = Arc::new(Classifier::from_draft(draft));
    Session::new(encoder, classifier, SessionOptions::default()).unwrap()
}

fn frame_to_prediction(c: &mut Criterion) {
    let pic = picture();
    let mut s = session();
    let nv12 = FrameRef::packed(&pic.nv12, 640, 480, PixelFormat::Nv12).unwrap();
    let yuyv = FrameRef::packed(&pic.yuyv, 640, 480, PixelFormat::Yuyv).unwrap();
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("640x480 frame -> prediction (EfficientNet-Lite0, 1 thread)");
    g.sample_size(30);
    g.bench_function("nv12 frame: Session::classify", |b| {
        b.iter(|| s.classify(black_box(&nv12)).unwrap())
    });
    g.bench_function("yuyv frame: Session::classify", |b| {
        b.iter(|| s.classify(black_box(&yuyv)).unwrap())
    });
    g.bench_function("jpeg file: load_rgb + Session::classify_image", |b| {
        b.iter(|| {
            let img = load_rgb(black_box(&pic.jpeg_file), &limits).unwrap();
            s.classify_image(&img).unwrap()
        })
    });
    // The stages alone.
    let encoder = s.encoder().clone();
    let mut pre = Preprocessor::new(encoder.recipe().clone());
    let mut state = encoder.state().unwrap();
    g.bench_function("stage: nv12 frame -> tensor", |b| {
        b.iter(|| pre.run_frame(&nv12, &limits, state.image_mut(0)).unwrap())
    });
    g.bench_function("stage: yuyv frame -> tensor", |b| {
        b.iter(|| pre.run_frame(&yuyv, &limits, state.image_mut(0)).unwrap())
    });
    g.bench_function("stage: jpeg file -> tensor (load_rgb + run)", |b| {
        b.iter(|| {
            let img = load_rgb(&pic.jpeg_file, &limits).unwrap();
            pre.run(&img, state.image_mut(0))
        })
    });
    let mut feature = vec![0f32; encoder.dim()];
    g.bench_function("stage: encoder (tract)", |b| {
        b.iter(|| encoder.run(&mut state, 1, &mut feature).unwrap())
    });
    l2_normalize_rows(&mut feature, encoder.dim());
    let classifier = s.classifier().clone();
    let mut scratch = classifier.scratch();
    let mut logits = vec![0f32; classifier.n_classes()];
    g.bench_function("stage: scoring + top-k", |b| {
        b.iter(|| {
            classifier
                .logits(&mut scratch, black_box(&feature), &mut logits)
                .unwrap();
            top_k(&logits, 3)
        })
    });
    g.finish();
}

/// The per-stage table: each input kind classified `rounds` times, interleaved, with the
/// session's own stage timings; the file path adds `load_rgb`'s time as its decode stage.
fn stage_report() {
    let pic = picture();
    let mut s = session();
    let limits = DecodeLimits::default();
    let nv12 = FrameRef::packed(&pic.nv12, 640, 480, PixelFormat::Nv12).unwrap();
    let yuyv = FrameRef::packed(&pic.yuyv, 640, 480, PixelFormat::Yuyv).unwrap();
    let kinds = ["nv12 frame", "yuyv frame", "jpeg file (today's file path)"];
    let mut sums = [(0.0f64, FrameTimings::default()); 3];
    let rounds = 40;
    for round in 0..rounds + 3 {
        for (k, sum) in sums.iter_mut().enumerate() {
            let (decode_ms, p) = match k {
                0 => (0.0, s.classify(&nv12).unwrap()),
                1 => (0.0, s.classify(&yuyv).unwrap()),
                _ => {
                    let t = Instant::now();
                    let img = load_rgb(&pic.jpeg_file, &limits).unwrap();
                    let d = t.elapsed().as_secs_f64() * 1e3;
                    (d, s.classify_image(&img).unwrap())
                }
            };
            if round >= 3 {
                sum.0 += decode_ms;
                sum.1.preprocess_ms += p.timings.preprocess_ms;
                sum.1.encode_ms += p.timings.encode_ms;
                sum.1.score_ms += p.timings.score_ms;
            }
        }
    }
    println!(
        "\nframe -> prediction, EfficientNet-Lite0, 1 thread, mean of {rounds} interleaved frames each (ms):"
    );
    println!(
        "{:<32} {:>8} {:>11} {:>8} {:>8} {:>8} {:>12}",
        "input", "decode", "preprocess", "encode", "score", "total", "not encoder"
    );
    for (name, (decode, t)) in kinds.iter().zip(sums) {
        let n = rounds as f64;
        let (d, p, e, sc) = (
            decode / n,
            t.preprocess_ms / n,
            t.encode_ms / n,
            t.score_ms / n,
        );
        let total = d + p + e + sc;
        println!(
            "{name:<32} {d:>8.3} {p:>11.3} {e:>8.2} {sc:>8.4} {total:>8.2} {:>11.1}%",
            100.0 * (total - e) / total
        );
    }
    let _ = std::fs::remove_file(&pic.jpeg_file);
}

fn frame_to_tensor(c: &mut Criterion) {
    let pic = picture();
    let recipe = ImageEncoder::load(
        &fixture("efficientnet-lite0/image.onnx"),
        &RunOptions::default(),
    )
    .unwrap()
    .recipe()
    .clone();
    let limits = DecodeLimits::default();
    let mut pre = Preprocessor::new(recipe);
    let mut out = vec![0f32; pre.recipe().tensor_len()];
    let mut g = c.benchmark_group("640x480 frame -> effnet 256/224 tensor");
    for (name, frame) in [
        (
            "nv12",
            FrameRef::packed(&pic.nv12, 640, 480, PixelFormat::Nv12).unwrap(),
        ),
        (
            "yuyv422",
            FrameRef::packed(&pic.yuyv, 640, 480, PixelFormat::Yuyv).unwrap(),
        ),
        (
            "rgb24",
            FrameRef::packed(pic.rgb.as_raw(), 640, 480, PixelFormat::Rgb24).unwrap(),
        ),
        ("mjpeg frame", FrameRef::jpeg(&pic.jpeg)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| pre.run_frame(black_box(&frame), &limits, &mut out).unwrap())
        });
    }
    g.bench_function("jpeg bytes: decode + run", |b| {
        b.iter(|| {
            let rgb =
                decode_rgb_bytes(black_box(&pic.jpeg), Path::new("frame.jpg"), &limits).unwrap();
            pre.run(&rgb, &mut out)
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&pic.jpeg_file);
}

fn scoring(c: &mut Criterion) {
    let mut g = c.benchmark_group("tip-adapter scoring (zero-shot + f32 cache, detected kernel)");
    for (n_classes, shots, dim) in [(3usize, 16usize, 1280usize), (100, 16, 512)] {
        let n = n_classes * shots;
        let draft = PackDraft::from_f32_keys(
            dim,
            values(n * dim, 1),
            (0..n).map(|i| (i / shots) as u32).collect(),
            (0..n_classes).map(|c| format!("class {c}")).collect(),
            Some(values(n_classes * dim, 2)),
            AdapterParams::default(),
            EncoderId {
                name: "bench".into(),
                sha256: [0; 32],
            },
            Provenance::default(),
        )
        .unwrap();
        let classifier = Classifier::from_draft(draft);
        let mut scratch = classifier.scratch();
        let mut q = values(dim, 3);
        l2_normalize_rows(&mut q, dim);
        let mut out = vec![0f32; n_classes];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n} keys x {dim} dims, {n_classes} classes"), |b| {
            b.iter(|| {
                classifier
                    .logits(&mut scratch, black_box(&q), &mut out)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frame_to_prediction, frame_to_tensor, scoring);

fn main() {
    let only_report = std::env::var("TIPEDGE_STAGE_REPORT").is_ok_and(|v| v == "only");
    if !only_report {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    stage_report();
}
