//! A BERT encoder forward pass of our own, on candle tensors, loading the same safetensors as
//! `transformers.BertModel`.
//!
//! Why not `candle_transformers::models::bert`: on a CPU it runs three separate Q/K/V multiplies,
//! copies Q, K and V through transposes in every layer, and adds the padding mask even to batches
//! that have none. Here Q, K and V are one fused multiply, every linear layer works on a flat
//! `(tokens, hidden)` matrix, the softmax and layer norms are candle's fused kernels, and the mask
//! is only built when a batch has padding.
//!
//! The checkpoint is read in one place ([`Checkpoint`]) for both forwards: as candle tensors for
//! this one, as f32 arrays borrowed from the mapped file for the fast encoder to pack.
//!
//! Invariant: the output for a real (non-padding) token does not depend on the other sequences of
//! its batch, so batching and length-sorting never change a vector.

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;
use std::borrow::Cow;
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
    #[error("type_vocab_size is 0: a BERT needs at least the one token type single texts use")]
    NoTokenTypes,
    #[error("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")]
    Heads { hidden: usize, heads: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The checks on `config.json` both forwards share: the activation, and whether the positions
/// and heads are ones they handle.
fn check_config(config: &BertConfig) -> Result<Activation, BertError> {
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
    if config.type_vocab_size == 0 {
        return Err(BertError::NoTokenTypes);
    }
    Ok(activation)
}

/// Where a checkpoint's tensors are read from: candle tensors for candle's forward, or f32 arrays
/// for the fast encoder to pack.
pub(crate) trait TensorReader {
    type Tensor;
    fn contains(&self, name: &str) -> bool;
    /// Takes the tensor `name` with its shape; `None` if the checkpoint has none of that name.
    fn take(&mut self, name: &str) -> Result<Option<Shaped<Self::Tensor>>, BertError>;

    /// Takes the tensor `name`, which must be there with `shape` (what config.json implies).
    fn take_shaped(&mut self, name: &str, shape: &[usize]) -> Result<Self::Tensor, BertError> {
        let (tensor, found) = self
            .take(name)?
            .ok_or_else(|| BertError::MissingTensor(name.into()))?;
        if found != shape {
            return Err(BertError::Shape {
                name: name.into(),
                found,
                expected: shape.to_vec(),
            });
        }
        Ok(tensor)
    }
}

/// A tensor and its shape as the checkpoint states it.
pub(crate) type Shaped<T> = (T, Vec<usize>);

/// A weight and its bias.
type Pair<T> = (T, T);

/// One transformer layer's tensors, as the checkpoint names them.
struct LayerTensors<T> {
    query: Pair<T>,
    key: Pair<T>,
    value: Pair<T>,
    attn_out: Pair<T>,
    attn_norm: Pair<T>,
    ffn_in: Pair<T>,
    ffn_out: Pair<T>,
    ffn_norm: Pair<T>,
}

/// A BERT checkpoint's tensors by role, every shape checked against `config.json`. Dense weights
/// are `(outputs, inputs)`, as PyTorch stores them.
struct Checkpoint<T> {
    activation: Activation,
    word_embeddings: T,
    position_embeddings: T,
    token_types: T,
    embed_norm: Pair<T>,
    layers: Vec<LayerTensors<T>>,
}

impl<T> Checkpoint<T> {
    fn read<R: TensorReader<Tensor = T>>(
        config: &BertConfig,
        reader: &mut R,
    ) -> Result<Self, BertError> {
        let activation = check_config(config)?;
        // Checkpoints saved from BertForX carry a `bert.` prefix; plain BertModel ones do not.
        let prefix = if reader.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let mut take = |name: &str, shape: &[usize]| -> Result<T, BertError> {
            reader.take_shaped(&format!("{prefix}{name}"), shape)
        };
        let h = config.hidden_size;
        let inner = config.intermediate_size;
        // A weight of `shape` and a bias of `outputs` values.
        let mut pair =
            |name: &str, shape: &[usize], outputs: usize| -> Result<Pair<T>, BertError> {
                Ok((
                    take(&format!("{name}.weight"), shape)?,
                    take(&format!("{name}.bias"), &[outputs])?,
                ))
            };
        let embed_norm = pair("embeddings.LayerNorm", &[h], h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let attention = format!("{p}.attention.self");
            layers.push(LayerTensors {
                query: pair(&format!("{attention}.query"), &[h, h], h)?,
                key: pair(&format!("{attention}.key"), &[h, h], h)?,
                value: pair(&format!("{attention}.value"), &[h, h], h)?,
                attn_out: pair(&format!("{p}.attention.output.dense"), &[h, h], h)?,
                attn_norm: pair(&format!("{p}.attention.output.LayerNorm"), &[h], h)?,
                ffn_in: pair(&format!("{p}.intermediate.dense"), &[inner, h], inner)?,
                ffn_out: pair(&format!("{p}.output.dense"), &[h, inner], h)?,
                ffn_norm: pair(&format!("{p}.output.LayerNorm"), &[h], h)?,
            });
        }
        Ok(Self {
            activation,
            word_embeddings: take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: take(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_types: take(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?,
            embed_norm,
            layers,
        })
    }
}

impl Bert {
    /// Builds the encoder from the tensors of a safetensors file, checking every shape against `config`.
    pub fn from_tensors(
        config: &BertConfig,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, BertError> {
        let checkpoint = Checkpoint::read(config, &mut CandleTensors { tensors, device })?;
        let norm = |(weight, bias): Pair<Tensor>| LayerNorm {
            weight,
            bias,
            eps: config.layer_norm_eps as f32,
        };
        // Stored pre-transposed, `(inputs, outputs)`, so the multiply reads it contiguously.
        let dense = |(weight, bias): Pair<Tensor>| -> candle_core::Result<Dense> {
            Ok(Dense {
                weight_t: weight.t()?.contiguous()?,
                bias,
            })
        };
        let mut layers = Vec::with_capacity(checkpoint.layers.len());
        for l in checkpoint.layers {
            let (q, qb) = l.query;
            let (k, kb) = l.key;
            let (v, vb) = l.value;
            layers.push(Layer {
                qkv: dense((Tensor::cat(&[q, k, v], 0)?, Tensor::cat(&[qb, kb, vb], 0)?))?,
                attn_out: dense(l.attn_out)?,
                attn_norm: norm(l.attn_norm),
                ffn_in: dense(l.ffn_in)?,
                ffn_out: dense(l.ffn_out)?,
                ffn_norm: norm(l.ffn_norm),
            });
        }
        let h = config.hidden_size;
        Ok(Self {
            word_embeddings: checkpoint.word_embeddings,
            position_embeddings: checkpoint.position_embeddings,
            token_type_row: checkpoint.token_types.get(0)?,
            embed_norm: norm(checkpoint.embed_norm),
            layers,
            heads: config.num_attention_heads,
            head_dim: h / config.num_attention_heads,
            hidden: h,
            max_positions: config.max_position_embeddings,
            activation: checkpoint.activation,
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

/// A dense layer's weights as checkpoints store them, `(outputs, inputs)` row-major, in blocks of
/// whole rows stacked in order (Q, K and V for the fused projection), and its bias.
pub(crate) struct DenseParts<'a> {
    pub rows: Vec<Cow<'a, [f32]>>,
    pub bias: Vec<f32>,
}
/// A layer norm's weight, bias and epsilon.
pub(crate) type NormParts = (Vec<f32>, Vec<f32>, f32);

/// One transformer layer's weights as plain f32 arrays.
pub(crate) struct LayerParts<'a> {
    pub qkv: DenseParts<'a>,
    pub attn_out: DenseParts<'a>,
    pub attn_norm: NormParts,
    pub ffn_in: DenseParts<'a>,
    pub ffn_out: DenseParts<'a>,
    pub ffn_norm: NormParts,
}

/// Every weight of the encoder as plain f32 arrays, for the fast encoder to pack. The dense
/// weights may be borrowed from the mapped file, which then outlives them.
pub(crate) struct BertParts<'a> {
    pub word_embeddings: Vec<f32>,
    pub position_embeddings: Vec<f32>,
    pub token_type_row: Vec<f32>,
    pub embed_norm: NormParts,
    pub layers: Vec<LayerParts<'a>>,
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

impl<'a> BertParts<'a> {
    /// The weights of a BERT checkpoint straight from its safetensors buffer, every shape checked
    /// against `config`. The dense weights stay in the buffer where they are f32 already, to be
    /// packed from there: candle's tensors, their transposes for its own forward and copies of
    /// those for packing took ~320 MB of fresh pages at each start, whose zeroing by the kernel
    /// was most of a start's time (AMD EPYC family 25 model 17, 2026-12-04).
    pub(crate) fn from_file(
        config: &BertConfig,
        file: &safetensors::SafeTensors<'a>,
    ) -> Result<Self, BertError> {
        let mut reader = FileTensors::new(file);
        let checkpoint = Checkpoint::read(config, &mut reader)?;
        let eps = config.layer_norm_eps as f32;
        let norm = |(weight, bias): Pair<Cow<[f32]>>| (weight.into_owned(), bias.into_owned(), eps);
        let dense = |(weight, bias): Pair<Cow<'a, [f32]>>| DenseParts {
            rows: vec![weight],
            bias: bias.into_owned(),
        };
        let layers = checkpoint
            .layers
            .into_iter()
            .map(|l| LayerParts {
                qkv: DenseParts {
                    rows: vec![l.query.0, l.key.0, l.value.0],
                    bias: [l.query.1, l.key.1, l.value.1].concat(),
                },
                attn_out: dense(l.attn_out),
                attn_norm: norm(l.attn_norm),
                ffn_in: dense(l.ffn_in),
                ffn_out: dense(l.ffn_out),
                ffn_norm: norm(l.ffn_norm),
            })
            .collect();
        let hidden = config.hidden_size;
        Ok(Self {
            word_embeddings: checkpoint.word_embeddings.into_owned(),
            position_embeddings: checkpoint.position_embeddings.into_owned(),
            token_type_row: checkpoint.token_types[..hidden].to_vec(),
            embed_norm: norm(checkpoint.embed_norm),
            layers,
            heads: config.num_attention_heads,
            hidden,
            intermediate: config.intermediate_size,
            max_positions: config.max_position_embeddings,
            activation: checkpoint.activation,
            relative_bias: None,
        })
    }
}

/// A checkpoint's candle tensors, taken out as f32 on `device`.
struct CandleTensors<'a> {
    tensors: HashMap<String, Tensor>,
    device: &'a Device,
}

impl TensorReader for CandleTensors<'_> {
    type Tensor = Tensor;
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn take(&mut self, name: &str) -> Result<Option<Shaped<Tensor>>, BertError> {
        let Some(t) = self.tensors.remove(name) else {
            return Ok(None);
        };
        let shape = t.dims().to_vec();
        Ok(Some((
            t.to_dtype(DType::F32)?.to_device(self.device)?,
            shape,
        )))
    }
}

/// A safetensors file's tensors as f32 arrays: borrowed from its buffer where they are f32 (and
/// aligned), converted by candle where they are not (f16, bf16).
pub(crate) struct FileTensors<'a> {
    views: HashMap<String, safetensors::tensor::TensorView<'a>>,
}

impl<'a> FileTensors<'a> {
    pub(crate) fn new(file: &safetensors::SafeTensors<'a>) -> Self {
        Self {
            views: file.tensors().into_iter().collect(),
        }
    }
}

impl<'a> TensorReader for FileTensors<'a> {
    type Tensor = Cow<'a, [f32]>;
    fn contains(&self, name: &str) -> bool {
        self.views.contains_key(name)
    }
    fn take(&mut self, name: &str) -> Result<Option<Shaped<Self::Tensor>>, BertError> {
        use candle_core::safetensors::Load;
        let Some(view) = self.views.remove(name) else {
            return Ok(None);
        };
        let shape = view.shape().to_vec();
        if view.dtype() == safetensors::Dtype::F32 && cfg!(target_endian = "little") {
            if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(view.data()) {
                return Ok(Some((Cow::Borrowed(values), shape)));
            }
        }
        let values = flat(&view.load(&Device::Cpu)?.to_dtype(DType::F32)?)?;
        Ok(Some((Cow::Owned(values), shape)))
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
pub(crate) mod tests {
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

    /// A BERT of one layer, 4 wide, 2 heads, an inner width of 8: its tensors by name, each
    /// filled with multiples of 1/8 in [-4, 4), which f16 and bf16 hold exactly.
    fn tiny_checkpoint() -> (BertConfig, Vec<(String, Tensor)>) {
        let config = BertConfig {
            vocab_size: 10,
            hidden_size: 4,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 8,
            hidden_act: "gelu".into(),
            max_position_embeddings: 6,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            model_type: None,
            position_embedding_type: None,
        };
        let layer = "encoder.layer.0";
        let mut shapes = vec![
            ("embeddings.word_embeddings.weight".to_string(), vec![10, 4]),
            ("embeddings.position_embeddings.weight".into(), vec![6, 4]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, 4]),
        ];
        let dense = [
            ("attention.self.query", 4, 4),
            ("attention.self.key", 4, 4),
            ("attention.self.value", 4, 4),
            ("attention.output.dense", 4, 4),
            ("intermediate.dense", 4, 8),
            ("output.dense", 8, 4),
        ];
        for (name, inputs, outputs) in dense {
            shapes.push((format!("{layer}.{name}.weight"), vec![outputs, inputs]));
            shapes.push((format!("{layer}.{name}.bias"), vec![outputs]));
        }
        for norm in [
            "embeddings.LayerNorm".to_string(),
            format!("{layer}.attention.output.LayerNorm"),
            format!("{layer}.output.LayerNorm"),
        ] {
            shapes.push((format!("{norm}.weight"), vec![4]));
            shapes.push((format!("{norm}.bias"), vec![4]));
        }
        let tensors = shapes
            .into_iter()
            .enumerate()
            .map(|(i, (name, shape))| {
                let n = shape.iter().product::<usize>();
                let values = (0..n)
                    .map(|j| ((i * 31 + j * 7) % 64) as f32 / 8.0 - 4.0)
                    .collect::<Vec<_>>();
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        (config, tensors)
    }

    /// Every array of `parts`, in a fixed order.
    fn arrays(parts: &BertParts) -> Vec<Vec<f32>> {
        let mut out = vec![
            parts.word_embeddings.clone(),
            parts.position_embeddings.clone(),
            parts.token_type_row.clone(),
            parts.embed_norm.0.clone(),
            parts.embed_norm.1.clone(),
        ];
        for l in &parts.layers {
            for dense in [&l.qkv, &l.attn_out, &l.ffn_in, &l.ffn_out] {
                out.push(dense.rows.concat());
                out.push(dense.bias.clone());
            }
            for norm in [&l.attn_norm, &l.ffn_norm] {
                out.push(norm.0.clone());
                out.push(norm.1.clone());
            }
        }
        out
    }

    /// `tensors` as a safetensors file in `dtype`, every name after `prefix`, without `skip`.
    pub(crate) fn checkpoint_file(
        tensors: &[(String, Tensor)],
        dtype: DType,
        prefix: &str,
        skip: &str,
    ) -> Vec<u8> {
        safetensors::serialize(
            tensors
                .iter()
                .filter(|(name, _)| name != skip)
                .map(|(name, t)| (format!("{prefix}{name}"), t.to_dtype(dtype).unwrap())),
            None,
        )
        .unwrap()
    }

    #[test]
    fn parts_read_from_a_file_are_its_tensors_in_any_dtype_and_with_a_prefix() {
        let (config, tensors) = tiny_checkpoint();
        let file =
            |dtype: DType, prefix: &str, skip: &str| checkpoint_file(&tensors, dtype, prefix, skip);
        let read = |buffer: &[u8]| {
            let file = safetensors::SafeTensors::deserialize(buffer).unwrap();
            BertParts::from_file(&config, &file).map(|parts| arrays(&parts))
        };
        let f32_file = file(DType::F32, "", "");
        let parts = BertParts::from_file(
            &config,
            &safetensors::SafeTensors::deserialize(&f32_file).unwrap(),
        )
        .unwrap();
        // f32 weights are packed from the file itself, as stored: (outputs, inputs), and Q, K and
        // V as three blocks with their biases end to end.
        let layer = &parts.layers[0];
        assert!(layer
            .ffn_in
            .rows
            .iter()
            .all(|b| matches!(b, Cow::Borrowed(_))));
        let tensor = |name: &str| {
            let (_, t) = tensors.iter().find(|(n, _)| n == name).unwrap();
            flat(t).unwrap()
        };
        assert_eq!(
            &*layer.ffn_in.rows[0],
            tensor("encoder.layer.0.intermediate.dense.weight")
        );
        assert_eq!(layer.qkv.rows.len(), 3);
        assert_eq!(
            &*layer.qkv.rows[1],
            tensor("encoder.layer.0.attention.self.key.weight")
        );
        assert_eq!(
            layer.qkv.bias[4..8],
            tensor("encoder.layer.0.attention.self.key.bias")
        );
        assert_eq!(
            parts.token_type_row,
            tensor("embeddings.token_type_embeddings.weight")[..4]
        );
        // f16 and bf16 checkpoints (converted by candle) and a `bert.` prefix give the same arrays.
        let want = arrays(&parts);
        assert_eq!(read(&file(DType::F16, "", "")).unwrap(), want);
        assert_eq!(read(&file(DType::BF16, "bert.", "")).unwrap(), want);
        // A missing tensor and a wrong shape are named.
        let missing = "encoder.layer.0.output.dense.bias";
        let error = read(&file(DType::F32, "", missing))
            .unwrap_err()
            .to_string();
        assert!(error.contains(missing), "{error}");
        let mut config = config.clone();
        config.intermediate_size = 6;
        let file = safetensors::SafeTensors::deserialize(&f32_file).unwrap();
        let error = BertParts::from_file(&config, &file)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("intermediate.dense.weight") && error.contains("[6, 4]"),
            "{error}"
        );
        config.intermediate_size = 8;
        config.type_vocab_size = 0;
        let error = BertParts::from_file(&config, &file).err().unwrap();
        assert!(matches!(error, BertError::NoTokenTypes), "{error}");
    }
}
