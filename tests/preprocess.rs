//! Decoding + preprocessing against the PIL/torchvision reference tensors
//! (models/fixtures/reference/pre_*.npy, made by models/make_references.py).
#![cfg(feature = "runtime")]

mod common;

use std::path::Path;

use tipedge::preprocess::{
    decode_rgb_bytes, load_rgb, DecodeLimits, Interpolation, Preprocessor, Recipe,
};
use tipedge::sidecar::sha256_hex;

fn manifest() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(common::reference("manifest.json")).unwrap()).unwrap()
}

fn recipe(m: &serde_json::Value, name: &str) -> Recipe {
    let p = &m["recipes"][name]["preprocess"];
    let f3 = |v: &serde_json::Value| -> [f32; 3] {
        let a: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        [a[0], a[1], a[2]]
    };
    Recipe {
        resize: p["resize"].as_u64().unwrap() as u32,
        crop_size: p["crop_size"].as_u64().unwrap() as u32,
        interpolation: match p["interpolation"].as_str().unwrap() {
            "bicubic" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            other => panic!("{other}"),
        },
        mean: f3(&p["mean"]),
        std: f3(&p["std"]),
    }
}

struct Case {
    file: String,
    image: String,
    max_abs: f32,
    mean_abs: f32,
    /// max |Δ| had the image been decoded by the `image` crate (zune-jpeg), for JPEG only: the
    /// decoder used before libjpeg-turbo's, printed for comparison.
    zune_max_abs: Option<f32>,
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// Upright RGB as the `image` crate alone decodes it (the pre-libjpeg path for JPEG).
fn image_crate_rgb(path: &Path) -> image::RgbImage {
    use image::ImageDecoder;
    let mut decoder = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let orientation = decoder.orientation().unwrap();
    let mut img = image::DynamicImage::from_decoder(decoder).unwrap();
    img.apply_orientation(orientation);
    img.to_rgb8()
}

fn run_cases(filter: impl Fn(&str) -> bool) -> Vec<Case> {
    let m = manifest();
    let mut cases = Vec::new();
    for (file, entry) in m["files"].as_object().unwrap() {
        if !file.starts_with("pre_") {
            continue;
        }
        let image = entry["image"].as_str().unwrap().to_string();
        if !filter(&image) {
            continue;
        }
        let r = recipe(&m, entry["recipe"].as_str().unwrap());
        let reference = common::read_f32(&common::reference(file));
        let path = common::fixture(&image);
        let img = load_rgb(&path, &DecodeLimits::default()).unwrap();
        let mut pre = Preprocessor::new(r);
        let ours = pre.tensor(&img);
        let zune_max_abs = (!lossless(&image))
            .then(|| common::max_abs_diff(&pre.tensor(&image_crate_rgb(&path)), &reference.data));
        let case = Case {
            file: file.clone(),
            image,
            max_abs: common::max_abs_diff(&ours, &reference.data),
            mean_abs: mean_abs_diff(&ours, &reference.data),
            zune_max_abs,
        };
        print!(
            "{:<40} max |Δ| {:.2e}  mean |Δ| {:.2e}",
            case.file, case.max_abs, case.mean_abs
        );
        match case.zune_max_abs {
            Some(z) => println!("  (image/zune-jpeg decode: max |Δ| {z:.4})"),
            None => println!(),
        }
        cases.push(case);
    }
    cases
}

fn lossless(image: &str) -> bool {
    [".png", ".bmp", ".tiff", ".webp"]
        .iter()
        .any(|e| image.ends_with(e))
}

/// Decoding is exact, so only the resampler could differ from PIL, and ours is a transcription
/// of Pillow's fixed-point resampler: the tensors must be identical up to f32 rounding of the
/// normalisation.
fn assert_exact(cases: &[Case]) {
    for c in cases {
        assert!(
            c.max_abs < 1e-5,
            "{} ({}): max |Δ| {}",
            c.file,
            c.image,
            c.max_abs
        );
    }
}

/// Lossless files: decoded by the `image` crate, exactly.
#[test]
fn lossless_images_match_pil_exactly() {
    let cases = run_cases(lossless);
    assert!(
        cases.len() >= 10,
        "expected the lossless fixtures, got {}",
        cases.len()
    );
    assert_exact(&cases);
}

/// JPEG: decoded with libjpeg-turbo's algorithms (mozjpeg-sys), as Pillow does, so the pixels
/// are Pillow's and the tensors as exact as for lossless files, CMYK included (the manifest marks
/// CMYK "approximate" because decoders disagree on it; ours applies Pillow's conversion). The
/// `image` crate's zune-jpeg, used before, was off by up to 0.03 (1–3 levels on ~1 % of the
/// pixels, 4:2:0 chroma upsampling more); the run prints both.
#[test]
fn jpeg_images_match_pil_exactly() {
    let cases = run_cases(|image| !lossless(image));
    assert!(
        cases.len() >= 8,
        "expected the JPEG fixtures, got {}",
        cases.len()
    );
    assert_exact(&cases);
}

/// SHA-256 of the upright RGB pixels Pillow gives for each JPEG fixture:
/// `np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB")).tobytes()`, computed with
/// Pillow 13.0.0 (libjpeg-turbo, the version the reference tensors were made with).
const PIL_JPEG_RGB_SHA256: [(&str, u32, u32, &str); 7] = [
    (
        "astronaut.jpg",
        512,
        512,
        "9572650b70b7325e8f68cfd0c80e929b6915cb09beec5fc7e6b66e7d4b4f4245",
    ),
    (
        "astronaut_cmyk.jpg",
        256,
        256,
        "607e17de4f72aa39afc2a49ded565cbb29dedefcdc7bb7911a7eeee80091a838",
    ),
    (
        "chelsea.jpg",
        451,
        300,
        "b35631e02733940a35aeee2e6dd0abe593dd10084733e5e0991b588c3b18907b",
    ),
    (
        "coffee.jpg",
        600,
        400,
        "3714114a5fce49edfe0699eb20afca8218543035dbddba7e95b313a3e65ee5a0",
    ),
    (
        "panorama_960x96.jpg",
        960,
        96,
        "5cf41ab6c3cc18e30afade6d78922519bd75e7b799df6852ab95ef1d70996ae7",
    ),
    (
        "rocket.jpg",
        640,
        427,
        "ff977d1441ebe89d57a47cf92d0b7f6e7652774df10ea36802ec880605c6a04a",
    ),
    (
        "rocket_exif6.jpg",
        320,
        213,
        "a32051486c22bd62b4be1b8ca351c0cc453f87bed2c13894f270a0a5f20c069a",
    ),
];

#[test]
fn jpeg_pixels_equal_pillow() {
    for (name, w, h, sha) in PIL_JPEG_RGB_SHA256 {
        let img = load_rgb(
            &common::fixture(&format!("images/{name}")),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(img.dimensions(), (w, h), "{name}");
        assert_eq!(
            sha256_hex(img.as_raw()),
            sha,
            "{name}: pixels differ from Pillow's"
        );
    }
}

fn jpeg_err(bytes: &[u8]) -> String {
    let err = decode_rgb_bytes(bytes, Path::new("cut.jpg"), &DecodeLimits::default())
        .expect_err("must be refused")
        .to_string();
    assert!(err.starts_with("cut.jpg: "), "{err}");
    assert!(!err.contains('\n'), "one line: {err:?}");
    err
}

/// Pillow refuses a JPEG that ends early ("image file is truncated"), even if only the final
/// EOI marker is missing; so do we.
#[test]
fn truncated_jpeg_is_refused() {
    let jpeg = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
    for len in [jpeg.len() - 2, jpeg.len() / 2, 200, 3] {
        let err = jpeg_err(&jpeg[..len]);
        assert!(
            err.contains("cannot decode: truncated JPEG"),
            "{len} bytes: {err}"
        );
    }
}

/// Damage inside the entropy-coded data is a libjpeg warning, and Pillow decodes such files;
/// damage to the headers is fatal and reported with libjpeg's reason.
#[test]
fn corrupt_jpeg_data_and_headers() {
    let jpeg = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
    let mut flipped = jpeg.clone();
    let n = flipped.len();
    flipped[n * 2 / 3] ^= 0x5a;
    let img = decode_rgb_bytes(&flipped, Path::new("x.jpg"), &DecodeLimits::default()).unwrap();
    assert_eq!(img.dimensions(), (451, 300));

    let mut garbage = b"\xff\xd8\xff".to_vec();
    garbage.extend_from_slice(&[0x17; 64]);
    let err = jpeg_err(&garbage);
    assert!(err.contains("cannot decode: corrupt JPEG ("), "{err}");
}

/// The pixel limit is checked from the frame header, before libjpeg allocates the image.
#[test]
fn jpeg_bomb_is_refused_from_its_header() {
    let mut jpeg = std::fs::read(common::fixture("images/chelsea.jpg")).unwrap();
    // SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // 49152 × 49152: under libjpeg's own 65500 cap, far over ours.
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xC0, 0x00, 0xC0, 0x00]);
    let err = jpeg_err(&jpeg);
    assert!(
        err.contains("49152×49152") && err.contains("exceeds the 64.0 MP limit"),
        "{err}"
    );
}

/// The "flip" key recipe's view: unmirrored it is the eval view bit for bit; mirrored it is the
/// eval view of the mirrored image (a centred crop commutes with the mirror).
#[test]
fn the_mirrored_eval_view_is_the_eval_view_of_the_mirrored_image() {
    let img = load_rgb(
        &common::fixture("images/chelsea.jpg"),
        &DecodeLimits::default(),
    )
    .unwrap();
    for recipe in [Recipe::clip(224), Recipe::clip(32)] {
        let mut p = Preprocessor::new(recipe.clone());
        let n = recipe.tensor_len();
        let (mut eval, mut plain, mut mirrored, mut of_mirror) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        p.run(&img, &mut eval);
        p.run_mirrored(&img, false, &mut plain);
        assert_eq!(eval, plain);
        p.run_mirrored(&img, true, &mut mirrored);
        p.run(&image::imageops::flip_horizontal(&img), &mut of_mirror);
        let worst = mirrored
            .iter()
            .zip(&of_mirror)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
        assert_ne!(mirrored, eval);
    }
}
