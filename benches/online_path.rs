//! Criterion benchmarks of the per-frame work around the encoder: preprocessing of a real photo
//! (compare with the encoder's time from `tipedge bench encoder`; the issue asks for < 10 %) and
//! the scalar Tip-Adapter scoring (the reference the SIMD kernel will be compared with).
//!
//!     cargo bench --bench online_path

use std::path::Path;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use tipedge::adapter::{Cache, TipAdapter};
use tipedge::preprocess::{load_rgb, DecodeLimits, Preprocessor, Recipe};

fn photo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/images/astronaut.jpg")
}

fn preprocess(c: &mut Criterion) {
    let img = load_rgb(&photo(), &DecodeLimits::default()).unwrap();
    let mut g = c.benchmark_group("preprocess 512x512 photo");
    g.bench_function("decode jpeg", |b| {
        b.iter(|| load_rgb(black_box(&photo()), &DecodeLimits::default()).unwrap())
    });
    for (name, recipe) in [
        ("clip 224", Recipe::clip(224)),
        (
            "effnet 256->224",
            Recipe {
                resize: 256,
                ..Recipe::clip(224)
            },
        ),
    ] {
        let mut pre = Preprocessor::new(recipe);
        let mut out = vec![0f32; pre.recipe().tensor_len()];
        g.bench_function(name, |b| b.iter(|| pre.run(black_box(&img), &mut out)));
    }
    g.finish();
}

fn scoring(c: &mut Criterion) {
    let mut g = c.benchmark_group("tip-adapter scoring (zero-shot + f32 cache, detected kernel)");
    for (n_classes, shots, dim) in [(3usize, 16usize, 1280usize), (100, 16, 512)] {
        let n = n_classes * shots;
        let mut state = 1u32;
        let mut rnd = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let keys: Vec<f32> = (0..n * dim).map(|_| rnd()).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i / shots) as u32).collect();
        let w: Vec<f32> = (0..n_classes * dim).map(|_| rnd()).collect();
        let cache = Cache::new(dim, keys, labels, n_classes).unwrap();
        let mut adapter = TipAdapter::new(cache.view(), Some(&w)).unwrap();
        let mut q: Vec<f32> = (0..dim).map(|_| rnd()).collect();
        tipedge::kernel::l2_normalize_rows(&mut q, dim);
        let mut out = vec![0f32; n_classes];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n} keys x {dim} dims, {n_classes} classes"), |b| {
            b.iter(|| adapter.logits(black_box(&q), &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, preprocess, scoring);
criterion_main!(benches);
