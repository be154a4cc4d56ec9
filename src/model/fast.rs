//! The fast encoder: the same BERT forward as [`super::bert`] (and MPNet's, whose relative-position
//! bias is added to the attention scores) in plain f32 slices, with every dense
//! layer's multiply done by one of [`super::kernels`] (f32 on 512- or 256-bit registers, bf16 through
//! AVX512-BF16, AMX or widened to f32 on AVX-512F or AVX2). Embeddings, softmax, layer norms and GELU
//! stay in f32; attention too, but for bf16 precision on a CPU with AVX512-BF16, whose scores take
//! bf16 queries and keys like the dense layers' inputs (f32 sums).
//!
//! Why our own forward: candle allocates and walks a tensor per operation, pads every sequence of a
//! batch to the longest, and its CPU matmul has no bf16 dot-product path; the four dense
//! layers are ~95% of the model's work.
//!
//! Layout and invariants:
//! - Sequences are packed one after another without padding (no compute is spent on padding and no
//!   mask is needed); attention runs per sequence. Every other step works row by row, so a
//!   sequence's vector never depends on the other sequences of its chunk: chunking and thread count
//!   do not change a vector.
//! - The whole forward is compiled twice, for AVX-512 and for AVX2 only, and runs the copy of the
//!   instruction set its kernel was chosen for: `--kernels avx2` exercises on any CPU exactly the
//!   code an AVX2-only CPU runs.

#![cfg(target_arch = "x86_64")]

use super::bert::{BertParts, DenseParts};
use super::helper::Lease;
use super::kernels::{self, Dense, Finish, Isa, Kernel, KernelRequest, Stage};
use super::Precision;
use std::cell::RefCell;

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
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: Norm,
}

/// The fast encoder, built from the candle one's weights.
pub struct FastBert {
    kernel: Kernel,
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
    activation: super::bert::Activation,
    /// MPNet's attention bias by relative position, per head: `heads` rows of
    /// `2 · max_positions − 1` values, the bias of key − query = k at `max_positions − 1 + k`.
    relative_bias: Option<Vec<f32>>,
    /// Whether attention's scores are taken in bf16 (`vdpbf16ps`) too: with a bf16 kernel on a
    /// CPU with AVX512-BF16, heads a multiple of 32 wide.
    attention_bf16: bool,
}

/// Buffers reused from one chunk to the next on each thread (no page faults in the hot loop).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    dense: Vec<f32>,
    inner: Vec<f32>,
    /// The feed-forward's inner rows as bf16 pairs, where its first layer stores them so.
    inner_pairs: Vec<u32>,
    stage: Stage,
    keys_t: Vec<f32>,
    scores: Vec<f32>,
    /// The bf16 attention's inputs (see [`Paired`]).
    query_pairs: Vec<u32>,
    key_pairs: Vec<u32>,
    /// Sixteen keys' pairs on their way into `key_pairs`.
    key_block: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Largest attention head handled (BERT-base and MiniLM use 64 and 32).
const MAX_HEAD_DIM: usize = 128;

impl FastBert {
    /// The kernel that runs `precision` here under `request`, or why none can.
    pub fn kernel_for(
        precision: Precision,
        request: KernelRequest,
        inputs: usize,
        outputs: usize,
    ) -> Result<Kernel, String> {
        let family = match precision {
            Precision::F32 => kernels::Family::F32,
            Precision::Bf16 => kernels::Family::Bf16,
        };
        if precision != Precision::F32 && request == KernelRequest::Candle {
            return Err(format!(
                "--precision {precision} runs on our own kernels only, and the kernels are set to {}: use auto, avx512 or avx2",
                request.as_str()
            ));
        }
        kernels::choose(family, request, inputs, outputs).ok_or_else(|| {
            let needs = match (request, precision) {
                (KernelRequest::Avx512, _) => "AVX-512 (F, BW and VL)",
                _ => "AVX2 and FMA",
            };
            format!(
                "--precision {precision} with the kernels set to {} needs a CPU with {needs}, which this one lacks; {}",
                request.as_str(),
                if request == KernelRequest::Avx512 {
                    "leave the kernels to auto, or set them to avx2"
                } else {
                    "this build runs on x86-64 CPUs with AVX2 only"
                }
            )
        })
    }

    /// Packs an encoder's weights (BERT's, or MPNet's with its relative attention bias) for
    /// `kernel`. Fails only if the model's shape is outside what the fast forward handles.
    pub(crate) fn from_parts(parts: BertParts, kernel: Kernel) -> candle_core::Result<Self> {
        if parts.hidden / parts.heads > MAX_HEAD_DIM {
            candle_core::bail!(
                "the fast encoder handles heads of at most {MAX_HEAD_DIM} dimensions, this model has {}",
                parts.hidden / parts.heads
            );
        }
        let norm = |(weight, bias, eps): (Vec<f32>, Vec<f32>, f32)| Norm { weight, bias, eps };
        // The bias of every relative position a sequence can hold, looked up once here rather
        // than bucketed per pair and layer.
        let relative_bias = parts.relative_bias.as_ref().map(|(table, buckets)| {
            let span = 2 * parts.max_positions - 1;
            let mut by_head = vec![0f32; parts.heads * span];
            for at in 0..span {
                let relative = at as i64 - (parts.max_positions as i64 - 1);
                let bucket = super::mpnet::relative_bucket(relative, *buckets);
                for head in 0..parts.heads {
                    by_head[head * span + at] = table[bucket * parts.heads + head];
                }
            }
            by_head
        });
        let hidden = parts.hidden;
        let intermediate = parts.intermediate;
        use rayon::prelude::*;
        // Packing, a layer at a time on each thread.
        let layers = parts
            .layers
            .into_par_iter()
            .map(|l| {
                let pack = |dense: &DenseParts, inputs: usize, outputs: usize| {
                    Dense::pack_rows(kernel, &dense.rows, &dense.bias, inputs, outputs)
                };
                FastLayer {
                    qkv: pack(&l.qkv, hidden, 3 * hidden),
                    attn_out: pack(&l.attn_out, hidden, hidden),
                    attn_norm: norm(l.attn_norm),
                    ffn_in: pack(&l.ffn_in, hidden, intermediate),
                    ffn_out: pack(&l.ffn_out, intermediate, hidden),
                    ffn_norm: norm(l.ffn_norm),
                }
            })
            .collect();
        Ok(Self {
            kernel,
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
            relative_bias,
            // bf16 precision rounds every dense layer's inputs already; attention's scores (queries
            // by keys) then take half the instructions too. Softmax and the probabilities by the
            // values stay f32 (see `Paired`).
            attention_bf16: kernel.takes_bf16_pairs()
                && std::arch::is_x86_feature_detected!("avx512bf16")
                && (hidden / parts.heads).is_multiple_of(32),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The dense-multiply kernel this encoder runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Runs the encoder on sequences packed one after another (`lengths` sums to `ids.len()`, each
    /// length ≥ 1 and ≤ the model's positions) and returns `pool` of each sequence's last hidden
    /// states, `(length, hidden)` row-major. The states stay in this thread's buffers: no copy.
    /// With `parallel`, each multiply is shared with the helper thread when it is free (for a lone
    /// chunk, see `helper`).
    pub fn forward_pooled<T>(
        &self,
        ids: &[u32],
        lengths: &[usize],
        parallel: bool,
        mut pool: impl FnMut(&[f32]) -> T,
    ) -> Vec<T> {
        assert_eq!(lengths.iter().sum::<usize>(), ids.len());
        assert!(lengths.iter().all(|&l| l >= 1 && l <= self.max_positions));
        SCRATCH.with(|cell| {
            // A pass that starts on this thread while its buffers are in use (a thread that
            // waited inside a pass and took up other work, as rayon's threads do when a multiply
            // is shared through rayon) gets buffers of its own instead of a double borrow.
            let mut own = None;
            let mut borrowed = cell.try_borrow_mut().ok();
            let scratch: &mut Scratch = match borrowed.as_deref_mut() {
                Some(s) => s,
                None => own.insert(Scratch::default()),
            };
            // SAFETY: the kernel was detected on this CPU when the weights were packed
            // (`Dense::pack` asserts it), and its instruction set is the one the copy is built for.
            let lease = if parallel {
                super::helper::lease()
            } else {
                None
            };
            let helper = lease.as_ref();
            match self.kernel.isa() {
                Isa::Avx512 => unsafe { self.forward_avx512(ids, lengths, helper, scratch) },
                Isa::Avx2 => unsafe { self.forward_avx2(ids, lengths, helper, scratch) },
            }
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

    /// The forward compiled for AVX-512.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn forward_avx512(
        &self,
        ids: &[u32],
        lengths: &[usize],
        helper: Option<&Lease>,
        s: &mut Scratch,
    ) {
        self.forward(ids, lengths, helper, s)
    }

    /// The same forward compiled for AVX2 and FMA only.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn forward_avx2(
        &self,
        ids: &[u32],
        lengths: &[usize],
        helper: Option<&Lease>,
        s: &mut Scratch,
    ) {
        self.forward(ids, lengths, helper, s)
    }

    #[inline(always)]
    fn forward(&self, ids: &[u32], lengths: &[usize], helper: Option<&Lease>, s: &mut Scratch) {
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
        for layer in &self.layers {
            layer.qkv.multiply(
                &s.x,
                rows,
                &mut s.qkv,
                Finish::Nothing,
                &mut s.stage,
                helper,
            );
            let mut start = 0;
            for &len in lengths {
                self.attend(start, len, s, helper);
                start += len;
            }
            layer.attn_out.multiply(
                &s.context,
                rows,
                &mut s.dense,
                Finish::Nothing,
                &mut s.stage,
                helper,
            );
            add_into(&mut s.x, &s.dense);
            layer.attn_norm.apply_rows(&mut s.x);
            let activate = Finish::Activate(self.activation);
            if layer.ffn_in.stores_pairs(activate) && layer.ffn_out.takes_pairs_of(&layer.ffn_in) {
                // The inner rows (four times the hidden width) go straight to bf16, the only
                // form the next layer reads: half the bytes written, no f32 pass to round them.
                layer.ffn_in.multiply_to_pairs(
                    &s.x,
                    rows,
                    &mut s.inner_pairs,
                    activate,
                    &mut s.stage,
                    helper,
                );
                layer.ffn_out.multiply_pairs(
                    &mut s.inner_pairs,
                    rows,
                    &mut s.dense,
                    Finish::Nothing,
                    helper,
                );
            } else {
                s.inner.resize(rows * self.intermediate, 0.0);
                layer
                    .ffn_in
                    .multiply(&s.x, rows, &mut s.inner, activate, &mut s.stage, helper);
                layer.ffn_out.multiply(
                    &s.inner,
                    rows,
                    &mut s.dense,
                    Finish::Nothing,
                    &mut s.stage,
                    helper,
                );
            }
            add_into(&mut s.x, &s.dense);
            layer.ffn_norm.apply_rows(&mut s.x);
        }
    }

    /// Self-attention of one sequence (rows `start..start + len` of `s.qkv`), every head, into
    /// the same rows of `s.context`. f32 throughout. With `helper`, it takes the later half of
    /// the query rows.
    #[inline(always)]
    fn attend(&self, start: usize, len: usize, s: &mut Scratch, helper: Option<&Lease>) {
        match self.head_dim {
            // The head width as a constant keeps a row's sums in registers.
            32 => self.attend_heads::<32>(start, len, s, helper),
            64 => self.attend_heads::<64>(start, len, s, helper),
            _ => self.attend_heads::<0>(start, len, s, helper),
        }
    }

    /// [`Self::attend`] for heads of `D` dimensions (`D` = 0: any width, slower).
    #[inline(always)]
    fn attend_heads<const D: usize>(
        &self,
        start: usize,
        len: usize,
        s: &mut Scratch,
        helper: Option<&Lease>,
    ) {
        let h = self.hidden;
        let stride = 3 * h;
        let keys_padded = len.next_multiple_of(16);
        s.scores.clear();
        s.scores.resize(QUERY_ROWS * keys_padded, 0.0);
        let qkv = &s.qkv[start * stride..(start + len) * stride];
        s.keys_t.clear();
        let pairs = if self.attention_bf16 {
            // SAFETY: `attention_bf16` is set only where AVX512-BF16 was detected, with the
            // AVX-512 kernels (F, BW, VL), and heads (so `hidden`) a multiple of 32 wide.
            Some(unsafe {
                Paired::fill(
                    qkv,
                    h,
                    len,
                    keys_padded,
                    (&mut s.query_pairs, &mut s.key_pairs, &mut s.key_block),
                )
            })
        } else {
            s.keys_t.resize(h * keys_padded, 0.0);
            // Every head's keys transposed, (hidden, keys_padded), so 16 keys' scores come from
            // one FMA.
            for (c, column) in s.keys_t.chunks_exact_mut(keys_padded).enumerate() {
                for (slot, row) in column.iter_mut().zip(qkv.chunks_exact(stride)) {
                    *slot = row[h + c];
                }
            }
            None
        };
        let keys_t = &s.keys_t;
        let span = AttentionSpan {
            qkv,
            keys_t,
            keys_padded,
            len,
            pairs,
        };
        // Query rows `rows` of every head into `context`, whose first row is `rows.start`, in
        // the copy of the instruction set the forward runs (a closure run by the helper is
        // compiled on its own, without the forward's target features).
        let attend_rows =
            |rows: std::ops::Range<usize>, scores: &mut [f32], context: &mut [f32]| {
                // SAFETY: the kernel's instruction set was detected on this CPU when the weights
                // were packed.
                unsafe {
                    match self.kernel.isa() {
                        Isa::Avx512 => self.attend_rows_avx512::<D>(&span, rows, scores, context),
                        Isa::Avx2 => self.attend_rows_avx2::<D>(&span, rows, scores, context),
                    }
                }
            };
        let context = &mut s.context[start * h..(start + len) * h];
        match helper {
            // A lone pass: the helper takes the later query rows (every row's attention is its
            // own, so the split changes no value). A few rows are not worth the hand-over.
            Some(lease) if len >= 4 * QUERY_ROWS => {
                let split = (len / 2).next_multiple_of(QUERY_ROWS);
                let (mine, theirs) = context.split_at_mut(split * h);
                // The closure the helper runs is `Fn`: its rows are lent through a lock that
                // only it takes.
                let theirs = std::sync::Mutex::new(theirs);
                lease.share(
                    &|| {
                        let mut rows = theirs.lock().unwrap_or_else(|p| p.into_inner());
                        let mut scores = vec![0f32; QUERY_ROWS * keys_padded];
                        attend_rows(split..len, &mut scores, &mut rows);
                    },
                    || attend_rows(0..split, &mut s.scores, mine),
                );
            }
            _ => attend_rows(0..len, &mut s.scores, context),
        }
    }

    /// [`Self::attend_rows`] compiled for AVX-512.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
    unsafe fn attend_rows_avx512<const D: usize>(
        &self,
        span: &AttentionSpan,
        rows: std::ops::Range<usize>,
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        self.attend_rows::<D>(span, rows, scores, context)
    }

    /// [`Self::attend_rows`] compiled for AVX2 and FMA only.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn attend_rows_avx2<const D: usize>(
        &self,
        span: &AttentionSpan,
        rows: std::ops::Range<usize>,
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        self.attend_rows::<D>(span, rows, scores, context)
    }

    /// Attention of query rows `rows` of one sequence, every head, into `context` (whose first
    /// row is `rows.start`).
    #[inline(always)]
    fn attend_rows<const D: usize>(
        &self,
        span: &AttentionSpan,
        rows: std::ops::Range<usize>,
        scores: &mut [f32],
        context: &mut [f32],
    ) {
        let h = self.hidden;
        let d = if D == 0 { self.head_dim } else { D };
        let kp = span.keys_padded;
        for head in 0..self.heads {
            let attention = AttentionRows {
                qkv: span.qkv,
                stride: 3 * h,
                hidden: h,
                q_at: head * d,
                v_at: 2 * h + head * d,
                keys_t: span
                    .keys_t
                    .get(head * d * kp..(head + 1) * d * kp)
                    .unwrap_or_default(),
                pairs: span.pairs.as_ref().map(|p| p.head(head, d, kp, h)),
                keys_padded: kp,
                len: span.len,
                head_dim: d,
                scale: 1.0 / (d as f32).sqrt(),
                wide: self.kernel.isa() == Isa::Avx512,
                relative_bias: self.relative_bias.as_ref().map(|all| {
                    let span = 2 * self.max_positions - 1;
                    &all[head * span..(head + 1) * span]
                }),
                max_positions: self.max_positions,
            };
            let mut i = rows.start;
            while i + QUERY_ROWS <= rows.end {
                attention.attend::<D, QUERY_ROWS>(i, scores, context, rows.start);
                i += QUERY_ROWS;
            }
            while i < rows.end {
                attention.attend::<D, 1>(i, scores, context, rows.start);
                i += 1;
            }
        }
    }
}

/// One sequence's queries, keys and values for attention: its rows of the fused projection, its
/// keys transposed (hidden × `keys_padded`), its length.
struct AttentionSpan<'a> {
    qkv: &'a [f32],
    /// Empty when scores are taken in bf16.
    keys_t: &'a [f32],
    keys_padded: usize,
    len: usize,
    /// The sequence's queries and keys in bf16 pairs, when scores are taken in bf16.
    pairs: Option<Paired<'a>>,
}

/// One sequence's queries and keys rounded to bf16 and paired the way `vdpbf16ps` multiplies
/// (two bf16 in each 32-bit word, the lower one first), for attention's scores:
/// - `queries`: `len` rows of `hidden / 2` words, dimensions 2i and 2i + 1 in word i;
/// - `keys`: `hidden / 2` rows of `keys_padded` words, row i holding every key's dimensions
///   2i and 2i + 1 (transposed, so 16 keys' scores come from one instruction).
///
/// The probabilities stay f32 and multiply the values in f32: rounded to bf16, a long run of one
/// word (hundreds of near-equal probabilities, all rounded the same way) moved MPNet's vector to
/// cosine 0.9987 of f32's.
struct Paired<'a> {
    queries: &'a [u32],
    keys: &'a [u32],
}

/// One head's part of [`Paired`] (its pairs of dimensions).
struct HeadPairs<'a> {
    queries: &'a [u32],
    keys: &'a [u32],
    /// Words per query row.
    query_stride: usize,
}

impl<'a> Paired<'a> {
    /// Rounds and pairs the queries and keys of a sequence's rows of the fused projection (`len`
    /// rows, `hidden` a multiple of 32) into the two buffers.
    ///
    /// # Safety
    /// AVX-512F, BW, VL and AVX512-BF16 present.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl,avx2,fma")]
    unsafe fn fill(
        qkv: &[f32],
        hidden: usize,
        len: usize,
        keys_padded: usize,
        (queries, keys, block): (&'a mut Vec<u32>, &'a mut Vec<u32>, &mut Vec<u32>),
    ) -> Self {
        use std::arch::x86_64::*;
        assert!(hidden.is_multiple_of(32) && qkv.len() == len * 3 * hidden);
        let half = hidden / 2;
        let stride = 3 * hidden;
        // Sixteen f32 from `from` as sixteen bf16 (rounded to nearest even), in order: a row of
        // bf16 is a row of pairs.
        let round = |from: *const f32| -> __m256i {
            std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(from)))
        };
        // Sequences differ in length: every word of the part used is written below.
        let queries = kernels::grown(queries, len * half);
        let keys = kernels::grown(keys, half * keys_padded);
        for (row, out) in qkv.chunks_exact(stride).zip(queries.chunks_exact_mut(half)) {
            for c in (0..hidden).step_by(16) {
                _mm256_storeu_si256(
                    out.as_mut_ptr().add(c / 2).cast(),
                    round(row.as_ptr().add(c)),
                );
            }
        }
        // Keys 16 at a time: rounded into `block` (16 rows of pairs, in L1), then written out
        // by pair, 16 keys to a 64-byte line. Scattering each key's pairs straight to their
        // rows of `keys` touched a line per pair and key.
        let block = kernels::grown(block, 16 * half);
        for first in (0..keys_padded).step_by(16) {
            let count = len.saturating_sub(first).min(16);
            for (j, row) in qkv[first * stride..]
                .chunks_exact(stride)
                .take(count)
                .enumerate()
            {
                let key = row[hidden..].as_ptr();
                for c in (0..hidden).step_by(16) {
                    _mm256_storeu_si256(
                        block.as_mut_ptr().add(j * half + c / 2).cast(),
                        round(key.add(c)),
                    );
                }
            }
            // The padding keys' pairs are zero (their scores are never read, but stay finite).
            block[count * half..].fill(0);
            for (i, line) in keys.chunks_exact_mut(keys_padded).enumerate() {
                for (j, word) in line[first..first + 16].iter_mut().enumerate() {
                    *word = block[j * half + i];
                }
            }
        }
        Paired { queries, keys }
    }

    /// Head `head`'s part, heads `d` wide.
    fn head(&self, head: usize, d: usize, keys_padded: usize, hidden: usize) -> HeadPairs<'a> {
        HeadPairs {
            queries: &self.queries[head * d / 2..],
            keys: &self.keys[head * d / 2 * keys_padded..(head + 1) * d / 2 * keys_padded],
            query_stride: hidden / 2,
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
    /// This head's queries and keys in bf16 pairs, when scores are taken in bf16 (`keys_t` is
    /// then empty).
    pairs: Option<HeadPairs<'a>>,
    keys_padded: usize,
    len: usize,
    head_dim: usize,
    scale: f32,
    /// Whether the forward runs its AVX-512 copy.
    wide: bool,
    /// This head's bias by relative position (MPNet), as [`FastBert::relative_bias`].
    relative_bias: Option<&'a [f32]>,
    max_positions: usize,
}

impl AttentionRows<'_> {
    /// Attention of query rows `first..first + R` into their rows of `context` (whose first row
    /// is query row `context_row0`).
    #[inline(always)]
    fn attend<const D: usize, const R: usize>(
        &self,
        first: usize,
        scores: &mut [f32],
        context: &mut [f32],
        context_row0: usize,
    ) {
        let (kp, len) = (self.keys_padded, self.len);
        let d = if D == 0 { self.head_dim } else { D };
        if let Some(pairs) = &self.pairs {
            self.scores_bf16::<R>(pairs, first, scores);
        } else {
            self.scores_f32::<D, R>(first, scores);
        }
        let inv_sums = self.softmax::<R>(first, scores);
        // Context = probabilities · values, with explicit vector code: the sums of R rows stay in
        // registers (written as plain loops they were kept in memory, a fifth of the forward).
        let values = self.qkv[self.v_at..].as_ptr();
        let outs: [*mut f32; R] = std::array::from_fn(|r| {
            context[(first - context_row0 + r) * self.hidden + self.q_at..][..d].as_mut_ptr()
        });
        assert!(
            scores.len() >= R * kp && (len - 1) * self.stride + d <= self.qkv.len() - self.v_at
        );
        let context_rows: ContextRows<R> = if self.wide {
            context_rows_512::<R>
        } else {
            context_rows_256::<R>
        };
        // SAFETY: the reads stay within `scores` and the value rows (asserted just above), the
        // writes within each row's head of `context`; the copy run is the one the forward is
        // compiled for, whose instruction set was detected when the kernels were packed.
        unsafe {
            context_rows(
                scores.as_ptr(),
                kp,
                len,
                values,
                self.stride,
                d,
                outs,
                inv_sums,
            )
        }
    }

    /// Raw scores of R query rows (from `first`) against every key, in f32, into `scores`.
    #[inline(always)]
    fn scores_f32<const D: usize, const R: usize>(&self, first: usize, scores: &mut [f32]) {
        let kp = self.keys_padded;
        let d = if D == 0 { self.head_dim } else { D };
        let queries: [&[f32]; R] =
            std::array::from_fn(|r| &self.qkv[(first + r) * self.stride + self.q_at..][..d]);
        let mut block = 0;
        while block < kp {
            // 64 keys × R rows of sums fill 16 of AVX-512's 32 registers; on AVX2's 16 they
            // would spill, so that copy takes 16 keys at a time.
            if self.wide && kp - block >= 64 {
                self.score_block::<R, 64>(&queries, block, scores);
                block += 64;
            } else if !self.wide {
                let rows: [*const f32; R] = std::array::from_fn(|r| queries[r].as_ptr());
                assert!(scores.len() >= (R - 1) * kp + block + 16);
                assert!(self.keys_t.len() >= (d - 1) * kp + block + 16);
                // SAFETY: the AVX2 copy runs only where AVX2 was detected (at packing); the keys
                // and scores read and written are within the slices (asserted just above), each
                // query row holds `d` values.
                unsafe {
                    score_block_256(
                        rows,
                        self.keys_t.as_ptr(),
                        kp,
                        block,
                        d,
                        scores.as_mut_ptr(),
                    )
                };
                block += 16;
            } else {
                self.score_block::<R, 16>(&queries, block, scores);
                block += 16;
            }
        }
    }

    /// Raw scores of R query rows (from `first`) against every key, in bf16, into `scores`.
    #[inline(always)]
    fn scores_bf16<const R: usize>(&self, pairs: &HeadPairs, first: usize, scores: &mut [f32]) {
        let kp = self.keys_padded;
        let words = self.head_dim / 2;
        assert!((first + R - 1) * pairs.query_stride + words <= pairs.queries.len());
        assert!(scores.len() >= R * kp && pairs.keys.len() >= words * kp);
        // Plain pointer steps: `array::from_fn` over checked slices stayed a call per block.
        let mut rows = [pairs.queries.as_ptr(); R];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = row.wrapping_add((first + r) * pairs.query_stride);
        }
        let mut block = 0;
        while block < kp {
            // The keys left after the 64-key blocks in one block too (16, 32 or 48 keys): 16 at a
            // time, four running sums waited on each other's multiply-adds.
            let (keys, block_fn): (usize, ScoreBlockBf16<R>) = match kp - block {
                64.. => (64, score_block_bf16::<R, 4>),
                48 => (48, score_block_bf16::<R, 3>),
                32 => (32, score_block_bf16::<R, 2>),
                _ => (16, score_block_bf16::<R, 1>),
            };
            // SAFETY: AVX512-BF16 was detected when `attention_bf16` was set; each query row
            // holds `words` words, the head's keys `words` rows of `kp` (asserted above), and
            // the block's keys and scores are within a row (`block + keys` ≤ `kp`, a multiple
            // of 16).
            unsafe {
                block_fn(
                    rows,
                    pairs.keys.as_ptr(),
                    kp,
                    block,
                    words,
                    scores.as_mut_ptr(),
                )
            };
            block += keys;
        }
    }

    /// Softmax of R rows of raw scores in place, without the division: the exponentials of the
    /// scaled (and, for MPNet, biased) scores less their largest, and the reciprocal of each
    /// row's sum.
    #[inline(always)]
    fn softmax<const R: usize>(&self, first: usize, scores: &mut [f32]) -> [f32; R] {
        let (kp, len) = (self.keys_padded, self.len);
        let mut inv_sums = [0f32; R];
        for (r, inv_sum) in inv_sums.iter_mut().enumerate() {
            let row = &mut scores[r * kp..r * kp + len];
            // With a relative bias (MPNet), scores are scaled and biased first, then shifted.
            let scale = match self.relative_bias {
                Some(bias) => {
                    let query = first + r;
                    let bias = &bias[self.max_positions - 1 - query..][..len];
                    for (v, &b) in row.iter_mut().zip(bias) {
                        *v = v.mul_add(self.scale, b);
                    }
                    1.0
                }
                None => self.scale,
            };
            let sum = if self.wide {
                // SAFETY: the AVX-512 copy runs only where AVX-512F was detected (at packing).
                unsafe { kernels::exp_shifted_512(row, scale) }
            } else {
                // SAFETY: the AVX2 copy runs only where AVX2 was detected (at packing).
                unsafe { kernels::exp_shifted_256(row, max16(row), scale) };
                sum16(row)
            };
            *inv_sum = 1.0 / sum;
        }
        inv_sums
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

/// Raw scores of R query rows against the 16 keys from `block`, on 256-bit registers: 2R running
/// sums, two key loads and R broadcasts per dimension (as plain loops the compiler kept the sums
/// and the query pointers partly in memory).
///
/// # Safety
/// AVX2 and FMA present; each `queries[r]` readable for `d` values, `keys_t` for `d` rows of `kp`
/// from `block` (16 values each), `scores` writable for R rows of `kp` at `block..block + 16`.
#[target_feature(enable = "avx2,fma")]
unsafe fn score_block_256<const R: usize>(
    queries: [*const f32; R],
    keys_t: *const f32,
    kp: usize,
    block: usize,
    d: usize,
    scores: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for c in 0..d {
        let keys = keys_t.add(c * kp + block);
        let k0 = _mm256_loadu_ps(keys);
        let k1 = _mm256_loadu_ps(keys.add(8));
        for (acc, query) in acc.iter_mut().zip(&queries) {
            let q = _mm256_broadcast_ss(&*query.add(c));
            acc[0] = _mm256_fmadd_ps(q, k0, acc[0]);
            acc[1] = _mm256_fmadd_ps(q, k1, acc[1]);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let out = scores.add(r * kp + block);
        _mm256_storeu_ps(out, acc[0]);
        _mm256_storeu_ps(out.add(8), acc[1]);
    }
}

/// The signature of [`context_rows_512`] and [`context_rows_256`].
type ContextRows<const R: usize> =
    unsafe fn(*const f32, usize, usize, *const f32, usize, usize, [*mut f32; R], [f32; R]);

/// `out[r] = inv[r] · Σ_j scores[r][j] · values[j]` for R query rows of one head, 32 dimensions
/// at a time on 512-bit registers (what is left, 16 at a time under a mask).
///
/// # Safety
/// AVX-512F present; `scores` readable for R rows of `kp` ≥ `len`, `values` for `len` rows of
/// `stride` holding `d` values each, every `out[r]` writable for `d` values.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn context_rows_512<const R: usize>(
    scores: *const f32,
    kp: usize,
    len: usize,
    values: *const f32,
    stride: usize,
    d: usize,
    out: [*mut f32; R],
    inv: [f32; R],
) {
    use std::arch::x86_64::*;
    // Thirty-two dimensions at a time where the head has them (MiniLM's heads are 32 wide): one
    // broadcast of a score serves both halves, and 2R running sums keep a CPU that issues two
    // 512-bit multiply-adds per cycle busy (with R, each waited on its previous sum).
    let pairs = d - d % 32;
    for c0 in (0..pairs).step_by(32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for j in 0..len {
            let v0 = _mm512_loadu_ps(values.add(j * stride + c0));
            let v1 = _mm512_loadu_ps(values.add(j * stride + c0 + 16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*scores.add(r * kp + j));
                acc[0] = _mm512_fmadd_ps(p, v0, acc[0]);
                acc[1] = _mm512_fmadd_ps(p, v1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let inv = _mm512_set1_ps(inv[r]);
            _mm512_storeu_ps(out[r].add(c0), _mm512_mul_ps(acc[0], inv));
            _mm512_storeu_ps(out[r].add(c0 + 16), _mm512_mul_ps(acc[1], inv));
        }
    }
    for c0 in (pairs..d).step_by(16) {
        let mask = (((1u32 << 16.min(d - c0)) - 1) & 0xFFFF) as u16;
        let mut acc = [_mm512_setzero_ps(); R];
        for j in 0..len {
            let v = _mm512_maskz_loadu_ps(mask, values.add(j * stride + c0));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*scores.add(r * kp + j)), v, *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let value = _mm512_mul_ps(*acc, _mm512_set1_ps(inv[r]));
            _mm512_mask_storeu_ps(out[r].add(c0), mask, value);
        }
    }
}

/// [`context_rows_512`] on 256-bit registers, 8 dimensions at a time (a head's last few
/// dimensions, if `d` is not a multiple of 8, one by one).
///
/// # Safety
/// AVX2 and FMA present; as [`context_rows_512`] otherwise.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn context_rows_256<const R: usize>(
    scores: *const f32,
    kp: usize,
    len: usize,
    values: *const f32,
    stride: usize,
    d: usize,
    out: [*mut f32; R],
    inv: [f32; R],
) {
    use std::arch::x86_64::*;
    // Sixteen dimensions at a time where the head has them: 2R running sums, enough to cover
    // the multiply-add's latency (with R alone, each waited on its previous sum).
    let pairs = d - d % 16;
    for c0 in (0..pairs).step_by(16) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for j in 0..len {
            let v0 = _mm256_loadu_ps(values.add(j * stride + c0));
            let v1 = _mm256_loadu_ps(values.add(j * stride + c0 + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = _mm256_set1_ps(*scores.add(r * kp + j));
                acc[0] = _mm256_fmadd_ps(p, v0, acc[0]);
                acc[1] = _mm256_fmadd_ps(p, v1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let inv = _mm256_set1_ps(inv[r]);
            _mm256_storeu_ps(out[r].add(c0), _mm256_mul_ps(acc[0], inv));
            _mm256_storeu_ps(out[r].add(c0 + 8), _mm256_mul_ps(acc[1], inv));
        }
    }
    let whole = d - d % 8;
    for c0 in (pairs..whole).step_by(8) {
        let mut acc = [_mm256_setzero_ps(); R];
        for j in 0..len {
            let v = _mm256_loadu_ps(values.add(j * stride + c0));
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(*scores.add(r * kp + j)), v, *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out[r].add(c0), _mm256_mul_ps(*acc, _mm256_set1_ps(inv[r])));
        }
    }
    for c in whole..d {
        for r in 0..R {
            let mut sum = 0f32;
            for j in 0..len {
                sum = (*scores.add(r * kp + j)).mul_add(*values.add(j * stride + c), sum);
            }
            *out[r].add(c) = sum * inv[r];
        }
    }
}

/// The signature of [`score_block_bf16`] for any block width.
type ScoreBlockBf16<const R: usize> =
    unsafe fn([*const u32; R], *const u32, usize, usize, usize, *mut f32);

/// Raw scores of R query rows against the `16 · W` keys from `block`, in bf16: per pair of
/// dimensions, W key loads, R broadcasts and R · W `vdpbf16ps` (each two multiply-adds per lane).
///
/// # Safety
/// AVX-512F and AVX512-BF16 present; each `queries[r]` readable for `words` words, `keys` for
/// `words` rows of `kp` from `block` (`16 · W` words each), `scores` writable for R rows of `kp` at
/// `block..block + 16 · W`.
#[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl,avx2,fma")]
unsafe fn score_block_bf16<const R: usize, const W: usize>(
    queries: [*const u32; R],
    keys: *const u32,
    kp: usize,
    block: usize,
    words: usize,
    scores: *mut f32,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); W]; R];
    for i in 0..words {
        let row = keys.add(i * kp + block);
        let k: [__m512bh; W] = std::array::from_fn(|w| {
            std::mem::transmute(_mm512_loadu_si512(row.add(16 * w).cast()))
        });
        for (acc, query) in acc.iter_mut().zip(&queries) {
            let q: __m512bh = std::mem::transmute(_mm512_set1_epi32(*query.add(i) as i32));
            for (a, &k) in acc.iter_mut().zip(&k) {
                *a = _mm512_dpbf16_ps(*a, q, k);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (w, &a) in acc.iter().enumerate() {
            _mm512_storeu_ps(scores.add(r * kp + block + 16 * w), a);
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

    /// The bf16 scores of every head equal the plain dot products of its queries and keys when
    /// every value is exact in bf16 (multiples of 1/16 below 4) and every sum exact in f32; odd
    /// lengths and a length past one 64-key block reach the padding and the 16-key blocks.
    #[test]
    fn bf16_scores_are_the_dot_products_of_each_heads_queries_and_keys() {
        if !std::arch::is_x86_feature_detected!("avx512bf16")
            || !std::arch::is_x86_feature_detected!("avx512bw")
            || !std::arch::is_x86_feature_detected!("avx512vl")
        {
            eprintln!("no AVX512-BF16 here: the bf16 scores are not taken on this CPU");
            return;
        }
        let (hidden, d) = (64, 32);
        // The buffers are reused from one length to the next and start full of NaN words, as a
        // thread's buffers hold the last sequence's pairs: every word must be written.
        let mut buffers = (
            vec![u32::MAX; 9000],
            vec![u32::MAX; 9000],
            vec![u32::MAX; 99],
        );
        for len in [81usize, 1, 33, 7] {
            let kp = len.next_multiple_of(16);
            let value = |i: usize| ((i * 7919 % 113) as f32 - 56.0) / 16.0;
            let qkv: Vec<f32> = (0..len * 3 * hidden).map(value).collect();
            let (queries, keys, block) = (&mut buffers.0, &mut buffers.1, &mut buffers.2);
            // SAFETY: AVX512-BF16, F, BW and VL were detected above; `hidden` is a multiple of 32.
            let paired = unsafe { Paired::fill(&qkv, hidden, len, kp, (queries, keys, block)) };
            for head in 0..hidden / d {
                let pairs = paired.head(head, d, kp, hidden);
                let rows = AttentionRows {
                    qkv: &qkv,
                    stride: 3 * hidden,
                    hidden,
                    q_at: head * d,
                    v_at: 2 * hidden + head * d,
                    keys_t: &[],
                    pairs: Some(pairs),
                    keys_padded: kp,
                    len,
                    head_dim: d,
                    scale: 1.0,
                    wide: true,
                    relative_bias: None,
                    max_positions: 512,
                };
                let check = |first: usize, r: usize, scores: &[f32]| {
                    let row = &scores[r * kp..(r + 1) * kp];
                    for (k, &score) in row[..len].iter().enumerate() {
                        let q = &qkv[(first + r) * 3 * hidden + head * d..][..d];
                        let key = &qkv[k * 3 * hidden + hidden + head * d..][..d];
                        let want: f32 = q.iter().zip(key).map(|(a, b)| a * b).sum();
                        assert_eq!(
                            score,
                            want,
                            "len {len} head {head} query {} key {k}",
                            first + r
                        );
                    }
                    // Padded keys score zero (their pairs are zero), never garbage.
                    assert!(row[len..].iter().all(|&s| s == 0.0), "len {len}");
                };
                let pairs = rows.pairs.as_ref().unwrap();
                let mut scores = vec![f32::NAN; QUERY_ROWS * kp];
                for first in 0..len {
                    rows.scores_bf16::<1>(pairs, first, &mut scores);
                    check(first, 0, &scores);
                }
                for first in (0..len.saturating_sub(QUERY_ROWS - 1)).step_by(QUERY_ROWS) {
                    rows.scores_bf16::<QUERY_ROWS>(pairs, first, &mut scores);
                    (0..QUERY_ROWS).for_each(|r| check(first, r, &scores));
                }
            }
        }
    }
}
