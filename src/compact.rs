//! Compact copies of the paragraph vectors, scanned before the exact vectors to find candidates.
//!
//! Two layouts, chosen per store (`likewise index --compact int8|binary`):
//! - **int8**: each vector scaled by its largest component to −127..127 and stored offset by 128
//!   as unsigned bytes (a quarter of the f32 bytes), with its scale as one f32. A query is scored
//!   against every row in integers (AVX-512 VNNI `vpdpbusd` when present), the best few hundred
//!   are rescored with the f32 vectors.
//! - **binary**: the int8 copy plus one sign bit per component (1/32 of the f32 bytes). The query,
//!   quantised to 4 bits, is scored against every row's bits with popcounts (its bit planes ANDed
//!   with the row's bits), the best few percent go on to the int8 stage, and its best to the f32 one.
//!
//! The compact scores only choose candidates; every score returned is the exact f32 one. The
//! candidate counts are set so the exact top 10 survive on random vectors (the hard case: no
//! structure, the best barely beat the rest) at a million rows; `likewise bench search` measures
//! the recall. The kernels have portable versions that compute the same integers.

use serde::{Deserialize, Serialize};

/// Which compact copy a store keeps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Compact {
    /// One byte per component.
    Int8,
    /// One bit per component, plus the int8 copy for the second stage.
    Binary,
}

impl Compact {
    pub fn name(self) -> &'static str {
        match self {
            Compact::Int8 => "int8",
            Compact::Binary => "binary",
        }
    }
    /// Whether this layout keeps sign bits.
    pub fn has_bits(self) -> bool {
        self == Compact::Binary
    }
}

impl std::fmt::Display for Compact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// 64-bit words of sign bits per row.
pub fn words_per_row(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// The compact copies of a segment's paragraph vectors, in memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompactData {
    /// `n × dim` bytes: round(x / scale) + 128.
    pub int8: Vec<u8>,
    /// One per row: the row's largest |component| / 127.
    pub scales: Vec<f32>,
    /// `n × words_per_row(dim)` words, bit `j` set when component `j` is positive; empty for int8.
    pub bits: Vec<u64>,
}

/// Quantises `vectors` (`n × dim`, row-major).
pub fn quantize(vectors: &[f32], dim: usize, kind: Compact) -> CompactData {
    use rayon::prelude::*;
    let n = vectors.len() / dim;
    let words = words_per_row(dim);
    let mut data = CompactData {
        int8: vec![0u8; n * dim],
        scales: vec![0f32; n],
        bits: if kind.has_bits() {
            vec![0u64; n * words]
        } else {
            Vec::new()
        },
    };
    data.int8
        .par_chunks_mut(dim)
        .zip(data.scales.par_iter_mut())
        .zip(vectors.par_chunks_exact(dim))
        .for_each(|((bytes, scale), row)| {
            let (codes, s) = quantize_row(row);
            *scale = s;
            for (b, c) in bytes.iter_mut().zip(codes) {
                *b = (c as i16 + 128) as u8;
            }
        });
    if kind.has_bits() {
        data.bits
            .par_chunks_mut(words)
            .zip(vectors.par_chunks_exact(dim))
            .for_each(|(w, row)| sign_bits(row, w));
    }
    data
}

/// A row as signed bytes and the scale that maps them back (`x ≈ scale × code`).
fn quantize_row(row: &[f32]) -> (Vec<i8>, f32) {
    let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; row.len()], 0.0);
    }
    let scale = max / 127.0;
    let codes = row
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (codes, scale)
}

fn sign_bits(row: &[f32], words: &mut [u64]) {
    words.fill(0);
    for (j, &x) in row.iter().enumerate() {
        if x > 0.0 {
            words[j / 64] |= 1 << (j % 64);
        }
    }
}

/// A query prepared once for both compact kernels.
#[derive(Debug, Clone)]
pub struct CompactQuery {
    dim: usize,
    /// The query as signed bytes (its scale is common to all rows, so it is dropped).
    codes: Vec<i8>,
    /// 128 × Σ codes: what the +128 offset of stored bytes adds to every integer dot product.
    offset: i32,
    /// Bit planes of the query quantised to 4 bits (0..15): `planes[p]` holds bit `p` of every
    /// component, laid out like a row's sign bits.
    planes: [Vec<u64>; 4],
    /// The planes as the eight-row kernel meets them: for register j of a group of eight rows
    /// (its words 8j..8j+7), plane p's words (8j + lane) mod words_per_row.
    grouped: Vec<[[u64; 8]; 4]>,
    /// Which kernels this CPU runs, detected once per query rather than once per row.
    vnni: bool,
    popcnt512: bool,
}

impl CompactQuery {
    pub fn new(query: &[f32]) -> CompactQuery {
        let dim = query.len();
        let (codes, _) = quantize_row(query);
        let offset = 128 * codes.iter().map(|&c| c as i32).sum::<i32>();
        let words = words_per_row(dim);
        let max = query.iter().fold(0f32, |m, x| m.max(x.abs()));
        // Symmetric 4-bit levels: q ≈ step × (u − 7.5), u in 0..=15.
        let step = if max > 0.0 && max.is_finite() {
            max / 7.5
        } else {
            1.0
        };
        let mut planes: [Vec<u64>; 4] = std::array::from_fn(|_| vec![0u64; words]);
        for (j, &x) in query.iter().enumerate() {
            let u = (x / step + 7.5).round().clamp(0.0, 15.0) as u32;
            for (p, plane) in planes.iter_mut().enumerate() {
                if u >> p & 1 == 1 {
                    plane[j / 64] |= 1 << (j % 64);
                }
            }
        }
        let grouped = (0..words)
            .map(|j| {
                std::array::from_fn(|p| std::array::from_fn(|l| planes[p][(8 * j + l) % words]))
            })
            .collect();
        CompactQuery {
            dim,
            codes,
            offset,
            planes,
            grouped,
            vnni: has_vnni(),
            popcnt512: has_popcnt512(),
        }
    }

    /// Σ codes·(stored byte) − offset for one row: proportional to the int8 dot product.
    pub fn int8_dot(&self, row: &[u8]) -> i32 {
        debug_assert_eq!(row.len(), self.dim);
        #[cfg(target_arch = "x86_64")]
        if self.dim.is_multiple_of(64) && self.vnni {
            // SAFETY: AVX-512 F/BW/VNNI are present (checked) and the row is `dim` bytes, a
            // multiple of 64.
            return unsafe { int8_dot_vnni(row, &self.codes) } - self.offset;
        }
        row.iter()
            .zip(&self.codes)
            .map(|(&b, &c)| b as i32 * c as i32)
            .sum::<i32>()
            - self.offset
    }

    /// The binary stage's score of each row of `bits` (`words_per_row(dim)` words per row) into
    /// `out`: 2 × Σ(levels under set bits) − 15 × (set bits), which grows with Σ q·sign(x).
    pub fn binary_scores(&self, bits: &[u64], out: &mut [i32]) {
        let words = words_per_row(self.dim);
        debug_assert_eq!(bits.len(), words * out.len());
        #[cfg(target_arch = "x86_64")]
        if words <= 8 && self.popcnt512 {
            // SAFETY: AVX-512 F/VPOPCNTDQ are present (checked); every row is `words` ≤ 8 words.
            unsafe { binary_scores_avx512(bits, words, &self.planes, &self.grouped, out) };
            return;
        }
        for (o, row) in out.iter_mut().zip(bits.chunks_exact(words)) {
            *o = binary_score(row, &self.planes);
        }
    }
}

fn binary_score(row: &[u64], planes: &[Vec<u64>; 4]) -> i32 {
    let mut levels = 0i32;
    let mut set = 0i32;
    for (w, &b) in row.iter().enumerate() {
        set += b.count_ones() as i32;
        for (p, plane) in planes.iter().enumerate() {
            levels += ((b & plane[w]).count_ones() as i32) << p;
        }
    }
    2 * levels - 15 * set
}

#[cfg(not(target_arch = "x86_64"))]
fn has_vnni() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_popcnt512() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(target_arch = "x86_64")]
fn has_popcnt512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn int8_dot_vnni(row: &[u8], codes: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 2];
    let mut i = 0;
    while i < row.len() {
        let slot = (i / 64) % 2;
        acc[slot] = _mm512_dpbusd_epi32(
            acc[slot],
            _mm512_loadu_si512(row.as_ptr().add(i) as *const _),
            _mm512_loadu_si512(codes.as_ptr().add(i) as *const _),
        );
        i += 64;
    }
    _mm512_reduce_add_epi32(_mm512_add_epi32(acc[0], acc[1]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
unsafe fn binary_scores_avx512(
    bits: &[u64],
    words: usize,
    planes: &[Vec<u64>; 4],
    grouped: &[[[u64; 8]; 4]],
    out: &mut [i32],
) {
    use std::arch::x86_64::*;
    // Per stored word: 2 × Σ_p 2^p · popcount(word & plane_p) − 15 × popcount(word); a row's
    // score is the sum over its words.
    #[inline(always)]
    unsafe fn per_word(b: __m512i, p: &[__m512i; 4]) -> __m512i {
        let mut levels = _mm512_popcnt_epi64(_mm512_and_si512(b, p[3]));
        for plane in [p[2], p[1], p[0]] {
            levels = _mm512_add_epi64(
                _mm512_slli_epi64::<1>(levels),
                _mm512_popcnt_epi64(_mm512_and_si512(b, plane)),
            );
        }
        let set = _mm512_popcnt_epi64(b);
        let fifteen_set = _mm512_sub_epi64(_mm512_slli_epi64::<4>(set), set);
        _mm512_sub_epi64(_mm512_slli_epi64::<1>(levels), fifteen_set)
    }
    // Eight rows are `words` whole registers of eight words (see `CompactQuery::grouped`).
    let rows = out.len();
    let mut sums = [0i64; 64];
    let mut r = 0;
    if rows >= 8 {
        let group: [[__m512i; 4]; 8] = std::array::from_fn(|j| {
            std::array::from_fn(|p| {
                grouped.get(j).map_or(_mm512_setzero_si512(), |g| {
                    _mm512_loadu_si512(g[p].as_ptr() as *const _)
                })
            })
        });
        while r + 8 <= rows {
            let base = bits.as_ptr().add(r * words);
            for (j, p) in group.iter().take(words).enumerate() {
                let b = _mm512_loadu_si512(base.add(8 * j) as *const _);
                _mm512_storeu_si512(sums.as_mut_ptr().add(8 * j) as *mut _, per_word(b, p));
            }
            for (i, o) in out[r..r + 8].iter_mut().enumerate() {
                *o = sums[i * words..(i + 1) * words].iter().sum::<i64>() as i32;
            }
            r += 8;
        }
    }
    // The last rows one at a time, the unused lanes masked off.
    let mask: __mmask8 = ((1u16 << words) - 1) as u8;
    let single: [__m512i; 4] =
        std::array::from_fn(|i| _mm512_maskz_loadu_epi64(mask, planes[i].as_ptr() as *const _));
    for (i, o) in out[r..].iter_mut().enumerate() {
        let b = _mm512_maskz_loadu_epi64(mask, bits.as_ptr().add((r + i) * words) as *const _);
        *o = _mm512_reduce_add_epi64(per_word(b, &single)) as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        for row in v.chunks_exact_mut(dim) {
            crate::model::bert::normalize_in_place(row);
        }
        v
    }

    #[test]
    fn int8_rows_round_trip_within_half_a_step() {
        let dim = 384;
        let rows = unit_rows(5, dim, 3);
        let data = quantize(&rows, dim, Compact::Int8);
        assert!(data.bits.is_empty());
        for r in 0..5 {
            let scale = data.scales[r];
            for j in 0..dim {
                let back = (data.int8[r * dim + j] as f32 - 128.0) * scale;
                assert!((back - rows[r * dim + j]).abs() <= scale * 0.5 + 1e-7);
            }
        }
    }

    #[test]
    fn the_kernels_match_the_plain_integer_sums() {
        for dim in [384, 100] {
            let rows = unit_rows(33, dim, 5);
            let query = unit_rows(1, dim, 9);
            let data = quantize(&rows, dim, Compact::Binary);
            let q = CompactQuery::new(&query);
            let words = words_per_row(dim);
            let mut fast = vec![0i32; 33];
            q.binary_scores(&data.bits, &mut fast);
            for (r, &fast) in fast.iter().enumerate() {
                let row = &data.int8[r * dim..(r + 1) * dim];
                let plain: i32 = row
                    .iter()
                    .zip(&q.codes)
                    .map(|(&b, &c)| (b as i32 - 128) * c as i32)
                    .sum();
                assert_eq!(q.int8_dot(row), plain, "int8 row {r} dim {dim}");
                let bits = &data.bits[r * words..(r + 1) * words];
                assert_eq!(
                    fast,
                    binary_score(bits, &q.planes),
                    "bits row {r} dim {dim}"
                );
            }
        }
    }

    #[test]
    fn compact_scores_rank_like_the_exact_ones() {
        // The row nearest the query by f32 is near the top of both compact rankings.
        let dim = 384;
        let mut rows = unit_rows(500, dim, 11);
        let query = unit_rows(1, dim, 13);
        // Row 123 is the query plus a little noise: the clear best.
        for j in 0..dim {
            rows[123 * dim + j] = query[j] + 0.3 * rows[123 * dim + j];
        }
        crate::model::bert::normalize_in_place(&mut rows[123 * dim..124 * dim]);
        let data = quantize(&rows, dim, Compact::Binary);
        let q = CompactQuery::new(&query);
        let mut bin = vec![0i32; 500];
        q.binary_scores(&data.bits, &mut bin);
        let best_bin = (0..500).max_by_key(|&r| bin[r]).unwrap();
        let best_int8 = (0..500)
            .max_by(|&a, &b| {
                let s = |r: usize| {
                    data.scales[r] * q.int8_dot(&data.int8[r * dim..(r + 1) * dim]) as f32
                };
                s(a).total_cmp(&s(b))
            })
            .unwrap();
        assert_eq!((best_bin, best_int8), (123, 123));
    }
}
