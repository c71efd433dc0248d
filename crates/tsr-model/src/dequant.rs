//! Dequantization of ggml tensor data to `f32`.
//!
//! The block layouts follow ggml (`ggml-common.h`) and the reference dequantizers of the `gguf`
//! Python package (`gguf.quants`), operation for operation, so the results are bit-identical to
//! `gguf.quants.dequantize` (no fused multiply-adds, the same order of the f32 products).

use half::f16;
use rayon::prelude::*;

/// ggml tensor element types (the numeric ids are the on-disk `ggml_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    /// Any other id (i-quants, ternary, fp4, ...): known to exist, not readable here.
    Other(u32),
}

/// Elements per super-block of the k-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// The type for an on-disk id.
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            24 => GgmlType::I8,
            25 => GgmlType::I16,
            26 => GgmlType::I32,
            27 => GgmlType::I64,
            28 => GgmlType::F64,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// ggml's name for the type (`Q4_K`, `BF16`, ...), or `type N` for an unknown id.
    pub fn name(&self) -> String {
        let s = match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::BF16 => "BF16",
            GgmlType::Other(id) => return format!("type {id}"),
        };
        s.to_string()
    }

    /// `(elements per block, bytes per block)`, or `None` for a type whose layout is not known.
    pub fn block_layout(&self) -> Option<(usize, usize)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2K => (QK_K, 84),
            GgmlType::Q3K => (QK_K, 110),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
            GgmlType::Q8K => (QK_K, 292),
            GgmlType::I8 => (1, 1),
            GgmlType::I16 => (1, 2),
            GgmlType::I32 => (1, 4),
            GgmlType::I64 => (1, 8),
            GgmlType::F64 => (1, 8),
            GgmlType::BF16 => (1, 2),
            GgmlType::Other(_) => return None,
        })
    }

    /// Whether [`dequantize`] reads this type.
    pub fn is_supported(&self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q8_0
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
        )
    }

    /// Bytes that `n` elements take, or `None` when the layout is unknown or `n` is not a whole
    /// number of blocks.
    pub fn bytes_for(&self, n: usize) -> Option<usize> {
        let (per_block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(per_block) {
            return None;
        }
        (n / per_block).checked_mul(bytes)
    }
}

/// Why a buffer could not be dequantized (the caller adds the file and tensor names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DequantError {
    /// The type has no dequantizer here.
    Unsupported(GgmlType),
    /// `n` elements are not a whole number of blocks or the byte count does not match.
    Size { expected: Option<usize>, got: usize },
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Blocks handed to one rayon task (keeps task overhead small against the per-block work).
const BLOCKS_PER_TASK: usize = 256;

/// Dequantize `n` elements of type `ty` stored in `data` (exactly `ty.bytes_for(n)` bytes).
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>, DequantError> {
    if !ty.is_supported() {
        return Err(DequantError::Unsupported(ty));
    }
    let expected = ty.bytes_for(n);
    if expected != Some(data.len()) {
        return Err(DequantError::Size {
            expected,
            got: data.len(),
        });
    }
    let (per_block, block_bytes) = ty.block_layout().ok_or(DequantError::Unsupported(ty))?;
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => |b, o| o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, o| o[0] = f16_at(b, 0),
        GgmlType::BF16 => {
            |b, o| o[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q5_1 => block_q5_1,
        GgmlType::Q4K => block_q4_k,
        GgmlType::Q5K => block_q5_k,
        GgmlType::Q6K => block_q6_k,
        _ => return Err(DequantError::Unsupported(ty)),
    };
    let mut out = vec![0f32; n];
    // Elementwise types get bigger tasks so a task still does a fair amount of work.
    let blocks_per_task = if per_block == 1 {
        1 << 16
    } else {
        BLOCKS_PER_TASK
    };
    out.par_chunks_mut(per_block * blocks_per_task)
        .zip(data.par_chunks(block_bytes * blocks_per_task))
        .for_each(|(o, d)| {
            for (ob, db) in o
                .chunks_exact_mut(per_block)
                .zip(d.chunks_exact(block_bytes))
            {
                block_fn(db, ob);
            }
        });
    Ok(out)
}

/// Q8_0: f16 scale `d`, 32 × i8. `x = q * d`.
fn block_q8_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, v) in o.iter_mut().enumerate() {
        *v = f32::from(b[2 + j] as i8) * d;
    }
}

/// Q4_0: f16 `d`, 16 bytes of nibbles; element j < 16 is the low nibble of byte j, element
/// j >= 16 the high nibble of byte j - 16. `x = (q - 8) * d`.
fn block_q4_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        o[j] = d * f32::from((qs[j] & 0x0F) as i8 - 8);
        o[j + 16] = d * f32::from((qs[j] >> 4) as i8 - 8);
    }
}

/// Q4_1: f16 `d`, f16 `m`, 16 bytes of nibbles (as Q4_0). `x = d * q + m`.
fn block_q4_1(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        o[j] = d * f32::from(qs[j] & 0x0F) + m;
        o[j + 16] = d * f32::from(qs[j] >> 4) + m;
    }
}

/// Q5_0: f16 `d`, 4 bytes of high bits (u32 LE, bit j for element j), 16 bytes of nibbles.
/// `x = (q - 16) * d`.
fn block_q5_0(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        o[j] = d * f32::from(lo as i8 - 16);
        o[j + 16] = d * f32::from(hi as i8 - 16);
    }
}

/// Q5_1: f16 `d`, f16 `m`, 4 bytes of high bits, 16 bytes of nibbles. `x = d * q + m`.
fn block_q5_1(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let lo = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
        let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
        o[j] = d * f32::from(lo) + m;
        o[j + 16] = d * f32::from(hi) + m;
    }
}

/// The 6-bit scales and mins of Q4_K / Q5_K, packed in 12 bytes.
fn k_scale_min(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..4 {
        sc[i] = s[i] & 0x3F;
        mn[i] = s[4 + i] & 0x3F;
        sc[4 + i] = (s[8 + i] & 0x0F) | ((s[i] >> 2) & 0x30);
        mn[4 + i] = (s[8 + i] >> 4) | ((s[4 + i] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: f16 `d`, f16 `dmin`, 12 bytes of scales/mins, 128 bytes of nibbles. Eight sub-blocks of
/// 32; sub-block `2c + s` takes nibble `s` of bytes `32c..32c+32`. `x = (d*sc) * q - (dmin*m)`.
fn block_q4_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qs = &b[16..144];
    for sb in 0..8 {
        let (c, shift) = (sb / 2, 4 * (sb % 2));
        let ds = d * f32::from(sc[sb]);
        let dm = dmin * f32::from(mn[sb]);
        for j in 0..32 {
            let q = (qs[32 * c + j] >> shift) & 0x0F;
            o[32 * sb + j] = ds * f32::from(q) - dm;
        }
    }
}

/// Q5_K: as Q4_K plus 32 bytes of high bits (bit `sb` of byte j is the fifth bit of element j of
/// sub-block `sb`).
fn block_q5_k(b: &[u8], o: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let (sc, mn) = k_scale_min(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for sb in 0..8 {
        let (c, shift) = (sb / 2, 4 * (sb % 2));
        let ds = d * f32::from(sc[sb]);
        let dm = dmin * f32::from(mn[sb]);
        for j in 0..32 {
            let q = ((qs[32 * c + j] >> shift) & 0x0F) | (((qh[j] >> sb) & 1) << 4);
            o[32 * sb + j] = ds * f32::from(q) - dm;
        }
    }
}

/// Q6_K: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 i8 scales, f16 `d`. Two halves of
/// 128 elements; in half `h`, element `r` takes nibble `r / 64` of `ql[64h + r % 64]` and bit
/// pair `r / 32` of `qh[32h + r % 32]`. `x = (d * scale[e / 16]) * (q - 32)`.
fn block_q6_k(b: &[u8], o: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for h in 0..2 {
        for r in 0..128 {
            let lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
            let hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
            let q = (lo | (hi << 4)) as i8 - 32;
            let e = 128 * h + r;
            let ds = d * f32::from(scales[e / 16] as i8);
            o[e] = ds * f32::from(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.5 (f16 0x3800), q = -2..30
        let mut b = vec![0x00, 0x38];
        b.extend((0..32).map(|i| (i as i8 - 2) as u8));
        let x = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (i, v) in x.iter().enumerate() {
            assert_eq!(*v, (i as f32 - 2.0) * 0.5);
        }
    }

    #[test]
    fn q4_0_nibble_order() {
        // d = 1; byte j = low nibble j%16, high nibble 15 - j%16
        let mut b = vec![0x00, 0x3C];
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let x = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(x[j], j as f32 - 8.0);
            assert_eq!(x[j + 16], (15 - j) as f32 - 8.0);
        }
    }

    #[test]
    fn size_mismatch_and_unsupported() {
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 33], 32),
            Err(DequantError::Size { .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q8_0, &[0u8; 34], 31),
            Err(DequantError::Size { .. })
        ));
        assert_eq!(
            dequantize(GgmlType::Q2K, &[0u8; 84], 256),
            Err(DequantError::Unsupported(GgmlType::Q2K))
        );
        assert_eq!(GgmlType::from_id(12), GgmlType::Q4K);
        assert_eq!(GgmlType::from_id(99).name(), "type 99");
    }

    #[test]
    fn bf16_and_f16() {
        let x = dequantize(GgmlType::BF16, &[0x80, 0x3F, 0x00, 0xC0], 2).unwrap();
        assert_eq!(x, vec![1.0, -2.0]);
        let x = dequantize(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xB8], 2).unwrap();
        assert_eq!(x, vec![1.0, -0.5]);
    }
}
