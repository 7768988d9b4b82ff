//! YUV → RGB in 20-bit integer fixed point, the way OpenCV's `cvtColor` does it for 4:2:0 and
//! 4:2:2 frames (`COLOR_YUV2RGB_NV12`, `_I420`, `_YUYV`), so that the default conversion is
//! OpenCV's to the bit:
//!
//! ```text
//! y' = max(0, Y − y_offset) · cy
//! R  = (y' + 2¹⁹ + cvr · (V − 128))                  >> 20
//! G  = (y' + 2¹⁹ + cvg · (V − 128) + cug · (U − 128)) >> 20
//! B  = (y' + 2¹⁹ + cub · (U − 128))                  >> 20      each clamped to [0, 255]
//! ```
//!
//! The arithmetic shift floors; adding 2¹⁹ first rounds half up. Chroma is nearest-neighbour
//! (each chroma sample serves its 2 × 2 or 2 × 1 block of lumas), as in OpenCV.

/// The RGB ↔ YCbCr matrix of a YUV frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvMatrix {
    /// ITU-R BT.601 (Kr = 0.299, Kb = 0.114): SD video, JPEG, most USB webcams.
    #[default]
    Bt601,
    /// ITU-R BT.709 (Kr = 0.2126, Kb = 0.0722): HD video, many CSI camera ISPs.
    Bt709,
}

/// The value range of a YUV frame's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvRange {
    /// "TV" range: Y in [16, 235], U and V in [16, 240].
    #[default]
    Limited,
    /// "PC" / JPEG range: Y, U and V in [0, 255].
    Full,
}

/// How a YUV frame's samples map to RGB. The default, BT.601 limited range, is what V4L2
/// webcams deliver and what ffmpeg's `nv12` / `yuyv422` rawvideo and OpenCV assume. RGB, BGR,
/// RGBA, gray and JPEG frames ignore it (a JPEG says its own colour space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Colorimetry {
    pub matrix: YuvMatrix,
    pub range: YuvRange,
}

impl Colorimetry {
    pub const BT601_LIMITED: Colorimetry = Colorimetry::new(YuvMatrix::Bt601, YuvRange::Limited);
    pub const BT601_FULL: Colorimetry = Colorimetry::new(YuvMatrix::Bt601, YuvRange::Full);
    pub const BT709_LIMITED: Colorimetry = Colorimetry::new(YuvMatrix::Bt709, YuvRange::Limited);
    pub const BT709_FULL: Colorimetry = Colorimetry::new(YuvMatrix::Bt709, YuvRange::Full);

    pub const fn new(matrix: YuvMatrix, range: YuvRange) -> Colorimetry {
        Colorimetry { matrix, range }
    }
}

const SHIFT: u32 = 20;
const HALF: i32 = 1 << (SHIFT - 1);

/// Fixed-point coefficients of one colorimetry (× 2²⁰).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct YuvToRgb {
    y_offset: i32,
    cy: i32,
    cvr: i32,
    cvg: i32,
    cug: i32,
    cub: i32,
}

/// BT.601 limited: OpenCV's integers, the textbook coefficients rounded to three decimals
/// (1.164, 1.596, −0.813, −0.391, 2.018) × 2²⁰. The exact derivation from Kr, Kb (as for the
/// other three below) differs in the fourth digit, i.e. by at most one level, and would lose
/// bit-exactness with OpenCV.
const BT601_LIMITED: YuvToRgb = YuvToRgb {
    y_offset: 16,
    cy: 1_220_542,
    cvr: 1_673_527,
    cvg: -852_492,
    cug: -409_993,
    cub: 2_116_026,
};

// The others are derived from the standards' luma weights Kr, Kb (Kg = 1 − Kr − Kb), rounded
// × 2²⁰: cvr = 2(1 − Kr), cub = 2(1 − Kb), cvg = −2(1 − Kr)·Kr/Kg, cug = −2(1 − Kb)·Kb/Kg, and for
// limited range cy = 255/219 and the chroma terms × 255/224 (see `derived_coefficients` below).

/// BT.601 full range: JFIF's R = Y + 1.402 V', G = Y − 0.344136 U' − 0.714136 V', B = Y + 1.772 U'.
const BT601_FULL: YuvToRgb = YuvToRgb {
    y_offset: 0,
    cy: 1 << SHIFT,
    cvr: 1_470_104,
    cvg: -748_826,
    cug: -360_853,
    cub: 1_858_077,
};

/// BT.709 limited range: 1.164384, 1.792741, −0.532909, −0.213249, 2.112402.
const BT709_LIMITED: YuvToRgb = YuvToRgb {
    y_offset: 16,
    cy: 1_220_945,
    cvr: 1_879_825,
    cvg: -558_796,
    cug: -223_607,
    cub: 2_215_014,
};

/// BT.709 full range: 1.5748, −0.468124, −0.187324, 1.8556.
const BT709_FULL: YuvToRgb = YuvToRgb {
    y_offset: 0,
    cy: 1 << SHIFT,
    cvr: 1_651_297,
    cvg: -490_864,
    cug: -196_424,
    cub: 1_945_738,
};

impl YuvToRgb {
    #[cfg(test)]
    pub(super) fn new(c: Colorimetry) -> YuvToRgb {
        match (c.matrix, c.range) {
            (YuvMatrix::Bt601, YuvRange::Limited) => BT601_LIMITED,
            (YuvMatrix::Bt601, YuvRange::Full) => BT601_FULL,
            (YuvMatrix::Bt709, YuvRange::Limited) => BT709_LIMITED,
            (YuvMatrix::Bt709, YuvRange::Full) => BT709_FULL,
        }
    }

    /// One pixel, computed from the coefficients (the reference the tables are checked
    /// against). Every product fits i32: |coefficient| < 2²² and |sample| ≤ 255.
    #[cfg(test)]
    pub(super) fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let luma = (i32::from(y) - self.y_offset).max(0) * self.cy + HALF;
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let px = |chroma: i32| ((luma + chroma) >> SHIFT).clamp(0, 255) as u8;
        [
            px(self.cvr * v),
            px(self.cvg * v + self.cug * u),
            px(self.cub * u),
        ]
    }

    /// Every product of the conversion, per 8-bit sample, so that a pixel costs additions,
    /// shifts and clamps only (the sums are the same integers, so the result is too).
    const fn lut(&self) -> YuvLut {
        let mut t = YuvLut {
            luma: [0; 256],
            r_v: [0; 256],
            g_v: [0; 256],
            g_u: [0; 256],
            b_u: [0; 256],
        };
        let mut i = 0;
        while i < 256 {
            let y = i as i32 - self.y_offset;
            t.luma[i] = if y > 0 { y } else { 0 } * self.cy + HALF;
            let c = i as i32 - 128;
            t.r_v[i] = self.cvr * c;
            t.g_v[i] = self.cvg * c;
            t.g_u[i] = self.cug * c;
            t.b_u[i] = self.cub * c;
            i += 1;
        }
        t
    }
}

/// The conversion of one [`Colorimetry`] as tables (see [`YuvToRgb::lut`]).
pub(super) struct YuvLut {
    luma: [i32; 256],
    r_v: [i32; 256],
    g_v: [i32; 256],
    g_u: [i32; 256],
    b_u: [i32; 256],
}

static LUTS: [YuvLut; 4] = [
    BT601_LIMITED.lut(),
    BT601_FULL.lut(),
    BT709_LIMITED.lut(),
    BT709_FULL.lut(),
];

impl std::fmt::Debug for YuvLut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("YuvLut")
    }
}

impl YuvLut {
    pub(super) fn of(c: Colorimetry) -> &'static YuvLut {
        &LUTS[match (c.matrix, c.range) {
            (YuvMatrix::Bt601, YuvRange::Limited) => 0,
            (YuvMatrix::Bt601, YuvRange::Full) => 1,
            (YuvMatrix::Bt709, YuvRange::Limited) => 2,
            (YuvMatrix::Bt709, YuvRange::Full) => 3,
        }]
    }

    /// Two pixels that share their chroma (a 4:2:2 pair, or a row's half of a 4:2:0 block).
    #[inline(always)]
    pub(super) fn pair(&self, y0: u8, y1: u8, u: u8, v: u8) -> [[u8; 3]; 2] {
        let (u, v) = (usize::from(u), usize::from(v));
        let chroma = [self.r_v[v], self.g_v[v] + self.g_u[u], self.b_u[u]];
        let px = |y: u8| {
            let luma = self.luma[usize::from(y)];
            chroma.map(|c| ((luma + c) >> SHIFT).clamp(0, 255) as u8)
        };
        [px(y0), px(y1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_give_the_coefficients_results() {
        for (k, lut) in [BT601_LIMITED, BT601_FULL, BT709_LIMITED, BT709_FULL]
            .iter()
            .zip(&LUTS)
        {
            for y in 0..=255u8 {
                for u in (0..=255u8).step_by(3) {
                    for v in (0..=255u8).step_by(5) {
                        assert_eq!(lut.pair(y, y, u, v)[0], k.rgb(y, u, v), "{y} {u} {v}");
                    }
                }
            }
        }
    }

    /// The coefficients from the standards' Kr, Kb, as the comments above say.
    fn derived_coefficients(kr: f64, kb: f64, range: YuvRange) -> YuvToRgb {
        let kg = 1.0 - kr - kb;
        let (sy, sc, y_offset) = match range {
            YuvRange::Full => (1.0, 1.0, 0),
            YuvRange::Limited => (255.0 / 219.0, 255.0 / 224.0, 16),
        };
        let fixed = |x: f64| (x * f64::from(1u32 << SHIFT)).round() as i32;
        YuvToRgb {
            y_offset,
            cy: fixed(sy),
            cvr: fixed(2.0 * (1.0 - kr) * sc),
            cvg: fixed(-2.0 * (1.0 - kr) * kr / kg * sc),
            cug: fixed(-2.0 * (1.0 - kb) * kb / kg * sc),
            cub: fixed(2.0 * (1.0 - kb) * sc),
        }
    }

    #[test]
    fn coefficients_follow_the_standards() {
        assert_eq!(
            BT601_FULL,
            derived_coefficients(0.299, 0.114, YuvRange::Full)
        );
        assert_eq!(
            BT709_LIMITED,
            derived_coefficients(0.2126, 0.0722, YuvRange::Limited)
        );
        assert_eq!(
            BT709_FULL,
            derived_coefficients(0.2126, 0.0722, YuvRange::Full)
        );
        let three_decimals = |x: f64| (x * f64::from(1u32 << SHIFT)).round() as i32;
        assert_eq!(
            [
                BT601_LIMITED.cy,
                BT601_LIMITED.cvr,
                BT601_LIMITED.cvg,
                BT601_LIMITED.cug,
                BT601_LIMITED.cub
            ],
            [1.164, 1.596, -0.813, -0.391, 2.018].map(three_decimals)
        );
        // The exact BT.601 limited derivation is within one level of OpenCV's everywhere.
        let exact = derived_coefficients(0.299, 0.114, YuvRange::Limited);
        for y in (0..=255).step_by(5) {
            for u in (0..=255).step_by(5) {
                for v in (0..=255).step_by(5) {
                    let (a, b) = (BT601_LIMITED.rgb(y, u, v), exact.rgb(y, u, v));
                    for c in 0..3 {
                        assert!(a[c].abs_diff(b[c]) <= 1, "{y} {u} {v}: {a:?} {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn full_range_rounds_the_exact_formula() {
        // |fixed − exact| < 0.5 + 2⁻¹² except where the exact value sits on a half.
        let k = YuvToRgb::new(Colorimetry::BT601_FULL);
        for y in 0..=255u8 {
            for u in (0..=255u8).step_by(3) {
                for v in (0..=255u8).step_by(3) {
                    let (yf, uf, vf) = (f64::from(y), f64::from(u) - 128.0, f64::from(v) - 128.0);
                    let exact = [
                        yf + 1.402 * vf,
                        yf - 0.344_136_286 * uf - 0.714_136_286 * vf,
                        yf + 1.772 * uf,
                    ];
                    let got = k.rgb(y, u, v);
                    for c in 0..3 {
                        let e = exact[c].clamp(0.0, 255.0);
                        assert!((f64::from(got[c]) - e).abs() < 0.501, "{y} {u} {v}");
                    }
                }
            }
        }
    }

    #[test]
    fn black_white_and_gray_map_to_themselves() {
        for c in [
            Colorimetry::BT601_LIMITED,
            Colorimetry::BT709_LIMITED,
            Colorimetry::default(),
        ] {
            let k = YuvToRgb::new(c);
            assert_eq!(k.rgb(16, 128, 128), [0, 0, 0]);
            assert_eq!(k.rgb(235, 128, 128), [255, 255, 255]);
            assert_eq!(k.rgb(0, 128, 128), [0, 0, 0]);
        }
        for c in [Colorimetry::BT601_FULL, Colorimetry::BT709_FULL] {
            let k = YuvToRgb::new(c);
            for y in 0..=255 {
                assert_eq!(k.rgb(y, 128, 128), [y; 3]);
            }
        }
    }
}
