//! A BERT encoder forward pass of our own, on candle tensors, loading the same safetensors as
//! `transformers.BertModel`.
//!
//! Why not `candle_transformers::models::bert`: on a CPU it runs three separate Q/K/V multiplies,
//! copies Q, K and V through transposes in every layer, and adds the padding mask even to batches
//! that have none. Here Q, K and V are one fused multiply, every linear layer works on a flat
//! `(tokens, hidden)` matrix, the softmax and layer norms are candle's fused kernels, and the mask
//! is only built when a batch has padding.
//!
//! Invariant: the output for a real (non-padding) token does not depend on the other sequences of
//! its batch, so batching and length-sorting never change a vector.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::collections::HashMap;

/// The fields of a Hugging Face `config.json` that a BERT forward needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A dense layer stored pre-transposed, `(in, out)`, so the multiply reads it contiguously.
struct Dense {
    weight_t: Tensor,
    bias: Tensor,
}

impl Dense {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: LayerNorm,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
}

/// The encoder: embeddings and transformer layers, no pooler head (sentence-transformers does not use it).
pub struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_row: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    max_positions: usize,
    activation: Activation,
    device: Device,
}

/// What went wrong while building the encoder from a weights file.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("the weights have no tensor `{0}` (is this a BERT model?)")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {found:?}, config.json implies {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("unsupported hidden_act `{0}` (supported: gelu, gelu_new, relu)")]
    Activation(String),
    #[error("unsupported position_embedding_type `{0}` (only `absolute` is supported)")]
    PositionEmbedding(String),
    #[error("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")]
    Heads { hidden: usize, heads: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Bert {
    /// Builds the encoder from the tensors of a safetensors file, checking every shape against `config`.
    pub fn from_tensors(
        config: &BertConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, BertError> {
        let activation = match config.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(BertError::Activation(other.into())),
        };
        if let Some(kind) = &config.position_embedding_type {
            if kind != "absolute" {
                return Err(BertError::PositionEmbedding(kind.clone()));
            }
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(BertError::Heads {
                hidden: config.hidden_size,
                heads: config.num_attention_heads,
            });
        }
        // Checkpoints saved from BertForX carry a `bert.` prefix; plain BertModel ones do not.
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let mut w = Weights {
            tensors: &mut tensors,
            prefix,
            device,
        };
        let embed_norm = w.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = w.take(&format!("{p}.attention.self.query.weight"), &[h, h])?;
            let k = w.take(&format!("{p}.attention.self.key.weight"), &[h, h])?;
            let v = w.take(&format!("{p}.attention.self.value.weight"), &[h, h])?;
            let qb = w.take(&format!("{p}.attention.self.query.bias"), &[h])?;
            let kb = w.take(&format!("{p}.attention.self.key.bias"), &[h])?;
            let vb = w.take(&format!("{p}.attention.self.value.bias"), &[h])?;
            layers.push(Layer {
                qkv: Dense {
                    weight_t: Tensor::cat(&[q, k, v], 0)?.t()?.contiguous()?,
                    bias: Tensor::cat(&[qb, kb, vb], 0)?,
                },
                attn_out: w.dense(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                ffn_in: w.dense(
                    &format!("{p}.intermediate.dense"),
                    h,
                    config.intermediate_size,
                )?,
                ffn_out: w.dense(&format!("{p}.output.dense"), config.intermediate_size, h)?,
                ffn_norm: w.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let word_embeddings =
            w.take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position_embeddings = w.take(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type_row = w
            .take(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?
            .get(0)?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_row,
            embed_norm,
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            hidden: h,
            max_positions: config.max_position_embeddings,
            activation,
            device: device.clone(),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Runs the encoder on a batch of token-id rows padded to one length with `mask` 1 for real
    /// tokens and 0 for padding. Returns the last hidden states, `(batch, seq_len, hidden)`.
    /// All token-type ids are 0, as for single sentences.
    pub fn forward(
        &self,
        ids: &[u32],
        mask: &[u8],
        batch: usize,
        seq_len: usize,
    ) -> candle_core::Result<Tensor> {
        let tokens = batch * seq_len;
        let ids_t = Tensor::from_slice(ids, tokens, &self.device)?;
        let positions = self.position_embeddings.narrow(0, 0, seq_len)?;
        let x = self
            .word_embeddings
            .embedding(&ids_t)?
            .reshape((batch, seq_len, self.hidden))?
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type_row)?;
        let mut x = self
            .embed_norm
            .forward(&x)?
            .reshape((tokens, self.hidden))?;

        // Additive mask over keys, built only when some row is padded.
        let attention_bias = if mask.iter().all(|&m| m == 1) {
            None
        } else {
            let bias: Vec<f32> = mask
                .iter()
                .map(|&m| if m == 1 { 0.0 } else { f32::MIN })
                .collect();
            Some(Tensor::from_vec(
                bias,
                (batch, 1, 1, seq_len),
                &self.device,
            )?)
        };
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv =
                layer
                    .qkv
                    .forward(&x)?
                    .reshape((batch, seq_len, 3, self.heads, self.head_dim))?;
            // (batch, heads, seq, head_dim) for each of q, k, v.
            let q = qkv
                .narrow(2, 0, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let k = qkv
                .narrow(2, 1, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = qkv
                .narrow(2, 2, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let mut scores = (q.matmul(&k.t()?)? * scale)?;
            if let Some(bias) = &attention_bias {
                scores = scores.broadcast_add(bias)?;
            }
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((tokens, self.hidden))?;
            let attended = layer.attn_out.forward(&context)?;
            x = layer.attn_norm.forward(&(attended + &x)?)?;
            let inner = match self.activation {
                Activation::GeluErf => x
                    .matmul(&layer.ffn_in.weight_t)?
                    .apply_op1_no_bwd(&BiasGeluErf(&layer.ffn_in.bias))?,
                Activation::GeluTanh => layer.ffn_in.forward(&x)?.gelu()?,
                Activation::Relu => layer.ffn_in.forward(&x)?.relu()?,
            };
            let out = layer.ffn_out.forward(&inner)?;
            x = layer.ffn_norm.forward(&(out + &x)?)?;
        }
        x.reshape((batch, seq_len, self.hidden))
    }
}

/// A dense layer's `(inputs, outputs)` row-major weights and its bias.
pub(crate) type DenseParts = (Vec<f32>, Vec<f32>);
/// A layer norm's weight, bias and epsilon.
pub(crate) type NormParts = (Vec<f32>, Vec<f32>, f32);

/// One transformer layer's weights as plain f32 arrays.
pub(crate) struct LayerParts {
    pub qkv: DenseParts,
    pub attn_out: DenseParts,
    pub attn_norm: NormParts,
    pub ffn_in: DenseParts,
    pub ffn_out: DenseParts,
    pub ffn_norm: NormParts,
}

/// Every weight of the encoder as plain f32 arrays, for the fast encoder to pack.
pub(crate) struct BertParts {
    pub word_embeddings: Vec<f32>,
    pub position_embeddings: Vec<f32>,
    pub token_type_row: Vec<f32>,
    pub embed_norm: NormParts,
    pub layers: Vec<LayerParts>,
    pub heads: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub activation: Activation,
    /// MPNet's learned attention bias, `(buckets, heads)` row-major, and its bucket count; BERT
    /// has none.
    pub relative_bias: Option<(Vec<f32>, usize)>,
}

pub(crate) fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

impl Dense {
    fn parts(&self) -> candle_core::Result<DenseParts> {
        Ok((flat(&self.weight_t)?, flat(&self.bias)?))
    }
}

impl LayerNorm {
    fn parts(&self) -> candle_core::Result<NormParts> {
        Ok((flat(&self.weight)?, flat(&self.bias)?, self.eps))
    }
}

impl Bert {
    /// Copies every weight out as f32 arrays.
    pub(crate) fn parts(&self) -> candle_core::Result<BertParts> {
        use rayon::prelude::*;
        // A layer at a time on each thread: copying the weights out is most of a start's work.
        let layers = self
            .layers
            .par_iter()
            .map(|l| {
                Ok(LayerParts {
                    qkv: l.qkv.parts()?,
                    attn_out: l.attn_out.parts()?,
                    attn_norm: l.attn_norm.parts()?,
                    ffn_in: l.ffn_in.parts()?,
                    ffn_out: l.ffn_out.parts()?,
                    ffn_norm: l.ffn_norm.parts()?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let intermediate = self
            .layers
            .first()
            .map(|l| l.ffn_in.bias.dims1())
            .transpose()?
            .unwrap_or(0);
        Ok(BertParts {
            word_embeddings: flat(&self.word_embeddings)?,
            position_embeddings: flat(&self.position_embeddings)?,
            token_type_row: flat(&self.token_type_row)?,
            embed_norm: self.embed_norm.parts()?,
            layers,
            heads: self.heads,
            hidden: self.hidden,
            intermediate,
            max_positions: self.max_positions,
            activation: self.activation,
            relative_bias: None,
        })
    }
}

/// The tensors of a checkpoint, taken one by one with their shapes checked.
struct Weights<'a> {
    tensors: &'a mut HashMap<String, Tensor>,
    prefix: &'static str,
    device: &'a Device,
}

impl Weights<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, BertError> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .tensors
            .remove(&full)
            .ok_or_else(|| BertError::MissingTensor(full.clone()))?;
        if t.dims() != shape {
            return Err(BertError::Shape {
                name: full,
                found: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t.to_dtype(DType::F32)?.to_device(self.device)?)
    }

    fn norm(&mut self, name: &str, hidden: usize, eps: f32) -> Result<LayerNorm, BertError> {
        Ok(LayerNorm {
            weight: self.take(&format!("{name}.weight"), &[hidden])?,
            bias: self.take(&format!("{name}.bias"), &[hidden])?,
            eps,
        })
    }

    fn dense(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Dense, BertError> {
        Ok(Dense {
            weight_t: self
                .take(&format!("{name}.weight"), &[outputs, inputs])?
                .t()?
                .contiguous()?,
            bias: self.take(&format!("{name}.bias"), &[outputs])?,
        })
    }
}

/// `gelu(x + bias)` with the exact (erf) GELU, in one pass over the matrix, on all threads.
/// candle computes the bias add and the GELU as two passes, the GELU on one thread with a scalar
/// `erf`: a tenth of the forward's time.
struct BiasGeluErf<'a>(&'a Tensor);

impl candle_core::CustomOp1 for BiasGeluErf<'_> {
    fn name(&self) -> &'static str {
        "bias-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use rayon::prelude::*;
        let (start, end) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("bias-gelu-erf needs a contiguous input".into())
        })?;
        let input = &storage.as_slice::<f32>()?[start..end];
        let bias_storage = self.0.to_vec1::<f32>()?;
        let cols = bias_storage.len();
        if cols == 0 || input.len() % cols != 0 {
            candle_core::bail!(
                "bias-gelu-erf: {} values do not fill rows of {cols}",
                input.len()
            );
        }
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(cols * 16)
            .zip(input.par_chunks(cols * 16))
            .for_each(|(o, i)| bias_gelu_rows(o, i, &bias_storage));
        Ok((candle_core::CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `out[r][c] = gelu(input[r][c] + bias[c])` for whole rows. Branch-free, so the compiler
/// vectorises it; with AVX-512 present it runs a copy compiled for AVX-512.
fn bias_gelu_rows(out: &mut [f32], input: &[f32], bias: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports the features the function was compiled for (checked just above).
        unsafe { bias_gelu_rows_avx512(out, input, bias) };
        return;
    }
    bias_gelu_rows_portable(out, input, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bias_gelu_rows_avx512(out: &mut [f32], input: &[f32], bias: &[f32]) {
    bias_gelu_rows_portable(out, input, bias)
}

#[inline(always)]
fn bias_gelu_rows_portable(out: &mut [f32], input: &[f32], bias: &[f32]) {
    for (orow, irow) in out
        .chunks_exact_mut(bias.len())
        .zip(input.chunks_exact(bias.len()))
    {
        for ((o, &x), &b) in orow.iter_mut().zip(irow).zip(bias) {
            *o = gelu_erf(x + b);
        }
    }
}

/// Cephes `expf`'s constants, shared by [`exp_nonpositive`] and its 256- and 512-bit copies in
/// `kernels` (which must give the same values): arguments are clamped at `EXP_LOWEST`; `ln 2` is
/// split in a high part exact in few bits and a low correction; `EXP_POLY` is the degree-6
/// polynomial of `e^r` for |r| ≤ ln 2 / 2, highest power first (after `1 + r`).
pub(crate) const EXP_LOWEST: f32 = -87.0;
pub(crate) const LN2_HIGH: f32 = 0.693_359_4;
pub(crate) const LN2_LOW: f32 = -2.121_944_4e-4;
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_2e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// Abramowitz & Stegun 7.1.26, shared with the register copies in `kernels`: for a ≥ 0,
/// `erf(a) ≈ 1 − t·(A₀ + t·(A₁ + …))·e^(−a²)` with `t = 1 / (1 + P·a)`, within 1.5e-7.
pub(crate) const ERF_P: f32 = 0.327_591_1;
pub(crate) const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152_1,
    1.061_405_4,
];

/// `e^x` for x ≤ 0 within about 2 ulp (Cephes `expf`: range reduction by ln 2, a degree-6
/// polynomial, scaling through the exponent bits), written without branches or calls so that it
/// vectorises. Arguments below -87 give ~1e-38 instead of 0, which is harmless where it is used.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(EXP_LOWEST);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let r2 = r * r;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let p = p * r2 + r + 1.0;
    // 2^n through the exponent bits. `n as i32` would be a saturating conversion that does not
    // vectorise; adding 1.5·2^23 puts the integer n (|n| < 2^22) in the low mantissa bits instead.
    let k = (n + 12_582_912.0).to_bits() as i32 - 0x4B40_0000;
    p * f32::from_bits(((k + 127) << 23) as u32)
}

/// The exact GELU, `x/2 · (1 + erf(x/√2))`, with `erf` to within 1.5e-7 (Abramowitz & Stegun
/// 7.1.26): below f32 rounding of the result for the inputs that matter.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + ERF_P * a);
    let mut poly = ERF_A[4];
    for c in ERF_A[..4].iter().rev() {
        poly = c + t * poly;
    }
    let poly = t * poly;
    let erf_abs = 1.0 - poly * exp_nonpositive(-a * a);
    let erf = if z < 0.0 { -erf_abs } else { erf_abs };
    0.5 * x * (1.0 + erf)
}

/// The tanh approximation of GELU (`gelu_new`), as candle and PyTorch compute it.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 - 2 / (e^{2u} + 1), written with e^{-2|u|} so the exponential stays in range.
    let e = exp_nonpositive(-2.0 * u.abs());
    let t = (1.0 - e) / (1.0 + e);
    0.5 * x * (1.0 + if u < 0.0 { -t } else { t })
}

/// Reduces token states to one vector per row, the way a sentence-transformers `Pooling` module does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
    Max,
    /// The state of the last real token (decoder-style embedders).
    #[serde(rename = "lasttoken")]
    LastToken,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Max => "max",
            Pooling::LastToken => "lasttoken",
        })
    }
}

/// Pools `(batch, seq_len, hidden)` states laid out row-major in `states` over the real tokens of
/// each row (`mask` 1), then L2-normalises when `normalize` is set.
pub fn pool(
    states: &[f32],
    mask: &[u8],
    batch: usize,
    seq_len: usize,
    hidden: usize,
    pooling: Pooling,
    normalize: bool,
) -> Vec<Vec<f32>> {
    (0..batch)
        .map(|b| {
            let row = &states[b * seq_len * hidden..(b + 1) * seq_len * hidden];
            let row_mask = &mask[b * seq_len..(b + 1) * seq_len];
            let mut out = vec![0f32; hidden];
            match pooling {
                Pooling::Cls => out.copy_from_slice(&row[..hidden]),
                Pooling::LastToken => {
                    if let Some(t) = row_mask.iter().rposition(|&m| m == 1) {
                        out.copy_from_slice(&row[t * hidden..(t + 1) * hidden]);
                    }
                }
                Pooling::Mean => {
                    let mut count = 0usize;
                    for (t, _) in row_mask.iter().enumerate().filter(|(_, &m)| m == 1) {
                        count += 1;
                        for (o, v) in out.iter_mut().zip(&row[t * hidden..(t + 1) * hidden]) {
                            *o += v;
                        }
                    }
                    // sentence-transformers clamps the token count at 1e-9 to avoid a division by zero.
                    let denom = (count as f32).max(1e-9);
                    out.iter_mut().for_each(|o| *o /= denom);
                }
                Pooling::Max => {
                    out.fill(f32::MIN);
                    for (t, _) in row_mask.iter().enumerate().filter(|(_, &m)| m == 1) {
                        for (o, v) in out.iter_mut().zip(&row[t * hidden..(t + 1) * hidden]) {
                            *o = o.max(*v);
                        }
                    }
                }
            }
            if normalize {
                normalize_in_place(&mut out);
            }
            out
        })
        .collect()
}

/// Scales `v` to unit length; sentence-transformers' `Normalize` divides by max(norm, 1e-12).
pub fn normalize_in_place(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Extracts the states of a forward pass as a flat row-major vector.
pub fn states_to_vec(states: &Tensor) -> candle_core::Result<Vec<f32>> {
    states.flatten_all()?.to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_ignores_padding() {
        // Two rows of 3 tokens, hidden 2; the second row has one padded token whose state is huge.
        let states = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 1.0, 3.0, 3.0, 1e6, 1e6];
        let mask = [1, 1, 1, 1, 1, 0];
        let pooled = pool(&states, &mask, 2, 3, 2, Pooling::Mean, false);
        assert_eq!(pooled[0], vec![3.0, 4.0]);
        assert_eq!(pooled[1], vec![2.0, 2.0]);
    }

    #[test]
    fn max_and_cls_pooling() {
        let states = [1.0, 9.0, 3.0, 4.0];
        let mask = [1, 1];
        assert_eq!(
            pool(&states, &mask, 1, 2, 2, Pooling::Max, false)[0],
            vec![3.0, 9.0]
        );
        assert_eq!(
            pool(&states, &mask, 1, 2, 2, Pooling::Cls, false)[0],
            vec![1.0, 9.0]
        );
        // The last real token, not the padding after it.
        assert_eq!(
            pool(
                &[1.0, 9.0, 3.0, 4.0, 7.0, 7.0],
                &[1, 1, 0],
                1,
                3,
                2,
                Pooling::LastToken,
                false
            )[0],
            vec![3.0, 4.0]
        );
    }

    #[test]
    fn gelu_matches_the_exact_definition() {
        for i in -400..=400 {
            let x = i as f32 / 40.0;
            let exact = 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (gelu_erf(x) as f64 - exact).abs() < 2e-6,
                "{x}: {} vs {exact}",
                gelu_erf(x)
            );
        }
    }

    #[test]
    fn exp_is_accurate_on_its_range() {
        for i in 0..=8700 {
            let x = -(i as f32) / 100.0;
            let rel = (exp_nonpositive(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            assert!(rel < 5e-7, "{x}: {rel}");
        }
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        let mut v = vec![3.0, 4.0];
        normalize_in_place(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
    }
}
