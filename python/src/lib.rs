//! `tipedge._tipedge`: the Python extension over [`tipedge::session::Session`], wrapped by the
//! package `tipedge` (python/tipedge/__init__.py, whose stubs document the API).
//!
//! Frames come in as numpy `uint8` arrays (or `bytes` for JPEG) and are read in place: rows may
//! be strided (a crop of a larger frame) but the pixels of a row must be contiguous. The GIL is
//! released while a frame is classified. Predictions carry the fields of the CLI's JSON records
//! (`to_dict()` is that record). Errors: a bad array or frame is `ValueError` (`FrameError`, a
//! subclass, for a frame the library refused), a model or pack that cannot be opened is
//! `OpenError` (an `OSError`), anything else `TipedgeError`; the message is the CLI's line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use tipedge::classifier::Classifier;
use tipedge::device::StateDir;
use tipedge::encoder::{ImageEncoder, ModelPaths, RunOptions};
use tipedge::error::Error;
use tipedge::preprocess::{FrameRef, PixelFormat};
use tipedge::record::{to_json_line, PredictionRecord};
use tipedge::session::{Session as Inner, SessionOptions};
use tipedge::tda::TdaConfig;

create_exception!(
    _tipedge,
    TipedgeError,
    PyException,
    "A tipedge failure that is neither a bad frame nor an unopenable file."
);
create_exception!(
    _tipedge,
    FrameError,
    PyValueError,
    "A frame the library refused (bad size or buffer, corrupt JPEG); the session goes on."
);
create_exception!(
    _tipedge,
    OpenError,
    PyOSError,
    "A model, pack or state directory that could not be opened or verified."
);

fn open_error(e: impl std::fmt::Display) -> PyErr {
    OpenError::new_err(e.to_string())
}

fn run_error(e: Error) -> PyErr {
    match e {
        Error::Frame { .. } | Error::Image { .. } => FrameError::new_err(e.to_string()),
        e => TipedgeError::new_err(e.to_string()),
    }
}

/// A frame's bytes as the library reads them: a span of caller memory, kept alive by the
/// borrowed array (or bytes object) for as long as this value is used.
#[derive(Clone, Copy)]
struct RawFrame {
    ptr: usize,
    len: usize,
    width: u32,
    height: u32,
    /// Bytes from one row to the next; 0: packed rows (`FrameRef::packed`).
    stride: usize,
    format: PixelFormat,
}

impl RawFrame {
    /// # Safety
    /// The memory the frame was taken from is alive and not written while the returned frame
    /// is used (the lifetime is the caller's to choose).
    unsafe fn frame<'a>(self) -> Result<FrameRef<'a>, String> {
        // SAFETY: `ptr`/`len` describe the span of a live array (see `frame_arg`).
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) };
        match (self.format, self.stride) {
            (PixelFormat::Jpeg, _) => Ok(FrameRef::jpeg(bytes)),
            (_, 0) => FrameRef::packed(bytes, self.width, self.height, self.format),
            (_, stride) => FrameRef::new(bytes, self.width, self.height, stride, self.format),
        }
        .map_err(|e| e.to_string())
    }
}

fn parse_format(format: &str) -> PyResult<PixelFormat> {
    format.parse::<PixelFormat>().map_err(|_| {
        let names: Vec<&str> = PixelFormat::ALL.iter().map(|f| f.name()).collect();
        PyValueError::new_err(format!(
            "unknown pixel format {format:?} (one of {})",
            names.join(", ")
        ))
    })
}

/// Channels per pixel of an (H, W, C) array of `format`; None for formats given as 2-D planes.
fn channels(format: PixelFormat) -> Option<usize> {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(3),
        PixelFormat::Rgba => Some(4),
        PixelFormat::Yuyv => Some(2),
        PixelFormat::Gray8 => Some(1),
        PixelFormat::Nv12 | PixelFormat::I420 | PixelFormat::Jpeg => None,
    }
}

/// What each format expects of an array, for error messages.
fn expected_shape(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => "(height, width, 3)",
        PixelFormat::Rgba => "(height, width, 4)",
        PixelFormat::Yuyv => "(height, width, 2)",
        PixelFormat::Gray8 => "(height, width) or (height, width, 1)",
        PixelFormat::Nv12 | PixelFormat::I420 => {
            "(height * 3 / 2, width), or 1-D with width= and height="
        }
        PixelFormat::Jpeg => "1-D (the encoded bytes), or bytes",
    }
}

/// Reads a frame argument: its memory span, sizes and row stride, checked against `format`.
/// The error is the reason, for the caller to prefix with the frame it was.
fn frame_arg(
    obj: &Bound<'_, PyAny>,
    format: PixelFormat,
    size: Option<(u32, u32)>,
) -> Result<RawFrame, String> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        let bytes = b.as_bytes();
        return raw_1d(bytes.as_ptr() as usize, bytes.len(), format, size);
    }
    let Ok(any) = obj.cast::<numpy::PyUntypedArray>() else {
        return Err(format!(
            "expected a numpy.ndarray of uint8 (or bytes), not {}",
            obj.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "another type".into())
        ));
    };
    let Ok(array) = obj.cast::<PyArrayDyn<u8>>() else {
        return Err(format!("dtype {}, expected uint8", any.dtype()));
    };
    let shape = array.shape();
    let strides = array.strides();
    let ptr = array.data() as usize;
    if shape.contains(&0) {
        return Err(format!("empty array of shape {shape:?}"));
    }
    if shape.len() == 1 {
        if strides[0] != 1 {
            return Err("a 1-D frame must be contiguous (numpy.ascontiguousarray)".into());
        }
        return raw_1d(ptr, shape[0], format, size);
    }
    if format == PixelFormat::Jpeg {
        return Err(format!(
            "a JPEG frame is 1-D (its encoded bytes), not of shape {shape:?}"
        ));
    }
    if size.is_some() {
        return Err(
            "width= and height= are for 1-D buffers; a 2-D or 3-D array has its own shape".into(),
        );
    }
    let shape_err = || {
        format!(
            "shape {shape:?} does not fit {} (expected {})",
            format.name(),
            expected_shape(format)
        )
    };
    // (rows, width in pixels, bytes per row of pixels)
    let (rows, width, row_bytes) = match (channels(format), shape) {
        (Some(c), &[h, w, c2]) if c2 == c => {
            if strides[2] != 1 || strides[1] != c as isize {
                return Err(format!(
                    "the pixels of a row must be contiguous (strides {strides:?}); \
                     use numpy.ascontiguousarray"
                ));
            }
            (h, w, w * c)
        }
        (Some(1), &[h, w]) => {
            if strides[1] != 1 {
                return Err(format!(
                    "the pixels of a row must be contiguous (strides {strides:?}); \
                     use numpy.ascontiguousarray"
                ));
            }
            (h, w, w)
        }
        (None, &[r, w]) => {
            if strides[1] != 1 {
                return Err(format!(
                    "the bytes of a row must be contiguous (strides {strides:?}); \
                     use numpy.ascontiguousarray"
                ));
            }
            if r % 3 != 0 {
                return Err(shape_err());
            }
            (r, w, w)
        }
        _ => return Err(shape_err()),
    };
    let stride = strides[0];
    if stride < row_bytes as isize {
        return Err(format!(
            "row stride {stride} bytes is smaller than a row ({row_bytes} bytes): \
             rows must not overlap or run backwards"
        ));
    }
    let stride = stride as usize;
    let height = match format {
        PixelFormat::Nv12 | PixelFormat::I420 => rows / 3 * 2,
        _ => rows,
    };
    let (Ok(width), Ok(height)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(shape_err());
    };
    Ok(RawFrame {
        ptr,
        len: (rows - 1) * stride + row_bytes,
        width,
        height,
        stride,
        format,
    })
}

fn raw_1d(
    ptr: usize,
    len: usize,
    format: PixelFormat,
    size: Option<(u32, u32)>,
) -> Result<RawFrame, String> {
    let (width, height) = match (format, size) {
        (PixelFormat::Jpeg, _) => (0, 0),
        (_, Some(s)) => s,
        (_, None) => {
            return Err(format!(
                "a 1-D {} buffer needs width= and height= (or pass an array of shape {})",
                format.name(),
                expected_shape(format)
            ))
        }
    };
    Ok(RawFrame {
        ptr,
        len,
        width,
        height,
        stride: 0,
        format,
    })
}

fn size_arg(width: Option<u32>, height: Option<u32>) -> PyResult<Option<(u32, u32)>> {
    match (width, height) {
        (Some(w), Some(h)) => Ok(Some((w, h))),
        (None, None) => Ok(None),
        _ => Err(PyValueError::new_err(
            "width= and height= go together (for a 1-D buffer)",
        )),
    }
}

/// One class of a prediction.
#[pyclass(frozen, get_all, module = "tipedge")]
#[derive(Clone)]
struct Label {
    /// The class name.
    label: String,
    /// Its index in `Session.class_names` (the JSON records' `class`).
    class_index: usize,
    logit: f32,
    /// Calibrated probability (the pack's temperature, if it has one).
    prob: f32,
}

#[pymethods]
impl Label {
    fn __repr__(&self) -> String {
        format!(
            "Label(label={:?}, class_index={}, logit={:.4}, prob={:.4})",
            self.label, self.class_index, self.logit, self.prob
        )
    }
}

/// One frame's result: the fields of the CLI's `"type": "prediction"` JSON record.
#[pyclass(frozen, module = "tipedge")]
struct Prediction {
    record: PredictionRecord,
}

#[pymethods]
impl Prediction {
    /// The frame's index in its session (0, 1, 2, … over every frame offered, bad ones too).
    #[getter]
    fn frame(&self) -> u64 {
        self.record.frame.unwrap_or(0)
    }
    /// The best classes, best first.
    #[getter]
    fn top(&self) -> Vec<Label> {
        self.record
            .top
            .iter()
            .map(|l| Label {
                label: l.label.clone(),
                class_index: l.class,
                logit: l.logit,
                prob: l.prob,
            })
            .collect()
    }
    /// The best class's name.
    #[getter]
    fn label(&self) -> &str {
        self.record.top.first().map_or("", |l| l.label.as_str())
    }
    /// The best class's probability.
    #[getter]
    fn prob(&self) -> f32 {
        self.record.top.first().map_or(0.0, |l| l.prob)
    }
    /// True when the best probability is below the session's `min_prob`.
    #[getter]
    fn unknown(&self) -> bool {
        self.record.unknown
    }
    /// Where the frame's time went, in milliseconds.
    #[getter]
    fn timings_ms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let t = &self.record.timings_ms;
        let d = PyDict::new(py);
        d.set_item("decode_ms", t.decode_ms)?;
        d.set_item("preprocess_ms", t.preprocess_ms)?;
        d.set_item("encode_ms", t.encode_ms)?;
        d.set_item("score_ms", t.score_ms)?;
        Ok(d)
    }
    /// The pack's label (`tipedge pack label`), if it has one.
    #[getter]
    fn pack(&self) -> Option<&str> {
        self.record.pack.as_deref()
    }
    /// The JSON record, one line, as `tipedge stream` prints it.
    fn to_json(&self) -> String {
        to_json_line(&self.record)
    }
    /// The JSON record as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        py.import("json")?.call_method1("loads", (self.to_json(),))
    }
    fn __repr__(&self) -> String {
        let best = self.record.top.first();
        format!(
            "Prediction(frame={}, label={:?}, prob={:.4}, unknown={})",
            self.frame(),
            best.map_or("", |l| l.label.as_str()),
            best.map_or(0.0, |l| l.prob),
            self.record.unknown
        )
    }
}

/// The online path in one object: an image encoder, a classifier (an adapter pack) and their
/// buffers. Frames of one session are classified one at a time (calls from several threads
/// wait for each other); open one session per camera thread.
#[pyclass(module = "tipedge")]
struct Session {
    inner: Mutex<Inner>,
}

fn options(
    top_k: usize,
    threads: usize,
    min_prob: Option<f32>,
    tda: bool,
) -> PyResult<(SessionOptions, RunOptions)> {
    if threads == 0 || threads > 256 {
        return Err(PyValueError::new_err(format!(
            "threads must be 1..=256, not {threads}"
        )));
    }
    Ok((
        SessionOptions {
            top_k,
            min_prob,
            tda: tda.then(TdaConfig::default),
            ..SessionOptions::default()
        },
        RunOptions {
            threads,
            ..RunOptions::default()
        },
    ))
}

impl Session {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the session with the GIL released. The session's lock is only ever taken
    /// without the GIL: a thread holding the GIL while it waited for the lock would deadlock
    /// with the thread holding the lock, which needs the GIL back to return.
    fn with<R: Send>(&self, py: Python<'_>, f: impl FnOnce(&mut Inner) -> R + Send) -> R {
        py.detach(|| f(&mut self.lock()))
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (model, pack = None, *, state_dir = None, top_k = 3, threads = 1, min_prob = None, tda = false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: PathBuf,
        pack: Option<PathBuf>,
        state_dir: Option<PathBuf>,
        top_k: usize,
        threads: usize,
        min_prob: Option<f32>,
        tda: bool,
    ) -> PyResult<Session> {
        let (options, run) = options(top_k, threads, min_prob, tda)?;
        let source = match (pack, state_dir) {
            (Some(p), None) => Ok(p),
            (None, Some(d)) => Err(d),
            _ => {
                return Err(PyValueError::new_err(
                    "give exactly one of pack= and state_dir=",
                ))
            }
        };
        let inner = py.detach(move || -> PyResult<Inner> {
            let paths = ModelPaths::resolve(&model).map_err(open_error)?;
            let encoder = Arc::new(ImageEncoder::load(&paths.image, &run).map_err(open_error)?);
            let classifier = match source {
                Ok(pack) => Classifier::open(&pack, &encoder.expect()).map_err(open_error)?,
                Err(dir) => StateDir::open(&dir)
                    .and_then(|state| state.active_classifier())
                    .map_err(open_error)?,
            };
            Inner::new(encoder, Arc::new(classifier), options)
                .map_err(|e| PyValueError::new_err(e.to_string()))
        })?;
        Ok(Session {
            inner: Mutex::new(inner),
        })
    }

    /// Classifies one frame (see the stubs for the array shapes each format takes).
    #[pyo3(signature = (frame, format = "rgb24", *, width = None, height = None))]
    fn classify(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        format: &str,
        width: Option<u32>,
        height: Option<u32>,
    ) -> PyResult<Prediction> {
        let format = parse_format(format)?;
        let size = size_arg(width, height)?;
        let raw = frame_arg(frame, format, size);
        // `frame` keeps the array alive (and its memory in place) for this call.
        let record = self.with(py, |inner| -> Result<PredictionRecord, PyErr> {
            // SAFETY: `frame` holds the array alive for this call.
            let f = match raw.and_then(|r| unsafe { r.frame() }) {
                Ok(f) => f,
                Err(e) => {
                    let index = inner.reject_frame();
                    return Err(PyValueError::new_err(format!("frame {index}: {e}")));
                }
            };
            let p = inner.classify(&f).map_err(run_error)?;
            Ok(PredictionRecord::new(&p))
        })?;
        Ok(Prediction { record })
    }

    /// Classifies several frames of one format in encoder batches. A bad frame does not stop
    /// the others: its place in the returned list holds its error (a `ValueError`), not raised.
    #[pyo3(signature = (frames, format = "rgb24"))]
    fn classify_batch<'py>(
        &self,
        py: Python<'py>,
        frames: &Bound<'py, PyAny>,
        format: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let format = parse_format(format)?;
        let items: Vec<Bound<'py, PyAny>> = frames
            .try_iter()?
            .collect::<PyResult<_>>()
            .map_err(|_| PyValueError::new_err("frames: expected an iterable of frames"))?;
        let raws: Vec<Result<RawFrame, String>> =
            items.iter().map(|f| frame_arg(f, format, None)).collect();
        // `items` keeps every array alive while the GIL is released.
        let results: Vec<Result<PredictionRecord, String>> = self.with(py, |inner| {
            let mut out = Vec::with_capacity(raws.len());
            let mut run: Vec<FrameRef<'_>> = Vec::new();
            let flush = |run: &mut Vec<FrameRef<'_>>,
                         out: &mut Vec<Result<PredictionRecord, String>>,
                         inner: &mut Inner| {
                for r in inner.classify_batch(run) {
                    out.push(
                        r.map(|p| PredictionRecord::new(&p))
                            .map_err(|e| e.to_string()),
                    );
                }
                run.clear();
            };
            for (i, raw) in raws.iter().enumerate() {
                // SAFETY: `items` holds every array alive for this call.
                match raw.clone().and_then(|r| unsafe { r.frame() }) {
                    Ok(f) => run.push(f),
                    Err(e) => {
                        flush(&mut run, &mut out, inner);
                        let index = inner.reject_frame();
                        out.push(Err(format!("frame {index} (frames[{i}]): {e}")));
                    }
                }
            }
            flush(&mut run, &mut out, inner);
            out
        });
        let list = PyList::empty(py);
        for r in results {
            match r {
                Ok(record) => list.append(Prediction { record })?,
                Err(e) => list.append(FrameError::new_err(e).value(py))?,
            }
        }
        Ok(list)
    }

    /// The frame's L2-normalised image feature (a new float32 array of the encoder's width).
    #[pyo3(signature = (frame, format = "rgb24", *, width = None, height = None))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
        format: &str,
        width: Option<u32>,
        height: Option<u32>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let format = parse_format(format)?;
        let size = size_arg(width, height)?;
        let raw = frame_arg(frame, format, size)
            .map_err(|e| PyValueError::new_err(format!("frame: {e}")))?;
        let feature = self.with(py, |inner| -> Result<Vec<f32>, PyErr> {
            // SAFETY: `frame` holds the array alive for this call.
            let f =
                unsafe { raw.frame() }.map_err(|e| PyValueError::new_err(format!("frame: {e}")))?;
            Ok(inner.embed(&f).map_err(run_error)?.to_vec())
        })?;
        Ok(PyArray1::from_vec(py, feature))
    }

    /// Opens and verifies another pack made with this session's model and uses it from the next
    /// frame on. On error the session keeps its pack.
    fn swap_pack(&self, py: Python<'_>, pack: PathBuf) -> PyResult<()> {
        self.with(py, |inner| {
            let classifier =
                Classifier::open(&pack, &inner.encoder().expect()).map_err(open_error)?;
            inner
                .swap(Arc::new(classifier))
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            Ok(())
        })
    }

    /// The current pack's class names, in class-index order.
    #[getter]
    fn class_names(&self, py: Python<'_>) -> Vec<String> {
        self.with(py, |inner| inner.classifier().class_names().to_vec())
    }

    /// Frames offered so far (bad ones too): the next frame's index.
    #[getter]
    fn frames(&self, py: Python<'_>) -> u64 {
        self.with(py, |inner| inner.frames())
    }

    /// The encoder's feature width.
    #[getter]
    fn dim(&self, py: Python<'_>) -> usize {
        self.with(py, |inner| inner.encoder().dim())
    }

    /// What the encoder said when it was loaded, one line each: an int8 graph on an x86_64 CPU
    /// whose int8 kernel is slow, f16 emulated on x86_64, or a compiled form (`tipedge compile`)
    /// that was stale or damaged and so not used. Empty when there is nothing to say.
    #[getter]
    fn warnings(&self, py: Python<'_>) -> Vec<String> {
        self.with(py, |inner| inner.encoder().warnings())
    }

    /// For the overhead benchmark (python/bench/overhead.py): `n` calls of the library's
    /// `Session::classify` on one frame from Rust, no Python in between; seconds taken.
    #[pyo3(signature = (frame, format, n))]
    fn _classify_native(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        format: &str,
        n: usize,
    ) -> PyResult<f64> {
        let format = parse_format(format)?;
        let raw = frame_arg(frame, format, None).map_err(PyValueError::new_err)?;
        self.with(py, |inner| {
            // SAFETY: `frame` holds the array alive for this call.
            let f = unsafe { raw.frame() }.map_err(PyValueError::new_err)?;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(inner.classify(&f).map_err(run_error)?);
            }
            Ok(start.elapsed().as_secs_f64())
        })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        self.with(py, |inner| {
            let c = inner.classifier();
            format!(
                "Session(classes={}, dim={}, pack={:?}, frames={})",
                c.n_classes(),
                inner.encoder().dim(),
                c.path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                inner.frames()
            )
        })
    }
}

#[pymodule]
fn _tipedge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "FORMATS",
        PixelFormat::ALL
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>(),
    )?;
    m.add("TipedgeError", py.get_type::<TipedgeError>())?;
    m.add("FrameError", py.get_type::<FrameError>())?;
    m.add("OpenError", py.get_type::<OpenError>())?;
    m.add_class::<Session>()?;
    m.add_class::<Prediction>()?;
    m.add_class::<Label>()?;
    Ok(())
}
