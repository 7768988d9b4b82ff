//! Criterion benchmarks of camera frames → model tensor with the bundled EfficientNet-Lite0
//! recipe (resize 256, crop 224, bicubic): a 640×480 photo (rocket.jpg, stretched) as NV12, YUYV
//! and RGB24 frames, compared in the same run with decoding the same picture from JPEG bytes
//! (quality 90, 4:2:0) and preprocessing it — the file path's cost, and an MJPEG camera's.
//!
//!     cargo bench --bench frame

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use image::codecs::jpeg::JpegEncoder;
use image::RgbImage;
use tipedge::preprocess::{
    decode_rgb_bytes, load_rgb, DecodeLimits, FrameRef, PixelFormat, Preprocessor,
};
use tipedge::sidecar::Sidecar;

fn fixture(rel: &str) -> std::path::PathBuf {
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

fn frames(c: &mut Criterion) {
    let sidecar = Sidecar::read(&fixture("efficientnet-lite0/image.json")).unwrap();
    let recipe = sidecar.recipe().unwrap();
    let limits = DecodeLimits::default();
    let rocket = load_rgb(&fixture("images/rocket.jpg"), &limits).unwrap();
    let img = image::imageops::resize(&rocket, 640, 480, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    let (nv12, yuyv) = (nv12(&img), yuyv(&img));

    let mut pre = Preprocessor::new(recipe);
    let mut out = vec![0f32; pre.recipe().tensor_len()];
    let mut g = c.benchmark_group("640x480 frame -> effnet 256/224 tensor");
    for (name, frame) in [
        (
            "nv12",
            FrameRef::packed(&nv12, 640, 480, PixelFormat::Nv12).unwrap(),
        ),
        (
            "yuyv422",
            FrameRef::packed(&yuyv, 640, 480, PixelFormat::Yuyv).unwrap(),
        ),
        (
            "rgb24",
            FrameRef::packed(img.as_raw(), 640, 480, PixelFormat::Rgb24).unwrap(),
        ),
        ("mjpeg frame", FrameRef::jpeg(&jpeg)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| pre.run_frame(black_box(&frame), &limits, &mut out).unwrap())
        });
    }
    g.bench_function("jpeg bytes: decode + run", |b| {
        b.iter(|| {
            let rgb = decode_rgb_bytes(black_box(&jpeg), Path::new("frame.jpg"), &limits).unwrap();
            pre.run(&rgb, &mut out)
        })
    });
    g.bench_function("rgb image: run", |b| {
        b.iter(|| pre.run(black_box(&img), &mut out))
    });
    g.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
