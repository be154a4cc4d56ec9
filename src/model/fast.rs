//! The fast encoder (`--precision bf16`): the same BERT forward as [`super::bert`], with every dense
//! layer's multiply done in bfloat16 by the CPU's AVX512-BF16 dot-product instruction (`vdpbf16ps`,
//! sums kept in f32). Embeddings, attention, softmax, layer norms and GELU stay in f32.
//!
//! Why our own kernel: candle's CPU matmul has no path through `vdpbf16ps`, which does twice the
//! multiply-adds per instruction of an f32 FMA; the four dense layers are ~95% of the model's work.
//!
//! Layout and invariants:
//! - Each weight matrix is packed once, at load, into panels of [`PANEL`] output columns: for every
//!   pair of inputs `(2p, 2p+1)` a panel holds 32 `u32`, each two bf16 (low half input `2p`), so one
//!   `vdpbf16ps` adds two inputs' contributions to 16 outputs.
//! - Sequences are packed one after another without padding (no compute is spent on padding and no
//!   mask is needed); attention runs per sequence. Every other step works row by row, so a
//!   sequence's vector never depends on the other sequences of its chunk: chunking and thread count
//!   do not change a vector.
//! - f32 → bf16 rounds to nearest even, as the hardware conversion does.

#![cfg(target_arch = "x86_64")]

use super::bert::{exp_nonpositive, gelu_erf, Activation, Bert};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Output columns per packed panel: two 16-lane registers.
const PANEL: usize = 32;
/// Rows per register tile: 12 rows × 2 registers = 24 accumulators of the 32 registers.
const TILE_ROWS: usize = 12;
/// Rows per cache block: the block's bf16 inputs (≤ 96 × 1,536 × 2 bytes) and one weight panel
/// (≤ 768 pairs × 128 bytes) stay in the 1 MiB L2 while every panel passes over them.
const BLOCK_ROWS: usize = 96;

/// True when this CPU has the instructions the fast encoder needs.
pub fn supported() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Rounds to the nearest bf16, ties to even (NaN is not expected in activations or weights).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    (b + 0x7FFF + ((b >> 16) & 1)) >> 16
}

/// A dense layer `y = x·W + b` with `W` packed into bf16 panels.
struct PackedLinear {
    outputs: usize,
    pairs: usize,
    panels: Vec<u32>,
    /// Padded to whole panels with zeros.
    bias: Vec<f32>,
}

impl PackedLinear {
    /// `weight_t` is `(inputs, outputs)` row-major.
    fn pack(weight_t: &[f32], bias: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(weight_t.len(), inputs * outputs);
        assert_eq!(bias.len(), outputs);
        let pairs = inputs.div_ceil(2);
        let panel_count = outputs.div_ceil(PANEL);
        let mut panels = vec![0u32; panel_count * pairs * PANEL];
        for panel in 0..panel_count {
            for p in 0..pairs {
                for lane in 0..PANEL {
                    let col = panel * PANEL + lane;
                    if col >= outputs {
                        continue;
                    }
                    let lo = bf16_bits(weight_t[2 * p * outputs + col]);
                    let hi = if 2 * p + 1 < inputs {
                        bf16_bits(weight_t[(2 * p + 1) * outputs + col])
                    } else {
                        0
                    };
                    panels[(panel * pairs + p) * PANEL + lane] = lo | (hi << 16);
                }
            }
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(panel_count * PANEL, 0.0);
        Self {
            outputs,
            pairs,
            panels,
            bias: padded_bias,
        }
    }

    /// `out (rows, outputs) = input·W + b`, then `finish` applied to each written row segment.
    /// `input` holds bf16 pairs, `(rows rounded up to TILE_ROWS, pairs)`, padding rows zero.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512-BF16 ([`supported`]).
    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
    unsafe fn forward(&self, input: &[u32], rows: usize, out: &mut [f32], finish: Finish) {
        assert!(input.len() >= rows.next_multiple_of(TILE_ROWS) * self.pairs);
        assert!(out.len() >= rows * self.outputs);
        let panel_count = self.outputs.div_ceil(PANEL);
        for block in (0..rows).step_by(BLOCK_ROWS) {
            let block_end = (block + BLOCK_ROWS).min(rows);
            for panel in 0..panel_count {
                let cols = PANEL.min(self.outputs - panel * PANEL);
                let weights = self.panels[panel * self.pairs * PANEL..].as_ptr();
                for row in (block..block_end).step_by(TILE_ROWS) {
                    let tile_rows = TILE_ROWS.min(block_end - row);
                    let out_at = out.as_mut_ptr().add(row * self.outputs + panel * PANEL);
                    // SAFETY: the input has TILE_ROWS rows from `row` (asserted above), the panel
                    // `pairs` × PANEL values, and the output `tile_rows` rows of `outputs` from `out_at`.
                    tile(
                        input.as_ptr().add(row * self.pairs),
                        self.pairs,
                        weights,
                        self.bias[panel * PANEL..].as_ptr(),
                        out_at,
                        self.outputs,
                        tile_rows,
                        cols,
                    );
                    for r in 0..tile_rows {
                        let segment =
                            std::slice::from_raw_parts_mut(out_at.add(r * self.outputs), cols);
                        finish.apply(segment);
                    }
                }
            }
        }
    }
}

/// What happens to a dense layer's output right after it is computed, while it is in L1.
#[derive(Clone, Copy)]
enum Finish {
    Nothing,
    Activate(Activation),
}

impl Finish {
    #[inline(always)]
    fn apply(self, values: &mut [f32]) {
        match self {
            Finish::Nothing => {}
            Finish::Activate(Activation::GeluErf) => {
                values.iter_mut().for_each(|v| *v = gelu_erf(*v))
            }
            Finish::Activate(Activation::GeluTanh) => values
                .iter_mut()
                .for_each(|v| *v = super::bert::gelu_tanh(*v)),
            Finish::Activate(Activation::Relu) => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// One register tile: `TILE_ROWS` rows (only `rows` stored) × `cols` ≤ 32 columns, over all pairs.
///
/// # Safety
/// AVX-512F and AVX512-BF16 present; `a` readable for TILE_ROWS × `a_stride` u32, `b` for
/// `pairs` × 32 u32, `bias` for 32 f32, `out` writable for `rows` rows of `out_stride` from it.
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    a: *const u32,
    a_stride: usize,
    b: *const u32,
    bias: *const f32,
    out: *mut f32,
    out_stride: usize,
    rows: usize,
    cols: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
    for p in 0..a_stride {
        let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * PANEL) as *const _));
        let w1: __m512bh =
            std::mem::transmute(_mm512_loadu_si512(b.add(p * PANEL + 16) as *const _));
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let x: __m512bh =
                std::mem::transmute(_mm512_set1_epi32(*a.add(r * a_stride + p) as i32));
            acc_row[0] = _mm512_dpbf16_ps(acc_row[0], x, w0);
            acc_row[1] = _mm512_dpbf16_ps(acc_row[1], x, w1);
        }
    }
    let bias0 = _mm512_loadu_ps(bias);
    let bias1 = _mm512_loadu_ps(bias.add(16));
    let (mask0, mask1) = if cols >= 32 {
        (0xFFFFu16, 0xFFFFu16)
    } else if cols >= 16 {
        (0xFFFF, ((1u32 << (cols - 16)) - 1) as u16)
    } else {
        (((1u32 << cols) - 1) as u16, 0)
    };
    for (r, acc_row) in acc.iter().enumerate() {
        if r < rows {
            let o = out.add(r * out_stride);
            _mm512_mask_storeu_ps(o, mask0, _mm512_add_ps(acc_row[0], bias0));
            _mm512_mask_storeu_ps(o.add(16), mask1, _mm512_add_ps(acc_row[1], bias1));
        }
    }
}

/// Writes `rows` rows of `cols` f32 as bf16 pairs, `(rows rounded up to TILE_ROWS, pairs)`, zeroing
/// the padding rows and the odd column's partner.
#[inline(always)]
fn to_bf16_pairs(values: &[f32], rows: usize, cols: usize, out: &mut Vec<u32>) {
    let pairs = cols.div_ceil(2);
    out.clear();
    out.resize(rows.next_multiple_of(TILE_ROWS) * pairs, 0);
    for (src, dst) in values[..rows * cols]
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(pairs))
    {
        let (even, odd) = (src.chunks_exact(2), src.chunks_exact(2).remainder());
        for (d, s) in dst.iter_mut().zip(even) {
            *d = bf16_bits(s[0]) | (bf16_bits(s[1]) << 16);
        }
        if let Some(&last) = odd.first() {
            dst[pairs - 1] = bf16_bits(last);
        }
    }
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    /// Layer norm of each row of `x` in place (mean and variance in f32, as candle computes them).
    #[inline(always)]
    fn apply_rows(&self, x: &mut [f32]) {
        let n = self.weight.len();
        for row in x.chunks_exact_mut(n) {
            let mean = sum16(row) / n as f32;
            let mut sq = [0f32; 16];
            for chunk in row.chunks_exact(16) {
                for (s, &v) in sq.iter_mut().zip(chunk) {
                    *s += (v - mean) * (v - mean);
                }
            }
            let mut var: f32 = sq.iter().sum();
            for &v in row.chunks_exact(16).remainder() {
                var += (v - mean) * (v - mean);
            }
            let inv = 1.0 / (var / n as f32 + self.eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

/// Sum with 16 running lanes, so the compiler vectorises it.
#[inline(always)]
fn sum16(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    for chunk in values.chunks_exact(16) {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + values.chunks_exact(16).remainder().iter().sum::<f32>()
}

struct FastLayer {
    qkv: PackedLinear,
    attn_out: PackedLinear,
    attn_norm: Norm,
    ffn_in: PackedLinear,
    ffn_out: PackedLinear,
    ffn_norm: Norm,
}

/// The bf16 encoder, built from the f32 one's weights.
pub struct FastBert {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_row: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<FastLayer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    intermediate: usize,
    max_positions: usize,
    activation: Activation,
}

/// Buffers reused from one chunk to the next on each thread (no page faults in the hot loop).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    dense: Vec<f32>,
    inner: Vec<f32>,
    pairs: Vec<u32>,
    keys_t: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Largest attention head handled (BERT-base and MiniLM use 64 and 32).
const MAX_HEAD_DIM: usize = 128;

impl FastBert {
    /// Packs the weights of an f32 encoder. Fails only if the tensors cannot be read.
    pub fn from_bert(bert: &Bert) -> candle_core::Result<Self> {
        let parts = bert.parts()?;
        if parts.hidden / parts.heads > MAX_HEAD_DIM {
            candle_core::bail!(
                "the fast encoder handles heads of at most {MAX_HEAD_DIM} dimensions, this model has {}",
                parts.hidden / parts.heads
            );
        }
        let norm = |(weight, bias, eps): (Vec<f32>, Vec<f32>, f32)| Norm { weight, bias, eps };
        let hidden = parts.hidden;
        let intermediate = parts.intermediate;
        let layers = parts
            .layers
            .into_iter()
            .map(|l| FastLayer {
                qkv: PackedLinear::pack(&l.qkv.0, &l.qkv.1, hidden, 3 * hidden),
                attn_out: PackedLinear::pack(&l.attn_out.0, &l.attn_out.1, hidden, hidden),
                attn_norm: norm(l.attn_norm),
                ffn_in: PackedLinear::pack(&l.ffn_in.0, &l.ffn_in.1, hidden, intermediate),
                ffn_out: PackedLinear::pack(&l.ffn_out.0, &l.ffn_out.1, intermediate, hidden),
                ffn_norm: norm(l.ffn_norm),
            })
            .collect();
        Ok(Self {
            word_embeddings: parts.word_embeddings,
            position_embeddings: parts.position_embeddings,
            token_type_row: parts.token_type_row,
            embed_norm: norm(parts.embed_norm),
            layers,
            heads: parts.heads,
            head_dim: hidden / parts.heads,
            hidden,
            intermediate,
            max_positions: parts.max_positions,
            activation: parts.activation,
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder on sequences packed one after another (`lengths` sums to `ids.len()`, each
    /// length ≥ 1 and ≤ the model's positions) and returns `pool` of each sequence's last hidden
    /// states, `(length, hidden)` row-major. The states stay in this thread's buffers: no copy.
    pub fn forward_pooled<T>(
        &self,
        ids: &[u32],
        lengths: &[usize],
        mut pool: impl FnMut(&[f32]) -> T,
    ) -> Vec<T> {
        assert!(supported(), "the fast encoder needs AVX512-BF16");
        assert_eq!(lengths.iter().sum::<usize>(), ids.len());
        assert!(lengths.iter().all(|&l| l >= 1 && l <= self.max_positions));
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            // SAFETY: the CPU supports AVX-512F, AVX512-BF16 and FMA (asserted above).
            unsafe { self.forward_avx512(ids, lengths, scratch) };
            let mut at = 0;
            lengths
                .iter()
                .map(|&len| {
                    let states = &scratch.x[at * self.hidden..(at + len) * self.hidden];
                    at += len;
                    pool(states)
                })
                .collect()
        })
    }

    #[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
    unsafe fn forward_avx512(&self, ids: &[u32], lengths: &[usize], s: &mut Scratch) {
        let h = self.hidden;
        let rows = ids.len();
        let vocab = self.word_embeddings.len() / h;
        s.x.clear();
        s.x.resize(rows * h, 0.0);
        let mut t = 0;
        for &len in lengths {
            for pos in 0..len {
                let id = (ids[t] as usize).min(vocab - 1);
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let position = &self.position_embeddings[pos * h..(pos + 1) * h];
                let row = &mut s.x[t * h..(t + 1) * h];
                for (((o, &w), &p), &ty) in row
                    .iter_mut()
                    .zip(word)
                    .zip(position)
                    .zip(&self.token_type_row)
                {
                    *o = w + p + ty;
                }
                t += 1;
            }
        }
        self.embed_norm.apply_rows(&mut s.x);
        s.qkv.resize(rows * 3 * h, 0.0);
        s.context.resize(rows * h, 0.0);
        s.dense.resize(rows * h, 0.0);
        s.inner.resize(rows * self.intermediate, 0.0);
        for layer in &self.layers {
            to_bf16_pairs(&s.x, rows, h, &mut s.pairs);
            layer
                .qkv
                .forward(&s.pairs, rows, &mut s.qkv, Finish::Nothing);
            let mut start = 0;
            for &len in lengths {
                self.attend(start, len, s);
                start += len;
            }
            to_bf16_pairs(&s.context, rows, h, &mut s.pairs);
            layer
                .attn_out
                .forward(&s.pairs, rows, &mut s.dense, Finish::Nothing);
            add_into(&mut s.x, &s.dense);
            layer.attn_norm.apply_rows(&mut s.x);
            to_bf16_pairs(&s.x, rows, h, &mut s.pairs);
            layer.ffn_in.forward(
                &s.pairs,
                rows,
                &mut s.inner,
                Finish::Activate(self.activation),
            );
            to_bf16_pairs(&s.inner, rows, self.intermediate, &mut s.pairs);
            layer
                .ffn_out
                .forward(&s.pairs, rows, &mut s.dense, Finish::Nothing);
            add_into(&mut s.x, &s.dense);
            layer.ffn_norm.apply_rows(&mut s.x);
        }
    }

    /// Self-attention of one sequence (rows `start..start + len` of `s.qkv`), every head, into
    /// the same rows of `s.context`. f32 throughout.
    #[inline(always)]
    fn attend(&self, start: usize, len: usize, s: &mut Scratch) {
        match self.head_dim {
            // The head width as a constant keeps a row's sums in registers.
            32 => self.attend_heads::<32>(start, len, s),
            64 => self.attend_heads::<64>(start, len, s),
            _ => self.attend_heads::<0>(start, len, s),
        }
    }

    /// [`Self::attend`] for heads of `D` dimensions (`D` = 0: any width, slower).
    #[inline(always)]
    fn attend_heads<const D: usize>(&self, start: usize, len: usize, s: &mut Scratch) {
        let h = self.hidden;
        let d = if D == 0 { self.head_dim } else { D };
        let stride = 3 * h;
        let keys_padded = len.next_multiple_of(16);
        s.keys_t.clear();
        s.keys_t.resize(h * keys_padded, 0.0);
        s.scores.clear();
        s.scores.resize(QUERY_ROWS * keys_padded, 0.0);
        let qkv = &s.qkv[start * stride..(start + len) * stride];
        // Every head's keys transposed, (hidden, keys_padded), so 16 keys' scores come from one FMA.
        for (c, column) in s.keys_t.chunks_exact_mut(keys_padded).enumerate() {
            for (slot, row) in column.iter_mut().zip(qkv.chunks_exact(stride)) {
                *slot = row[h + c];
            }
        }
        let context = &mut s.context[start * h..(start + len) * h];
        for head in 0..self.heads {
            let rows = AttentionRows {
                qkv,
                stride,
                hidden: h,
                q_at: head * d,
                v_at: 2 * h + head * d,
                keys_t: &s.keys_t[head * d * keys_padded..(head + 1) * d * keys_padded],
                keys_padded,
                len,
                head_dim: d,
                scale: 1.0 / (d as f32).sqrt(),
            };
            let mut i = 0;
            while i + QUERY_ROWS <= len {
                rows.attend::<D, QUERY_ROWS>(i, &mut s.scores, context);
                i += QUERY_ROWS;
            }
            while i < len {
                rows.attend::<D, 1>(i, &mut s.scores, context);
                i += 1;
            }
        }
    }
}

/// Query rows whose attention is computed together: each key and value loaded serves four rows.
const QUERY_ROWS: usize = 4;

/// One head of one sequence: where its queries, keys and values are.
struct AttentionRows<'a> {
    qkv: &'a [f32],
    stride: usize,
    hidden: usize,
    q_at: usize,
    v_at: usize,
    keys_t: &'a [f32],
    keys_padded: usize,
    len: usize,
    head_dim: usize,
    scale: f32,
}

impl AttentionRows<'_> {
    /// Attention of query rows `first..first + R` into their rows of `context`.
    #[inline(always)]
    fn attend<const D: usize, const R: usize>(
        &self,
        first: usize,
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        let (d, kp, len) = (self.head_dim, self.keys_padded, self.len);
        let queries: [&[f32]; R] =
            std::array::from_fn(|r| &self.qkv[(first + r) * self.stride + self.q_at..][..d]);
        let mut block = 0;
        while block < kp {
            if kp - block >= 64 {
                self.score_block::<R, 64>(&queries, block, scores);
                block += 64;
            } else {
                self.score_block::<R, 16>(&queries, block, scores);
                block += 16;
            }
        }
        let mut inv_sums = [0f32; R];
        for (r, inv_sum) in inv_sums.iter_mut().enumerate() {
            let row = &mut scores[r * kp..r * kp + len];
            let max = max16(row);
            for v in row.iter_mut() {
                *v = exp_nonpositive((*v - max) * self.scale);
            }
            *inv_sum = 1.0 / sum16(row);
        }
        let mut acc = [[0f32; MAX_HEAD_DIM]; R];
        for j in 0..len {
            let v = &self.qkv[j * self.stride + self.v_at..][..d];
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let p = scores[r * kp + j];
                for (a, &vc) in acc_row[..d].iter_mut().zip(v) {
                    *a = p.mul_add(vc, *a);
                }
            }
        }
        for (r, acc_row) in acc.iter().enumerate() {
            let out = &mut context[(first + r) * self.hidden + self.q_at..][..d];
            for (o, &a) in out.iter_mut().zip(&acc_row[..d]) {
                *o = a * inv_sums[r];
            }
        }
    }

    /// Raw scores of R query rows against keys `block..block + W`.
    #[inline(always)]
    fn score_block<const R: usize, const W: usize>(
        &self,
        queries: &[&[f32]; R],
        block: usize,
        scores: &mut [f32],
    ) {
        let kp = self.keys_padded;
        let mut acc = [[0f32; W]; R];
        for c in 0..self.head_dim {
            let keys = &self.keys_t[c * kp + block..][..W];
            for (acc_row, q) in acc.iter_mut().zip(queries) {
                let qc = q[c];
                for (a, &k) in acc_row.iter_mut().zip(keys) {
                    *a = qc.mul_add(k, *a);
                }
            }
        }
        for (r, acc_row) in acc.iter().enumerate() {
            scores[r * kp + block..][..W].copy_from_slice(acc_row);
        }
    }
}

/// Largest value, with 16 running lanes so the compiler vectorises it.
#[inline(always)]
fn max16(values: &[f32]) -> f32 {
    let mut lanes = [f32::MIN; 16];
    for chunk in values.chunks_exact(16) {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = if v > *l { v } else { *l };
        }
    }
    let mut max = f32::MIN;
    for &v in lanes.iter().chain(values.chunks_exact(16).remainder()) {
        max = if v > max { v } else { max };
    }
    max
}

#[inline(always)]
fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(bf16_bits(-2.5), 0xC020);
    }

    #[test]
    fn packed_multiply_matches_a_plain_one_on_bf16_values() {
        // The machines this is built for have AVX512-BF16; elsewhere this fails rather than skips.
        assert!(
            supported(),
            "this CPU has no AVX512-BF16: the fast encoder cannot run here"
        );
        // Odd inputs and outputs not a multiple of the panel exercise every edge.
        let (rows, inputs, outputs) = (29, 37, 45);
        let value = |i: usize| ((i * 7919 % 113) as f32 - 56.0) / 16.0; // exact in bf16
        let x: Vec<f32> = (0..rows * inputs).map(|i| value(i * 3 + 1)).collect();
        let w: Vec<f32> = (0..inputs * outputs).map(value).collect();
        let bias: Vec<f32> = (0..outputs).map(|i| i as f32).collect();
        let layer = PackedLinear::pack(&w, &bias, inputs, outputs);
        let mut pairs = Vec::new();
        to_bf16_pairs(&x, rows, inputs, &mut pairs);
        let mut out = vec![f32::NAN; rows * outputs + 5];
        // SAFETY: supported() checked above.
        unsafe { layer.forward(&pairs, rows, &mut out, Finish::Nothing) };
        for r in 0..rows {
            for c in 0..outputs {
                let want: f32 = (0..inputs)
                    .map(|k| x[r * inputs + k] * w[k * outputs + c])
                    .sum::<f32>()
                    + bias[c];
                assert_eq!(out[r * outputs + c], want, "row {r} col {c}");
            }
        }
        assert!(
            out[rows * outputs..].iter().all(|v| v.is_nan()),
            "wrote past the output"
        );
    }
}
