//! Shared by the benchmarks (`benches/online_path.rs`, and `capi/benches/overhead.rs` through
//! `#[path]`): deterministic pseudo-random values and a pack of 3 classes × 16 int8 keys.

use tipedge::adapter::AdapterParams;
use tipedge::encoder::ImageEncoder;
use tipedge::kernel::KeyDtype;
use tipedge::pack::{PackDraft, Provenance};

/// Pseudo-random values in (−0.5, 0.5).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

/// A pack draft for `encoder`: 3 classes × 16 random keys, stored as int8 (what a real
/// 16-shot textile pack holds; the keys' values do not change the time per frame).
pub fn textile_sized_draft(encoder: &ImageEncoder) -> PackDraft {
    let dim = encoder.dim();
    let mut draft = PackDraft::from_f32_keys(
        dim,
        values(48 * dim, 7),
        (0..48).map(|i| i / 16).collect(),
        ["nominal", "global defect", "local defect"]
            .map(String::from)
            .to_vec(),
        None,
        AdapterParams::default(),
        encoder.id().clone(),
        Provenance::default(),
    )
    .unwrap();
    draft.convert_keys(KeyDtype::I8).unwrap();
    draft
}
