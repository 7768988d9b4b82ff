//! The offline pipeline against re-implementations of the official Tip-Adapter functions
//! (`models/make_train_refs.py`, fixtures in `models/fixtures/train/`): the Tip-Adapter logits,
//! the α/β search grid and its accuracies, the augmented cache keys, torchvision's
//! RandomResizedCrop resampling, and Tip-Adapter-F's AdamW steps against PyTorch.

mod common;

use common::{fixture, read_f32, read_f64, read_i64};
use tipedge::adapter::{AdapterParams, ScoreScratch, TipAdapter};
use tipedge::kernel::{class_offsets_of, Kernel, KeyData, Keys, MAX_BATCH};
use tipedge::train::finetune::{cosine_lr, AdamW, FinetuneConfig, TipAdapterF};
use tipedge::train::search::{grid_accuracy, Grid};

fn params(alpha: f32, beta: f32, logit_scale: f32) -> AdapterParams {
    AdapterParams {
        alpha,
        beta,
        logit_scale,
    }
}

fn train_fixture(name: &str) -> std::path::PathBuf {
    fixture("train").join(name)
}

fn labels_u32(name: &str) -> Vec<u32> {
    read_i64(&train_fixture(name))
        .data
        .iter()
        .map(|&v| v as u32)
        .collect()
}

struct TipProblem {
    keys: Vec<f32>,
    offsets: Vec<u32>,
    w: Vec<f32>,
    queries: Vec<f32>,
    labels: Vec<u32>,
}

const DIM: usize = 64;
const CLASSES: usize = 5;

fn tip_problem() -> TipProblem {
    let key_labels = labels_u32("tip_key_labels.npy");
    assert!(
        key_labels.windows(2).all(|w| w[0] <= w[1]),
        "fixture keys are class-sorted"
    );
    TipProblem {
        keys: read_f32(&train_fixture("tip_keys.npy")).data,
        offsets: class_offsets_of(&key_labels, CLASSES),
        w: read_f32(&train_fixture("tip_clip_weights.npy")).data,
        queries: read_f32(&train_fixture("tip_queries.npy")).data,
        labels: labels_u32("tip_query_labels.npy"),
    }
}

#[test]
fn tip_adapter_logits_match_the_official_formula() {
    let p = tip_problem();
    let reference = read_f64(&train_fixture("tip_logits.npy")).data;
    let keys = Keys::new(DIM, KeyData::F32(&p.keys), &p.offsets).unwrap();
    for kernel in Kernel::available() {
        let a = TipAdapter::new(keys, Some(&p.w), params(1.17, 5.5, 100.0)).unwrap();
        let mut scratch = ScoreScratch::new(DIM, CLASSES);
        let mut worst = 0f64;
        for (q, r) in p
            .queries
            .chunks(MAX_BATCH * DIM)
            .zip(reference.chunks(MAX_BATCH * CLASSES))
        {
            let mut out = vec![0f32; r.len()];
            a.logits_batch(&kernel, &mut scratch, q, &mut out).unwrap();
            for (&o, &r) in out.iter().zip(r) {
                worst = worst.max((f64::from(o) - r).abs() / r.abs().max(1e-6));
            }
        }
        assert!(
            worst <= 1e-4,
            "{:?}: max relative error {worst:e}",
            kernel.isa()
        );
    }
}

#[test]
fn search_grid_and_accuracies_match_the_official_search() {
    let p = tip_problem();
    let betas = read_f64(&train_fixture("search_beta_list.npy")).data;
    let alphas = read_f64(&train_fixture("search_alpha_list.npy")).data;
    let grid = Grid::official(7.0, 3.0, 200, 20);
    assert_eq!(
        (grid.betas.len(), grid.alphas.len()),
        (betas.len(), alphas.len())
    );
    for (g, r) in grid
        .betas
        .iter()
        .zip(&betas)
        .chain(grid.alphas.iter().zip(&alphas))
    {
        assert!(
            (f64::from(*g) - r).abs() <= 1e-6 * r.abs(),
            "grid value {g} vs {r}"
        );
    }
    let keys = Keys::new(DIM, KeyData::F32(&p.keys), &p.offsets).unwrap();
    for (with_w, acc_file, margin_file) in [
        (true, "search_acc_tip.npy", "search_margin_tip.npy"),
        (false, "search_acc_cache.npy", "search_margin_cache.npy"),
    ] {
        let reference = read_f64(&train_fixture(acc_file)).data;
        let margins = read_f64(&train_fixture(margin_file)).data;
        let model =
            TipAdapter::new(keys, with_w.then_some(&p.w[..]), params(1.17, 1.0, 100.0)).unwrap();
        for kernel in Kernel::available() {
            let acc = grid_accuracy(&kernel, &model, &p.queries, &p.labels, &grid, |_| {}).unwrap();
            let n = p.labels.len() as f64;
            let (mut exact, mut near) = (0, 0);
            for ib in 0..200 {
                for ia in 0..20 {
                    let (ours, theirs) = (acc.accuracy(ib, ia), reference[ib * 20 + ia]);
                    let margin = margins[ib * 20 + ia];
                    if margin > 1e-4 {
                        assert_eq!(
                            ours, theirs,
                            "{acc_file} cell β[{ib}] α[{ia}] (margin {margin:e})"
                        );
                        exact += 1;
                    } else {
                        // A query within 1e-4 of a tie may flip under f32 rounding: one at most.
                        assert!(
                            (ours - theirs).abs() <= 100.0 / n + 1e-9,
                            "{acc_file} β[{ib}] α[{ia}]"
                        );
                        near += 1;
                    }
                }
            }
            // The official choice: first strictly best point, β outer, α inner.
            let mut best = (0, 0);
            for ib in 0..200 {
                for ia in 0..20 {
                    if reference[ib * 20 + ia] > reference[best.0 * 20 + best.1] {
                        best = (ib, ia);
                    }
                }
            }
            let (alpha, beta, top1) = acc.best();
            assert_eq!(
                (alpha, beta),
                (grid.alphas[best.1], grid.betas[best.0]),
                "{acc_file}"
            );
            assert_eq!(top1, reference[best.0 * 20 + best.1]);
            println!(
                "{acc_file} {:?}: best α {alpha} β {beta} top-1 {top1:.2}%; {exact} cells exact, {near} near-tie cells within one query",
                kernel.isa()
            );
        }
    }
}

#[test]
fn tip_adapter_f_steps_match_pytorch_adamw() {
    const D: usize = 32;
    let key_labels = labels_u32("tipf_key_labels.npy");
    let init = read_f32(&train_fixture("tipf_keys_init.npy")).data;
    let w = read_f32(&train_fixture("tipf_clip_weights.npy")).data;
    let feats = read_f32(&train_fixture("tipf_features.npy"));
    let targets = labels_u32("tipf_targets.npy");
    let after = read_f32(&train_fixture("tipf_keys_after.npy")).data;
    let losses = read_f32(&train_fixture("tipf_loss.npy")).data;
    let lrs = read_f64(&train_fixture("tipf_lr.npy")).data;
    let grad0 = read_f32(&train_fixture("tipf_grad0.npy")).data;
    let (steps, batch) = (feats.shape[0], feats.shape[1]);
    let mut model = TipAdapterF::new(
        init.clone(),
        key_labels,
        Some(w),
        D,
        4,
        params(1.17, 5.5, 100.0),
    )
    .unwrap();
    let cfg = FinetuneConfig::default();
    let mut opt = AdamW::new(init.len(), &cfg);
    let n_keys = init.len();
    let mut worst = 0f32;
    for t in 0..steps {
        let lr = cosine_lr(1e-3, t, 10);
        assert!(
            (lr - lrs[t]).abs() <= 1e-12,
            "lr of step {t}: {lr} vs {}",
            lrs[t]
        );
        let f = &feats.data[t * batch * D..(t + 1) * batch * D];
        let y = &targets[t * batch..(t + 1) * batch];
        let loss = model.step(&mut opt, f, y, lr);
        assert!(
            (loss - f64::from(losses[t])).abs() <= 1e-5 * (1.0 + f64::from(losses[t])),
            "loss of step {t}: {loss} vs {}",
            losses[t]
        );
        if t == 0 {
            let g = common::max_abs_diff(model.grad(), &grad0);
            assert!(g <= 1e-6, "gradient of step 0 differs by {g}");
        }
        let d = common::max_abs_diff(&model.keys, &after[t * n_keys..(t + 1) * n_keys]);
        worst = worst.max(d);
    }
    let moved = common::max_abs_diff(&model.keys, &init);
    println!("Tip-Adapter-F vs PyTorch over {steps} steps: max |Δkeys| {worst:e} (keys moved by {moved:e})");
    assert!(worst <= 1e-5, "keys differ from PyTorch's by {worst}");
    assert!(moved > 1e-3, "the fixture must move the keys");
}

#[test]
fn the_gradient_is_the_derivative_of_the_loss() {
    // Central differences on a small random problem, without W (cache term only), with, and
    // with a frozen GDA term too (a pack whose head is `both`).
    const D: usize = 8;
    let mut rng = tipedge::rng::Rng::new(11);
    let mut unit = |n: usize| {
        let mut v: Vec<f32> = (0..n * D)
            .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
            .collect();
        tipedge::kernel::l2_normalize_rows(&mut v, D);
        v
    };
    let keys = unit(6);
    let w = unit(3);
    let feats = unit(5);
    let targets = [0u32, 2, 1, 1, 0];
    let gda = tipedge::pack::OwnedGda {
        weights: unit(3).iter().map(|v| v * 4.0).collect(),
        bias: vec![0.3, -0.2, 0.1],
        alpha: 0.7,
    };
    for (classifier, gda) in [(None, None), (Some(w.clone()), None), (Some(w), Some(gda))] {
        let mut m = TipAdapterF::new(
            keys.clone(),
            vec![0, 0, 1, 1, 2, 2],
            classifier,
            D,
            3,
            params(1.5, 3.0, 10.0),
        )
        .unwrap()
        .with_gda(gda.clone())
        .unwrap();
        let loss = m.loss_and_grad(&feats, &targets);
        if gda.is_some() {
            // The GDA term is in the logits the loss sees.
            let without = m
                .clone()
                .with_gda(None)
                .unwrap()
                .loss_and_grad(&feats, &targets);
            assert!((loss - without).abs() > 1e-3, "{loss} vs {without}");
        }
        let g = m.grad().to_vec();
        for (i, &gi) in g.iter().enumerate() {
            let h = 1e-2f32;
            let mut plus = m.clone();
            plus.keys[i] += h;
            let mut minus = m.clone();
            minus.keys[i] -= h;
            let num = (plus.loss_and_grad(&feats, &targets)
                - minus.loss_and_grad(&feats, &targets))
                / (2.0 * f64::from(h));
            assert!(
                (num - f64::from(gi)).abs() <= 2e-3 * (1.0 + num.abs()),
                "key value {i}: numeric {num} vs closed form {gi}"
            );
        }
    }
}

#[cfg(feature = "runtime")]
mod runtime {
    use super::*;
    use tipedge::preprocess::{load_rgb, DecodeLimits, Preprocessor, Recipe, Region};

    #[test]
    fn resized_crop_matches_torchvision() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(train_fixture("manifest.json")).unwrap())
                .unwrap();
        let cases = manifest["crops"]["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let image = common::repo(case["image"].as_str().unwrap());
            let img = load_rgb(&image, &DecodeLimits::default()).unwrap();
            let get = |k: &str| case[k].as_u64().unwrap() as usize;
            let size = get("size") as u32;
            let mut pre = Preprocessor::new(Recipe::clip(size));
            let region = Region {
                x: get("j"),
                y: get("i"),
                w: get("w"),
                h: get("h"),
            };
            let mut out = vec![0f32; 3 * (size * size) as usize];
            pre.run_resized_crop(&img, region, case["flip"].as_bool().unwrap(), &mut out);
            let reference = read_f32(&train_fixture(case["file"].as_str().unwrap())).data;
            let d = common::max_abs_diff(&out, &reference);
            assert!(
                d < 1e-5,
                "{}: {} differs from torchvision by {d}",
                case["file"],
                case["exercises"]
            );
        }
    }

    #[test]
    fn cache_keys_are_normalised_means_of_raw_passes() {
        let raw = read_f32(&train_fixture("cache_raw_features.npy"));
        let reference = read_f32(&train_fixture("cache_keys.npy")).data;
        let (passes, n, dim) = (raw.shape[0], raw.shape[1], raw.shape[2]);
        for i in 0..n {
            let sum: Vec<f64> = (0..dim)
                .map(|d| {
                    (0..passes)
                        .map(|e| f64::from(raw.data[(e * n + i) * dim + d]))
                        .sum()
                })
                .collect();
            let key: Vec<f32> = tipedge::train::keys::mean_normalized(&sum, passes).collect();
            for (a, b) in key.iter().zip(&reference[i * dim..(i + 1) * dim]) {
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
                    "key {i}: {a} vs {b}"
                );
            }
        }
    }
}

#[cfg(feature = "runtime")]
mod data {
    use tipedge::dataset::LabelledSet;
    use tipedge::train::features::{content_key, FeatureStore};

    fn textile(split: &str) -> std::path::PathBuf {
        super::common::repo("examples/textile").join(split)
    }

    #[test]
    fn k_shot_draw_is_seeded_stable_and_checked() {
        let set = LabelledSet::read(&textile("shots")).unwrap();
        let a = set.sample_k_shot(4, 7).unwrap();
        let b = set.sample_k_shot(4, 7).unwrap();
        let c = set.sample_k_shot(4, 8).unwrap();
        let files = |s: &LabelledSet| s.items().into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(files(&a), files(&b));
        assert_ne!(files(&a), files(&c));
        for class in &a.classes {
            assert_eq!(class.images.len(), 4);
            assert!(
                class.images.windows(2).all(|w| w[0] < w[1]),
                "kept in name order"
            );
        }
        // Each class has its own stream: dropping a class leaves the others' shots alone.
        let mut fewer = set.clone();
        fewer.classes.remove(0);
        let d = fewer.sample_k_shot(4, 7).unwrap();
        assert_eq!(d.classes[0].images, a.classes[1].images);
        let err = set.sample_k_shot(17, 7).unwrap_err().to_string();
        assert!(err.contains("fewer than the 17 shots"), "{err}");
    }

    #[test]
    fn split_files_list_images_by_class_folder() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("val.txt");
        std::fs::write(
            &split,
            format!(
                "# two of each\n{0}/nominal/a.jpg\n{0}/nominal/b.jpg  # comment\n\n{0}/local_defect/c.jpg\n",
                "imgs"
            ),
        )
        .unwrap();
        // Paths are relative to the split file; the class is the first component.
        let s = std::fs::read_to_string(&split)
            .unwrap()
            .replace("imgs/", "");
        std::fs::write(&split, s).unwrap();
        let set = LabelledSet::read(&split).unwrap();
        assert_eq!(set.class_names(), ["local defect", "nominal"]);
        assert_eq!(
            set.classes[1].images,
            [
                dir.path().join("nominal/a.jpg"),
                dir.path().join("nominal/b.jpg")
            ]
        );
        std::fs::write(&split, "lonely.jpg\n").unwrap();
        let err = LabelledSet::read(&split).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("val.txt"), "{err}");
    }

    #[test]
    fn feature_store_round_trips_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let sha = "ab".repeat(32);
        let mut s = FeatureStore::open(dir.path(), &sha, "f32", 4).unwrap();
        let k1 = content_key(b"one");
        let k2 = content_key(b"two");
        s.insert(k1, &[1.0, 2.0, 3.0, 4.0]);
        s.insert(k2, &[5.0, 6.0, 7.0, 8.0]);
        s.flush().unwrap();
        let path = s.path().to_path_buf();
        let s = FeatureStore::open(dir.path(), &sha, "f32", 4).unwrap();
        assert_eq!(s.get(&k1), Some(&[1.0, 2.0, 3.0, 4.0][..]));
        assert_eq!(s.get(&k2), Some(&[5.0, 6.0, 7.0, 8.0][..]));
        assert!(!s.dropped_tail());
        // An interrupted append: half a record. The good records stay, the tail is cut off.
        let len = std::fs::metadata(&path).unwrap().len();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(len as usize - 10);
        std::fs::write(&path, &bytes).unwrap();
        let mut s = FeatureStore::open(dir.path(), &sha, "f32", 4).unwrap();
        assert!(s.dropped_tail());
        assert_eq!(s.len(), 1);
        assert!(s.get(&k2).is_none());
        s.insert(k2, &[5.0, 6.0, 7.0, 8.0]);
        s.flush().unwrap();
        assert_eq!(
            FeatureStore::open(dir.path(), &sha, "f32", 4)
                .unwrap()
                .len(),
            2
        );
        // A flipped bit in a record's values is caught by its checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[16 + 32 + 1] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let s = FeatureStore::open(dir.path(), &sha, "f32", 4).unwrap();
        assert!(s.dropped_tail() && s.is_empty());
        // Another dimension is another file; a foreign file under the name is refused.
        assert!(FeatureStore::open(dir.path(), &sha, "f32", 8)
            .unwrap()
            .is_empty());
        std::fs::write(&path, b"not a store at all").unwrap();
        let err = FeatureStore::open(dir.path(), &sha, "f32", 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("feature store") && err.contains(".feat"),
            "{err}"
        );
    }
}

/// The GDA head against a re-implementation of the official fitting (models/make_gda_refs.py:
/// numpy.cov, numpy.linalg.pinv of the shrunk covariance, 40 features of dim 64, so the sample
/// covariance is singular and the shrinkage is what makes it invertible): W_g and b within
/// 1e-4 (relative to the largest value), the official α grid's choice, and the validation
/// logits at that α.
#[test]
fn gda_head_matches_the_official_fitting() {
    use tipedge::train::gda::{fit_gda, search_alpha};
    let g = |name: &str| fixture("gda").join(name);
    let feats = read_f32(&g("features.npy"));
    let labels: Vec<u32> = read_i64(&g("labels.npy"))
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    let val = read_f32(&g("val_features.npy"));
    let val_labels: Vec<u32> = read_i64(&g("val_labels.npy"))
        .data
        .iter()
        .map(|&v| v as u32)
        .collect();
    let clip_w = read_f32(&g("clip_weights.npy"));
    let want_w = read_f64(&g("weights.npy"));
    let want_b = read_f64(&g("bias.npy"));
    let want_logits = read_f64(&g("val_logits.npy"));
    let choice = read_f64(&g("choice.npy")).data;
    let (nc, dim) = (want_w.shape[0], want_w.shape[1]);

    let head = fit_gda(&feats.data, &labels, nc, dim).unwrap();
    let close = |got: &[f32], want: &[f64], what: &str| {
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0f64, f64::max);
        assert!(worst <= 1e-4 * scale, "{what}: {worst:e} of {scale:e}");
    };
    close(&head.weights, &want_w.data, "W_g");
    close(&head.bias, &want_b.data, "b");

    let m = val_labels.len();
    let mut zero_shot = vec![0f32; m * nc];
    for (f, row) in val
        .data
        .chunks_exact(dim)
        .zip(zero_shot.chunks_exact_mut(nc))
    {
        for (z, w) in row.iter_mut().zip(clip_w.data.chunks_exact(dim)) {
            *z = 100.0 * f.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
        }
    }
    let (alpha, top1) = search_alpha(&head, Some(&zero_shot), &val.data, &val_labels).unwrap();
    assert_eq!(alpha as f64, choice[0]);
    assert!((top1 - choice[1]).abs() < 1e-9);
    let mut gda = vec![0f32; m * nc];
    head.logits_into(&val.data, &mut gda);
    let logits: Vec<f32> = zero_shot
        .iter()
        .zip(&gda)
        .map(|(z, g)| z + alpha * g)
        .collect();
    close(&logits, &want_logits.data, "validation logits");
}
