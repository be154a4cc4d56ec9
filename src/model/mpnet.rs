//! MPNet (all-mpnet-base-v2's encoder) on candle, which candle-transformers does not have.
//!
//! MPNet is a post-norm BERT without token types whose attention scores get a learned bias per head
//! and relative-position bucket (T5's buckets, both directions), and whose positions start after the
//! padding id as RoBERTa's do. Loads the checkpoint layout of `transformers.MPNetModel`.
//!
//! Invariant (as for every encoder of `architectures.rs`): called on batches of one length, no
//! padding, so positions run 2, 3, … for every row.

use super::bert::{Activation, BertParts, DenseParts, LayerParts, NormParts};
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

/// The fast encoder's activation for an MPNet of `activation` and padding id `pad`, `None` where
/// only candle's forward runs it: an activation the fast encoder does not have, or positions not
/// numbered from 2.
pub(crate) fn fast_activation(activation: candle_nn::Activation, pad: usize) -> Option<Activation> {
    // The folder's length limit assumes positions from 2 (padding id 1, as every published MPNet
    // has); another numbering stays on candle's forward, which checks each position.
    if pad != 1 {
        return None;
    }
    match activation {
        candle_nn::Activation::Gelu => Some(Activation::GeluErf),
        candle_nn::Activation::NewGelu | candle_nn::Activation::GeluPytorchTanh => {
            Some(Activation::GeluTanh)
        }
        candle_nn::Activation::Relu => Some(Activation::Relu),
        _ => None,
    }
}

/// MPNet's weights for the fast encoder straight from the mapped checkpoint, every shape checked
/// against `config`, in the fast encoder's layout: Q, K and V as one multiply, positions from the
/// padding id + 1 as the first row, no token types. Read without building candle's tensors first
/// (all-mpnet-base-v2 holds 438 MB of them, copied into fresh pages at each start). Dense weights
/// stay in the file's buffer where it stores them as f32. An error names the tensor that is
/// missing or misshapen, or what the fast encoder cannot run ([`fast_activation`]).
pub(crate) fn parts_from_file<'a>(
    config: &Config,
    file: &safetensors::SafeTensors<'a>,
) -> std::result::Result<BertParts<'a>, String> {
    use super::bert::{BertError, FileTensors, TensorReader};
    use std::borrow::Cow;
    let h = config.hidden_size;
    let heads = config.num_attention_heads;
    if heads == 0 || !h.is_multiple_of(heads) {
        return Err(format!(
            "hidden_size {h} is not a multiple of num_attention_heads {heads}"
        ));
    }
    let Some(activation) = fast_activation(config.hidden_act, config.pad_token_id) else {
        return Err(format!(
            "the fast encoder runs MPNet with gelu, gelu_new or relu and padding id 1; this one has {:?} and padding id {}",
            config.hidden_act, config.pad_token_id
        ));
    };
    let mut reader = FileTensors::new(file);
    // sentence-transformers saves the bare MPNetModel; a checkpoint of a task model carries
    // `mpnet.` before every name.
    let prefix = if reader.contains("mpnet.embeddings.word_embeddings.weight") {
        "mpnet."
    } else {
        ""
    };
    let mut take = |name: &str, shape: &[usize]| -> std::result::Result<Cow<'a, [f32]>, String> {
        let full = format!("{prefix}{name}");
        reader.take_shaped(&full, shape).map_err(|e| match e {
            BertError::MissingTensor(_) => {
                format!("the weights have no tensor `{full}` (is this an MPNet model?)")
            }
            BertError::Shape { .. } => e.to_string(),
            other => format!("tensor `{full}`: {other}"),
        })
    };
    /// A layer norm's weight and bias, `width` each.
    fn norm<'a>(
        take: &mut impl FnMut(&str, &[usize]) -> std::result::Result<Cow<'a, [f32]>, String>,
        name: &str,
        width: usize,
        eps: f32,
    ) -> std::result::Result<NormParts, String> {
        Ok((
            take(&format!("{name}.weight"), &[width])?.into_owned(),
            take(&format!("{name}.bias"), &[width])?.into_owned(),
            eps,
        ))
    }
    /// The weights of `names` as one multiply: `(outputs, inputs)` each, as PyTorch stores them
    /// and the fast encoder packs them, stacked in order, with their biases end to end.
    fn dense<'a>(
        take: &mut impl FnMut(&str, &[usize]) -> std::result::Result<Cow<'a, [f32]>, String>,
        names: &[String],
        inputs: usize,
        outputs: usize,
    ) -> std::result::Result<DenseParts<'a>, String> {
        let mut parts = DenseParts {
            rows: Vec::with_capacity(names.len()),
            bias: Vec::with_capacity(names.len() * outputs),
        };
        for name in names {
            parts
                .rows
                .push(take(&format!("{name}.weight"), &[outputs, inputs])?);
            parts
                .bias
                .extend_from_slice(&take(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(parts)
    }
    let inner = config.intermediate_size;
    let eps = config.layer_norm_eps as f32;
    let embed_norm = norm(&mut take, "embeddings.LayerNorm", h, eps)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let at = |name: &str| format!("encoder.layer.{i}.{name}");
        let attention = ["q", "k", "v"].map(|part| at(&format!("attention.attn.{part}")));
        layers.push(LayerParts {
            qkv: dense(&mut take, &attention, h, h)?,
            attn_out: dense(&mut take, &[at("attention.attn.o")], h, h)?,
            attn_norm: norm(&mut take, &at("attention.LayerNorm"), h, eps)?,
            ffn_in: dense(&mut take, &[at("intermediate.dense")], h, inner)?,
            ffn_out: dense(&mut take, &[at("output.dense")], inner, h)?,
            ffn_norm: norm(&mut take, &at("output.LayerNorm"), h, eps)?,
        });
    }
    let words = take("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
    let positions = take(
        "embeddings.position_embeddings.weight",
        &[config.max_position_embeddings, h],
    )?;
    let relative_bias = take(
        "encoder.relative_attention_bias.weight",
        &[config.relative_attention_num_buckets, heads],
    )?;
    // Positions count from the padding id + 1: the table's first rows are never used.
    let first = config.pad_token_id + 1;
    let max_positions = config.max_position_embeddings.saturating_sub(first);
    Ok(BertParts {
        word_embeddings: words.into_owned(),
        position_embeddings: positions[first.min(config.max_position_embeddings) * h..].to_vec(),
        token_type_row: vec![0.0; h],
        embed_norm,
        layers,
        heads,
        hidden: h,
        intermediate: inner,
        max_positions,
        activation,
        relative_bias: Some((
            relative_bias.into_owned(),
            config.relative_attention_num_buckets,
        )),
    })
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

    /// A tiny MPNet checkpoint of made-up weights: two layers, hidden 64 (two heads of 32),
    /// inner 128, 20 words, 18 positions (16 usable), 32 buckets.
    #[cfg(target_arch = "x86_64")]
    fn tiny_checkpoint() -> (super::Config, Vec<(String, candle_core::Tensor)>) {
        let config = super::Config {
            vocab_size: 20,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 128,
            max_position_embeddings: 18,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            relative_attention_num_buckets: 32,
            hidden_act: candle_nn::Activation::Gelu,
        };
        let mut shapes = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                vec![20, 64],
            ),
            ("embeddings.position_embeddings.weight".into(), vec![18, 64]),
            ("encoder.relative_attention_bias.weight".into(), vec![32, 2]),
            ("embeddings.LayerNorm.weight".into(), vec![64]),
            ("embeddings.LayerNorm.bias".into(), vec![64]),
        ];
        for i in 0..2 {
            let layer = format!("encoder.layer.{i}");
            for (name, inputs, outputs) in [
                ("attention.attn.q", 64, 64),
                ("attention.attn.k", 64, 64),
                ("attention.attn.v", 64, 64),
                ("attention.attn.o", 64, 64),
                ("intermediate.dense", 64, 128),
                ("output.dense", 128, 64),
            ] {
                shapes.push((format!("{layer}.{name}.weight"), vec![outputs, inputs]));
                shapes.push((format!("{layer}.{name}.bias"), vec![outputs]));
            }
            for norm in ["attention.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{layer}.{norm}.weight"), vec![64]));
                shapes.push((format!("{layer}.{norm}.bias"), vec![64]));
            }
        }
        // Values spread over about ±0.3 (norms' weights around 1), different in every tensor.
        let mut state = 0x2545_f491_u32;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product::<usize>();
                let is_norm_weight = name.ends_with("LayerNorm.weight");
                let values = (0..n)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        let v = (state % 1000) as f32 / 1000.0 * 0.6 - 0.3;
                        if is_norm_weight {
                            1.0 + v
                        } else {
                            v
                        }
                    })
                    .collect::<Vec<_>>();
                let tensor =
                    candle_core::Tensor::from_vec(values, shape, &candle_core::Device::Cpu)
                        .unwrap();
                (name, tensor)
            })
            .collect();
        (config, tensors)
    }

    /// The fast encoder on weights read straight from a checkpoint file gives candle's MPNet
    /// forward (the reference, `MpNet::forward`) on the same weights; a `mpnet.` prefix and a
    /// bf16 file read alike; a missing or misshapen tensor is named.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn weights_read_from_the_file_run_as_candles_mpnet_forward() {
        use super::super::fast::FastBert;
        use super::super::kernels::Kernel;
        use candle_core::{DType, Device, Tensor};
        let Some(kernel) = [Kernel::F32Avx512x8x48, Kernel::F32Avx2x6x16]
            .into_iter()
            .find(|k| k.available())
        else {
            panic!("this test needs an x86-64 CPU with AVX2 (the fast encoder's least)");
        };
        let (config, tensors) = tiny_checkpoint();
        let file = |dtype: DType, prefix: &str, skip: &str| {
            super::super::bert::tests::checkpoint_file(&tensors, dtype, prefix, skip)
        };
        let largest_difference = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        let ids: Vec<u32> = vec![0, 5, 19, 3, 3, 7, 11, 2, 14, 9, 1, 6, 8];
        // Last hidden states of `ids` as one sequence, by the fast encoder from `buffer`.
        let fast = |config: &super::Config, buffer: &[u8]| -> Result<Vec<f32>, String> {
            let file = safetensors::SafeTensors::deserialize(buffer).unwrap();
            let parts = super::parts_from_file(config, &file)?;
            let encoder = FastBert::from_parts(parts, kernel).map_err(|e| e.to_string())?;
            Ok(encoder
                .forward_pooled(&ids, &[ids.len()], false, |states| states.to_vec())
                .remove(0))
        };
        let f32_file = file(DType::F32, "", "");
        let got = fast(&config, &f32_file).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(
            tensors.iter().cloned().collect(),
            DType::F32,
            &Device::Cpu,
        );
        let reference = super::MpNet::load(vb, &config).unwrap();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want = reference
            .forward(&input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got.len(), want.len());
        let worst = largest_difference(&got, &want);
        assert!(
            worst < 1e-4,
            "largest difference to candle's forward: {worst}"
        );
        // A task model's prefix reads the same; bf16 weights (converted by candle) run too.
        assert_eq!(fast(&config, &file(DType::F32, "mpnet.", "")).unwrap(), got);
        let rounded = fast(&config, &file(DType::BF16, "", "")).unwrap();
        let moved = largest_difference(&rounded, &got);
        assert!(
            moved > 0.0 && moved < 0.1,
            "bf16 weights moved states by {moved}"
        );
        // What is wrong is named.
        let missing = "encoder.layer.1.attention.attn.v.bias";
        let error = fast(&config, &file(DType::F32, "", missing)).unwrap_err();
        assert!(error.contains(missing), "{error}");
        let mut wrong = config.clone();
        wrong.intermediate_size = 96;
        let error = fast(&wrong, &f32_file).unwrap_err();
        assert!(
            error.contains("encoder.layer.0.intermediate.dense.weight")
                && error.contains("[96, 64]"),
            "{error}"
        );
        wrong = config.clone();
        wrong.hidden_act = candle_nn::Activation::Silu;
        let error = fast(&wrong, &f32_file).unwrap_err();
        assert!(error.contains("gelu") && error.contains("Silu"), "{error}");
    }

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
