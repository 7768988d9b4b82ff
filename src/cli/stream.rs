//! `tipedge stream`: camera frames in, predictions or events out (JSON lines, MQTT).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use clap::Args;
use tipedge::adapter::MAX_TOP_K;
use tipedge::classifier::Classifier;
use tipedge::device::control::{default_socket, serve, ControlContext, FrameTap};
use tipedge::device::enrol::{class_w_row, new_class_prompts};
use tipedge::device::{follow_active, StateDir};
use tipedge::encoder::ModelPaths;
use tipedge::preprocess::{Colorimetry, PixelFormat, YuvMatrix, YuvRange};
use tipedge::progress::Silent;
use tipedge::record::{
    to_json_line, unix_seconds, ErrorRecord, EventRecord, PredictionRecord, StreamSummary,
};
use tipedge::session::{Session, SessionOptions};
use tipedge::stream::events::{EventOptions, Hysteresis, Vote};
use tipedge::stream::mjpeg::MjpegReader;
use tipedge::stream::mqtt::{MqttOptions, MqttPublisher, MqttTarget};
use tipedge::stream::raw::RawReader;
use tipedge::stream::watch::FolderWatcher;
use tipedge::stream::{self, FrameKind, FramePolicy, FrameSource, Output, StreamOptions};
use tipedge::tda::TdaConfig;
use tipedge::zeroshot::Templates;

use super::common::{load_image_encoder, RuntimeArgs};
use super::{EXIT_OK, EXIT_SOME_FAILED};

/// Classify a camera stream at the camera's pace: raw frames (rgb24, bgr24, gray, yuyv422,
/// nv12, yuv420p) or MJPEG from stdin, a FIFO or a file, or the image files dropped into a
/// folder. One JSON line per classified frame on stdout ("type": "prediction", with the frame
/// index, arrival time, latency and per-stage times), or with --events one line only when the
/// top class changes and holds; a "stream_summary" line at the end.
///
/// The reader never blocks the camera: when classifying is slower than the camera, a waiting
/// frame is replaced by the newest (counted as dropped), so latency stays bounded; --all-frames
/// classifies every frame instead (files). Preprocessing of frame n+1 overlaps the encoder on
/// frame n. A bad frame (truncated, undecodable, too large) is reported on stderr and as an
/// "error" line, and the stream goes on. SIGINT / SIGTERM finish the frame in flight, flush and
/// print the summary; the end of input ends the run. Exit code 1 if any frame was bad.
///
/// Examples (one line each):
///   ffmpeg -f v4l2 -i /dev/video0 -f rawvideo -pix_fmt nv12 - | \
///       tipedge stream -m M --pack P --format nv12 --size 640x480
///   ffmpeg -rtsp_transport tcp -i rtsp://camera/stream -f mjpeg -q:v 3 - | \
///       tipedge stream -m M --pack P --format mjpeg --events
///   gst-launch-1.0 -q v4l2src ! video/x-raw,format=NV12,width=640,height=480 ! fdsink | \
///       tipedge stream -m M --pack P --format nv12 --size 640x480
///   tipedge stream -m M --pack P --watch /srv/camera/drop
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct StreamArgs {
    /// Model folder (image.onnx with its JSON sidecar) or an image.onnx file.
    #[arg(long, short)]
    model: PathBuf,
    /// Adapter pack built with this encoder (cache build / tune / finetune).
    #[arg(long, required_unless_present = "state", conflicts_with = "state")]
    pack: Option<PathBuf>,
    /// Follow a device's state directory instead of --pack: use its active pack and switch to a
    /// newly flashed one between two frames (`tipedge flash`; SIGHUP also makes it look).
    /// Each prediction names its pack ("pack": slot and sha256 prefix).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// With --state: serve a control socket (default DIR/control.sock, mode 0600), one JSON
    /// command per line, one JSON reply per line:
    ///   {"cmd":"status"}     the slots and the stream's counters
    ///   {"cmd":"reload"}     re-read the active pack now (as SIGHUP)
    ///   {"cmd":"enrol","class":"hole","frames":5}
    ///                        the next 5 frames become shots of "hole", flashed as a new pack
    ///                        ("new":true creates a class the pack does not have)
    /// e.g. echo '{"cmd":"status"}' | socat - UNIX-CONNECT:/var/lib/tipedge/control.sock
    #[arg(long, value_name = "SOCKET", requires = "state", num_args = 0..=1,
          verbatim_doc_comment)]
    control: Option<Option<PathBuf>>,
    /// Frame format: rgb24, bgr24, gray, yuyv422, nv12, yuv420p (raw, needs --size) or mjpeg.
    #[arg(long, required_unless_present = "watch", conflicts_with = "watch")]
    format: Option<PixelFormat>,
    /// Raw frame size, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size)]
    size: Option<(u32, u32)>,
    /// Where the frames come from: a file or a FIFO; `-` is stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// Classify the image files that appear in this folder, once each, when complete (every
    /// file: none is dropped as stale).
    #[arg(long, value_name = "DIR")]
    watch: Option<PathBuf>,
    /// With --watch: classify the files already in the folder first.
    #[arg(long, requires = "watch")]
    existing: bool,
    /// YUV colour matrix of the camera.
    #[arg(long, value_enum, default_value_t = Matrix::Bt601)]
    matrix: Matrix,
    /// YUV range: limited (16–235, most cameras) or full.
    #[arg(long, value_enum, default_value_t = Range::Limited)]
    range: Range,
    /// Classify every frame: the reader waits for the classifier instead of dropping stale
    /// frames (for files; a live camera wants the default).
    #[arg(long)]
    all_frames: bool,
    /// Classify one frame in N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    every: u64,
    /// Classify at most this many frames per second.
    #[arg(long)]
    max_fps: Option<f64>,
    /// Print (and publish) events instead of every prediction: a line when the top class
    /// changes and holds for --min-frames frames with probability ≥ --min-score.
    #[arg(long)]
    events: bool,
    /// Frames a new class must hold before an event.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    min_frames: u32,
    /// Lowest probability of a frame that counts towards an event.
    #[arg(long, default_value_t = 0.5)]
    min_score: f32,
    /// The reject option: a frame whose best probability is below P (0 < P < 1) is unknown.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    min_prob: Option<f32>,
    /// Test-time adaptation (TDA, Karmanov et al. 2024): a positive cache of each class's most
    /// confident frames and a negative cache of uncertain ones, filled from the stream's own
    /// predictions (no labels) and added to every frame's logits; for a line whose light,
    /// camera or product drifts. The official ImageNet settings (3 + 2 frames per class); the
    /// caches are emptied when a new pack is swapped in.
    #[arg(long)]
    tda: bool,
    /// Also publish each prediction (or event, with --events) as JSON to an MQTT broker:
    /// mqtt://host[:port]/topic (QoS 1). Never blocks the frames: a bounded queue (drops
    /// counted in the summary), reconnection with backoff when the broker goes away.
    #[arg(long, value_name = "URL")]
    mqtt: Option<MqttTarget>,
    /// Messages held for the broker while it is unreachable.
    #[arg(long, default_value_t = 1024, requires = "mqtt")]
    mqtt_queue: usize,
    /// Classes per prediction, best first.
    #[arg(short = 'k', long, default_value_t = 3,
          value_parser = clap::value_parser!(u8).range(1..=MAX_TOP_K as i64))]
    top_k: u8,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Matrix {
    Bt601,
    Bt709,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Range {
    Limited,
    Full,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{s}': expected WIDTHxHEIGHT, e.g. 640x480"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("'{s}': '{v}' is not a positive whole number"))
    };
    Ok((n(w)?, n(h)?))
}

/// The frame source and what its bytes are.
fn open_source(
    args: &StreamArgs,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Box<dyn FrameSource>, FrameKind)> {
    if let Some(dir) = &args.watch {
        let watcher = FolderWatcher::new(dir, Arc::clone(stop), args.existing)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok((Box::new(watcher), FrameKind::File));
    }
    let format = args.format.expect("clap requires --format without --watch");
    let input: Box<dyn std::io::Read + Send> = if args.input.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.input).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot open: {}",
                args.input.display(),
                tipedge::error::io_reason(&e)
            )
        })?)
    };
    if format == PixelFormat::Jpeg {
        return Ok((
            Box::new(MjpegReader::new(
                input,
                tipedge::stream::mjpeg::DEFAULT_MAX_FRAME_BYTES,
            )),
            FrameKind::Jpeg,
        ));
    }
    let (width, height) = args
        .size
        .ok_or_else(|| anyhow::anyhow!("--format {format} needs --size WIDTHxHEIGHT"))?;
    let len = format
        .packed_len(width, height)
        .expect("not JPEG")
        .map_err(|e| anyhow::anyhow!("--format {format} --size {width}x{height}: {e}"))?;
    let kind = FrameKind::Raw {
        format,
        width,
        height,
        colorimetry: Colorimetry::new(
            match args.matrix {
                Matrix::Bt601 => YuvMatrix::Bt601,
                Matrix::Bt709 => YuvMatrix::Bt709,
            },
            match args.range {
                Range::Limited => YuvRange::Limited,
                Range::Full => YuvRange::Full,
            },
        ),
    };
    Ok((Box::new(RawReader::new(input, len)), kind))
}

/// How long the end of a stream waits for the broker to take what is queued.
const MQTT_FLUSH: std::time::Duration = std::time::Duration::from_secs(3);

pub fn run(args: StreamArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.min_score),
        "--min-score must lie between 0 and 1, not {}",
        args.min_score
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being handled ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let paths = ModelPaths::resolve(&args.model)?;
    let encoder = Arc::new(load_image_encoder(
        &paths.image,
        &args.runtime.run_options(),
    )?);
    let (classifier, device) = match (&args.pack, &args.state) {
        (Some(pack), _) => (Classifier::open(pack, &encoder.expect())?, None),
        (None, Some(dir)) => {
            let state = StateDir::open(dir)?;
            let c = state.active_classifier()?;
            let label = c.label().unwrap_or_default().to_string();
            (c, Some((state, label)))
        }
        (None, None) => unreachable!("clap requires --pack or --state"),
    };
    let classifier = Arc::new(classifier);
    let options = SessionOptions {
        top_k: usize::from(args.top_k),
        limits: args.runtime.limits(),
        min_prob: args.min_prob,
        tda: args.tda.then(TdaConfig::default),
    };
    let session = Session::new(encoder, classifier, options)?;
    let tap = Arc::new(FrameTap::default());
    let classified = Arc::new(AtomicU64::new(0));
    let current_pack = Arc::new(Mutex::new(String::new()));
    let mut control = None;
    let follower = match device {
        Some((state, label)) => {
            let hup = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
            if let Some(socket) = &args.control {
                let socket = socket.clone().unwrap_or_else(|| default_socket(&state));
                let (classified, current_pack) =
                    (Arc::clone(&classified), Arc::clone(&current_pack));
                let (encoder, image, run) = (
                    Arc::clone(session.encoder()),
                    state.model().image.clone(),
                    args.runtime.run_options(),
                );
                let context = ControlContext {
                    state: state.clone(),
                    tap: Arc::clone(&tap),
                    reload: Arc::clone(&hup),
                    stop: Arc::clone(&stop),
                    stream_status: Box::new(move || {
                        serde_json::json!({
                            "classified": classified.load(Ordering::Relaxed),
                            "pack": *current_pack.lock().unwrap_or_else(|p| p.into_inner()),
                        })
                    }),
                    w_row: Box::new(move |pack, class| {
                        let prompts = new_class_prompts(pack, Templates::resolve("tip")?)?;
                        class_w_row(&encoder, &image, class, &prompts, &run, &mut Silent)
                    }),
                    frame_wait: std::time::Duration::from_secs(5),
                    note: Box::new(|note| eprintln!("{note}")),
                };
                eprintln!("control socket: {}", socket.display());
                control = Some(serve(&socket, context)?);
            }
            Some(follow_active(
                state,
                label,
                session.swapper(),
                Arc::clone(&stop),
                hup,
                |note| eprintln!("{note}"),
            )?)
        }
        None => None,
    };
    let (source, kind) = open_source(&args, &stop)?;
    let stream_options = StreamOptions {
        kind,
        // A folder's files are each classified once: never dropped as stale.
        policy: if args.all_frames || args.watch.is_some() {
            FramePolicy::All
        } else {
            FramePolicy::Latest
        },
        every: args.every,
        max_fps: args.max_fps,
    };

    let mqtt = args.mqtt.clone().map(|target| {
        MqttPublisher::start(
            target,
            MqttOptions {
                queue: args.mqtt_queue.max(1),
                ..MqttOptions::default()
            },
            |note| eprintln!("{note}"),
        )
    });
    let publish = |text: String| {
        if let Some(m) = &mqtt {
            m.publish(text.into_bytes());
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = |text: &str| {
        // A closed stdout (the consumer went away) must not kill the stream.
        let _ = writeln!(out, "{text}").and_then(|_| out.flush());
    };
    let mut hysteresis = Hysteresis::new(EventOptions {
        min_frames: args.min_frames,
        min_score: args.min_score,
    });
    let mut events = 0u64;
    let mut last_classifier: Option<Arc<Classifier>> = None;
    let (stats, _session) = stream::run(session, source, &stream_options, &stop, |o| match o {
        Output::Frame {
            prediction,
            arrival,
            latency_ms,
            path,
            feature,
        } => {
            tap.offer(prediction.frame, feature);
            classified.fetch_add(1, Ordering::Relaxed);
            // The pack's label for `status`: written when the classifier changes (a swap),
            // not locked on every frame.
            if !last_classifier
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, prediction.classifier()))
            {
                let c = Arc::clone(prediction.classifier());
                if let Some(label) = c.label() {
                    label.clone_into(&mut current_pack.lock().unwrap_or_else(|p| p.into_inner()));
                }
                last_classifier = Some(c);
            }
            if args.events {
                let Some((_, best)) = prediction.best() else {
                    return;
                };
                let vote = if prediction.unknown {
                    Vote::Unknown
                } else {
                    Vote::Class(best.class)
                };
                if let Some(change) = hysteresis.push(vote, best.prob) {
                    let name = |v: Vote| match v {
                        Vote::Class(c) => prediction.classifier().class_names()[c].clone(),
                        Vote::Unknown => "unknown".to_string(),
                    };
                    events += 1;
                    let text = to_json_line(&EventRecord {
                        frame: prediction.frame,
                        path: path.map(|p| p.to_path_buf()),
                        arrival_unix: unix_seconds(arrival),
                        from: change.from.map(name),
                        to: name(change.to),
                        min_score: change.min_score,
                        min_frames: args.min_frames,
                    });
                    line(&text);
                    publish(text);
                }
            } else {
                let record =
                    PredictionRecord::new(prediction).for_stream(arrival, latency_ms, path);
                let text = to_json_line(&record);
                line(&text);
                publish(text);
            }
        }
        Output::Bad { frame, path, error } => {
            eprintln!("{error}");
            line(&to_json_line(&ErrorRecord {
                path: path.map(|p| p.to_path_buf()),
                frame,
                error: error.to_string(),
            }));
        }
    })?;
    let fps = if stats.seconds > 0.0 {
        stats.classified as f64 / stats.seconds
    } else {
        0.0
    };
    eprintln!(
        "{} frames read, {} classified ({fps:.1} per second), {} dropped as stale, {} sampled out, \
         {} bad; latency p50 {:.1} ms, p99 {:.1} ms; {}",
        stats.read,
        stats.classified,
        stats.dropped,
        stats.sampled_out,
        stats.bad,
        stats.latency_p50_ms,
        stats.latency_p99_ms,
        if stats.stopped {
            "stopped by a signal"
        } else {
            "end of input"
        }
    );
    let mqtt = mqtt.map(|m| {
        let s = m.close(MQTT_FLUSH);
        eprintln!(
            "mqtt: {} messages accepted, {} acknowledged by the broker, {} dropped (queue full), \
             {} reconnects",
            s.queued, s.published, s.dropped, s.reconnects
        );
        serde_json::to_value(&s).unwrap_or_default()
    });
    let bad = stats.bad;
    line(&to_json_line(&StreamSummary {
        stats,
        fps,
        events,
        mqtt,
    }));
    stop.store(true, Ordering::Relaxed);
    if let Some(f) = follower {
        let _ = f.join();
    }
    if let Some(c) = control {
        let _ = c.join();
    }
    Ok(if bad == 0 { EXIT_OK } else { EXIT_SOME_FAILED })
}
