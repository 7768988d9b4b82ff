//! The C ABI of tipedge: a [`tipedge::session::Session`] behind an opaque handle, for camera
//! applications written in C or C++ (GStreamer elements, OpenCV loops, vendor SDKs).
//!
//! ```c
//! tipedge_session *s = NULL;
//! if (tipedge_session_open("models/efficientnet-lite0", "textile.pack", NULL, &s) != TIPEDGE_STATUS_OK) {
//!     fprintf(stderr, "%s\n", tipedge_last_error());
//!     return 1;
//! }
//! tipedge_prediction p;
//! if (tipedge_session_classify(s, nv12, len, 640, 480, 0, TIPEDGE_FORMAT_NV12, &p) == TIPEDGE_STATUS_OK)
//!     printf("%s %.3f\n", tipedge_session_class_name(s, p.top[0].class_index), p.top[0].prob);
//! tipedge_session_free(s);
//! ```
//!
//! Rules:
//! - Every function returns a [`tipedge_status`]; on an error, [`tipedge_last_error`] gives its
//!   message (one line, as the CLI prints it) on the calling thread.
//! - Nothing is allocated for the caller per frame, and nothing needs freeing per frame: a
//!   prediction is written into the caller's [`tipedge_prediction`].
//! - A session is used by one thread at a time (it may move between threads). A classifier
//!   (an opened pack) may be shared: open it on any thread, swap it into sessions on theirs.
//! - Handles are checked against the live ones before use: a NULL, freed or foreign handle is
//!   [`tipedge_status::TIPEDGE_STATUS_BAD_HANDLE`], never a crash. Every entry point catches
//!   panics ([`tipedge_status::TIPEDGE_STATUS_PANIC`]).

#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tipedge::adapter::MAX_TOP_K;
use tipedge::classifier::Classifier;
use tipedge::device::StateDir;
use tipedge::encoder::{ImageEncoder, ModelPaths, RunOptions};
use tipedge::preprocess::{FrameRef, PixelFormat};
use tipedge::session::{Session, SessionOptions};
use tipedge::tda::TdaConfig;

/// Most classes a prediction reports (the length of [`tipedge_prediction::top`]).
pub const TIPEDGE_MAX_TOP_K: usize = 16;
const _: () = assert!(TIPEDGE_MAX_TOP_K == MAX_TOP_K);

/// What a call did.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tipedge_status {
    TIPEDGE_STATUS_OK = 0,
    /// A required pointer argument was NULL.
    TIPEDGE_STATUS_NULL_POINTER = 1,
    /// A NULL, freed or foreign session or classifier handle.
    TIPEDGE_STATUS_BAD_HANDLE = 2,
    /// An argument out of range: a size, a format code, an option, a path that is not UTF-8.
    TIPEDGE_STATUS_INVALID_ARGUMENT = 3,
    /// The model, pack or state directory could not be opened or verified.
    TIPEDGE_STATUS_OPEN_FAILED = 4,
    /// This frame could not be classified (too short, corrupt JPEG, …); the session goes on.
    TIPEDGE_STATUS_BAD_FRAME = 5,
    /// A bug in tipedge: the call panicked and was stopped at the boundary.
    TIPEDGE_STATUS_PANIC = 6,
}

/// Pixel format of a frame (the library's `PixelFormat`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum tipedge_format {
    /// R, G, B: 3 bytes per pixel.
    TIPEDGE_FORMAT_RGB24 = 0,
    /// B, G, R (OpenCV's `Mat`): 3 bytes per pixel.
    TIPEDGE_FORMAT_BGR24 = 1,
    /// R, G, B, A: 4 bytes per pixel; alpha is dropped.
    TIPEDGE_FORMAT_RGBA = 2,
    /// One luma byte per pixel.
    TIPEDGE_FORMAT_GRAY8 = 3,
    /// V4L2 YUYV: Y0 U Y1 V per pair of pixels.
    TIPEDGE_FORMAT_YUYV422 = 4,
    /// A Y plane, then interleaved U V at half resolution both ways.
    TIPEDGE_FORMAT_NV12 = 5,
    /// I420: a Y plane, then U and V planes at half resolution both ways.
    TIPEDGE_FORMAT_YUV420P = 6,
    /// One encoded JPEG image (width, height and stride are ignored).
    TIPEDGE_FORMAT_JPEG = 7,
}

/// How a session reports. [`tipedge_options_default`] gives the defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tipedge_options {
    /// Classes per prediction, 1..=TIPEDGE_MAX_TOP_K (default 3).
    pub top_k: u32,
    /// Threads for the encoder's matrix products (default 1).
    pub threads: u32,
    /// The reject option: a frame whose best probability is below this is marked unknown;
    /// 0 accepts every frame (default 0).
    pub min_prob: f32,
    /// Non-zero: test-time adaptation (TDA, the official settings) over the frames (default 0).
    pub tda: u8,
}

/// One class of a prediction.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct tipedge_scored {
    /// Index into the session's class names ([`tipedge_session_class_name`]).
    pub class_index: u32,
    pub logit: f32,
    /// Calibrated probability (the pack's temperature, if it has one).
    pub prob: f32,
}

/// One frame's result, written by [`tipedge_session_classify`] into the caller's memory.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct tipedge_prediction {
    /// The frame's index in this session (bad frames count too).
    pub frame: u64,
    /// How many entries of `top` are filled, best first.
    pub n: u32,
    /// 1 when the best probability is below the session's `min_prob`.
    pub unknown: u8,
    pub top: [tipedge_scored; TIPEDGE_MAX_TOP_K],
    pub preprocess_ms: f64,
    pub encode_ms: f64,
    pub score_ms: f64,
}

/// A session: the encoder, a classifier and their buffers. Opaque.
pub struct tipedge_session {
    session: Session,
    /// The class names of `session`'s classifier, as C strings, and which classifier they are
    /// for (rebuilt after a swap).
    names: Vec<CString>,
    names_of: *const Classifier,
    /// The encoder's load warnings, one per line (`None`: nothing to say).
    warnings: Option<CString>,
}

/// An opened, verified pack, shareable between threads and sessions. Opaque.
pub struct tipedge_classifier {
    classifier: Arc<Classifier>,
}

// The raw pointer only identifies a classifier; the session owns an Arc to it.
unsafe impl Send for tipedge_session {}

/// Addresses of the live handles (a process has a few): a handle is used only if it is here.
/// A plain vector, emptied and released with the last handle, so that a leak checker sees no
/// memory of tipedge's left behind once every handle is freed.
static LIVE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<usize>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn register<T>(handle: Box<T>) -> *mut T {
    let p = Box::into_raw(handle);
    live().push(p as usize);
    p
}

fn is_live<T>(p: *const T) -> bool {
    !p.is_null() && live().contains(&(p as usize))
}

/// Removes `p` from the live handles; true if it was there (then it may be freed).
fn unregister<T>(p: *const T) -> bool {
    let mut live = live();
    let Some(i) = live.iter().position(|&h| h == p as usize) else {
        return false;
    };
    live.swap_remove(i);
    if live.is_empty() {
        *live = Vec::new();
    }
    !p.is_null()
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

struct Failure(tipedge_status, String);

type Outcome = Result<(), Failure>;

fn fail(status: tipedge_status, message: impl Into<String>) -> Failure {
    Failure(status, message.into())
}

/// Runs `f`, catching panics; records the message of a failure for [`tipedge_last_error`].
fn guard(f: impl FnOnce() -> Outcome) -> tipedge_status {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(fail(
            tipedge_status::TIPEDGE_STATUS_PANIC,
            format!("internal error (a bug in tipedge): {what}"),
        ))
    });
    match outcome {
        Ok(()) => tipedge_status::TIPEDGE_STATUS_OK,
        Err(Failure(status, message)) => {
            // One line, no interior NUL.
            let line: String = message
                .chars()
                .map(|c| {
                    if c == '\0' || c == '\n' || c == '\r' {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(line).unwrap_or_default());
            status
        }
    }
}

/// The message of the last failed call on this thread: one line, UTF-8, NUL-terminated; ""
/// if none failed yet. Valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn tipedge_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// The library's version, e.g. "0.1.0" (static).
#[no_mangle]
pub extern "C" fn tipedge_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The default options: top-3, one thread, no reject threshold, no TDA.
#[no_mangle]
pub extern "C" fn tipedge_options_default() -> tipedge_options {
    tipedge_options {
        top_k: 3,
        threads: 1,
        min_prob: 0.0,
        tda: 0,
    }
}

fn path_arg(p: *const c_char, what: &str) -> Result<PathBuf, Failure> {
    if p.is_null() {
        return Err(fail(
            tipedge_status::TIPEDGE_STATUS_NULL_POINTER,
            format!("the {what} path is NULL"),
        ));
    }
    // SAFETY: the caller passes a NUL-terminated string (checked non-NULL above).
    let s = unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        fail(
            tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
            format!("the {what} path is not UTF-8"),
        )
    })?;
    Ok(PathBuf::from(s))
}

fn out_arg<T>(out: *mut T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(fail(
            tipedge_status::TIPEDGE_STATUS_NULL_POINTER,
            format!("the {what} output pointer is NULL"),
        ));
    }
    Ok(())
}

fn open_failed(e: impl std::fmt::Display) -> Failure {
    fail(tipedge_status::TIPEDGE_STATUS_OPEN_FAILED, e.to_string())
}

fn session_options(
    options: *const tipedge_options,
) -> Result<(SessionOptions, RunOptions), Failure> {
    let o = if options.is_null() {
        tipedge_options_default()
    } else {
        // SAFETY: non-NULL, pointing at the caller's struct.
        unsafe { *options }
    };
    let invalid = |m: String| fail(tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT, m);
    if o.top_k == 0 || o.top_k as usize > TIPEDGE_MAX_TOP_K {
        return Err(invalid(format!(
            "top_k must be 1..={TIPEDGE_MAX_TOP_K}, not {}",
            o.top_k
        )));
    }
    if o.threads == 0 || o.threads > 256 {
        return Err(invalid(format!(
            "threads must be 1..=256, not {}",
            o.threads
        )));
    }
    let min_prob = match o.min_prob {
        0.0 => None,
        p if p > 0.0 && p < 1.0 => Some(p),
        p => {
            return Err(invalid(format!(
                "min_prob must be 0 (off) or strictly between 0 and 1, not {p}"
            )))
        }
    };
    Ok((
        SessionOptions {
            top_k: o.top_k as usize,
            min_prob,
            tda: (o.tda != 0).then(TdaConfig::default),
            ..SessionOptions::default()
        },
        RunOptions {
            threads: o.threads as usize,
            ..RunOptions::default()
        },
    ))
}

fn load_encoder(model: &std::path::Path, run: &RunOptions) -> Result<Arc<ImageEncoder>, Failure> {
    let paths = ModelPaths::resolve(model).map_err(open_failed)?;
    Ok(Arc::new(
        ImageEncoder::load(&paths.image, run).map_err(open_failed)?,
    ))
}

fn finish_open(session: Session, out: *mut *mut tipedge_session) -> Outcome {
    let warnings = session.encoder().warnings();
    let warnings = (!warnings.is_empty())
        .then(|| CString::new(warnings.join("\n").replace('\0', " ")).unwrap_or_default());
    let mut handle = Box::new(tipedge_session {
        session,
        names: Vec::new(),
        names_of: std::ptr::null(),
        warnings,
    });
    handle.refresh_names();
    // SAFETY: `out` was checked non-NULL by the caller of this function.
    unsafe { *out = register(handle) };
    Ok(())
}

impl tipedge_session {
    fn refresh_names(&mut self) {
        let c = Arc::as_ptr(self.session.classifier());
        if c != self.names_of {
            self.names = self
                .session
                .classifier()
                .class_names()
                .iter()
                .map(|n| CString::new(n.replace('\0', " ")).unwrap_or_default())
                .collect();
            self.names_of = c;
        }
    }
}

/// Opens a session: the model folder's image encoder (or an image.onnx file) and a pack made
/// with it. `options` may be NULL (the defaults). On success `*out` is the new session, to be
/// released with [`tipedge_session_free`].
///
/// # Safety
/// `model` and `pack` are NUL-terminated strings; `options` is NULL or points to options;
/// `out` points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_open(
    model: *const c_char,
    pack: *const c_char,
    options: *const tipedge_options,
    out: *mut *mut tipedge_session,
) -> tipedge_status {
    guard(|| {
        out_arg(out, "session")?;
        let model = path_arg(model, "model")?;
        let pack = path_arg(pack, "pack")?;
        let (options, run) = session_options(options)?;
        let encoder = load_encoder(&model, &run)?;
        let classifier = Arc::new(Classifier::open(&pack, &encoder.expect()).map_err(open_failed)?);
        let session = Session::new(encoder, classifier, options).map_err(|e| {
            fail(
                tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
                e.to_string(),
            )
        })?;
        finish_open(session, out)
    })
}

/// Opens a session on the active pack of a device's state directory (`tipedge flash`).
///
/// # Safety
/// As [`tipedge_session_open`], with `state_dir` for `pack`.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_open_state(
    model: *const c_char,
    state_dir: *const c_char,
    options: *const tipedge_options,
    out: *mut *mut tipedge_session,
) -> tipedge_status {
    guard(|| {
        out_arg(out, "session")?;
        let model = path_arg(model, "model")?;
        let dir = path_arg(state_dir, "state directory")?;
        let (options, run) = session_options(options)?;
        let encoder = load_encoder(&model, &run)?;
        let classifier = StateDir::open(&dir)
            .and_then(|state| state.active_classifier())
            .map_err(open_failed)?;
        let session = Session::new(encoder, Arc::new(classifier), options).map_err(open_failed)?;
        finish_open(session, out)
    })
}

/// Releases a session (NULL is allowed and does nothing). A freed or foreign handle is
/// [`tipedge_status::TIPEDGE_STATUS_BAD_HANDLE`].
///
/// # Safety
/// `session` is NULL or a handle from [`tipedge_session_open`]; no other thread uses it.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_free(session: *mut tipedge_session) -> tipedge_status {
    guard(|| {
        if session.is_null() {
            return Ok(());
        }
        if !unregister(session) {
            return Err(bad_handle("session"));
        }
        // SAFETY: it was live, so it came from Box::into_raw and is freed once.
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    })
}

fn bad_handle(what: &str) -> Failure {
    fail(
        tipedge_status::TIPEDGE_STATUS_BAD_HANDLE,
        format!("not a live tipedge {what} handle (NULL, freed, or not from tipedge)"),
    )
}

fn session_mut<'a>(s: *mut tipedge_session) -> Result<&'a mut tipedge_session, Failure> {
    if !is_live(s) {
        return Err(bad_handle("session"));
    }
    // SAFETY: live handles point at a boxed session; one thread uses it at a time (documented).
    Ok(unsafe { &mut *s })
}

fn format_of(code: u32) -> Result<PixelFormat, Failure> {
    // `tipedge_format`'s values are the indices of `PixelFormat::ALL` (a test checks it).
    PixelFormat::ALL.get(code as usize).copied().ok_or_else(|| {
        fail(
            tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
            format!("unknown pixel format code {code} (0..=7: see tipedge_format)"),
        )
    })
}

/// Classifies one frame of pixel format `format` (a [`tipedge_format`] value): `len` bytes at
/// `data`, `width` × `height` pixels, rows `stride` bytes
/// apart (0: packed rows; for the YUV formats the stride of the Y plane, chroma planes
/// following at the same stride, halved where the format halves it). The result goes into
/// `*out`. A bad frame is [`tipedge_status::TIPEDGE_STATUS_BAD_FRAME`] naming the frame and the
/// reason, and the session goes on with the next.
///
/// # Safety
/// `data` points to `len` readable bytes; `out` to a writable [`tipedge_prediction`].
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_classify(
    session: *mut tipedge_session,
    data: *const u8,
    len: usize,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
    out: *mut tipedge_prediction,
) -> tipedge_status {
    // A `tipedge_format` value, taken as an integer: an out-of-range code is an error rather
    // than undefined behaviour.
    let code = format;
    guard(|| {
        let s = session_mut(session)?;
        out_arg(out, "prediction")?;
        if data.is_null() {
            return Err(fail(
                tipedge_status::TIPEDGE_STATUS_NULL_POINTER,
                "the frame's data pointer is NULL",
            ));
        }
        let format = format_of(code)?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) };
        let bad = |e: String| fail(tipedge_status::TIPEDGE_STATUS_BAD_FRAME, e);
        let frame = match format {
            PixelFormat::Jpeg => Ok(FrameRef::jpeg(bytes)),
            _ if stride == 0 => FrameRef::packed(bytes, width, height, format),
            _ => FrameRef::new(bytes, width, height, stride, format),
        };
        let frame = frame.map_err(|e| bad(format!("frame {}: {e}", s.session.reject_frame())))?;
        let p = s.session.classify(&frame).map_err(|e| bad(e.to_string()))?;
        let mut top = [tipedge_scored::default(); TIPEDGE_MAX_TOP_K];
        for (t, scored) in top.iter_mut().zip(&p.top) {
            *t = tipedge_scored {
                class_index: scored.class as u32,
                logit: scored.logit,
                prob: scored.prob,
            };
        }
        // SAFETY: checked non-NULL; the caller's memory.
        unsafe {
            *out = tipedge_prediction {
                frame: p.frame,
                n: p.top.len() as u32,
                unknown: u8::from(p.unknown),
                top,
                preprocess_ms: p.timings.preprocess_ms,
                encode_ms: p.timings.encode_ms,
                score_ms: p.timings.score_ms,
            }
        };
        Ok(())
    })
}

/// The number of classes of the session's current classifier, into `*out`.
///
/// # Safety
/// `out` points to a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_class_count(
    session: *mut tipedge_session,
    out: *mut u32,
) -> tipedge_status {
    guard(|| {
        let s = session_mut(session)?;
        out_arg(out, "class count")?;
        // SAFETY: checked non-NULL.
        unsafe { *out = s.session.classifier().n_classes() as u32 };
        Ok(())
    })
}

/// The name of class `index` of the session's current classifier (UTF-8, NUL-terminated), or
/// NULL for a bad handle or index (see [`tipedge_last_error`]). Valid until the session's
/// classifier is swapped or the session freed.
///
/// # Safety
/// `session` is a handle from [`tipedge_session_open`] used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_class_name(
    session: *mut tipedge_session,
    index: u32,
) -> *const c_char {
    let mut name = std::ptr::null();
    guard(|| {
        let s = session_mut(session)?;
        s.refresh_names();
        let n = s.names.len();
        let c = s.names.get(index as usize).ok_or_else(|| {
            fail(
                tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
                format!("class index {index} out of range ({n} classes)"),
            )
        })?;
        name = c.as_ptr();
        Ok(())
    });
    name
}

/// What the session's encoder said when it was loaded, one line per warning (UTF-8,
/// NUL-terminated, lines separated by `\n`), or NULL when there is nothing to say or the handle
/// is bad (see [`tipedge_last_error`]). Applications should log it once after opening: an int8
/// graph on an x86_64 CPU whose int8 kernel is slow, f16 emulated on x86_64, or a compiled form
/// (`tipedge compile`) beside the graph that was stale or damaged and so not used (the ONNX graph
/// was loaded instead; the line names the file and the reason). Valid until the session is freed.
///
/// # Safety
/// `session` is a handle from [`tipedge_session_open`] used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_warnings(session: *mut tipedge_session) -> *const c_char {
    let mut text = std::ptr::null();
    guard(|| {
        let s = session_mut(session)?;
        if let Some(w) = &s.warnings {
            text = w.as_ptr();
        }
        Ok(())
    });
    text
}

/// Opens and verifies a pack for the session's encoder, as a classifier that any session of
/// the same model can use ([`tipedge_session_swap`]) and any thread can hold. Released with
/// [`tipedge_classifier_free`].
///
/// # Safety
/// `pack` is a NUL-terminated string; `out` points to writable memory for one pointer.
#[no_mangle]
pub unsafe extern "C" fn tipedge_classifier_open(
    session: *mut tipedge_session,
    pack: *const c_char,
    out: *mut *mut tipedge_classifier,
) -> tipedge_status {
    guard(|| {
        let s = session_mut(session)?;
        out_arg(out, "classifier")?;
        let pack = path_arg(pack, "pack")?;
        let expect = s.session.encoder().expect();
        let classifier = Arc::new(Classifier::open(&pack, &expect).map_err(open_failed)?);
        // SAFETY: checked non-NULL.
        unsafe { *out = register(Box::new(tipedge_classifier { classifier })) };
        Ok(())
    })
}

/// Uses `classifier` from the session's next frame on (the session keeps its own reference:
/// the classifier handle may be freed afterwards). Refused if it was made for another encoder.
///
/// # Safety
/// `session` is used by this thread only; `classifier` is a live classifier handle.
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_swap(
    session: *mut tipedge_session,
    classifier: *const tipedge_classifier,
) -> tipedge_status {
    guard(|| {
        let s = session_mut(session)?;
        if !is_live(classifier) {
            return Err(bad_handle("classifier"));
        }
        // SAFETY: live classifier handles point at a boxed classifier, never mutated.
        let c = Arc::clone(&unsafe { &*classifier }.classifier);
        s.session.swap(c).map_err(|e| {
            fail(
                tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
                e.to_string(),
            )
        })?;
        s.refresh_names();
        Ok(())
    })
}

/// Opens `pack` and swaps it into the session: [`tipedge_classifier_open`] then
/// [`tipedge_session_swap`] in one call. On error the session keeps its classifier.
///
/// # Safety
/// As [`tipedge_classifier_open`].
#[no_mangle]
pub unsafe extern "C" fn tipedge_session_swap_pack(
    session: *mut tipedge_session,
    pack: *const c_char,
) -> tipedge_status {
    guard(|| {
        let s = session_mut(session)?;
        let pack = path_arg(pack, "pack")?;
        let expect = s.session.encoder().expect();
        let classifier = Arc::new(Classifier::open(&pack, &expect).map_err(open_failed)?);
        s.session.swap(classifier).map_err(|e| {
            fail(
                tipedge_status::TIPEDGE_STATUS_INVALID_ARGUMENT,
                e.to_string(),
            )
        })?;
        s.refresh_names();
        Ok(())
    })
}

/// Releases a classifier handle (NULL does nothing); sessions using it keep it alive.
///
/// # Safety
/// `classifier` is NULL or a handle from [`tipedge_classifier_open`].
#[no_mangle]
pub unsafe extern "C" fn tipedge_classifier_free(
    classifier: *mut tipedge_classifier,
) -> tipedge_status {
    guard(|| {
        if classifier.is_null() {
            return Ok(());
        }
        if !unregister(classifier) {
            return Err(bad_handle("classifier"));
        }
        // SAFETY: it was live, so it came from Box::into_raw and is freed once.
        drop(unsafe { Box::from_raw(classifier) });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_codes_are_the_library_formats_in_order() {
        use tipedge_format::*;
        let codes = [
            (TIPEDGE_FORMAT_RGB24, "rgb24"),
            (TIPEDGE_FORMAT_BGR24, "bgr24"),
            (TIPEDGE_FORMAT_RGBA, "rgba"),
            (TIPEDGE_FORMAT_GRAY8, "gray"),
            (TIPEDGE_FORMAT_YUYV422, "yuyv422"),
            (TIPEDGE_FORMAT_NV12, "nv12"),
            (TIPEDGE_FORMAT_YUV420P, "yuv420p"),
            (TIPEDGE_FORMAT_JPEG, "mjpeg"),
        ];
        assert_eq!(codes.len(), PixelFormat::ALL.len());
        for (code, name) in codes {
            assert_eq!(
                format_of(code as u32).ok().map(PixelFormat::name),
                Some(name)
            );
        }
        assert!(format_of(8).is_err());
    }
}
