//! JPEG decoding with libjpeg-turbo's algorithms, so that pixels equal Pillow's.
//!
//! Pillow decodes JPEG with libjpeg-turbo; `Image.open(p).convert("RGB")` uses the library's
//! defaults (accurate integer IDCT, fancy upsampling, block smoothing, no scaling). The `image`
//! crate's decoder (zune-jpeg) rounds differently on about 1 % of the pixels, which is enough to
//! break the 0.02 bound on the normalised tensor. mozjpeg-sys builds the libjpeg-turbo fork
//! MozJPEG, whose decoder is libjpeg-turbo's: with the same settings it gives Pillow's pixels bit
//! for bit (checked on 517 files: baseline, progressive, arithmetic, every subsampling, grayscale,
//! CMYK/YCCK; x86-64 C, aarch64 and armv7 NEON).
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return. The crate's
//! `unwinding` feature compiles the C code with `-fexceptions`, so `error_exit` unwinds (a Rust
//! panic payload) through the C frames back to the `catch_unwind` in [`decode_into`], and a drop
//! guard destroys the decompressor on every path.

use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

use image::metadata::Orientation;
use mozjpeg_sys::{
    c_int, c_ulong, jpeg_common_struct, jpeg_decompress_struct, jpeg_error_mgr, JWRN_JPEG_EOF,
    J_COLOR_SPACE, J_DCT_METHOD,
};

use super::{check_dimensions, DecodeLimits};

/// The JPEG SOI marker followed by the first byte of the next marker.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decodes a JPEG held in memory to 8-bit RGB as Pillow's `convert("RGB")` does, into `rgb`
/// (resized to width × height × 3; its allocation is reused), and returns the size and the
/// EXIF orientation (not applied). The pixel limit is checked from the frame header, before
/// anything of the image's size is allocated. The error is the reason, one line.
pub(super) fn decode_into(
    bytes: &[u8],
    limits: &DecodeLimits,
    rgb: &mut Vec<u8>,
) -> Result<(u32, u32, Orientation), String> {
    let mut err = ErrorMgr::new();
    match panic::catch_unwind(AssertUnwindSafe(|| {
        decode_inner(bytes, limits, &mut err, rgb)
    })) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<Fatal>() {
            // Pillow raises "image file is truncated" for a file that ends early; libjpeg's memory
            // source instead warns and inserts an EOI, after which it may fail on the missing
            // data. The truncation is the cause worth reporting.
            Ok(_) if err.hit_eof => Err(TRUNCATED.into()),
            Ok(fatal) => Err(format!("cannot decode: corrupt JPEG ({})", fatal.0)),
            // A Rust panic (a bug, not bad input) keeps unwinding.
            Err(other) => panic::resume_unwind(other),
        },
    }
}

const TRUNCATED: &str = "cannot decode: truncated JPEG (the file ends before the image data does)";

/// Panic payload of libjpeg's `error_exit`: its formatted message.
struct Fatal(String);

/// libjpeg's error manager extended with what we need to know afterwards. `repr(C)` with the
/// library's struct first, so that the `err` pointer libjpeg hands back can be cast to it.
#[repr(C)]
struct ErrorMgr {
    base: jpeg_error_mgr,
    /// libjpeg warned that the data ended early (JWRN_JPEG_EOF).
    hit_eof: bool,
}

impl ErrorMgr {
    fn new() -> Self {
        // SAFETY: jpeg_error_mgr is a C struct of integers, nullable function pointers and raw
        // pointers, all valid when zeroed; jpeg_std_error then fills in every field.
        let mut base: jpeg_error_mgr = unsafe { mem::zeroed() };
        // SAFETY: `base` is a valid, exclusive jpeg_error_mgr.
        unsafe { mozjpeg_sys::jpeg_std_error(&mut base) };
        base.error_exit = Some(error_exit);
        base.emit_message = Some(emit_message);
        ErrorMgr {
            base,
            hit_eof: false,
        }
    }
}

#[cold]
extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let mut buf = [0u8; 80]; // JMSG_LENGTH_MAX
                             // SAFETY: libjpeg calls error_exit with the struct whose `err` we set to a live ErrorMgr.
                             // `format_message` writes at most JMSG_LENGTH_MAX bytes, NUL-terminated, into its buffer;
                             // the binding declares it `&[u8; 80]`, so it is called through a pointer-typed signature
                             // (ABI-identical) to hand it a writable buffer.
    let message = unsafe {
        match (*cinfo.err).format_message {
            Some(format) => {
                type Bound = unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]);
                type Format = unsafe extern "C-unwind" fn(*mut jpeg_common_struct, *mut u8);
                let format = mem::transmute::<Bound, Format>(format);
                format(cinfo, buf.as_mut_ptr());
                let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..len]).into_owned()
            }
            None => format!("libjpeg error {}", (*cinfo.err).msg_code),
        }
    };
    panic::resume_unwind(Box::new(Fatal(message)));
}

/// Warnings (level −1) and trace messages are not printed. A warning that the data ended early
/// is remembered: Pillow refuses such files ("image file is truncated"), so do we. Other
/// warnings (corrupt entropy data, extraneous bytes) are accepted, as Pillow accepts them.
extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    // SAFETY: `err` points to the ErrorMgr set up in `decode`, alive for the decompressor's
    // lifetime; `base` is its first field (repr(C)), so the cast is valid.
    let mgr = unsafe { &mut *cinfo.err.cast::<ErrorMgr>() };
    if level < 0 {
        mgr.base.num_warnings += 1;
        if mgr.base.msg_code == JWRN_JPEG_EOF {
            mgr.hit_eof = true;
        }
    }
}

/// Destroys the decompressor when dropped, also while unwinding from `error_exit`.
struct Decompressor(jpeg_decompress_struct);

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: self.0 was initialised by jpeg_CreateDecompress; destroying releases all of
        // libjpeg's memory and is valid in any state, including after a fatal error.
        unsafe { mozjpeg_sys::jpeg_destroy_decompress(&mut self.0) }
    }
}

/// Output colour space of the decoder for a file with `components` channels, and the number of
/// bytes per output pixel (Pillow's mode L, RGB and CMYK).
fn output_space(components: c_int) -> Option<(J_COLOR_SPACE, usize)> {
    match components {
        1 => Some((J_COLOR_SPACE::JCS_GRAYSCALE, 1)),
        3 => Some((J_COLOR_SPACE::JCS_RGB, 3)),
        4 => Some((J_COLOR_SPACE::JCS_CMYK, 4)),
        _ => None,
    }
}

fn decode_inner(
    bytes: &[u8],
    limits: &DecodeLimits,
    err: &mut ErrorMgr,
    rgb: &mut Vec<u8>,
) -> Result<(u32, u32, Orientation), String> {
    // Invariants for the unsafe calls below: the decompressor is created before any other call
    // and destroyed by the guard `d`; libjpeg keeps pointers to `err` and `bytes` only, both
    // outlive `d` and neither moves meanwhile. Any libjpeg call may unwind from `error_exit`,
    // which `decode` catches after `d` is dropped.
    // SAFETY: all-zero is the state jpeg_CreateDecompress expects (pointers null, ints 0).
    let mut d = Decompressor(unsafe { mem::zeroed() });
    let cinfo = &mut d.0;
    cinfo.common.err = ptr::addr_of_mut!(*err).cast::<jpeg_error_mgr>();
    // SAFETY: `cinfo` is zeroed apart from `err`, as jpeg_CreateDecompress expects; the version
    // and size are those of the bindings. If it fails it unwinds before the guard matters, and
    // destroying a half-created decompressor is still valid.
    unsafe {
        mozjpeg_sys::jpeg_CreateDecompress(
            cinfo,
            mozjpeg_sys::JPEG_LIB_VERSION,
            mem::size_of::<jpeg_decompress_struct>(),
        );
        // The input stays borrowed for the whole decode. c_ulong is 32-bit on Windows only.
        mozjpeg_sys::jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
        // Keep APP1 (EXIF) for the orientation.
        mozjpeg_sys::jpeg_save_markers(cinfo, 0xE1, 0xFFFF);
        mozjpeg_sys::jpeg_read_header(cinfo, 1);
    }
    if err.hit_eof {
        return Err(TRUNCATED.into());
    }
    check_dimensions(cinfo.image_width, cinfo.image_height, limits)?;
    let orientation = exif_orientation(cinfo);
    let components = cinfo.num_components;
    let Some((space, channels)) = output_space(components) else {
        return Err(format!(
            "cannot decode: JPEG with {components} colour components is not supported"
        ));
    };
    cinfo.out_color_space = space;
    // libjpeg's defaults, which Pillow uses; set explicitly because the parity depends on them.
    cinfo.dct_method = J_DCT_METHOD::JDCT_ISLOW;
    cinfo.do_fancy_upsampling = 1;
    cinfo.do_block_smoothing = 1;
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    // SAFETY: header read, parameters set: the documented call sequence.
    unsafe { mozjpeg_sys::jpeg_start_decompress(cinfo) };
    let (w, h) = (cinfo.output_width as usize, cinfo.output_height as usize);
    if cinfo.output_components as usize != channels {
        return Err("cannot decode: unexpected JPEG output".into());
    }

    let stride = w * 3;
    // Every byte is written below; growing only zero-fills the new part.
    rgb.resize(stride * h, 0);
    // CMYK rows are decoded here first; gray and RGB straight into `rgb`.
    let mut cmyk = vec![0u8; if channels == 4 { w * 4 * 4 } else { 0 }];
    while (cinfo.output_scanline as usize) < h {
        let y = cinfo.output_scanline as usize;
        let n = (h - y).min(4);
        let mut rows = [ptr::null_mut::<u8>(); 4];
        for (i, row) in rows.iter_mut().enumerate().take(n) {
            *row = if channels == 4 {
                cmyk.as_mut_ptr().wrapping_add(i * w * 4)
            } else {
                rgb.as_mut_ptr().wrapping_add((y + i) * stride)
            };
        }
        // SAFETY: each of the `n` row pointers addresses at least w × channels writable bytes
        // (gray rows use the first third of an RGB row), and libjpeg writes at most `n` rows.
        let got = unsafe { mozjpeg_sys::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), n as u32) };
        let got = got as usize;
        if got == 0 {
            // The memory source never suspends; only a truncated file gets here.
            return Err(TRUNCATED.into());
        }
        for i in 0..got {
            let row = &mut rgb[(y + i) * stride..(y + i + 1) * stride];
            match channels {
                1 => gray_to_rgb_in_place(row),
                4 => cmyk_to_rgb(&cmyk[i * w * 4..(i + 1) * w * 4], row),
                _ => {}
            }
        }
    }
    // SAFETY: all scanlines read. Reads up to EOI, which reveals a file cut after the last scan.
    unsafe { mozjpeg_sys::jpeg_finish_decompress(cinfo) };
    if err.hit_eof {
        return Err(TRUNCATED.into());
    }
    Ok((w as u32, h as u32, orientation))
}

/// The orientation from the first APP1 "Exif" segment, as Pillow's `exif_transpose` reads it.
fn exif_orientation(cinfo: &jpeg_decompress_struct) -> Orientation {
    let mut marker = cinfo.marker_list;
    while !marker.is_null() {
        // SAFETY: libjpeg's saved-marker list: valid nodes, `data` holding `data_length` bytes,
        // alive until the decompressor is destroyed (after this borrow ends).
        let m = unsafe { &*marker };
        let data = if m.data.is_null() {
            &[][..]
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) }
        };
        if m.marker == 0xE1 && data.starts_with(b"Exif\0\0") {
            return Orientation::from_exif_chunk(&data[6..]).unwrap_or(Orientation::NoTransforms);
        }
        marker = m.next;
    }
    Orientation::NoTransforms
}

/// Expands a row whose first third holds gray samples into RGB, right to left.
fn gray_to_rgb_in_place(row: &mut [u8]) {
    let w = row.len() / 3;
    for x in (0..w).rev() {
        let g = row[x];
        row[3 * x..3 * x + 3].fill(g);
    }
}

/// Pillow's CMYK → RGB for JPEG: the samples are taken as Adobe-inverted (raw mode "CMYK;I"),
/// then `cmyk2rgb` of libImaging/Convert.c: R = 255 − K' − C'(255 − K')/255, rounded as
/// Pillow's MULDIV255, where C' = 255 − C etc.
fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    fn muldiv255(a: i32, b: i32) -> i32 {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    }
    for (src, dst) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let nk = i32::from(src[3]); // 255 − (255 − K)
        for (d, &s) in dst.iter_mut().zip(&src[..3]) {
            let c = 255 - i32::from(s);
            *d = (nk - muldiv255(c, nk)).clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert!(is_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!is_jpeg(&[0xFF, 0xD8]));
        assert!(!is_jpeg(b"\x89PNG\r\n\x1a\n"));
    }

    #[test]
    fn gray_expands_in_place() {
        let mut row = [1, 2, 3, 0, 0, 0, 0, 0, 0];
        gray_to_rgb_in_place(&mut row);
        assert_eq!(row, [1, 1, 1, 2, 2, 2, 3, 3, 3]);
    }

    #[test]
    fn cmyk_follows_pillow() {
        // Stored (inverted) CMYK: 255 = no ink. No ink → white; full K → black.
        let mut rgb = [0u8; 6];
        cmyk_to_rgb(&[255, 255, 255, 255, 0, 0, 0, 0], &mut rgb);
        assert_eq!(rgb, [255, 255, 255, 0, 0, 0]);
        // C' = 255 − 55 = 200, K' = 255 − 205 = 50: R = 205 − muldiv255(200, 205) = 205 − 161.
        cmyk_to_rgb(&[55, 255, 255, 205], &mut rgb[..3]);
        assert_eq!(rgb[..3], [44, 205, 205]);
    }
}
