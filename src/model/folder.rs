//! Reading and checking a sentence-transformers model folder before anything runs.
//!
//! A folder is usable when it holds config.json (an architecture of `architectures.rs`),
//! tokenizer.json, model.safetensors, modules.json and the Pooling module's config;
//! sentence_bert_config.json gives max_seq_length, config_sentence_transformers.json the prompts. For a model whose files we know (see `registry::KNOWN_MODELS`), each file's sha256
//! must match. Hashing 90 MB on every start would cost tens of milliseconds, so a verified folder
//! gets a stamp (`.likewise-verified.json`) of each file's size, modification time and hash; a
//! file whose size or time changed is hashed again.

use super::architectures::{self, Architecture};
use super::bert::{BertConfig, Pooling};
use super::registry;
use super::ModelError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Everything about a model that decides its vectors; stores keep it and compare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelIdentity {
    /// e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub name: String,
    pub dim: usize,
    pub pooling: Pooling,
    pub max_seq_length: usize,
    pub normalize: bool,
    /// sha256 of model.safetensors, hex.
    pub weights_sha256: String,
    /// The text put before every stored text (the folder's document prompt), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
}

impl ModelIdentity {
    /// True when vectors of `other` can be compared with vectors of `self`. The name may differ
    /// (the same weights reached through another folder); everything that changes a vector may not.
    pub fn compatible_with(&self, other: &ModelIdentity) -> bool {
        self.dim == other.dim
            && self.pooling == other.pooling
            && self.max_seq_length == other.max_seq_length
            && self.normalize == other.normalize
            && self.weights_sha256 == other.weights_sha256
            && self.document_prompt == other.document_prompt
    }
}

/// A checked model folder.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub architecture: Architecture,
    /// config.json as written.
    pub config_json: serde_json::Value,
    /// config.json read for our BERT forward (BERT folders only).
    pub bert_config: Option<BertConfig>,
    /// Prepended to queries (`prompts.query` of config_sentence_transformers.json).
    pub query_prompt: Option<String>,
    pub pooling: Pooling,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub identity: ModelIdentity,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default, alias = "embedding_dimension")]
    word_embedding_dimension: Option<usize>,
    /// The mode by name, as sentence-transformers 6 writes it (older versions set one flag).
    #[serde(default)]
    pooling_mode: Option<String>,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

const STAMP: &str = ".likewise-verified.json";

#[derive(Serialize, Deserialize, Default)]
struct Stamp {
    files: BTreeMap<String, StampEntry>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct StampEntry {
    size: u64,
    modified_ns: u128,
    sha256: String,
}

impl ModelFolder {
    /// Reads and checks the folder at `dir` for model `name`. Every problem is collected and
    /// reported together, with advice on how to get a good copy.
    pub fn open(dir: &Path, name: &str) -> Result<Self, ModelError> {
        let known = registry::known_model(name);
        let mut problems = Vec::new();
        let fail = |problems: Vec<String>| ModelError::Folder {
            dir: dir.to_path_buf(),
            problems,
            advice: registry::advice(name),
        };
        if !dir.is_dir() {
            return Err(fail(vec!["it is not a directory".into()]));
        }
        for required in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "modules.json",
        ] {
            if !dir.join(required).is_file() {
                problems.push(format!("{required} is missing"));
            }
        }

        // config.json names the architecture; BERT folders are also read for our own forward.
        let config_json: Option<serde_json::Value> = read_json(dir, "config.json", &mut problems);
        let mut architecture = None;
        let mut dims = None;
        let mut bert_config = None;
        if let Some(value) = &config_json {
            match Architecture::detect(value) {
                Err(e) => problems.push(e),
                Ok(arch) => {
                    architecture = Some(arch);
                    match architectures::dimensions(arch, value) {
                        Ok(d) => dims = Some(d),
                        Err(e) => problems.push(e),
                    }
                    if arch == Architecture::Bert {
                        match serde_json::from_value::<BertConfig>(value.clone()) {
                            Ok(c) => bert_config = Some(c),
                            Err(e) => problems.push(format!("config.json is not valid: {e}")),
                        }
                    }
                }
            }
        }
        let config = dims;

        // modules.json names the pooling folder and whether a Normalize module follows.
        let modules: Option<Vec<ModuleEntry>> = read_json(dir, "modules.json", &mut problems);
        let mut pooling = None;
        let mut normalize = false;
        let mut include_prompt = true;
        if let Some(modules) = &modules {
            normalize = modules.iter().any(|m| m.kind.ends_with(".Normalize"));
            let static_table = architecture == Some(Architecture::Model2Vec);
            match modules.iter().find(|m| m.kind.ends_with(".Pooling")) {
                // A static table averages its pieces: no Pooling module.
                None if static_table => pooling = Some(Pooling::Mean),
                None => problems.push("modules.json lists no Pooling module".into()),
                Some(m) => {
                    let rel = format!("{}/config.json", m.path);
                    let cfg: Option<PoolingConfig> = read_json(dir, &rel, &mut problems);
                    if let Some(cfg) = cfg {
                        match pooling_mode(&cfg) {
                            Ok(p) => pooling = Some(p),
                            Err(e) => problems.push(format!("{rel}: {e}")),
                        }
                        if let (Some(d), Some(c)) = (cfg.word_embedding_dimension, &config) {
                            if d != c.hidden {
                                problems.push(format!("{rel}: word_embedding_dimension {d} differs from config.json's hidden size {}", c.hidden));
                            }
                        }
                        include_prompt = cfg.include_prompt;
                    }
                }
            }
            if let Some(other) = modules.iter().find(|m| {
                !(m.kind.ends_with(".Transformer")
                    || m.kind.ends_with(".Pooling")
                    || m.kind.ends_with(".Normalize")
                    || (static_table && m.kind.ends_with(".StaticEmbedding")))
            }) {
                problems.push(format!(
                    "modules.json: module `{}` is not supported (only Transformer, Pooling, Normalize, and StaticEmbedding for model2vec)",
                    other.kind
                ));
            }
        }

        // sentence-transformers takes max_seq_length from sentence_bert_config.json, else from the
        // tokenizer's model_max_length, and never beyond the position embeddings.
        let max_positions = config
            .as_ref()
            .map(|c| c.max_positions.unwrap_or(usize::MAX))
            .unwrap_or(512);
        let mut max_seq_length = None;
        if dir.join("sentence_bert_config.json").is_file() {
            let sb: Option<SentenceBertConfig> =
                read_json(dir, "sentence_bert_config.json", &mut problems);
            max_seq_length = sb.and_then(|s| s.max_seq_length);
        }
        if max_seq_length.is_none() && dir.join("tokenizer_config.json").is_file() {
            let tc: Option<TokenizerConfig> =
                read_json(dir, "tokenizer_config.json", &mut problems);
            max_seq_length = tc
                .and_then(|t| t.model_max_length)
                .filter(|&m| m > 0.0 && m < 1e6)
                .map(|m| m as usize);
        }
        let mut max_seq_length = max_seq_length
            .unwrap_or(max_positions.min(8192))
            .min(max_positions);
        if architecture == Some(Architecture::Model2Vec) {
            // model2vec reads its own config: `max_length`, else 512; `normalize` there too.
            let get = |key: &str| config_json.as_ref().and_then(|c| c.get(key).cloned());
            max_seq_length = get("max_length")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
                .unwrap_or(super::static_table::DEFAULT_MAX_LENGTH);
            normalize = get("normalize")
                .and_then(|v| v.as_bool())
                .unwrap_or(normalize);
        }

        // Prompts: queries get `prompts.query`, stored texts the document prompt (`document`,
        // `passage` or `corpus`); the default prompt, when named, stands in for a missing one.
        let mut query_prompt = None;
        let mut document_prompt = None;
        if dir.join("config_sentence_transformers.json").is_file() {
            let st: Option<SentenceTransformersConfig> =
                read_json(dir, "config_sentence_transformers.json", &mut problems);
            if let Some(st) = st {
                let named = |name: &str| st.prompts.get(name).filter(|p| !p.is_empty()).cloned();
                let default = st.default_prompt_name.as_deref().and_then(named);
                query_prompt = named("query").or_else(|| default.clone());
                document_prompt = ["document", "passage", "corpus"]
                    .into_iter()
                    .find_map(named)
                    .or(default);
            }
        }
        if !include_prompt && (query_prompt.is_some() || document_prompt.is_some()) {
            problems.push(
                "the Pooling module leaves the prompt out of the pooled tokens (include_prompt false), which likewise does not support".into(),
            );
        }

        // The tokenizer must belong to this model: its vocabulary must fit the embedding table.
        // (A known model's files are checked by hash below, which covers this.)
        if let (Some(c), true, None) = (&config, dir.join("tokenizer.json").is_file(), known) {
            match tokenizer_vocab_size(&dir.join("tokenizer.json")) {
                Ok(v) if v > c.vocab => problems.push(format!(
                    "tokenizer.json has {v} tokens but config.json's vocab_size is {}: the tokenizer belongs to another model",
                    c.vocab
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("tokenizer.json cannot be read: {e}")),
            }
        }

        // Known models: every file must have its published sha256.
        let mut stamp = read_stamp(dir);
        let mut stamp_changed = false;
        let mut weights_sha256 = None;
        if let Some(known) = known {
            for (expected, file) in known.sums() {
                let path = dir.join(file);
                if !path.is_file() {
                    if !problems.iter().any(|p| p.starts_with(file)) {
                        problems.push(format!("{file} is missing"));
                    }
                    continue;
                }
                match hash_with_stamp(&path, file, &mut stamp, &mut stamp_changed) {
                    Ok(actual) if actual == expected => {
                        if file == "model.safetensors" {
                            weights_sha256 = Some(actual);
                        }
                    }
                    Ok(actual) => problems.push(format!(
                        "{file} has sha256 {actual}, expected {expected} (size {} bytes): it is damaged or belongs to another model",
                        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
                    )),
                    Err(e) => problems.push(format!("{file} cannot be read: {e}")),
                }
            }
        } else if dir.join("model.safetensors").is_file() {
            match hash_with_stamp(
                &dir.join("model.safetensors"),
                "model.safetensors",
                &mut stamp,
                &mut stamp_changed,
            ) {
                Ok(h) => weights_sha256 = Some(h),
                Err(e) => problems.push(format!("model.safetensors cannot be read: {e}")),
            }
        }
        if dir.join("model.safetensors").is_file() {
            if let Err(e) = check_safetensors_header(&dir.join("model.safetensors")) {
                problems.push(format!("model.safetensors: {e}"));
            }
        }

        if !problems.is_empty() {
            problems.dedup();
            return Err(fail(problems));
        }
        if stamp_changed {
            // Best effort: a read-only folder (a shared cache) is simply hashed again next time.
            let _ = write_stamp(dir, &stamp);
        }
        let config = config.expect("checked above");
        let pooling = pooling.expect("checked above");
        let identity = ModelIdentity {
            name: known
                .map(|k| k.repo.to_string())
                .unwrap_or_else(|| name.to_string()),
            dim: config.hidden,
            pooling,
            max_seq_length,
            normalize,
            weights_sha256: weights_sha256.expect("checked above"),
            document_prompt,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            architecture: architecture.expect("checked above"),
            config_json: config_json.expect("checked above"),
            bert_config,
            query_prompt,
            pooling,
            normalize,
            max_seq_length,
            identity,
        })
    }
}

fn pooling_mode(cfg: &PoolingConfig) -> Result<Pooling, String> {
    if let Some(name) = &cfg.pooling_mode {
        return match name.as_str() {
            "mean" => Ok(Pooling::Mean),
            "cls" => Ok(Pooling::Cls),
            "max" => Ok(Pooling::Max),
            "lasttoken" => Ok(Pooling::LastToken),
            other => Err(format!(
                "pooling mode `{other}` is not supported (mean, cls, max and lasttoken are)"
            )),
        };
    }
    let modes = [
        (cfg.pooling_mode_mean_tokens, Some(Pooling::Mean), "mean"),
        (cfg.pooling_mode_cls_token, Some(Pooling::Cls), "cls"),
        (cfg.pooling_mode_max_tokens, Some(Pooling::Max), "max"),
        (cfg.pooling_mode_mean_sqrt_len_tokens, None, "mean_sqrt_len"),
        (cfg.pooling_mode_weightedmean_tokens, None, "weightedmean"),
        (
            cfg.pooling_mode_lasttoken,
            Some(Pooling::LastToken),
            "lasttoken",
        ),
    ];
    let on: Vec<_> = modes.iter().filter(|m| m.0).collect();
    match on.as_slice() {
        [(_, Some(p), _)] => Ok(*p),
        [(_, None, name)] => Err(format!(
            "pooling mode `{name}` is not supported (mean, cls, max and lasttoken are)"
        )),
        [] => Err("no pooling mode is switched on".into()),
        _ => Err("several pooling modes at once are not supported".into()),
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    rel: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    let path = dir.join(rel);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !problems.iter().any(|p| p.starts_with(rel)) {
                problems.push(format!("{rel} is missing"));
            }
            return None;
        }
        Err(e) => {
            problems.push(format!("{rel} cannot be read: {e}"));
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(format!("{rel} is not valid: {e}"));
            None
        }
    }
}

fn tokenizer_vocab_size(path: &Path) -> Result<usize, String> {
    #[derive(Deserialize)]
    struct Model {
        vocab: serde_json::Value,
    }
    #[derive(Deserialize)]
    struct TokenizerFile {
        model: Model,
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let t: TokenizerFile = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Ok(match &t.model.vocab {
        serde_json::Value::Object(m) => m.len(),
        serde_json::Value::Array(a) => a.len(),
        _ => 0,
    })
}

/// Checks that the safetensors header is complete and its data fits the file, so a truncated
/// download is named as such instead of failing deep inside the loader.
fn check_safetensors_header(path: &Path) -> Result<(), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut size = [0u8; 8];
    file.read_exact(&mut size)
        .map_err(|_| "the file is too short to be safetensors (truncated?)".to_string())?;
    let header_len = u64::from_le_bytes(size);
    if header_len > 100 << 20 || 8 + header_len > len {
        return Err(format!(
            "the header claims {header_len} bytes but the file has {len}: truncated or not safetensors"
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| e.to_string())?;
    let parsed: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let data_len = len - 8 - header_len;
    let mut max_end = 0u64;
    if let Some(map) = parsed.as_object() {
        for (name, entry) in map {
            if name == "__metadata__" {
                continue;
            }
            if let Some(end) = entry
                .get("data_offsets")
                .and_then(|o| o.get(1))
                .and_then(|v| v.as_u64())
            {
                max_end = max_end.max(end);
            }
        }
    }
    if max_end > data_len {
        return Err(format!(
            "tensors need {max_end} bytes of data but the file holds {data_len}: the file is truncated"
        ));
    }
    Ok(())
}

fn modified_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn hash_with_stamp(
    path: &Path,
    rel: &str,
    stamp: &mut Stamp,
    changed: &mut bool,
) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if let Some(entry) = stamp.files.get(rel) {
        if entry.size == meta.len() && entry.modified_ns == modified_ns(&meta) {
            return Ok(entry.sha256.clone());
        }
    }
    let sha = sha256_file(path)?;
    stamp.files.insert(
        rel.to_string(),
        StampEntry {
            size: meta.len(),
            modified_ns: modified_ns(&meta),
            sha256: sha.clone(),
        },
    );
    *changed = true;
    Ok(sha)
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_stamp(dir: &Path) -> Stamp {
    std::fs::read(dir.join(STAMP))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_stamp(dir: &Path, stamp: &Stamp) -> std::io::Result<()> {
    let tmp = dir.join(format!("{STAMP}.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(stamp)?)?;
    std::fs::rename(tmp, dir.join(STAMP))
}
