//! `tipedge bench encoder`: an image encoder's load time, latency per run, peak memory, where
//! tract spends its time, and the decode + preprocess time of real files beside it;
//! `tipedge bench stream`: the stream pipeline's frames per second against the encoder alone. (The
//! affinity kernel's benchmark is [`crate::kernel::bench`].)

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::encoder::{ImageEncoder, OpTime, RunOptions};
use crate::error::{Error, Result};
use crate::preprocess::{load_rgb, DecodeLimits, FrameRef, PixelFormat, Preprocessor};

/// What to measure.
#[derive(Debug, Clone)]
pub struct EncoderBench<'a> {
    pub image: &'a Path,
    pub run: RunOptions,
    /// Timed runs after `warmup` untimed ones.
    pub runs: usize,
    pub warmup: usize,
    /// Also time decode + preprocess of these files.
    pub files: &'a [PathBuf],
    pub limits: DecodeLimits,
    /// Also time every node of the optimised graph.
    pub profile: bool,
}

/// `"type": "bench", "bench": "encoder"`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "bench")]
pub struct EncoderBenchRecord {
    pub bench: &'static str,
    pub runtime: &'static str,
    pub model: PathBuf,
    pub threads: usize,
    pub precision: &'static str,
    pub batch: usize,
    pub load_ms: f64,
    /// The compiled form the graph was loaded from (`tipedge compile`); null for the ONNX graph.
    pub compiled: Option<PathBuf>,
    /// Peak resident memory of the process when loading ended (the load's peak), and its
    /// resident memory then (what the loaded encoder holds, plus the process itself).
    pub load_peak_rss_mib: Option<f64>,
    pub rss_after_load_mib: Option<f64>,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
    pub peak_rss_mib: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<OpTime>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_median_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preprocess_median_ms: Option<f64>,
    /// (decode + preprocess) / encode time per image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decode_preprocess_over_encode: Option<f64>,
}

/// Median and 10th / 90th percentiles of a list of times.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
}

impl Percentiles {
    pub fn of(v: &mut [f64]) -> Percentiles {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            median: at(0.5),
            p10: at(0.1),
            p90: at(0.9),
        }
    }
}

/// Peak resident set size (VmHWM) of this process, Linux only.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// Resident set size (VmRSS) of this process now, Linux only.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Loads the encoder (timed), runs it on a fixed pseudo-random input (the timing of dense graphs
/// does not depend on the values), then times decode + preprocess of the files. `on_load`
/// sees the encoder right after loading (for a slow-path warning).
pub fn bench_encoder(
    b: &EncoderBench<'_>,
    on_load: impl FnOnce(&ImageEncoder),
) -> Result<EncoderBenchRecord> {
    let t0 = Instant::now();
    let enc = ImageEncoder::load(b.image, &b.run)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (load_peak_rss_mib, rss_after_load_mib) = (peak_rss_mib(), rss_mib());
    on_load(&enc);
    let n = enc.batch();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let input: Vec<f32> = (0..n * enc.recipe().tensor_len())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    let mut run_state = enc.state()?;
    for i in 0..n {
        let len = enc.recipe().tensor_len();
        run_state
            .image_mut(i)
            .copy_from_slice(&input[i * len..(i + 1) * len]);
    }
    let mut out = vec![0f32; n * enc.dim()];
    for _ in 0..b.warmup {
        enc.run(&mut run_state, n, &mut out)?;
    }
    let mut times = Vec::with_capacity(b.runs.max(1));
    for _ in 0..b.runs.max(1) {
        let t = Instant::now();
        enc.run(&mut run_state, n, &mut out)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let encode = Percentiles::of(&mut times);

    let mut decode = Vec::new();
    let mut prep = Vec::new();
    let mut pre = Preprocessor::new(enc.recipe().clone());
    let mut tensor = vec![0f32; enc.recipe().tensor_len()];
    for f in b.files {
        let t = Instant::now();
        let img = load_rgb(f, &b.limits)?;
        decode.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        pre.run(&img, &mut tensor);
        prep.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let decode = (!decode.is_empty()).then(|| Percentiles::of(&mut decode).median);
    let prep = (!prep.is_empty()).then(|| Percentiles::of(&mut prep).median);
    let peak_rss_mib = peak_rss_mib();
    let profile = if b.profile {
        Some(enc.profile(b.runs)?)
    } else {
        None
    };
    Ok(EncoderBenchRecord {
        bench: "encoder",
        runtime: "tract",
        model: b.image.to_path_buf(),
        threads: b.run.threads,
        precision: b.run.precision.name(),
        batch: n,
        load_ms,
        compiled: enc.compiled_from().map(Path::to_path_buf),
        load_peak_rss_mib,
        rss_after_load_mib,
        median_ms: encode.median,
        p10_ms: encode.p10,
        p90_ms: encode.p90,
        runs: times.len(),
        peak_rss_mib,
        profile,
        images: decode.map(|_| b.files.len()),
        decode_median_ms: decode,
        preprocess_median_ms: prep,
        decode_preprocess_over_encode: decode
            .zip(prep)
            .map(|(d, p)| (d + p) / (encode.median / n as f64)),
    })
}

/// What `tipedge bench stream` measures.
#[derive(Debug, Clone)]
pub struct StreamBench<'a> {
    pub image: &'a Path,
    /// The pack to score with; `None`: a small synthetic cache (scoring costs microseconds).
    pub pack: Option<&'a Path>,
    pub run: RunOptions,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Frames per measurement.
    pub frames: u64,
    /// Rounds; each measures the three ways once, interleaved.
    pub rounds: usize,
}

/// `"type": "bench", "bench": "stream"`: frames per second of the stream pipeline against the
/// encoder alone on a ready input (the ceiling) and a plain `Session::classify` loop (what a
/// program without the pipeline gets), medians over the rounds, in one run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "bench")]
pub struct StreamBenchRecord {
    pub bench: &'static str,
    pub model: PathBuf,
    pub threads: usize,
    pub precision: &'static str,
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub rounds: usize,
    /// Encoder runs per second on a ready input.
    pub encoder_fps: f64,
    /// `Session::classify` on each frame in turn: preprocessing, then the encoder.
    pub serial_fps: f64,
    /// `stream::run` (every frame, from memory): preprocessing overlapped with the encoder.
    pub stream_fps: f64,
    pub stream_over_encoder: f64,
    pub serial_over_encoder: f64,
    /// Arrival → prediction in the stream, over the last round's frames.
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Runs the three measurements `rounds` times, interleaved (see [`StreamBenchRecord`]).
pub fn bench_stream(
    b: &StreamBench<'_>,
    on_load: impl FnOnce(&ImageEncoder),
) -> Result<StreamBenchRecord> {
    use crate::adapter::AdapterParams;
    use crate::classifier::Classifier;
    use crate::pack::{PackDraft, Provenance};
    use crate::session::{Session, SessionOptions};
    use crate::stream::{self, FrameKind, FramePolicy, RepeatSource, StreamOptions};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    if b.frames == 0 || b.rounds == 0 {
        return Err(Error::Invalid(
            "bench stream needs at least one frame and one round".into(),
        ));
    }
    let encoder = Arc::new(ImageEncoder::load(b.image, &b.run)?);
    on_load(&encoder);
    let dim = encoder.dim();
    let classifier = Arc::new(match b.pack {
        Some(p) => Classifier::open(p, &encoder.expect())?,
        None => {
            let mut keys: Vec<f32> = (0..12 * dim)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            crate::kernel::l2_normalize_rows(&mut keys, dim);
            Classifier::from_draft(PackDraft::from_f32_keys(
                dim,
                keys,
                (0..12).map(|i| i / 4).collect(),
                vec!["a".into(), "b".into(), "c".into()],
                None,
                AdapterParams::default(),
                encoder.id().clone(),
                Provenance::default(),
            )?)
        }
    });
    let len = b
        .format
        .packed_len(b.width, b.height)
        .ok_or_else(|| Error::Invalid("bench stream takes raw formats, not mjpeg".into()))?
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let mut state = 0x9E37_79B9u32;
    let frame: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    let frame_ref = FrameRef::packed(&frame, b.width, b.height, b.format)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let options = StreamOptions {
        kind: FrameKind::Raw {
            format: b.format,
            width: b.width,
            height: b.height,
            colorimetry: Default::default(),
        },
        policy: FramePolicy::All,
        every: 1,
        max_fps: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut session = Session::new(encoder.clone(), classifier, SessionOptions::default())?;
    let mut run_state = encoder.state()?;
    let mut out = vec![0f32; dim];
    // Warm-up of all three.
    encoder.run(&mut run_state, 1, &mut out)?;
    session.classify(&frame_ref)?;
    let (mut enc, mut serial, mut piped) = (Vec::new(), Vec::new(), Vec::new());
    let mut latency = (0.0, 0.0);
    for _ in 0..b.rounds {
        let t = Instant::now();
        for _ in 0..b.frames {
            encoder.run(&mut run_state, 1, &mut out)?;
        }
        enc.push(b.frames as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..b.frames {
            session.classify(&frame_ref)?;
        }
        serial.push(b.frames as f64 / t.elapsed().as_secs_f64());
        let source = Box::new(RepeatSource::new(frame.clone(), b.frames));
        let t = Instant::now();
        let (stats, back) = stream::run(session, source, &options, &stop, |_| {})?;
        piped.push(b.frames as f64 / t.elapsed().as_secs_f64());
        session = back;
        if stats.classified != b.frames {
            return Err(Error::Invalid(format!(
                "bench stream: {} of {} frames classified",
                stats.classified, b.frames
            )));
        }
        latency = (stats.latency_p50_ms, stats.latency_p99_ms);
    }
    let median = |v: &mut Vec<f64>| Percentiles::of(v).median;
    let (encoder_fps, serial_fps, stream_fps) =
        (median(&mut enc), median(&mut serial), median(&mut piped));
    Ok(StreamBenchRecord {
        bench: "stream",
        model: b.image.to_path_buf(),
        threads: b.run.threads,
        precision: b.run.precision.name(),
        format: b.format.name(),
        width: b.width,
        height: b.height,
        frames: b.frames,
        rounds: b.rounds,
        encoder_fps,
        serial_fps,
        stream_fps,
        stream_over_encoder: stream_fps / encoder_fps,
        serial_over_encoder: serial_fps / encoder_fps,
        latency_p50_ms: latency.0,
        latency_p99_ms: latency.1,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// `tipedge bench head`: what scoring one frame costs with each head — the cache (tip), the GDA
/// layer, both — on one classifier shape, interleaved round by round in one run so that the
/// machine's noise hits every head alike.
#[derive(Debug, Clone)]
pub struct HeadBench {
    pub classes: usize,
    /// Keys per class.
    pub shots: usize,
    pub dim: usize,
    pub dtype: crate::kernel::KeyDtype,
    /// With CLIP's zero-shot W (its N×C product is in every head's time).
    pub text_classifier: bool,
    /// Timed rounds; each scores `frames` frames per head.
    pub rounds: usize,
    pub frames: usize,
}

/// One head's row of `"type": "bench", "bench": "head"`.
#[derive(Debug, Clone, Serialize)]
pub struct HeadTime {
    pub head: &'static str,
    /// Median over the rounds of the mean time to score one frame (logits from a feature).
    pub ns_per_frame: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    /// Bytes the scoring reads per frame: the keys (and their scales) for the cache, the GDA
    /// layer's weights and biases, W when present.
    pub bytes_read_per_frame: usize,
    /// This head's time over the cache's (tip) in the same run.
    pub vs_tip: f64,
}

/// `"type": "bench", "bench": "head"`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "bench")]
pub struct HeadBenchRecord {
    pub bench: &'static str,
    pub classes: usize,
    pub shots: usize,
    pub dim: usize,
    pub key_dtype: &'static str,
    pub text_classifier: bool,
    pub kernel: String,
    pub rounds: usize,
    pub frames_per_round: usize,
    pub heads: Vec<HeadTime>,
}

/// Runs [`HeadBench`] on synthetic unit-norm keys, W and a GDA layer of that shape (the timing
/// does not depend on the values).
pub fn bench_heads(cfg: &HeadBench) -> Result<HeadBenchRecord> {
    use crate::adapter::{AdapterParams, Head};
    use crate::classifier::Classifier;
    use crate::kernel::l2_normalize_rows;
    use crate::pack::{EncoderId, OwnedGda, PackDraft, Provenance};

    let (nc, dim) = (cfg.classes, cfg.dim);
    if nc == 0 || cfg.shots == 0 || dim == 0 || cfg.rounds == 0 || cfg.frames == 0 {
        return Err(Error::Invalid(
            "bench head: classes, shots, dim, rounds and frames must be positive".into(),
        ));
    }
    let mut rng = crate::rng::Rng::new(7);
    let mut unit = |rows: usize| {
        let mut v: Vec<f32> = (0..rows * dim)
            .map(|_| rng.uniform_in(-1.0, 1.0) as f32)
            .collect();
        l2_normalize_rows(&mut v, dim);
        v
    };
    let keys = unit(nc * cfg.shots);
    let labels = (0..nc * cfg.shots)
        .map(|i| (i / cfg.shots) as u32)
        .collect();
    let w = cfg.text_classifier.then(|| unit(nc));
    let gda = OwnedGda {
        weights: unit(nc),
        bias: vec![0.0; nc],
        alpha: 1.0,
    };
    let queries = unit(64);
    let mut draft = PackDraft::from_f32_keys(
        dim,
        keys,
        labels,
        (0..nc).map(|c| format!("class {c}")).collect(),
        w,
        AdapterParams::default(),
        EncoderId {
            name: "bench".into(),
            sha256: [0; 32],
        },
        Provenance::default(),
    )?;
    draft.convert_keys(cfg.dtype)?;
    let key_bytes = nc * cfg.shots * cfg.dtype.key_bytes(dim);
    let w_bytes = if cfg.text_classifier { 4 * nc * dim } else { 0 };
    let gda_bytes = 4 * nc * dim + 4 * nc;
    let classifiers = Head::ALL
        .into_iter()
        .map(|head| {
            let mut d = draft.clone();
            d.set_head(head, Some(gda.clone()))?;
            Ok((head, Classifier::from_draft(d)))
        })
        .collect::<Result<Vec<_>>>()?;
    let kernel = classifiers[0].1.kernel();
    let mut scratch = classifiers[0].1.scratch();
    let mut out = vec![0f32; nc];
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.rounds); classifiers.len()];
    // One untimed round warms caches and the branch predictors for every head.
    for round in 0..=cfg.rounds {
        for (i, (_, c)) in classifiers.iter().enumerate() {
            let t = Instant::now();
            for q in queries.chunks_exact(dim).cycle().take(cfg.frames) {
                c.logits(&mut scratch, q, &mut out)?;
                std::hint::black_box(&out);
            }
            if round > 0 {
                times[i].push(t.elapsed().as_nanos() as f64 / cfg.frames as f64);
            }
        }
    }
    let mut heads: Vec<HeadTime> = classifiers
        .iter()
        .zip(&mut times)
        .map(|((head, _), t)| {
            let p = Percentiles::of(t);
            HeadTime {
                head: head.name(),
                ns_per_frame: p.median,
                p10_ns: p.p10,
                p90_ns: p.p90,
                bytes_read_per_frame: w_bytes
                    + if head.uses_cache() { key_bytes } else { 0 }
                    + if head.uses_gda() { gda_bytes } else { 0 },
                vs_tip: 0.0,
            }
        })
        .collect();
    let tip = heads[0].ns_per_frame;
    for h in &mut heads {
        h.vs_tip = h.ns_per_frame / tip;
    }
    Ok(HeadBenchRecord {
        bench: "head",
        classes: nc,
        shots: cfg.shots,
        dim,
        key_dtype: cfg.dtype.name(),
        text_classifier: cfg.text_classifier,
        kernel: kernel.isa().name().to_string(),
        rounds: cfg.rounds,
        frames_per_round: cfg.frames,
        heads,
    })
}

/// `tipedge bench prompts`: what CoOp's W costs on the device — W for N class names through the
/// prompt tower (prompt embeddings built from the context and the memory-mapped token table)
/// against the token-id text tower on the same prompts, interleaved round by round; the cost of
/// adding one class by name to a pack (`classes add` without the file write); and how much of
/// the token table is resident (the mapping's RSS from /proc/self/smaps) against its size.
#[derive(Debug, Clone)]
pub struct PromptBench<'a> {
    /// The prompt tower (text_embed.onnx).
    pub prompt: &'a Path,
    /// The token-id text tower (text.onnx) beside it.
    pub text: &'a Path,
    pub run: RunOptions,
    /// Class counts to time.
    pub classes: Vec<usize>,
    /// Context vectors M.
    pub n_ctx: usize,
    pub rounds: usize,
}

/// One class count's row of `"bench": "prompts"`.
#[derive(Debug, Clone, Serialize)]
pub struct PromptTime {
    pub classes: usize,
    /// Median over the rounds: W through the prompt tower (building the prompts included).
    pub coop_ms: f64,
    /// Median over the rounds: the same prompts' token ids through the text tower.
    pub token_ids_ms: f64,
    /// coop_ms / token_ids_ms.
    pub ratio: f64,
    /// Of coop_ms, building the prompt embeddings (tokenising, table rows, the context).
    pub build_ms: f64,
}

/// `"type": "bench", "bench": "prompts"`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "bench")]
pub struct PromptBenchRecord {
    pub bench: &'static str,
    pub arch: String,
    pub width: usize,
    pub dim: usize,
    pub n_ctx: usize,
    pub batch: usize,
    pub rounds: usize,
    pub load_ms: f64,
    pub rows: Vec<PromptTime>,
    /// Adding one class by name to a pack of 100 classes: median over the rounds.
    pub add_class_ms: f64,
    /// The token table's file size and how much of its mapping is resident after the run.
    pub token_table_bytes: u64,
    pub token_table_resident_bytes: Option<u64>,
    /// Distinct tokens whose rows the run read. A read maps more than its row: the kernel maps
    /// the page-cache pages around a faulting page (fault-around, and whole large folios), and
    /// the table's sha256 check has just read the file through the page cache.
    pub distinct_tokens: usize,
    pub rss_after_load_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// Runs [`PromptBench`] with a random generic context (uniform in ±0.035, about CoOp's N(0, 0.02²) init; the
/// timing does not depend on the values) and class names `"defect kind {i}"`.
pub fn bench_prompts(cfg: &PromptBench<'_>) -> Result<PromptBenchRecord> {
    use crate::coop::{add_classes, prompt_embeddings, Context, Position};
    use crate::encoder::{PromptEncoder, TextEncoder};
    use crate::kernel::l2_normalize_rows;
    use crate::pack::{encode, EncoderId, Pack, PackDraft, Provenance};
    use crate::text::Tokenizer;

    if cfg.classes.is_empty() || cfg.classes.contains(&0) || cfg.rounds == 0 || cfg.n_ctx == 0 {
        return Err(Error::Invalid(
            "bench prompts: class counts, rounds and n_ctx must be positive".into(),
        ));
    }
    let t0 = Instant::now();
    let tower = PromptEncoder::load(cfg.prompt, &cfg.run)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let rss_after_load_mib = rss_mib();
    let text = TextEncoder::load(cfg.text, &cfg.run)?;
    let (width, dim) = (tower.width(), tower.dim());
    let mut rng = crate::rng::Rng::new(11);
    let context = Context {
        ctx: (0..cfg.n_ctx * width)
            .map(|_| rng.uniform_in(-0.035, 0.035) as f32)
            .collect(),
        n_ctx: cfg.n_ctx,
        width,
        class_specific: false,
        classnames: Vec::new(),
        position: Position::End,
        text_tower_sha256: tower.fingerprint().to_string(),
        ctx_init: String::new(),
        source: "bench".into(),
    };
    let tokenizer = Tokenizer::new();
    let names_of =
        |n: usize| -> Vec<String> { (0..n).map(|i| format!("defect kind {i}")).collect() };
    let prefix = vec!["X"; cfg.n_ctx].join(" ");
    let mut distinct = std::collections::BTreeSet::new();
    let max_n = *cfg.classes.iter().max().expect("not empty");
    let added: Vec<String> = (0..cfg.rounds)
        .map(|r| format!("hairline crack {r}"))
        .collect();
    for name in names_of(max_n.max(100)).iter().chain(&added) {
        distinct.extend(tokenizer.encode(&format!("{prefix} {name}.")));
    }
    let mut rows = Vec::new();
    for &n in &cfg.classes {
        let names = names_of(n);
        let prompts: Vec<String> = names.iter().map(|c| format!("{prefix} {c}.")).collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let (mut coop, mut ids, mut build) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.rounds {
            let t = Instant::now();
            let (emb, eot) =
                prompt_embeddings(&tower, &tokenizer, &context, &names).map_err(Error::Invalid)?;
            build.push(t.elapsed().as_secs_f64() * 1e3);
            let mut w = tower.encode(&emb, &eot, n)?;
            l2_normalize_rows(&mut w, dim);
            std::hint::black_box(&w);
            coop.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let tokens = tokenizer.tokenize_batch(&refs, text.context_length());
            let mut w = text.encode_tokens(&tokens, n)?;
            l2_normalize_rows(&mut w, dim);
            std::hint::black_box(&w);
            ids.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (c, i, b) = (
            Percentiles::of(&mut coop).median,
            Percentiles::of(&mut ids).median,
            Percentiles::of(&mut build).median,
        );
        rows.push(PromptTime {
            classes: n,
            coop_ms: c,
            token_ids_ms: i,
            ratio: c / i,
            build_ms: b,
        });
    }
    // A pack of 100 classes made with this context; one class added by name, round by round.
    let base: Vec<String> = names_of(100);
    let (emb, eot) =
        prompt_embeddings(&tower, &tokenizer, &context, &base).map_err(Error::Invalid)?;
    let mut w = tower.encode(&emb, &eot, base.len())?;
    l2_normalize_rows(&mut w, dim);
    let mut draft = PackDraft::from_f32_keys(
        dim,
        Vec::new(),
        Vec::new(),
        base,
        Some(w),
        crate::adapter::AdapterParams::default(),
        EncoderId {
            name: "bench".into(),
            sha256: [0; 32],
        },
        Provenance::default(),
    )?;
    draft.prompt_context = Some(context.to_bytes());
    let pack = Pack::from_bytes(&encode(&draft.contents())?, &crate::pack::Expect::any())?;
    let mut add = Vec::new();
    for r in 0..cfg.rounds {
        let t = Instant::now();
        let grown = add_classes(&pack, &tower, &tokenizer, &added[r..=r])?;
        std::hint::black_box(encode(&grown.contents())?);
        add.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let table = tower.table();
    Ok(PromptBenchRecord {
        bench: "prompts",
        arch: tower.sidecar().arch.clone(),
        width,
        dim,
        n_ctx: cfg.n_ctx,
        batch: cfg.run.batch,
        rounds: cfg.rounds,
        load_ms,
        rows,
        add_class_ms: Percentiles::of(&mut add).median,
        token_table_bytes: std::fs::metadata(table.path())
            .map(|m| m.len())
            .unwrap_or(0),
        token_table_resident_bytes: mapping_rss_bytes(table.path()),
        distinct_tokens: distinct.len(),
        rss_after_load_mib,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The resident bytes of this process's mappings of `path` (Linux: /proc/self/smaps).
pub fn mapping_rss_bytes(path: &Path) -> Option<u64> {
    let want = std::fs::canonicalize(path).ok()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut total = None;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            inside = line
                .split_whitespace()
                .nth(5)
                .is_some_and(|p| Path::new(p) == want);
        } else if inside && first == "Rss:" {
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            *total.get_or_insert(0) += kib * 1024;
        }
    }
    total
}
