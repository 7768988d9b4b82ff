//! Camera frames → model tensor: every pixel format against the same picture given as RGB,
//! OpenCV's and Pillow's conversions (models/fixtures/frames/, made by
//! models/make_frame_refs.py), JPEG frames against files, refusals, no allocation after
//! warm-up, and a property test over arbitrary geometries.
#![cfg(feature = "runtime")]

mod common;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;
use image::RgbImage;
use proptest::prelude::*;
use tipedge::preprocess::{
    load_rgb, Colorimetry, DecodeLimits, FrameError, FrameRef, Interpolation, PixelFormat,
    Preprocessor, Recipe,
};

// ---------------------------------------------------------------------------------------------
// Pictures, recipes, frames made from RGB.

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// The bundled EfficientNet-Lite0's recipe (models/fixtures/efficientnet-lite0/image.json).
fn effnet() -> Recipe {
    Recipe {
        resize: 256,
        ..Recipe::clip(224)
    }
}

fn recipes() -> Vec<(&'static str, Recipe)> {
    vec![
        ("effnet 256/224 bicubic", effnet()),
        ("clip 224 bicubic", Recipe::clip(224)),
        (
            "bilinear 160/128",
            Recipe {
                resize: 160,
                crop_size: 128,
                interpolation: Interpolation::Bilinear,
                ..Recipe::clip(128)
            },
        ),
    ]
}

/// A small recipe under which a tall picture is resized vertical pass first.
fn small(interpolation: Interpolation) -> Recipe {
    Recipe {
        resize: 64,
        crop_size: 64,
        interpolation,
        ..Recipe::clip(64)
    }
}

/// A real photo at a camera's 640×480 (rocket.jpg, 640×427, stretched), an odd-offset crop of
/// it, and a tall strip of it (resized vertical pass first under `small`).
fn pictures() -> Vec<(&'static str, RgbImage)> {
    let rocket = load_rgb(&common::fixture("images/rocket.jpg"), &limits()).unwrap();
    let vga = image::imageops::resize(&rocket, 640, 480, image::imageops::FilterType::Triangle);
    let crop = image::imageops::crop_imm(&vga, 37, 11, 426, 320).to_image();
    let tall = image::imageops::crop_imm(&vga, 301, 0, 96, 480).to_image();
    vec![
        ("640x480", vga),
        ("426x320 at (37, 11)", crop),
        ("96x480 tall", tall),
    ]
}

fn tensor(pre: &mut Preprocessor, frame: &FrameRef<'_>) -> Vec<f32> {
    let mut out = vec![0f32; pre.recipe().tensor_len()];
    pre.run_frame(frame, &limits(), &mut out).unwrap();
    out
}

/// `img`'s rows, each followed by `pad` bytes of junk.
fn padded(rows: &[u8], row_bytes: usize, pad: usize) -> Vec<u8> {
    rows.chunks_exact(row_bytes)
        .flat_map(|r| r.iter().copied().chain((0..pad).map(|i| i as u8 ^ 0xA5)))
        .collect()
}

fn map_pixels(img: &RgbImage, f: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    img.as_raw().chunks_exact(3).flat_map(f).collect()
}

/// Planes of a BT.601 limited-range 4:2:0 or 4:2:2 frame, from a float forward conversion
/// (rounded), chroma averaged over each block: what a camera's ISP does, not OpenCV's
/// integer code, so that the round trip measures the conversion's own error.
struct Yuv {
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Chroma block: 2 × `rows` pixels.
    rows: usize,
}

fn rgb_to_yuv(img: &RgbImage, rows: usize) -> Yuv {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let luma =
        |p: &[u8]| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
    let to8 = |x: f64| x.round().clamp(0.0, 255.0) as u8;
    let y = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| to8(16.0 + 219.0 / 255.0 * luma(p)))
        .collect();
    let (mut u, mut v) = (Vec::new(), Vec::new());
    for by in (0..h).step_by(rows) {
        for bx in (0..w).step_by(2) {
            let (mut su, mut sv) = (0.0, 0.0);
            for dy in 0..rows {
                for dx in 0..2 {
                    let p = img.get_pixel((bx + dx) as u32, (by + dy) as u32).0;
                    let l = luma(&p);
                    su += (f64::from(p[2]) - l) / 1.772;
                    sv += (f64::from(p[0]) - l) / 1.402;
                }
            }
            let n = (2 * rows) as f64;
            u.push(to8(128.0 + 224.0 / 255.0 * su / n));
            v.push(to8(128.0 + 224.0 / 255.0 * sv / n));
        }
    }
    Yuv { y, u, v, rows }
}

/// The exact BT.601 limited-range inverse of `yuv` in f64 (chroma repeated over its block),
/// rounded once: what the fixed-point conversion approximates.
fn yuv_to_rgb_exact(yuv: &Yuv, w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let c = (y as usize / yuv.rows) * (w as usize / 2) + x as usize / 2;
        let l = (f64::from(yuv.y[(y * w + x) as usize]) - 16.0) * 255.0 / 219.0;
        let u = (f64::from(yuv.u[c]) - 128.0) * 255.0 / 224.0;
        let v = (f64::from(yuv.v[c]) - 128.0) * 255.0 / 224.0;
        let to8 = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        image::Rgb([
            to8(l + 1.402 * v),
            to8(l - 0.344_136 * u - 0.714_136 * v),
            to8(l + 1.772 * u),
        ])
    })
}

fn nv12(yuv: &Yuv) -> Vec<u8> {
    let mut out = yuv.y.clone();
    out.extend(yuv.u.iter().zip(&yuv.v).flat_map(|(&u, &v)| [u, v]));
    out
}

fn i420(yuv: &Yuv) -> Vec<u8> {
    [&yuv.y[..], &yuv.u, &yuv.v].concat()
}

fn yuyv(yuv: &Yuv) -> Vec<u8> {
    debug_assert_eq!(yuv.rows, 1);
    yuv.y
        .chunks_exact(2)
        .zip(yuv.u.iter().zip(&yuv.v))
        .flat_map(|(y, (&u, &v))| [y[0], u, y[1], v])
        .collect()
}

fn diff_stats(a: &[f32], b: &[f32]) -> (f32, f32) {
    let max = common::max_abs_diff(a, b);
    let mean = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    (max, mean)
}

// ---------------------------------------------------------------------------------------------
// Frames against the picture as RGB.

/// RGB24 (tight and with padded rows), BGR24 and RGBA frames give `run`'s tensor bit for bit;
/// so does a GRAY8 frame of a gray picture.
#[test]
fn rgb_bgr_rgba_gray_frames_equal_run_exactly() {
    for (pic, img) in pictures() {
        let (w, h) = img.dimensions();
        let rgb = img.as_raw();
        let bgr = map_pixels(&img, |p| vec![p[2], p[1], p[0]]);
        let rgba = map_pixels(&img, |p| vec![p[0], p[1], p[2], 255 - p[1]]);
        let rgb_padded = padded(rgb, 3 * w as usize, 13);
        let gray_img = RgbImage::from_fn(w, h, |x, y| {
            let p = img.get_pixel(x, y).0;
            image::Rgb(
                [((u32::from(p[0]) * 2 + u32::from(p[1]) * 5 + u32::from(p[2])) / 8) as u8; 3],
            )
        });
        let gray = map_pixels(&gray_img, |p| vec![p[0]]);
        for (name, recipe) in recipes() {
            let mut pre = Preprocessor::new(recipe);
            let expect = pre.tensor(&img);
            let frames = [
                FrameRef::packed(rgb, w, h, PixelFormat::Rgb24).unwrap(),
                FrameRef::new(&rgb_padded, w, h, 3 * w as usize + 13, PixelFormat::Rgb24).unwrap(),
                FrameRef::packed(&bgr, w, h, PixelFormat::Bgr24).unwrap(),
                FrameRef::packed(&rgba, w, h, PixelFormat::Rgba).unwrap(),
            ];
            for frame in frames {
                assert!(
                    tensor(&mut pre, &frame) == expect,
                    "{pic}, {name}: {:?} differs from run",
                    frame
                );
            }
            let gray_frame = FrameRef::packed(&gray, w, h, PixelFormat::Gray8).unwrap();
            assert!(
                tensor(&mut pre, &gray_frame) == pre.tensor(&gray_img),
                "{pic}, {name}: gray"
            );
        }
    }
}

/// For every format, with padded rows, in both resampler branches (the tall picture under the
/// small recipe goes vertical pass first): `run_frame(frame)` is `run(frame.to_rgb())` bit for
/// bit, i.e. converting rows on the fly is the same as converting the frame first.
#[test]
fn run_frame_is_run_of_to_rgb() {
    for (pic, img) in pictures() {
        let (w, h) = img.dimensions();
        let (wu, pad) = (w as usize, 6);
        let yuv420 = rgb_to_yuv(&img, 2);
        let yuv422 = rgb_to_yuv(&img, 1);
        // NV12 and I420 with a padded stride: every plane row padded (I420's chroma by half).
        let nv12_padded = padded(&nv12(&yuv420), wu, pad);
        let i420_padded = [
            padded(&yuv420.y, wu, pad),
            padded(&yuv420.u, wu / 2, pad / 2),
            padded(&yuv420.v, wu / 2, pad / 2),
        ]
        .concat();
        let raw = [
            (PixelFormat::Nv12, nv12_padded, wu + pad),
            (PixelFormat::I420, i420_padded, wu + pad),
            (
                PixelFormat::Yuyv,
                padded(&yuyv(&yuv422), 2 * wu, pad),
                2 * wu + pad,
            ),
            (PixelFormat::Gray8, padded(&yuv420.y, wu, pad), wu + pad),
            (
                PixelFormat::Bgr24,
                padded(&map_pixels(&img, |p| vec![p[2], p[1], p[0]]), 3 * wu, pad),
                3 * wu + pad,
            ),
        ];
        for (format, data, stride) in &raw {
            for colorimetry in [
                Colorimetry::BT601_LIMITED,
                Colorimetry::BT601_FULL,
                Colorimetry::BT709_LIMITED,
            ] {
                let frame = FrameRef::new(data, w, h, *stride, *format)
                    .unwrap()
                    .with_colorimetry(colorimetry);
                let rgb = frame.to_rgb(&limits()).unwrap();
                for recipe in [
                    effnet(),
                    small(Interpolation::Bicubic),
                    small(Interpolation::Bilinear),
                ] {
                    let mut pre = Preprocessor::new(recipe);
                    assert!(
                        tensor(&mut pre, &frame) == pre.tensor(&rgb),
                        "{pic}: {format} {colorimetry:?}"
                    );
                }
            }
        }
    }
}

/// YUV frames of the picture against `run` on the picture itself, and against `run` on the
/// exact (f64) inverse conversion of the same YUV planes. One 8-bit level is 1/255/std ≈ 0.015
/// of the normalised tensor.
///
/// The fixed-point conversion's own error (vs the exact inverse) is OpenCV's three-decimal
/// coefficients plus one rounding, at most one level per pixel, which the resampler's negative
/// lobes and two 8-bit roundings can turn into up to three. Measured over the three pictures
/// and three recipes: max |Δ| 0.0427 (3 levels, the upscaled tall strip; 0.030 on the 640×480
/// and the crop), mean |Δ| ≤ 0.00056. Asserted: max ≤ 0.045, mean ≤ 0.001.
///
/// Against the picture itself chroma subsampling dominates: the test's forward conversion
/// averages chroma over 2 × 2 (NV12, I420) or 2 × 1 (YUYV) blocks, which smears saturated
/// colour edges by tens of levels. Measured: 640×480 under the EfficientNet recipe max |Δ|
/// 0.484, mean 0.0088 (downscaling smooths the chroma error); odd-offset crop max 0.612, mean
/// 0.0096; the tall strip, upscaled, max 0.853, mean 0.0202. Asserted: max ≤ 0.9, mean ≤ 0.025.
#[test]
fn yuv_frames_are_within_the_conversion_error_of_run() {
    const MAX_BOUND: f32 = 0.9;
    const MEAN_BOUND: f32 = 0.025;
    const CONVERSION_MAX: f32 = 0.045;
    const CONVERSION_MEAN: f32 = 0.001;
    for (pic, img) in pictures() {
        let (w, h) = img.dimensions();
        let yuv420 = rgb_to_yuv(&img, 2);
        let yuv422 = rgb_to_yuv(&img, 1);
        let frames = [
            (PixelFormat::Nv12, nv12(&yuv420)),
            (PixelFormat::I420, i420(&yuv420)),
            (PixelFormat::Yuyv, yuyv(&yuv422)),
        ];
        for (name, recipe) in recipes() {
            let mut pre = Preprocessor::new(recipe);
            let expect = pre.tensor(&img);
            let exact420 = pre.tensor(&yuv_to_rgb_exact(&yuv420, w, h));
            let exact422 = pre.tensor(&yuv_to_rgb_exact(&yuv422, w, h));
            for (format, data) in &frames {
                let frame = FrameRef::packed(data, w, h, *format).unwrap();
                let ours = tensor(&mut pre, &frame);
                let (max, mean) = diff_stats(&ours, &expect);
                let exact = if *format == PixelFormat::Yuyv {
                    &exact422
                } else {
                    &exact420
                };
                let (conv_max, conv_mean) = diff_stats(&ours, exact);
                println!(
                    "{pic:<20} {name:<24} {format:<8} vs the picture: max |Δ| {max:.4}  mean |Δ| \
                     {mean:.5}; vs the exact inverse: max |Δ| {conv_max:.4}  mean |Δ| {conv_mean:.5}"
                );
                assert!(
                    max <= MAX_BOUND && mean <= MEAN_BOUND,
                    "{pic} {name} {format}: {max} {mean}"
                );
                assert!(
                    conv_max <= CONVERSION_MAX && conv_mean <= CONVERSION_MEAN,
                    "{pic} {name} {format}: {conv_max} {conv_mean}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against OpenCV and Pillow (fixtures).

fn frames_fixture(name: &str) -> std::path::PathBuf {
    common::fixture("frames").join(name)
}

fn png(name: &str) -> RgbImage {
    image::open(frames_fixture(name)).unwrap().to_rgb8()
}

fn frames_manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(frames_fixture("manifest.json")).unwrap()).unwrap()
}

/// The fixture files are the ones the manifest describes.
#[test]
fn fixtures_match_their_manifest() {
    let m = frames_manifest();
    for (name, entry) in m["files"].as_object().unwrap() {
        let bytes = std::fs::read(frames_fixture(name)).unwrap();
        assert_eq!(
            tipedge::sidecar::sha256_hex(&bytes),
            entry["sha256"].as_str().unwrap(),
            "{name}"
        );
    }
}

fn max_level_diff(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let differing = d.iter().filter(|&&x| x > 0).count() as f64 / d.len() as f64;
    (d.iter().copied().max().unwrap(), differing)
}

/// The default conversion (BT.601 limited range) is OpenCV's `cvtColor` to the bit, for NV12,
/// I420 and YUYV, on a photo and on random bytes (every Y value, clipping chroma); and the
/// tensor of such a frame is `run`'s tensor of OpenCV's RGB, bit for bit.
#[test]
fn default_conversion_is_opencvs_exactly() {
    let m = frames_manifest();
    println!("reference: OpenCV {}", m["versions"]["opencv"]);
    for (stem, w, h) in [("photo_96x72", 96, 72), ("random_48x48", 48, 48)] {
        for (ext, format, reference) in [
            ("nv12", PixelFormat::Nv12, "420"),
            ("i420", PixelFormat::I420, "420"),
            ("yuyv", PixelFormat::Yuyv, "yuyv"),
        ] {
            let data = std::fs::read(frames_fixture(&format!("{stem}.{ext}"))).unwrap();
            let frame = FrameRef::packed(&data, w, h, format).unwrap();
            let opencv = png(&format!("{stem}_{reference}_rgb.png"));
            let ours = frame.to_rgb(&limits()).unwrap();
            let (max, differing) = max_level_diff(&ours, &opencv);
            assert_eq!(
                max,
                0,
                "{stem}.{ext}: {:.2} % of the values differ",
                100.0 * differing
            );
            let mut pre = Preprocessor::new(small(Interpolation::Bicubic));
            assert!(
                tensor(&mut pre, &frame) == pre.tensor(&opencv),
                "{stem}.{ext}"
            );
        }
    }
}

/// The random 48×48 fixture frame's bytes in `format` (`nv12`, `i420` or `yuyv`), and its RGB.
fn random_frame_rgb(format: PixelFormat, colorimetry: Colorimetry) -> (Vec<u8>, RgbImage) {
    let ext = match format {
        PixelFormat::Nv12 => "nv12",
        PixelFormat::I420 => "i420",
        PixelFormat::Yuyv => "yuyv",
        other => panic!("no {other} fixture"),
    };
    let data = std::fs::read(frames_fixture(&format!("random_48x48.{ext}"))).unwrap();
    let frame = FrameRef::packed(&data, 48, 48, format)
        .unwrap()
        .with_colorimetry(colorimetry);
    let rgb = frame.to_rgb(&limits()).unwrap();
    (data, rgb)
}

/// BT.601 full range against Pillow's YCbCr → RGB (JPEG's conversion), on random bytes with
/// chroma repeated over its 2 × 2 block. Pillow's tables keep 6 fractional bits and floor;
/// ours round 20-bit products (the exact formula to ±0.5, unit-tested in src/preprocess/yuv.rs),
/// so the two differ by one level where Pillow's floor lands below the rounded value.
/// Measured: max 1 level, 32.0 % of the values differ. Asserted: at most 1 level.
#[test]
fn full_range_is_within_one_level_of_pillow() {
    let (_, ours) = random_frame_rgb(PixelFormat::Nv12, Colorimetry::BT601_FULL);
    let pillow = png("random_48x48_420_full_pillow.png");
    let (max, differing) = max_level_diff(&ours, &pillow);
    println!(
        "BT.601 full range vs Pillow: max {max} level, {:.1} % of the values differ",
        100.0 * differing
    );
    assert!(max <= 1, "{max}");
}

/// BT.709 limited range against the standard's matrix in f64 (Kr 0.2126, Kb 0.0722, Y scaled
/// by 255/219, chroma by 255/224; Y below 16 taken as 16, as OpenCV does for BT.601): the
/// fixed-point result is the exact value rounded, within 0.5 level plus 20-bit coefficient
/// rounding.
#[test]
fn bt709_rounds_the_standard_matrix() {
    let (data, ours) = random_frame_rgb(PixelFormat::Yuyv, Colorimetry::BT709_LIMITED);
    let (kr, kb) = (0.2126, 0.0722);
    let kg = 1.0 - kr - kb;
    let mut worst = 0f64;
    for (i, px) in ours.pixels().enumerate() {
        let pair = &data[4 * (i / 2)..4 * (i / 2) + 4];
        let y = (f64::from(data[2 * i]) - 16.0).max(0.0) * 255.0 / 219.0;
        let (u, v) = (
            (f64::from(pair[1]) - 128.0) * 255.0 / 224.0,
            (f64::from(pair[3]) - 128.0) * 255.0 / 224.0,
        );
        let exact = [
            y + 2.0 * (1.0 - kr) * v,
            y - 2.0 * (1.0 - kb) * kb / kg * u - 2.0 * (1.0 - kr) * kr / kg * v,
            y + 2.0 * (1.0 - kb) * u,
        ];
        for (&got, e) in px.0.iter().zip(exact) {
            worst = worst.max((f64::from(got) - e.clamp(0.0, 255.0)).abs());
        }
    }
    println!("BT.709 limited: max |fixed point − exact| = {worst:.4} level");
    assert!(worst < 0.501, "{worst}");
}

/// Pillow resizes a tall picture vertical pass first; the resampler does too, reading rows
/// through the frame (in place for RGB24, converted into its row ring for BGR24): Pillow's
/// pixels exactly, for bicubic and bilinear.
#[test]
fn vertical_first_branch_matches_pillow() {
    let m = frames_manifest();
    let t = &m["tall"];
    let get = |k: &str| t[k].as_u64().unwrap() as u32;
    let chelsea = load_rgb(&common::fixture("images/chelsea.jpg"), &limits()).unwrap();
    let tall = image::imageops::crop_imm(&chelsea, get("x"), get("y"), get("width"), get("height"))
        .to_image();
    let bgr = map_pixels(&tall, |p| vec![p[2], p[1], p[0]]);
    let (w, h) = tall.dimensions();
    let size = get("resize");
    assert_eq!(size, get("crop_size"));
    for (name, interpolation) in [
        ("bicubic", Interpolation::Bicubic),
        ("bilinear", Interpolation::Bilinear),
    ] {
        let recipe = Recipe {
            resize: size,
            crop_size: size,
            interpolation,
            ..Recipe::clip(size)
        };
        let pillow = png(&format!("tall_96x300_{name}_{size}.png"));
        // ToTensor + Normalize of Pillow's pixels, in f32 as the preprocessor computes it.
        let plane = (size * size) as usize;
        let mut expect = vec![0f32; 3 * plane];
        for (i, px) in pillow.pixels().enumerate() {
            for c in 0..3 {
                expect[c * plane + i] =
                    (f32::from(px.0[c]) / 255.0 - recipe.mean[c]) / recipe.std[c];
            }
        }
        let mut pre = Preprocessor::new(recipe);
        assert!(
            pre.tensor(&tall) == expect,
            "{name}: run differs from Pillow"
        );
        let frame = FrameRef::packed(&bgr, w, h, PixelFormat::Bgr24).unwrap();
        assert!(
            tensor(&mut pre, &frame) == expect,
            "{name}: BGR24 frame differs from Pillow"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG frames.

/// A JPEG frame gives exactly what `load_rgb` + `run` give for the same file, EXIF
/// orientation included; `to_rgb` is `load_rgb`'s image.
#[test]
fn jpeg_frames_equal_files() {
    let mut pre = Preprocessor::new(effnet());
    for name in ["chelsea.jpg", "rocket_exif6.jpg", "astronaut_cmyk.jpg"] {
        let path = common::fixture(&format!("images/{name}"));
        let bytes = std::fs::read(&path).unwrap();
        let img = load_rgb(&path, &limits()).unwrap();
        let frame = FrameRef::jpeg(&bytes);
        assert!(frame.to_rgb(&limits()).unwrap() == img, "{name}");
        // Twice: the second frame reuses the decode buffer.
        for _ in 0..2 {
            assert!(tensor(&mut pre, &frame) == pre.tensor(&img), "{name}");
        }
        let same = FrameRef::packed(&bytes, 0, 0, PixelFormat::Jpeg).unwrap();
        assert!(
            tensor(&mut pre, &same) == pre.tensor(&img),
            "{name} via packed"
        );
    }
}

fn frame_err(pre: &mut Preprocessor, frame: &FrameRef<'_>, limits: &DecodeLimits) -> String {
    let mut out = vec![0f32; pre.recipe().tensor_len()];
    let err = pre
        .run_frame(frame, limits, &mut out)
        .expect_err("must be refused");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    msg
}

#[test]
fn bad_jpeg_frames_are_refused_with_the_decoders_reason() {
    let bytes = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
    let mut pre = Preprocessor::new(effnet());
    let msg = frame_err(
        &mut pre,
        &FrameRef::jpeg(&bytes[..bytes.len() / 2]),
        &limits(),
    );
    assert_eq!(
        msg,
        "JPEG frame: cannot decode: truncated JPEG (the file ends before the image data does)"
    );
    let mut garbage = b"\xff\xd8\xff".to_vec();
    garbage.extend_from_slice(&[0x17; 64]);
    let msg = frame_err(&mut pre, &FrameRef::jpeg(&garbage), &limits());
    assert!(
        msg.starts_with("JPEG frame: cannot decode: corrupt JPEG ("),
        "{msg}"
    );
    let msg = frame_err(&mut pre, &FrameRef::jpeg(b"not a jpeg"), &limits());
    assert!(
        msg.starts_with("JPEG frame: cannot decode: corrupt JPEG ("),
        "{msg}"
    );
    assert_eq!(
        frame_err(&mut pre, &FrameRef::jpeg(&[]), &limits()),
        "JPEG frame: empty (0 bytes)"
    );
    let tiny = DecodeLimits {
        max_pixels: 100_000,
    };
    assert_eq!(
        frame_err(&mut pre, &FrameRef::jpeg(&bytes), &tiny),
        "JPEG frame: 451×300 = 0.1 MP exceeds the 0.1 MP limit (decompression-bomb guard)"
    );
    // The preprocessor is still usable after failures.
    let img = load_rgb(&common::fixture("images/chelsea.jpg"), &limits()).unwrap();
    assert!(tensor(&mut pre, &FrameRef::jpeg(&bytes)) == pre.tensor(&img));
}

#[test]
fn raw_frame_refusals() {
    let mut pre = Preprocessor::new(effnet());
    let data = vec![0u8; 640 * 480 * 2];
    let frame = FrameRef::packed(&data, 640, 480, PixelFormat::Yuyv).unwrap();
    let mut short = vec![0f32; 1000];
    let err = pre.run_frame(&frame, &limits(), &mut short).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the output buffer holds 1000 values, the tensor needs 150528 (3 × 224 × 224)"
    );
    assert!(matches!(err, FrameError::OutputLength { .. }));
    let tiny = DecodeLimits {
        max_pixels: 640 * 479,
    };
    assert_eq!(
        frame_err(&mut pre, &frame, &tiny),
        "YUYV frame 640×480 = 0.3 MP exceeds the 0.3 MP limit"
    );
    assert!(matches!(
        frame.to_rgb(&tiny),
        Err(FrameError::TooManyPixels { .. })
    ));
    assert_eq!(
        FrameRef::packed(&data[..1000], 640, 480, PixelFormat::Nv12)
            .unwrap_err()
            .to_string(),
        "NV12 frame 640×480 with stride 640 needs 460800 bytes, the buffer holds 1000"
    );
    // I420 needs its V plane too: one byte short.
    let err = FrameRef::packed(&data[..460_799], 640, 480, PixelFormat::I420).unwrap_err();
    assert!(
        matches!(
            err,
            FrameError::BufferTooSmall {
                needed: 460_800,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Allocation and bad geometry.

/// After one frame of a given size, raw frames convert and resample without allocating: both
/// resampler branches, every raw format, with the default and other colorimetries.
#[test]
fn raw_frames_allocate_nothing_after_warm_up() {
    let pics = pictures();
    for (pic, img) in &pics {
        let (w, h) = img.dimensions();
        let yuv420 = rgb_to_yuv(img, 2);
        let yuv422 = rgb_to_yuv(img, 1);
        let raw = [
            (PixelFormat::Rgb24, img.as_raw().clone()),
            (
                PixelFormat::Bgr24,
                map_pixels(img, |p| vec![p[2], p[1], p[0]]),
            ),
            (
                PixelFormat::Rgba,
                map_pixels(img, |p| vec![p[0], p[1], p[2], 0]),
            ),
            (PixelFormat::Gray8, yuv420.y.clone()),
            (PixelFormat::Yuyv, yuyv(&yuv422)),
            (PixelFormat::Nv12, nv12(&yuv420)),
            (PixelFormat::I420, i420(&yuv420)),
        ];
        let recipe = if *pic == "96x480 tall" {
            small(Interpolation::Bicubic)
        } else {
            effnet()
        };
        for (format, data) in &raw {
            let frame = FrameRef::packed(data, w, h, *format)
                .unwrap()
                .with_colorimetry(Colorimetry::BT709_LIMITED);
            let mut pre = Preprocessor::new(recipe.clone());
            let mut out = vec![0f32; pre.recipe().tensor_len()];
            pre.run_frame(&frame, &limits(), &mut out).unwrap();
            let other = frame.with_colorimetry(Colorimetry::default());
            let allocs = allocations_during(|| {
                for _ in 0..3 {
                    pre.run_frame(&frame, &limits(), &mut out).unwrap();
                    pre.run_frame(&other, &limits(), &mut out).unwrap();
                }
            });
            println!("{pic}, {format}: {allocs} allocations in 6 frames after warm-up");
            assert_eq!(allocs, 0, "{pic}, {format} allocated");
        }
    }
}

/// What a frame of this geometry needs, computed independently in u128: `None` if invalid.
fn oracle(format: PixelFormat, w: u32, h: u32, stride: usize) -> Option<u128> {
    let (w, h, stride) = (u128::from(w), u128::from(h), stride as u128);
    let (bpp, even_w, even_h) = match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => (3, false, false),
        PixelFormat::Rgba => (4, false, false),
        PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => (1, false, false),
        PixelFormat::Yuyv => (2, true, false),
        PixelFormat::Jpeg => unreachable!(),
    };
    let yuv420 = matches!(format, PixelFormat::Nv12 | PixelFormat::I420);
    let (even_w, even_h) = (even_w || yuv420, even_h || yuv420);
    let ok =
        w > 0 && h > 0 && !(even_w && w % 2 == 1) && !(even_h && h % 2 == 1) && stride >= w * bpp;
    if !ok {
        return None;
    }
    // Every plane's rows `stride` apart (I420's chroma `stride / 2`); the last row of the last
    // plane ends at its pixels.
    let needed = match format {
        PixelFormat::Nv12 => stride * h + (h / 2 - 1) * stride + w,
        PixelFormat::I420 => {
            stride * h + (stride / 2) * (h / 2) + (h / 2 - 1) * (stride / 2) + w / 2
        }
        _ => (h - 1) * stride + w * bpp,
    };
    (needed <= usize::MAX as u128).then_some(needed)
}

fn raw_format() -> impl Strategy<Value = PixelFormat> {
    prop::sample::select(PixelFormat::ALL[..7].to_vec())
}

fn side() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0u32..=40, 1 => Just(u32::MAX), 1 => (1u32 << 20)..(1u32 << 31)]
}

fn stride() -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0usize..=200, 1 => Just(usize::MAX), 1 => (1usize << 40)..(1usize << 62)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any geometry and buffer length: `new` refuses exactly the invalid combinations, and a
    /// frame it accepts converts to a finite tensor (and `to_rgb`); nothing panics.
    #[test]
    fn any_geometry_is_refused_or_converted(
        format in raw_format(),
        w in side(),
        h in side(),
        stride in stride(),
        len_pick in prop_oneof![(-3i64..=3).prop_map(Ok), (0usize..16_000).prop_map(Err)],
        resize in 4u32..24,
        bilinear in any::<bool>(),
        full in any::<bool>(),
        out_short in prop::bool::weighted(0.1),
        seed in any::<u8>(),
    ) {
        let needed = oracle(format, w, h, stride);
        let len = match (len_pick, needed) {
            (Ok(delta), Some(n)) if n <= 16_000 => (n as i64 + delta).max(0) as usize,
            (Ok(delta), _) => (1000 + delta) as usize,
            (Err(len), _) => len,
        };
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let frame = FrameRef::new(&data, w, h, stride, format);
        let valid = needed.is_some_and(|n| n <= len as u128);
        prop_assert_eq!(frame.is_ok(), valid, "{:?} {}×{} stride {} len {}: {:?}",
            format, w, h, stride, len, frame.as_ref().err());
        if let Err(e) = &frame {
            prop_assert!(!e.to_string().contains('\n'));
            return Ok(());
        }
        let colorimetry = if full { Colorimetry::BT601_FULL } else { Colorimetry::default() };
        let frame = frame.unwrap().with_colorimetry(colorimetry);
        let recipe = Recipe {
            resize,
            crop_size: resize - resize / 4,
            interpolation: if bilinear { Interpolation::Bilinear } else { Interpolation::Bicubic },
            ..Recipe::clip(8)
        };
        let mut pre = Preprocessor::new(recipe);
        let mut out = vec![f32::NAN; pre.recipe().tensor_len() - usize::from(out_short)];
        let result = pre.run_frame(&frame, &limits(), &mut out);
        if out_short {
            let refused = matches!(result, Err(FrameError::OutputLength { .. }));
            prop_assert!(refused, "{:?}", result);
        } else {
            prop_assert!(result.is_ok(), "{:?}", result);
            prop_assert!(out.iter().all(|v| v.is_finite()));
            let rgb = frame.to_rgb(&limits()).unwrap();
            prop_assert_eq!(rgb.dimensions(), (w, h));
        }
    }

    /// Random bytes as a JPEG frame are refused or decoded, never a panic.
    #[test]
    fn random_jpeg_bytes_never_panic(cut in 0usize..20_000, flip in 0usize..20_000, bits in 1u8..=255) {
        let mut bytes = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
        let n = bytes.len();
        bytes[flip % n] ^= bits;
        bytes.truncate(cut.min(n));
        let mut pre = Preprocessor::new(small(Interpolation::Bicubic));
        let mut out = vec![0f32; pre.recipe().tensor_len()];
        if pre.run_frame(&FrameRef::jpeg(&bytes), &limits(), &mut out).is_ok() {
            prop_assert!(out.iter().all(|v| v.is_finite()));
        }
    }
}
