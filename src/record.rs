//! Machine-readable records. Every JSON line tipedge prints is one of these, or one of the
//! workflow reports ([`crate::train::build::BuildReport`] `"pack"`,
//! [`crate::train::tune::TuneReport`] `"tune"`, [`crate::train::finetune_pack::FinetuneReport`]
//! `"finetune"`, [`crate::train::evaluate::EvalReport`] `"eval"`), each with a `"type"` field,
//! so that the CLI, a daemon, the C ABI and Python emit the same lines.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::kernel::bench::BenchResult;
use crate::pack::{ChecksumStatus, Inspection};
use crate::session::Prediction;
use crate::sidecar::Sidecar;

/// One record per line: `serde_json` without pretty-printing, so never a newline inside.
pub fn to_json_line<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records serialise (no maps with non-string keys)")
}

/// One class of a prediction.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Label {
    pub label: String,
    pub class: usize,
    pub logit: f32,
    /// Softmax probability over all classes.
    pub prob: f32,
}

/// Where one image's or frame's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct StageTimings {
    /// Reading and decoding a file (0 for raw frames; a JPEG frame's decoding counts as
    /// preprocessing).
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub encode_ms: f64,
    pub score_ms: f64,
}

/// `"type": "prediction"`: one classified image or frame.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "prediction")]
pub struct PredictionRecord {
    /// The image file, for files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The frame's index in its stream, for frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    /// Best first.
    pub top: Vec<Label>,
    /// The best class's probability is below the reject threshold (`--min-prob`): the input is
    /// "unknown", whatever `top` says.
    pub unknown: bool,
    pub timings_ms: StageTimings,
    /// The true class, when known (an image in a folder named after a class).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// The pack that produced it, when it has a name (a device's slot and sha256 prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// For a stream's frame: when the reader had it whole (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrival_unix: Option<f64>,
    /// For a stream's frame: from arrival to this prediction, ms (waiting included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl PredictionRecord {
    /// The record of a session's prediction: labels named, stage times copied (`decode_ms` 0).
    pub fn new(p: &Prediction) -> PredictionRecord {
        PredictionRecord {
            path: None,
            frame: Some(p.frame),
            top: p
                .top
                .iter()
                .map(|s| Label {
                    label: p.label(s).to_string(),
                    class: s.class,
                    logit: s.logit,
                    prob: s.prob,
                })
                .collect(),
            unknown: p.unknown,
            timings_ms: StageTimings {
                decode_ms: 0.0,
                preprocess_ms: p.timings.preprocess_ms,
                encode_ms: p.timings.encode_ms,
                score_ms: p.timings.score_ms,
            },
            truth: None,
            correct: None,
            pack: p.classifier().label().map(str::to_string),
            arrival_unix: None,
            latency_ms: None,
        }
    }

    /// For a stream's frame: its arrival time and latency (and its file, from a folder).
    pub fn for_stream(
        mut self,
        arrival: std::time::SystemTime,
        latency_ms: f64,
        path: Option<&Path>,
    ) -> PredictionRecord {
        self.arrival_unix = Some(unix_seconds(arrival));
        self.latency_ms = Some(latency_ms);
        self.path = path.map(Path::to_path_buf);
        self
    }

    /// For an image file: the file instead of the session's frame index, and its decode time.
    pub fn for_file(mut self, path: &Path, decode_ms: f64) -> PredictionRecord {
        self.path = Some(path.to_path_buf());
        self.frame = None;
        self.timings_ms.decode_ms = decode_ms;
        self
    }

    /// With the true class (and whether the best class is it).
    pub fn with_truth(mut self, class: usize, name: &str) -> PredictionRecord {
        self.correct = Some(self.top.first().is_some_and(|b| b.class == class));
        self.truth = Some(name.to_string());
        self
    }
}

/// `"type": "error"`: an input that failed (the others went on) or a command that could not
/// run. `error` is the same one line a person sees on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "error")]
pub struct ErrorRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<u64>,
    pub error: String,
}

impl ErrorRecord {
    /// The record of an error, with the file or frame it names.
    pub fn new(error: &Error) -> ErrorRecord {
        let (path, frame) = match error {
            Error::Image { path, .. }
            | Error::Model { path, .. }
            | Error::Dataset { path, .. }
            | Error::Pack { path, .. } => (Some(path.clone()), None),
            Error::Frame { index, .. } => (None, Some(*index)),
            Error::Invalid(_) | Error::Inference(_) => (None, None),
        };
        ErrorRecord {
            path,
            frame,
            error: error.to_string(),
        }
    }

    /// A failure that is not a library error (a usage or I/O problem of the front end).
    pub fn message(error: impl std::fmt::Display) -> ErrorRecord {
        ErrorRecord {
            path: None,
            frame: None,
            error: crate::error::one_line(error),
        }
    }

    /// The record of a file that failed.
    pub fn for_file(path: &Path, error: impl std::fmt::Display) -> ErrorRecord {
        ErrorRecord {
            path: Some(path.to_path_buf()),
            frame: None,
            error: crate::error::one_line(error),
        }
    }
}

/// `"type": "summary"`: how a run over many inputs went.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(tag = "type", rename = "summary")]
pub struct Summary {
    pub classified: usize,
    pub failed: usize,
    /// Images whose true class was known, and how many of those were right (top-1).
    pub known: usize,
    pub correct: usize,
    /// Inputs below the reject threshold, and of the known ones above it, how many were right.
    pub unknown: usize,
    pub known_accepted: usize,
    pub correct_accepted: usize,
    /// Mean time per classified input.
    pub mean_ms: StageTimings,
}

impl Summary {
    /// Counts one classified input.
    pub fn add(&mut self, record: &PredictionRecord) {
        self.classified += 1;
        self.unknown += usize::from(record.unknown);
        if let Some(c) = record.correct {
            self.known += 1;
            self.correct += usize::from(c);
            if !record.unknown {
                self.known_accepted += 1;
                self.correct_accepted += usize::from(c);
            }
        }
        let (m, t, n) = (
            &mut self.mean_ms,
            &record.timings_ms,
            self.classified as f64,
        );
        // Running means: no list kept.
        m.decode_ms += (t.decode_ms - m.decode_ms) / n;
        m.preprocess_ms += (t.preprocess_ms - m.preprocess_ms) / n;
        m.encode_ms += (t.encode_ms - m.encode_ms) / n;
        m.score_ms += (t.score_ms - m.score_ms) / n;
    }

    /// Accuracy in percent over the inputs whose class was known.
    pub fn accuracy(&self) -> Option<f64> {
        (self.known > 0).then(|| 100.0 * self.correct as f64 / self.known as f64)
    }
}

/// `"type": "embedding"`: one image's feature vector.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "embedding")]
pub struct EmbeddingRecord<'a> {
    pub path: &'a Path,
    pub features: &'a [f32],
}

/// `"type": "tokens"`: CLIP token ids of a text, padded to the context length.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "tokens")]
pub struct TokensRecord<'a> {
    pub text: &'a str,
    pub ids: &'a [i64],
}

/// One tower of a model in [`ModelInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct TowerInfo {
    pub path: PathBuf,
    pub sidecar: Sidecar,
    /// The graph's verified sha256 (image tower).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub load_ms: f64,
}

/// `"type": "model_info"`: what `tipedge info` found.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "model_info")]
pub struct ModelInfo {
    pub image: TowerInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TowerInfo>,
}

/// A section of a pack in [`InspectionRecord`].
#[derive(Debug, Clone, Serialize)]
pub struct SectionRecord {
    pub name: String,
    pub offset: u64,
    pub bytes: u64,
    pub checksum: String,
}

/// A class of a pack in [`InspectionRecord`].
#[derive(Debug, Clone, Serialize)]
pub struct ClassRecord {
    pub name: Option<String>,
    pub keys: usize,
}

/// The provenance of a pack in [`InspectionRecord`].
#[derive(Debug, Clone, Serialize)]
pub struct ProvenanceRecord {
    pub shots: u32,
    pub augment_epochs: u32,
    pub seed: u64,
    pub tool_version: String,
    pub created_unix: i64,
}

/// `"type": "inspection"`: what `tipedge inspect` found in a pack.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "inspection")]
pub struct InspectionRecord {
    /// Whether the pack passes full verification.
    pub ok: bool,
    pub problem: Option<String>,
    pub file_bytes: u64,
    pub version: u32,
    pub dim: usize,
    pub n_keys: usize,
    pub n_classes: usize,
    pub key_dtype: &'static str,
    pub logit_scale: f32,
    pub alpha: f32,
    pub beta: f32,
    /// The temperature of calibrated probabilities; `null` in a pack without one.
    pub temperature: Option<f32>,
    /// The terms the pack scores with (`tip`, `gda`, `both`) and the GDA term's α.
    pub head: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gda_alpha: Option<f32>,
    /// How the recipe and head were chosen on validation (`cache build --val`), as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choice: Option<serde_json::Value>,
    /// The CoOp context W was made from (version 5), or why it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_context: Option<PromptContextRecord>,
    pub encoder: String,
    pub encoder_sha256: String,
    pub provenance: ProvenanceRecord,
    pub header_checksum: String,
    pub sections: Vec<SectionRecord>,
    pub classes: Vec<ClassRecord>,
}

/// A pack's CoOp context as `inspect` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PromptContextRecord {
    pub bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_specific: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_tower_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx_init: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl PromptContextRecord {
    pub fn new(bytes: &[u8]) -> PromptContextRecord {
        let empty = PromptContextRecord {
            bytes: bytes.len(),
            problem: None,
            n_ctx: None,
            class_specific: None,
            position: None,
            text_tower_sha256: None,
            ctx_init: None,
            source: None,
        };
        match crate::coop::Context::from_bytes(bytes) {
            Ok(c) => PromptContextRecord {
                n_ctx: Some(c.n_ctx),
                class_specific: Some(c.class_specific),
                position: Some(c.position.name()),
                text_tower_sha256: Some(c.text_tower_sha256),
                ctx_init: Some(c.ctx_init),
                source: Some(c.source),
                ..empty
            },
            Err(why) => PromptContextRecord {
                problem: Some(why),
                ..empty
            },
        }
    }
}

impl InspectionRecord {
    pub fn new(r: &Inspection) -> InspectionRecord {
        let h = &r.header;
        let status = |s: &ChecksumStatus| s.to_string();
        InspectionRecord {
            ok: r.problem.is_none(),
            problem: r.problem.clone(),
            file_bytes: r.file_len,
            version: h.version,
            dim: h.dim,
            n_keys: h.n_keys,
            n_classes: h.n_classes,
            key_dtype: h.key_dtype.name(),
            logit_scale: h.logit_scale,
            alpha: h.alpha,
            beta: h.beta,
            temperature: h.temperature,
            head: h.head.name(),
            gda_alpha: h.head.uses_gda().then_some(h.gda_alpha),
            choice: r
                .choice
                .as_deref()
                .map(|c| serde_json::from_str(c).unwrap_or_else(|_| c.into())),
            prompt_context: r.prompt_context.as_deref().map(PromptContextRecord::new),
            encoder: h.encoder.name.clone(),
            encoder_sha256: h.encoder.sha256_hex(),
            provenance: ProvenanceRecord {
                shots: h.provenance.shots,
                augment_epochs: h.provenance.augment_epochs,
                seed: h.provenance.seed,
                tool_version: h.provenance.tool_version.clone(),
                created_unix: h.provenance.created_unix,
            },
            header_checksum: status(&r.header_checksum),
            sections: r
                .sections
                .iter()
                .map(|s| SectionRecord {
                    name: s.name(),
                    offset: s.offset,
                    bytes: s.length,
                    checksum: status(&s.checksum),
                })
                .collect(),
            classes: r
                .classes
                .iter()
                .map(|c| ClassRecord {
                    name: c.name.clone(),
                    keys: c.keys,
                })
                .collect(),
        }
    }
}

/// `"type": "bench", "bench": "kernel"`: `tipedge bench kernel`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "bench")]
pub struct KernelBenchRecord {
    pub bench: &'static str,
    pub n: usize,
    pub dim: usize,
    pub dtype: &'static str,
    pub batch: usize,
    pub threads: usize,
    pub isa: &'static str,
    pub ns_per_key: f64,
    pub gbps: f64,
    pub key_bytes: usize,
    pub median_ns: f64,
    pub read_bandwidth_gbps: f64,
    pub bandwidth_ratio: f64,
    pub runs: usize,
    /// The dot-product instruction's rate on this core (null where not probed).
    pub macs_per_ns: Option<f64>,
    /// ns per key per query at the read bandwidth / at the instruction's rate, and the larger.
    pub memory_floor_ns: f64,
    pub compute_floor_ns: Option<f64>,
    pub floor_ns: f64,
}

impl KernelBenchRecord {
    pub fn new(r: &BenchResult) -> KernelBenchRecord {
        KernelBenchRecord {
            bench: "kernel",
            n: r.n,
            dim: r.dim,
            dtype: r.dtype.name(),
            batch: r.batch,
            threads: r.threads,
            isa: r.isa.name(),
            ns_per_key: r.ns_per_key,
            gbps: r.gbps,
            key_bytes: r.key_bytes,
            median_ns: r.median_ns,
            read_bandwidth_gbps: r.read_bandwidth_gbps,
            bandwidth_ratio: r.bandwidth_ratio(),
            runs: r.runs,
            macs_per_ns: r.macs_per_ns,
            memory_floor_ns: r.memory_floor_ns(),
            compute_floor_ns: r.compute_floor_ns(),
            floor_ns: r.floor_ns(),
        }
    }
}

/// Now, in whole seconds since the Unix epoch (what packs and slot records store).
pub fn now_unix() -> i64 {
    unix_seconds(std::time::SystemTime::now()).floor() as i64
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `"type": "event"`: the stream's stable class changed (see [`crate::stream::events`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "event")]
pub struct EventRecord {
    /// The frame that completed the change.
    pub frame: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub arrival_unix: f64,
    /// The stable class before (`null` at the start); `"unknown"` below `--min-prob`.
    pub from: Option<String>,
    pub to: String,
    /// The lowest probability among the frames that established it.
    pub min_score: f32,
    /// Frames it had to hold.
    pub min_frames: u32,
}

/// `"type": "stream_summary"`: the end of a stream (input ended or a signal).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename = "stream_summary")]
pub struct StreamSummary {
    #[serde(flatten)]
    pub stats: crate::stream::StreamStats,
    /// Classified frames per second over the run.
    pub fps: f64,
    /// Events emitted (with `--events`).
    pub events: u64,
    /// MQTT delivery counts, with `--mqtt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<serde_json::Value>,
}
