//! Every encoder architecture candle-transformers runs, behind one interface: BERT, XLM-RoBERTa
//! (and RoBERTa), DistilBERT, ModernBERT, NomicBert and JinaBert.
//!
//! BERT models run our own fast forward (`fast.rs`); this module runs every other architecture, and
//! BERT too when asked for the reference (`--kernels candle`, and the test that checks the fast
//! forward against candle-transformers' `BertModel`).
//!
//! Invariant: a batch holds sequences of one length only, so no row is padded. Every architecture
//! then gives a token the same state whatever else shares its batch, and no model's own handling of
//! padding masks (JinaBert's takes none; DistilBERT's means the opposite of the others') can change
//! a vector.

use super::mpnet;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{
    bert, distilbert, jina_bert, modernbert, nomic_bert, xlm_roberta,
};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The encoder architectures a model folder may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    XlmRoberta,
    DistilBert,
    ModernBert,
    NomicBert,
    JinaBert,
    /// MPNet, which candle-transformers lacks: our own forward on candle (`mpnet.rs`).
    MpNet,
    /// Not a network: a model2vec table of word-piece vectors (`static_table.rs`).
    Model2Vec,
}

/// What a user reads when a folder holds something else.
pub const SUPPORTED: &str = "bert, xlm-roberta (and roberta, camembert), distilbert, modernbert, \
nomic_bert, JinaBert (model_type bert with position_embedding_type alibi), mpnet, and model2vec's static tables";

impl Architecture {
    /// The architecture a `config.json` describes, or why it is not one of ours.
    pub fn detect(config: &Value) -> Result<Self, String> {
        let model_type = config
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("bert");
        let names: Vec<&str> = config
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let alibi = config
            .get("position_embedding_type")
            .and_then(Value::as_str)
            == Some("alibi");
        match model_type {
            "bert" if alibi || names.iter().any(|n| n.starts_with("JinaBert")) => {
                Ok(Self::JinaBert)
            }
            "bert" => Ok(Self::Bert),
            "jina_bert" => Ok(Self::JinaBert),
            "xlm-roberta" | "roberta" | "camembert" => Ok(Self::XlmRoberta),
            "distilbert" => Ok(Self::DistilBert),
            "modernbert" => Ok(Self::ModernBert),
            "nomic_bert" => Ok(Self::NomicBert),
            "model2vec" => Ok(Self::Model2Vec),
            "mpnet" => Ok(Self::MpNet),
            other => Err(format!(
                "config.json: model_type `{other}`{} is not an architecture likewise runs (it runs {SUPPORTED})",
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            )),
        }
    }

    /// The architecture's name as `model list` and errors show it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bert => "bert",
            Self::XlmRoberta => "xlm-roberta",
            Self::DistilBert => "distilbert",
            Self::ModernBert => "modernbert",
            Self::NomicBert => "nomic_bert",
            Self::JinaBert => "jina_bert",
            Self::Model2Vec => "model2vec",
            Self::MpNet => "mpnet",
        }
    }

    /// `config.json` with every field candle-transformers reads, filled in from the spellings
    /// transformers writes (ModernBERT's `norm_eps`, RoPE thetas under `rope_parameters`) and from
    /// transformers' defaults where a field is left out.
    fn complete(self, config: &Value) -> Value {
        let mut c = config.clone();
        let Some(map) = c.as_object_mut() else {
            return c;
        };
        let mut default = |key: &str, value: Value| {
            if map.get(key).is_none_or(Value::is_null) {
                map.insert(key.to_string(), value);
            }
        };
        match self {
            Self::Bert | Self::JinaBert => {
                default("hidden_act", json!("gelu"));
                default("hidden_dropout_prob", json!(0.1));
                default("initializer_range", json!(0.02));
                default("layer_norm_eps", json!(1e-12));
                default("pad_token_id", json!(0));
                default("type_vocab_size", json!(2));
                default(
                    "position_embedding_type",
                    json!(if self == Self::JinaBert {
                        "alibi"
                    } else {
                        "absolute"
                    }),
                );
            }
            Self::XlmRoberta => {
                default("hidden_act", json!("gelu"));
                default("attention_probs_dropout_prob", json!(0.1));
                default("hidden_dropout_prob", json!(0.1));
                default("layer_norm_eps", json!(1e-5));
                default("pad_token_id", json!(1));
                default("type_vocab_size", json!(1));
                default("position_embedding_type", json!("absolute"));
            }
            Self::DistilBert => {
                default("activation", json!("gelu"));
                default("initializer_range", json!(0.02));
                default("pad_token_id", json!(0));
            }
            Self::ModernBert => {
                let eps = config.get("norm_eps").cloned().unwrap_or(json!(1e-5));
                default("layer_norm_eps", eps);
                let rope = |kind: &str| {
                    config
                        .pointer(&format!("/rope_parameters/{kind}/rope_theta"))
                        .cloned()
                };
                default(
                    "global_rope_theta",
                    rope("full_attention").unwrap_or(json!(160000.0)),
                );
                default(
                    "local_rope_theta",
                    rope("sliding_attention").unwrap_or(json!(10000.0)),
                );
                default("local_attention", json!(128));
                default("global_attn_every_n_layers", json!(3));
                default("pad_token_id", json!(50283));
            }
            Self::NomicBert | Self::Model2Vec | Self::MpNet => {}
        }
        c
    }
}

/// The sizes a folder check needs before anything is loaded.
#[derive(Debug, Clone, Copy)]
pub struct Dimensions {
    pub hidden: usize,
    pub vocab: usize,
    /// Positions the model has, hence the longest sequence it can take (None: no limit).
    pub max_positions: Option<usize>,
}

/// Reads the sizes of `config.json` for `arch`.
pub fn dimensions(arch: Architecture, config: &Value) -> Result<Dimensions, String> {
    let get = |keys: &[&str]| -> Result<usize, String> {
        keys.iter()
            .find_map(|k| config.get(*k).and_then(Value::as_u64))
            .map(|v| v as usize)
            .ok_or_else(|| format!("config.json has no `{}`", keys[0]))
    };
    if arch == Architecture::Model2Vec {
        // The table's rows are checked against the tokenizer when it loads.
        return Ok(Dimensions {
            hidden: get(&["hidden_dim", "hidden_size"])?,
            vocab: usize::MAX,
            max_positions: None,
        });
    }
    let (hidden, positions) = match arch {
        Architecture::DistilBert => (get(&["dim"])?, Some(get(&["max_position_embeddings"])?)),
        Architecture::NomicBert => (
            get(&["n_embd", "hidden_size"])?,
            Some(get(&["n_positions", "max_position_embeddings"]).unwrap_or(2048)),
        ),
        // candle-transformers builds its ALiBi table for max_position_embeddings positions.
        Architecture::JinaBert => (
            get(&["hidden_size"])?,
            Some(get(&["max_position_embeddings"])?),
        ),
        // XLM-RoBERTa and MPNet number positions from padding_idx + 1, so two of their table's rows
        // are never used by a token.
        Architecture::XlmRoberta | Architecture::MpNet => (
            get(&["hidden_size"])?,
            Some(get(&["max_position_embeddings"])?.saturating_sub(2)),
        ),
        Architecture::Bert | Architecture::ModernBert | Architecture::Model2Vec => (
            get(&["hidden_size"])?,
            Some(get(&["max_position_embeddings"])?),
        ),
    };
    Ok(Dimensions {
        hidden,
        vocab: get(&["vocab_size"])?,
        max_positions: positions,
    })
}

/// One of candle-transformers' encoders, loaded.
enum Net {
    Bert(bert::BertModel),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
    DistilBert(distilbert::DistilBertModel),
    ModernBert(modernbert::ModernBert),
    NomicBert(nomic_bert::NomicBertModel),
    JinaBert(jina_bert::BertModel),
    MpNet(mpnet::MpNet),
}

/// An encoder run by candle-transformers, in f32.
pub struct CandleEncoder {
    net: Net,
    architecture: Architecture,
    hidden: usize,
    device: Device,
}

impl CandleEncoder {
    /// Builds the encoder of `arch` from `config.json` and the weights' tensors. Checkpoints saved
    /// with or without their task model's prefix (`bert.`, `roberta.`, `model.`…) both load.
    pub fn load(
        arch: Architecture,
        config: &Value,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, String> {
        let config = arch.complete(config);
        let parse_error = |e: serde_json::Error| format!("config.json ({}): {e}", arch.name());
        let tensors = match arch {
            Architecture::XlmRoberta => rebase(tensors, &["roberta.", "xlm-roberta."], ""),
            Architecture::JinaBert => rebase(tensors, &["bert."], ""),
            Architecture::MpNet => rebase(tensors, &["mpnet."], ""),
            // candle-transformers reads ModernBERT under `model.`, as ModernBertForMaskedLM saves
            // it; sentence-transformers saves the bare ModernBertModel.
            Architecture::ModernBert => rebase(tensors, &["model."], "model."),
            _ => tensors,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let loaded = |e: candle_core::Error| format!("model.safetensors ({}): {e}", arch.name());
        let (net, hidden) = match arch {
            Architecture::Bert => {
                let c: bert::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::Bert(bert::BertModel::load(vb, &c).map_err(loaded)?),
                    c.hidden_size,
                )
            }
            Architecture::XlmRoberta => {
                let c: xlm_roberta::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::XlmRoberta(xlm_roberta::XLMRobertaModel::new(&c, vb).map_err(loaded)?),
                    c.hidden_size,
                )
            }
            Architecture::DistilBert => {
                let c: distilbert::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::DistilBert(distilbert::DistilBertModel::load(vb, &c).map_err(loaded)?),
                    c.dim,
                )
            }
            Architecture::ModernBert => {
                let c: modernbert::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::ModernBert(modernbert::ModernBert::load(vb, &c).map_err(loaded)?),
                    c.hidden_size,
                )
            }
            Architecture::NomicBert => {
                let c: nomic_bert::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::NomicBert(nomic_bert::NomicBertModel::load(vb, &c).map_err(loaded)?),
                    c.n_embd,
                )
            }
            Architecture::JinaBert => {
                let c: jina_bert::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::JinaBert(jina_bert::BertModel::new(vb, &c).map_err(loaded)?),
                    c.hidden_size,
                )
            }
            Architecture::MpNet => {
                let c: mpnet::Config = serde_json::from_value(config).map_err(parse_error)?;
                (
                    Net::MpNet(mpnet::MpNet::load(vb, &c).map_err(loaded)?),
                    c.hidden_size,
                )
            }
            Architecture::Model2Vec => {
                return Err("a model2vec table is not a network candle-transformers runs".into())
            }
        };
        Ok(Self {
            net,
            architecture: arch,
            hidden,
            device: device.clone(),
        })
    }

    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// The last hidden states, `(batch, len, hidden)` row-major, of `batch` sequences of `len` token
    /// ids each (no padding: see the module's invariant).
    pub fn forward(&self, ids: &[u32], batch: usize, len: usize) -> candle_core::Result<Vec<f32>> {
        let input = Tensor::from_slice(ids, (batch, len), &self.device)?;
        let zeros = input.zeros_like()?;
        let ones = input.ones_like()?;
        let states = match &self.net {
            Net::Bert(m) => m.forward(&input, &zeros, Some(&ones))?,
            Net::XlmRoberta(m) => m.forward(&input, &ones, &zeros, None, None, None)?,
            // DistilBERT's mask marks the positions to hide: none here.
            Net::DistilBert(m) => {
                let hide = Tensor::zeros((batch, 1, 1, len), DType::U8, &self.device)?;
                m.forward(&input, &hide)?
            }
            Net::ModernBert(m) => m.forward(&input, &ones)?,
            Net::NomicBert(m) => m.forward(&input, None, Some(&ones))?,
            Net::JinaBert(m) => m.forward(&input)?,
            Net::MpNet(m) => m.forward(&input)?,
        };
        states.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
    }
}

/// Renames tensors so that each starts with `add` after any of `strip` is taken off its front.
fn rebase(tensors: HashMap<String, Tensor>, strip: &[&str], add: &str) -> HashMap<String, Tensor> {
    tensors
        .into_iter()
        .map(|(name, t)| {
            let bare = strip
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .unwrap_or(&name);
            (format!("{add}{bare}"), t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_are_told_apart_by_config() {
        let detect = |v: Value| Architecture::detect(&v);
        assert_eq!(
            detect(json!({"model_type": "bert"})),
            Ok(Architecture::Bert)
        );
        assert_eq!(
            detect(json!({"model_type": "bert", "position_embedding_type": "alibi"})),
            Ok(Architecture::JinaBert)
        );
        assert_eq!(
            detect(json!({"model_type": "xlm-roberta"})),
            Ok(Architecture::XlmRoberta)
        );
        assert_eq!(
            detect(json!({"model_type": "nomic_bert"})),
            Ok(Architecture::NomicBert)
        );
        let err =
            detect(json!({"model_type": "t5", "architectures": ["T5EncoderModel"]})).unwrap_err();
        assert!(
            err.contains("`t5` (T5EncoderModel)") && err.contains("modernbert"),
            "{err}"
        );
    }

    #[test]
    fn prefixes_are_normalised() {
        let t = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        let map: HashMap<String, Tensor> = [
            ("model.layers.0.w".to_string(), t.clone()),
            ("final_norm.weight".to_string(), t),
        ]
        .into_iter()
        .collect();
        let mut names: Vec<String> = rebase(map, &["model."], "model.").into_keys().collect();
        names.sort();
        assert_eq!(names, ["model.final_norm.weight", "model.layers.0.w"]);
    }
}
