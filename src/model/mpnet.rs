//! MPNet (all-mpnet-base-v2's encoder) on candle, which candle-transformers does not have.
//!
//! MPNet is a post-norm BERT without token types whose attention scores get a learned bias per head
//! and relative-position bucket (T5's buckets, both directions), and whose positions start after the
//! padding id as RoBERTa's do. Loads the checkpoint layout of `transformers.MPNetModel`.
//!
//! Invariant (as for every encoder of `architectures.rs`): called on batches of one length, no
//! padding, so positions run 2, 3, … for every row.

use super::bert::{flat, Activation, BertParts, DenseParts, LayerParts, NormParts};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The fields of an MPNet `config.json` the forward needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pad")]
    pub pad_token_id: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_act")]
    pub hidden_act: candle_nn::Activation,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_pad() -> usize {
    1
}
fn default_buckets() -> usize {
    32
}
fn default_act() -> candle_nn::Activation {
    candle_nn::Activation::Gelu
}

/// How far apart two tokens may be before their bucket stops growing (transformers' default).
const MAX_DISTANCE: f64 = 128.0;

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The MPNet encoder.
pub struct MpNet {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    relative_bias: Embedding,
    heads: usize,
    head_dim: usize,
    buckets: usize,
    pad: usize,
    activation: candle_nn::Activation,
    device: Device,
}

impl MpNet {
    pub fn load(vb: VarBuilder, c: &Config) -> Result<Self> {
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!(
                "hidden_size {h} is not a multiple of num_attention_heads {}",
                c.num_attention_heads
            );
        }
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let a = l.pp("attention");
                Ok(Layer {
                    q: linear(h, h, a.pp("attn.q"))?,
                    k: linear(h, h, a.pp("attn.k"))?,
                    v: linear(h, h, a.pp("attn.v"))?,
                    o: linear(h, h, a.pp("attn.o"))?,
                    attention_norm: layer_norm(h, c.layer_norm_eps, a.pp("LayerNorm"))?,
                    intermediate: linear(h, c.intermediate_size, l.pp("intermediate.dense"))?,
                    output: linear(c.intermediate_size, h, l.pp("output.dense"))?,
                    output_norm: layer_norm(h, c.layer_norm_eps, l.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(c.vocab_size, h, e.pp("word_embeddings"))?,
            position_embeddings: embedding(
                c.max_position_embeddings,
                h,
                e.pp("position_embeddings"),
            )?,
            embedding_norm: layer_norm(h, c.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
            relative_bias: embedding(
                c.relative_attention_num_buckets,
                c.num_attention_heads,
                vb.pp("encoder.relative_attention_bias"),
            )?,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            buckets: c.relative_attention_num_buckets,
            pad: c.pad_token_id,
            activation: c.hidden_act,
            device: vb.device().clone(),
        })
    }

    /// Last hidden states `(batch, len, hidden)` of unpadded rows of token ids `(batch, len)`.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor> {
        let (batch, len) = input.dims2()?;
        // Positions count from the padding id + 1, as transformers numbers them.
        let positions = Tensor::arange(
            (self.pad + 1) as u32,
            (self.pad + 1 + len) as u32,
            &self.device,
        )?;
        let mut x = self
            .word_embeddings
            .forward(input)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?
            .apply(&self.embedding_norm)?;
        let bias = self.position_bias(len)?; // (1, heads, len, len)
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((batch, len, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let scale = (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let q = split(layer.q.forward(&x)?)?;
            let k = split(layer.k.forward(&x)?)?;
            let v = split(layer.v.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .flatten_from(D::Minus2)?;
            let attended = (layer.o.forward(&context)? + &x)?.apply(&layer.attention_norm)?;
            let inner = layer
                .intermediate
                .forward(&attended)?
                .apply(&self.activation)?;
            x = (layer.output.forward(&inner)? + attended)?.apply(&layer.output_norm)?;
        }
        Ok(x)
    }

    /// The fast encoder's activation for this model, `None` where only candle's forward runs it:
    /// an activation the fast encoder does not have, or positions not numbered from 2.
    fn fast_activation(&self) -> Option<Activation> {
        // The folder's length limit assumes positions from 2 (padding id 1, as every published
        // MPNet has); another numbering stays on candle's forward, which checks each position.
        if self.pad != 1 {
            return None;
        }
        match self.activation {
            candle_nn::Activation::Gelu => Some(Activation::GeluErf),
            candle_nn::Activation::NewGelu | candle_nn::Activation::GeluPytorchTanh => {
                Some(Activation::GeluTanh)
            }
            candle_nn::Activation::Relu => Some(Activation::Relu),
            _ => None,
        }
    }

    /// The hidden and inner widths of the fast encoder's multiplies, `None` if it cannot run
    /// this model (see [`MpNet::into_parts`]).
    pub(crate) fn fast_shape(&self) -> Option<(usize, usize)> {
        self.fast_activation()?;
        let inner = self
            .layers
            .first()
            .map(|l| l.intermediate.weight().dims()[0]);
        Some((self.heads * self.head_dim, inner.unwrap_or(0)))
    }

    /// Every weight as plain f32 arrays, in the fast encoder's layout: Q, K and V as one
    /// multiply, positions from the padding id + 1 as the first row, no token types. Taken apart
    /// a layer at a time, each layer's tensors dropped once copied: the next layer's copies reuse
    /// their memory instead of the kernel's fresh pages (all-mpnet-base-v2 holds 438 MB of them).
    /// An error if the fast encoder cannot run this model ([`MpNet::fast_shape`] says so first).
    pub(crate) fn into_parts(mut self) -> Result<BertParts<'static>> {
        let (Some(activation), Some((hidden, intermediate))) =
            (self.fast_activation(), self.fast_shape())
        else {
            candle_core::bail!(
                "the fast encoder runs MPNet with gelu, gelu_new or relu and padding id 1; this one has {:?} and padding id {}",
                self.activation,
                self.pad
            );
        };
        // candle's Linear keeps (outputs, inputs), as the fast encoder packs from.
        let dense = |layers: &[&Linear]| -> Result<DenseParts<'static>> {
            let mut parts = DenseParts {
                rows: Vec::with_capacity(layers.len()),
                bias: Vec::new(),
            };
            for layer in layers {
                parts.rows.push(flat(layer.weight())?.into());
                match layer.bias() {
                    Some(bias) => parts.bias.extend(flat(bias)?),
                    None => parts.bias.extend(vec![0.0; layer.weight().dim(0)?]),
                }
            }
            Ok(parts)
        };
        let norm = |n: &LayerNorm| -> Result<NormParts> {
            let bias = match n.bias() {
                Some(b) => flat(b)?,
                None => vec![0.0; hidden],
            };
            Ok((flat(n.weight())?, bias, n.eps() as f32))
        };
        let layers = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|l| {
                Ok(LayerParts {
                    qkv: dense(&[&l.q, &l.k, &l.v])?,
                    attn_out: dense(&[&l.o])?,
                    attn_norm: norm(&l.attention_norm)?,
                    ffn_in: dense(&[&l.intermediate])?,
                    ffn_out: dense(&[&l.output])?,
                    ffn_norm: norm(&l.output_norm)?,
                })
                // `l` dropped here, its tensors with it.
            })
            .collect::<Result<Vec<_>>>()?;
        let positions = self.position_embeddings.embeddings();
        let first = self.pad + 1;
        let max_positions = positions.dim(0)?.saturating_sub(first);
        Ok(BertParts {
            word_embeddings: flat(self.word_embeddings.embeddings())?,
            position_embeddings: flat(&positions.narrow(0, first, max_positions)?)?,
            token_type_row: vec![0.0; hidden],
            embed_norm: norm(&self.embedding_norm)?,
            intermediate,
            layers,
            heads: self.heads,
            hidden,
            max_positions,
            activation,
            relative_bias: Some((
                flat(&self.relative_bias.embeddings().to_dtype(DType::F32)?)?,
                self.buckets,
            )),
        })
    }

    /// The learned bias of each head for each (query, key) pair's relative-position bucket.
    fn position_bias(&self, len: usize) -> Result<Tensor> {
        let mut buckets = Vec::with_capacity(len * len);
        for query in 0..len as i64 {
            for key in 0..len as i64 {
                buckets.push(relative_bucket(key - query, self.buckets) as u32);
            }
        }
        let buckets = Tensor::from_vec(buckets, (len, len), &self.device)?;
        self.relative_bias
            .forward(&buckets)? // (len, len, heads)
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(DType::F32)?
            .contiguous()
    }
}

/// T5's bidirectional bucket of a relative position (key − query): half the buckets for keys
/// before the query, half for keys after; within each half, exact distances up to a quarter of the
/// buckets, then logarithmically wider ones up to [`MAX_DISTANCE`].
pub(crate) fn relative_bucket(relative: i64, buckets: usize) -> usize {
    let half = buckets / 2;
    let n = -relative;
    let mut bucket = if n < 0 { half } else { 0 };
    let n = n.unsigned_abs() as usize;
    let exact = half / 2;
    bucket += if n < exact {
        n
    } else {
        // transformers converts the logarithmic part with `.to(torch.long)`: truncation.
        let wide = ((n as f64 / exact as f64).ln() / (MAX_DISTANCE / exact as f64).ln()
            * (half - exact) as f64) as usize;
        (exact + wide).min(half - 1)
    };
    bucket
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn buckets_are_t5s() {
        // Values of transformers' MPNet `relative_position_bucket` with 32 buckets, distance 128.
        let cases = [
            (0, 0),
            (-1, 1),
            (-7, 7),
            (-8, 8),
            (-12, 9),
            (-16, 10),
            (-100, 15),
            (-1000, 15),
            (1, 17),
            (7, 23),
            (8, 24),
            (20, 26),
            (127, 31),
            (500, 31),
        ];
        for (relative, bucket) in cases {
            assert_eq!(relative_bucket(relative, 32), bucket, "relative {relative}");
        }
    }
}
