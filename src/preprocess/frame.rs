//! Camera frames in the pixel formats cameras hand over, validated once and then read row by
//! row by the resampler ([`super::Preprocessor::run_frame`]) without an intermediate RGB image.

use std::fmt;
use std::str::FromStr;

use image::RgbImage;

use super::yuv::YuvLut;
pub use super::yuv::{Colorimetry, YuvMatrix, YuvRange};
use super::DecodeLimits;

/// The pixel formats of [`FrameRef`], named as ffmpeg's `-pix_fmt` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// `rgb24`: R, G, B, 3 bytes per pixel.
    Rgb24,
    /// `bgr24`: B, G, R (OpenCV's `Mat`), 3 bytes per pixel.
    Bgr24,
    /// `rgba`: R, G, B, A, 4 bytes per pixel; alpha is dropped, as PIL's `convert("RGB")` does.
    Rgba,
    /// `gray`: one luma byte per pixel, replicated to R = G = B.
    Gray8,
    /// `yuyv422` (V4L2 YUYV, YUY2): Y0 U Y1 V, 4 bytes per pair of pixels.
    Yuyv,
    /// `nv12`: a Y plane, then one plane of interleaved U V at half resolution both ways.
    Nv12,
    /// `yuv420p` (I420): a Y plane, then a U and a V plane at half resolution both ways.
    I420,
    /// `mjpeg`: one JPEG image per frame, as MJPEG cameras send them.
    Jpeg,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Rgba,
        PixelFormat::Gray8,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::I420,
        PixelFormat::Jpeg,
    ];

    /// ffmpeg's `pix_fmt` name (`mjpeg` for JPEG frames, the name of ffmpeg's codec).
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Rgba => "rgba",
            PixelFormat::Gray8 => "gray",
            PixelFormat::Yuyv => "yuyv422",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::I420 => "yuv420p",
            PixelFormat::Jpeg => "mjpeg",
        }
    }

    /// Bytes of one tightly packed `width × height` frame (what `ffmpeg -f rawvideo` writes per
    /// frame), with [`FrameRef::packed`]'s checks of the sizes; `None` for JPEG, whose frames
    /// vary in size.
    pub fn packed_len(self, width: u32, height: u32) -> Option<Result<usize, FrameError>> {
        if self == PixelFormat::Jpeg {
            return None;
        }
        Some(packed_stride(self, width, height).and_then(|s| geometry(self, width, height, s)))
    }

    /// The name used in messages, as cameras and V4L2 spell it.
    fn label(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "RGB24",
            PixelFormat::Bgr24 => "BGR24",
            PixelFormat::Rgba => "RGBA",
            PixelFormat::Gray8 => "GRAY8",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::I420 => "I420",
            PixelFormat::Jpeg => "JPEG",
        }
    }

    /// Bytes per pixel of the first plane (JPEG: none).
    fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgba => 4,
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => 3,
            PixelFormat::Yuyv => 2,
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::I420 => 1,
            PixelFormat::Jpeg => 0,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = FrameError;

    /// ffmpeg's names, and the aliases `gray8`, `yuyv`, `i420`, `jpeg` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, FrameError> {
        let name = s.trim().to_ascii_lowercase();
        let alias = match name.as_str() {
            "gray8" => Some(PixelFormat::Gray8),
            "yuyv" => Some(PixelFormat::Yuyv),
            "i420" => Some(PixelFormat::I420),
            "jpeg" => Some(PixelFormat::Jpeg),
            _ => None,
        };
        alias
            .or_else(|| PixelFormat::ALL.into_iter().find(|f| f.name() == name))
            .ok_or_else(|| FrameError::UnknownFormat {
                name: s.to_string(),
            })
    }
}

/// Why a frame was refused. Each message is one sentence naming the reason and the numbers;
/// the caller adds which frame it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown pixel format {name:?} (expected rgb24, bgr24, rgba, gray, yuyv422, nv12, yuv420p or mjpeg)")]
    UnknownFormat { name: String },
    #[error("{} frame {width}×{height} has no pixels", format.label())]
    NoPixels {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    #[error("{} frame {width}×{height}: {}", format.label(), even_rule(*format))]
    OddSize {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
    #[error("{} frame {width}×{height}: stride {stride} is smaller than a row ({row_bytes} bytes)", format.label())]
    StrideTooSmall {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        row_bytes: usize,
    },
    #[error("{} frame {width}×{height} with stride {stride} is larger than this machine can address", format.label())]
    SizeOverflow {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
    },
    #[error("{} frame {width}×{height} with stride {stride} needs {needed} bytes, the buffer holds {len}", format.label())]
    BufferTooSmall {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        len: usize,
    },
    #[error("{} frame {width}×{height} = {:.1} MP exceeds the {:.1} MP limit", format.label(),
            megapixels(*width, *height), *max_pixels as f64 / 1e6)]
    TooManyPixels {
        format: PixelFormat,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error(
        "the output buffer holds {len} values, the tensor needs {expected} (3 × {crop} × {crop})"
    )]
    OutputLength {
        expected: usize,
        len: usize,
        crop: u32,
    },
    /// The JPEG decoder's reason, e.g. "cannot decode: truncated JPEG (…)".
    #[error("JPEG frame: {reason}")]
    Jpeg { reason: String },
}

fn even_rule(format: PixelFormat) -> &'static str {
    match format {
        PixelFormat::Yuyv => "the width must be even (a U V pair covers two pixels)",
        _ => "width and height must be even (a chroma sample covers 2 × 2 pixels)",
    }
}

fn megapixels(width: u32, height: u32) -> f64 {
    u64::from(width) as f64 * f64::from(height) / 1e6
}

/// A camera frame borrowed from the caller's buffer, validated on construction.
///
/// Layout: one buffer; `stride` is the number of bytes per row of the first plane (at least
/// `width` × bytes per pixel; rows may be padded).
///
/// | format | first plane (`stride` × `height`) | then |
/// |---|---|---|
/// | RGB24, BGR24 | 3 bytes per pixel | — |
/// | RGBA | 4 bytes per pixel | — |
/// | GRAY8 | 1 byte per pixel | — |
/// | YUYV | 2 bytes per pixel: Y0 U Y1 V per pair | — |
/// | NV12 | Y, 1 byte per pixel | U V interleaved, `stride` × `height`/2 |
/// | I420 | Y, 1 byte per pixel | U, `stride`/2 × `height`/2, then V, the same |
///
/// With `stride` the tight row size this is exactly what `ffmpeg -f rawvideo -pix_fmt
/// rgb24|bgr24|rgba|gray|yuyv422|nv12|yuv420p -` writes. NV12 and I420 need an even width and
/// height, YUYV an even width. The buffer may be longer than the frame; the rest is ignored.
/// It may also stop where the last row's pixels end, without that row's padding (a crop of a
/// larger image: a strided numpy view, a GStreamer video region). YUV frames are converted with their [`Colorimetry`] (BT.601 limited range unless told).
///
/// JPEG frames ([`FrameRef::jpeg`]) carry encoded bytes; their size is known after decoding
/// and `width()`, `height()` and `stride()` are 0.
#[derive(Clone, Copy)]
pub struct FrameRef<'a> {
    data: &'a [u8],
    width: u32,
    height: u32,
    stride: usize,
    format: PixelFormat,
    colorimetry: Colorimetry,
}

impl fmt::Debug for FrameRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRef")
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("colorimetry", &self.colorimetry)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl<'a> FrameRef<'a> {
    /// Validates everything up front: sizes (non-zero, even where the format subsamples
    /// chroma), the stride against the row size, and the buffer length against every plane.
    /// `PixelFormat::Jpeg` takes the bytes as [`FrameRef::jpeg`] does and ignores the sizes.
    pub fn new(
        data: &'a [u8],
        width: u32,
        height: u32,
        stride: usize,
        format: PixelFormat,
    ) -> Result<Self, FrameError> {
        if format == PixelFormat::Jpeg {
            return Ok(FrameRef::jpeg(data));
        }
        let needed = geometry(format, width, height, stride)?;
        if data.len() < needed {
            return Err(FrameError::BufferTooSmall {
                format,
                width,
                height,
                stride,
                needed,
                len: data.len(),
            });
        }
        Ok(FrameRef {
            data,
            width,
            height,
            stride,
            format,
            colorimetry: Colorimetry::default(),
        })
    }

    /// [`FrameRef::new`] with the tightest stride for the format (`width` × bytes per pixel).
    pub fn packed(
        data: &'a [u8],
        width: u32,
        height: u32,
        format: PixelFormat,
    ) -> Result<Self, FrameError> {
        let stride = packed_stride(format, width, height)?;
        FrameRef::new(data, width, height, stride, format)
    }

    /// Encoded JPEG bytes (an MJPEG camera's frame). Nothing is checked until it is decoded.
    pub fn jpeg(data: &'a [u8]) -> Self {
        FrameRef {
            data,
            width: 0,
            height: 0,
            stride: 0,
            format: PixelFormat::Jpeg,
            colorimetry: Colorimetry::default(),
        }
    }

    /// How YUV samples map to RGB; RGB, gray and JPEG frames ignore it.
    pub fn with_colorimetry(self, colorimetry: Colorimetry) -> Self {
        FrameRef {
            colorimetry,
            ..self
        }
    }

    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn stride(&self) -> usize {
        self.stride
    }
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    pub fn colorimetry(&self) -> Colorimetry {
        self.colorimetry
    }

    /// The frame as 8-bit RGB, allocated (for tests, debugging, saving a frame). JPEG frames
    /// are decoded as [`super::load_rgb`] decodes files: Pillow's pixels, EXIF orientation
    /// applied.
    pub fn to_rgb(&self, limits: &DecodeLimits) -> Result<RgbImage, FrameError> {
        let Some(rows) = self.rows(limits)? else {
            let mut rgb = Vec::new();
            let (w, h) = super::decode_jpeg_upright(self.data, limits, &mut rgb)
                .map_err(|reason| FrameError::Jpeg { reason })?;
            return Ok(RgbImage::from_raw(w, h, rgb).expect("decoded buffer is w × h × 3"));
        };
        let (w, h) = (rows.width, rows.height);
        let mut rgb = vec![0u8; w * h * 3];
        for (y, row) in rgb.chunks_exact_mut(w * 3).enumerate() {
            rows.convert(y, 0, w, row);
        }
        Ok(RgbImage::from_raw(self.width, self.height, rgb).expect("buffer is w × h × 3"))
    }

    /// The resampler's view of a raw frame, after the pixel limit; `None` for JPEG.
    pub(super) fn rows(&self, limits: &DecodeLimits) -> Result<Option<Rows<'a>>, FrameError> {
        let layout = match self.format {
            PixelFormat::Jpeg => return Ok(None),
            PixelFormat::Rgb24 => Layout::Rgb24,
            PixelFormat::Bgr24 => Layout::Bgr24,
            PixelFormat::Rgba => Layout::Rgba,
            PixelFormat::Gray8 => Layout::Gray8,
            PixelFormat::Yuyv => Layout::Yuyv,
            // Validated in `new`: these offsets lie inside `data` (see `frame_bytes`).
            PixelFormat::Nv12 => Layout::Nv12 {
                uv: self.stride * self.height as usize,
            },
            PixelFormat::I420 => {
                let u = self.stride * self.height as usize;
                Layout::I420 {
                    u,
                    v: u + self.stride / 2 * (self.height as usize / 2),
                }
            }
        };
        if u64::from(self.width) * u64::from(self.height) > limits.max_pixels {
            return Err(FrameError::TooManyPixels {
                format: self.format,
                width: self.width,
                height: self.height,
                max_pixels: limits.max_pixels,
            });
        }
        Ok(Some(Rows {
            data: self.data,
            width: self.width as usize,
            height: self.height as usize,
            stride: self.stride,
            layout,
            yuv: YuvLut::of(self.colorimetry),
        }))
    }
}

/// Checks a frame's geometry (sizes non-zero, even where chroma is subsampled, the stride at
/// least a row) and returns the bytes it occupies.
fn geometry(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: usize,
) -> Result<usize, FrameError> {
    if width == 0 || height == 0 {
        return Err(FrameError::NoPixels {
            format,
            width,
            height,
        });
    }
    let odd = match format {
        PixelFormat::Nv12 | PixelFormat::I420 => width % 2 == 1 || height % 2 == 1,
        PixelFormat::Yuyv => width % 2 == 1,
        _ => false,
    };
    if odd {
        return Err(FrameError::OddSize {
            format,
            width,
            height,
        });
    }
    let overflow = FrameError::SizeOverflow {
        format,
        width,
        height,
        stride,
    };
    let row_bytes = usize::try_from(width)
        .ok()
        .and_then(|w| w.checked_mul(format.bytes_per_pixel()))
        .ok_or_else(|| overflow.clone())?;
    if stride < row_bytes {
        return Err(FrameError::StrideTooSmall {
            format,
            width,
            height,
            stride,
            row_bytes,
        });
    }
    frame_bytes(format, row_bytes, stride, height).ok_or(overflow)
}

/// The tightest stride of a format: `width` × bytes per pixel.
fn packed_stride(format: PixelFormat, width: u32, height: u32) -> Result<usize, FrameError> {
    usize::try_from(width)
        .ok()
        .and_then(|w| w.checked_mul(format.bytes_per_pixel()))
        .ok_or(FrameError::SizeOverflow {
            format,
            width,
            height,
            stride: usize::MAX,
        })
}

/// Bytes a frame occupies: the first plane, plus the chroma planes of NV12 and I420.
fn frame_bytes(format: PixelFormat, row_bytes: usize, stride: usize, height: u32) -> Option<usize> {
    let h = usize::try_from(height).ok()?;
    // A plane's last row needs its pixels, not the padding after them: a crop of a larger
    // buffer (numpy's strided view, a GStreamer region) ends where its last row's pixels end.
    let plane = |rows: usize, stride: usize, row: usize| {
        rows.checked_sub(1)?.checked_mul(stride)?.checked_add(row)
    };
    match format {
        PixelFormat::Nv12 => stride
            .checked_mul(h)?
            .checked_add(plane(h / 2, stride, row_bytes)?),
        PixelFormat::I420 => stride
            .checked_mul(h)?
            .checked_add((stride / 2).checked_mul(h / 2)?)?
            .checked_add(plane(h / 2, stride / 2, row_bytes / 2)?),
        _ => plane(h, stride, row_bytes),
    }
}

#[derive(Debug, Clone, Copy)]
enum Layout {
    Rgb24,
    Bgr24,
    Rgba,
    Gray8,
    Yuyv,
    /// Offset of the UV plane.
    Nv12 {
        uv: usize,
    },
    /// Offsets of the U and V planes (rows of `stride / 2` bytes).
    I420 {
        u: usize,
        v: usize,
    },
}

/// A validated raw frame as the resampler reads it: rows of 8-bit RGB, read in place (RGB24) or
/// converted a span at a time into the caller's buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rows<'a> {
    data: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
    layout: Layout,
    yuv: &'static YuvLut,
}

impl<'a> Rows<'a> {
    pub(super) fn width(&self) -> usize {
        self.width
    }

    pub(super) fn height(&self) -> usize {
        self.height
    }

    /// Pixels `[x0, x1)` of row `y` where the frame already holds them as RGB.
    #[inline]
    pub(super) fn in_place(&self, y: usize, x0: usize, x1: usize) -> Option<&'a [u8]> {
        match self.layout {
            Layout::Rgb24 => Some(&self.data[y * self.stride + 3 * x0..y * self.stride + 3 * x1]),
            _ => None,
        }
    }

    /// Pixels `[x0, x1)` of row `y` as RGB into `out` (3 bytes per pixel).
    pub(super) fn convert(&self, y: usize, x0: usize, x1: usize, out: &mut [u8]) {
        let row = &self.data[y * self.stride..];
        let out = &mut out[..3 * (x1 - x0)];
        let yuv = self.yuv;
        match self.layout {
            Layout::Rgb24 => out.copy_from_slice(&row[3 * x0..3 * x1]),
            Layout::Bgr24 => {
                for (px, s) in out.chunks_exact_mut(3).zip(row[3 * x0..].chunks_exact(3)) {
                    px.copy_from_slice(&[s[2], s[1], s[0]]);
                }
            }
            Layout::Rgba => {
                for (px, s) in out.chunks_exact_mut(3).zip(row[4 * x0..].chunks_exact(4)) {
                    px.copy_from_slice(&s[..3]);
                }
            }
            Layout::Gray8 => {
                for (px, &g) in out.chunks_exact_mut(3).zip(&row[x0..x1]) {
                    px.fill(g);
                }
            }
            Layout::Yuyv => yuv_pairs(yuv, x0, x1, out, |p| {
                let q = &row[4 * p..4 * p + 4];
                (q[0], q[2], q[1], q[3])
            }),
            Layout::Nv12 { uv } => {
                let uv = &self.data[uv + (y / 2) * self.stride..];
                yuv_pairs(yuv, x0, x1, out, |p| {
                    (row[2 * p], row[2 * p + 1], uv[2 * p], uv[2 * p + 1])
                })
            }
            Layout::I420 { u, v } => {
                let chroma_stride = self.stride / 2;
                let u = &self.data[u + (y / 2) * chroma_stride..];
                let v = &self.data[v + (y / 2) * chroma_stride..];
                yuv_pairs(yuv, x0, x1, out, |p| {
                    (row[2 * p], row[2 * p + 1], u[p], v[p])
                })
            }
        }
    }
}

/// Pixels `[x0, x1)` of a YUV row whose pixels come in pairs sharing their chroma:
/// `pair(p)` gives `(Y₂ₚ, Y₂ₚ₊₁, U, V)` of pair `p`. Each pair's chroma products are computed
/// once; a span starting or ending inside a pair writes only its own pixel.
#[inline(always)]
fn yuv_pairs(
    yuv: &YuvLut,
    x0: usize,
    x1: usize,
    out: &mut [u8],
    pair: impl Fn(usize) -> (u8, u8, u8, u8),
) {
    for p in x0 / 2..x1.div_ceil(2) {
        let (y0, y1, u, v) = pair(p);
        let [a, b] = yuv.pair(y0, y1, u, v);
        let x = 2 * p;
        if x >= x0 {
            out[3 * (x - x0)..3 * (x - x0) + 3].copy_from_slice(&a);
        }
        if x + 1 < x1 {
            out[3 * (x + 1 - x0)..3 * (x + 1 - x0) + 3].copy_from_slice(&b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        for (alias, f) in [
            ("gray8", PixelFormat::Gray8),
            ("YUYV", PixelFormat::Yuyv),
            ("i420", PixelFormat::I420),
            ("jpeg", PixelFormat::Jpeg),
        ] {
            assert_eq!(alias.parse::<PixelFormat>().unwrap(), f);
        }
        let err = "p010".parse::<PixelFormat>().unwrap_err().to_string();
        assert!(err.starts_with("unknown pixel format \"p010\""), "{err}");
    }

    #[test]
    fn plane_sizes() {
        assert_eq!(frame_bytes(PixelFormat::Nv12, 640, 640, 480), Some(460_800));
        assert_eq!(frame_bytes(PixelFormat::I420, 640, 640, 480), Some(460_800));
        assert_eq!(
            frame_bytes(PixelFormat::Yuyv, 1280, 1280, 480),
            Some(614_400)
        );
        assert_eq!(frame_bytes(PixelFormat::Rgb24, 3, usize::MAX, 2), None);
        // Strided: the last row ends at its pixels.
        assert_eq!(
            frame_bytes(PixelFormat::Rgb24, 300, 400, 10),
            Some(9 * 400 + 300)
        );
        assert_eq!(
            frame_bytes(PixelFormat::Nv12, 100, 128, 10),
            Some(10 * 128 + 4 * 128 + 100)
        );
        assert_eq!(
            frame_bytes(PixelFormat::I420, 100, 128, 10),
            Some(10 * 128 + 5 * 64 + 4 * 64 + 50)
        );
    }

    #[test]
    fn refusals_name_the_numbers() {
        let buf = [0u8; 1000];
        let huge = usize::MAX / 2;
        let cases = [
            (
                FrameRef::packed(&buf, 640, 480, PixelFormat::Nv12),
                "NV12 frame 640×480 with stride 640 needs 460800 bytes, the buffer holds 1000"
                    .to_string(),
            ),
            (
                FrameRef::packed(&buf, 0, 480, PixelFormat::Rgb24),
                "RGB24 frame 0×480 has no pixels".into(),
            ),
            (
                FrameRef::packed(&buf, 641, 480, PixelFormat::I420),
                "I420 frame 641×480: width and height must be even (a chroma sample covers \
                 2 × 2 pixels)"
                    .into(),
            ),
            (
                FrameRef::packed(&buf, 9, 3, PixelFormat::Yuyv),
                "YUYV frame 9×3: the width must be even (a U V pair covers two pixels)".into(),
            ),
            (
                FrameRef::new(&buf, 10, 3, 29, PixelFormat::Rgb24),
                "RGB24 frame 10×3: stride 29 is smaller than a row (30 bytes)".into(),
            ),
            (
                FrameRef::new(&buf, 10, 1 << 31, huge, PixelFormat::Gray8),
                format!(
                    "GRAY8 frame 10×2147483648 with stride {huge} is larger than this machine \
                     can address"
                ),
            ),
        ];
        for (result, expected) in cases {
            assert_eq!(result.unwrap_err().to_string(), expected);
        }
        assert!(FrameRef::packed(&buf, 10, 3, PixelFormat::Yuyv).is_ok());
    }
}
