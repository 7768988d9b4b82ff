//! The online path allocates nothing after warm-up: scoring (zero-shot term + affinity kernel)
//! plus top-k, checked with a counting global allocator, for every kernel this CPU has and every
//! key dtype, single queries and batches.

use tipedge::adapter::{top_k, TipAdapter};
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
            let mut adapter = TipAdapter::new(keys, Some(&w)).unwrap().with_kernel(kernel);
            // Warm-up: the first calls may initialise lazily (dispatch, thread-locals).
            adapter
                .logits(&queries[..dim], &mut logits[..n_classes])
                .unwrap();
            let mut best = 0usize;
            let allocs = allocations_during(|| {
                for round in 0..50 {
                    let b = 1 + round % MAX_BATCH;
                    adapter
                        .logits_batch(&queries[..b * dim], &mut logits[..b * n_classes])
                        .unwrap();
                    for row in logits[..b * n_classes].chunks(n_classes) {
                        best += top_k(row, 5)[0].0;
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
