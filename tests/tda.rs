//! TDA against a re-implementation of the official update (models/make_tda_refs.py, the
//! official ImageNet configuration): the logits of every frame of a committed 120-frame
//! sequence, and after every frame which frames each class's positive and negative cache holds,
//! in cache order (so every insertion and eviction is checked).

mod common;

use common::{fixture, read_f32, read_f64, read_i64};
use tipedge::tda::{Tda, TdaConfig};

#[test]
fn tda_matches_the_official_update_frame_by_frame() {
    let dir = fixture("tda");
    let feats = read_f32(&dir.join("features.npy"));
    let base = read_f32(&dir.join("base_logits.npy"));
    let want = read_f64(&dir.join("logits.npy"));
    let pos = read_i64(&dir.join("pos_cache.npy"));
    let neg = read_i64(&dir.join("neg_cache.npy"));
    let (n, dim) = (feats.shape[0], feats.shape[1]);
    let nc = base.shape[1];
    let cfg = TdaConfig::default();
    assert_eq!(pos.shape, [n, nc, cfg.positive.capacity]);
    assert_eq!(neg.shape, [n, nc, cfg.negative.capacity]);
    let mut tda = Tda::new(cfg, dim, nc).unwrap();
    let mut worst = 0f64;
    let mut logits = vec![0f32; nc];
    for i in 0..n {
        logits.copy_from_slice(&base.data[i * nc..(i + 1) * nc]);
        tda.adapt(&feats.data[i * dim..(i + 1) * dim], &mut logits)
            .unwrap();
        for (c, &l) in logits.iter().enumerate() {
            let w = want.data[i * nc + c];
            worst = worst.max((l as f64 - w).abs() / w.abs().max(1.0));
        }
        for (negative, ids, cap) in [
            (false, &pos, cfg.positive.capacity),
            (true, &neg, cfg.negative.capacity),
        ] {
            for c in 0..nc {
                let at = (i * nc + c) * cap;
                let expect: Vec<u64> = ids.data[at..at + cap]
                    .iter()
                    .filter(|&&f| f >= 0)
                    .map(|&f| f as u64)
                    .collect();
                let got: Vec<u64> = tda.cached_frames(negative, c).collect();
                assert_eq!(
                    got, expect,
                    "frame {i}, class {c}, negative cache: {negative}"
                );
            }
        }
    }
    assert!(worst <= 1e-5, "largest relative logit difference {worst:e}");
    // Both caches were used and evicted from (see the manifest's stats).
    let (p, q) = tda.len();
    assert_eq!(p, nc * cfg.positive.capacity);
    assert!(q > 0);
}
