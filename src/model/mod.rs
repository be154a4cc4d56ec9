//! The sentence-transformer: finding and checking a model folder, tokenizing, running the encoder,
//! pooling.
//!
//! Invariants:
//! - A model folder is checked whole before any work starts; every problem found is reported at once.
//! - Vectors come out exactly as `SentenceTransformer.encode(texts)` makes them: the tokenizer's own
//!   normalisation, truncation at the model's `max_seq_length` word pieces (special tokens included),
//!   the folder's pooling mode, and L2 normalisation when the folder has a `Normalize` module.
//! - `Embedder::windows` cuts a text into pieces that each fit the model's window, so a long
//!   paragraph is embedded in several pieces instead of being silently truncated.

pub mod architectures;
pub mod bert;
pub mod fake;
#[cfg(target_arch = "x86_64")]
pub mod fast;
pub mod fetch;
mod folder;
#[cfg(target_arch = "x86_64")]
mod helper;
#[cfg(target_arch = "x86_64")]
pub mod kernels;
pub mod mpnet;
pub mod registry;
pub mod static_table;

pub use bert::Pooling;
pub(crate) use folder::hex;
pub use folder::{sha256_file, ModelFolder, ModelIdentity};

use candle_core::Device;
use std::ops::Range;
use std::path::PathBuf;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Errors of finding, fetching, loading and running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model folder {dir} is not usable: {}. {advice}", problems.join("; "))]
    Folder {
        dir: PathBuf,
        problems: Vec<String>,
        advice: String,
    },
    #[error("model `{name}` was not found ({searched}).\n{advice}")]
    NotFound {
        name: String,
        searched: String,
        advice: String,
    },
    #[error("could not fetch model `{name}`: {reason}")]
    Fetch { name: String, reason: String },
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("the encoder failed: {0}")]
    Forward(#[from] candle_core::Error),
    /// No kernel here can run what was asked (names the precision, the kernels and the CPU's lack).
    #[error("{0}")]
    Kernels(String),
}

/// The arithmetic the encoder runs in, recorded in every store so one store never mixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    /// The same vectors as sentence-transformers (cosine ≥ 0.99999).
    #[default]
    F32,
    /// Dense layers multiplied in bfloat16 with f32 sums: about twice as fast, cosine ≥ 0.999
    /// to the f32 vectors.
    Bf16,
}

impl Precision {
    /// The name recorded in a store's manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision a manifest names, if this build knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Precision::F32, Precision::Bf16]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything that turns texts into vectors: the real model, or a deterministic fake for fast tests.
pub trait Embedder: Send + Sync {
    /// Which model makes the vectors; a store records it and refuses vectors from another.
    fn identity(&self) -> &ModelIdentity;

    /// The arithmetic the vectors are made in; a store records it too.
    fn precision(&self) -> Precision {
        Precision::F32
    }

    /// The kernels the vectors are computed with on this CPU (for benchmark reports).
    fn kernels(&self) -> &'static str {
        "none"
    }

    /// One vector per text, in input order. `progress` is called with the number of texts finished
    /// after each batch.
    fn embed(
        &self,
        texts: &[&str],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Vec<f32>>, ModelError>;

    /// One vector per query text, in input order: as [`Embedder::embed`], with the model's query
    /// prompt instead of its document prompt where the model has prompts.
    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed(texts, &|_| {})
    }

    /// Word pieces of text one window holds (special tokens and prompts left out).
    fn window_pieces(&self) -> usize {
        self.identity().max_seq_length.saturating_sub(2).max(1)
    }

    /// Byte ranges that split `text` into consecutive pieces each within the model's window, at word
    /// (preferably sentence) boundaries. Together they cover the whole text. A text that fits gives
    /// one range.
    fn windows(&self, text: &str) -> Result<Vec<Range<usize>>, ModelError>;

    /// Word pieces of each text after truncation, special tokens included (for throughput figures).
    fn count_tokens(&self, texts: &[&str]) -> Result<usize, ModelError>;
}

/// Most texts per forward pass. Batches are formed after sorting by length, so padding stays small.
pub const BATCH_SIZE: usize = 32;

/// Most padded tokens per forward pass. Smaller batches keep each layer's buffers in cache and
/// reuse the same memory; on 500 BBC paragraphs 1,024 tokens gave ~9% more tokens/s than batches
/// of 32 whatever their length (4,908 vs 4,506 tokens/s, mean of three interleaved runs).
pub const BATCH_TOKENS: usize = 1024;

/// The kernel name that asks for candle-transformers' encoder whatever the architecture.
const REFERENCE: &str = "reference";

/// Most tokens per chunk of the fast encoder. Chunks pack sequences without padding; one chunk
/// runs on one thread, so a chunk is small enough to spread work over the threads and large enough
/// that each weight panel loaded is used for many rows.
const FAST_CHUNK_TOKENS: usize = 2048;

/// Fewest tokens a chunk is cut to when there is little work: below this a chunk's multiplies
/// reuse each weight panel for too few rows.
const FAST_CHUNK_FLOOR: usize = 256;

/// Cuts sequences (`order`, longest first; `len` gives each one's tokens) into the chunks of the
/// fast encoder, for `threads` threads.
///
/// Much work: chunks of consecutive sequences, each at most [`FAST_CHUNK_TOKENS`] and at most
/// the tokens left over twice the threads, so they shrink towards the end (to
/// [`FAST_CHUNK_FLOOR`]): taken in order, the last chunks are short and no thread waits long for
/// the others. Chunks of one size throughout left a thread idle for most of a chunk at the end
/// (64 ms of a 3.1 s run on 500 BBC paragraphs, 2%, AMD EPYC family 25 model 17, 2026-12-03).
/// Little work (a server's batch of a few passages): a multiple of `threads` chunks of near-equal
/// tokens, each sequence put in the lightest so far. Cut in order instead, four 80-token passages
/// made chunks of 240 and 80: one thread idled two thirds of the batch. A lone chunk runs with
/// the helper thread instead. Which chunk a sequence lands in never changes its vector.
fn fast_chunks(order: &[usize], len: impl Fn(usize) -> usize, threads: usize) -> Vec<Vec<usize>> {
    let threads = threads.max(1);
    let total: usize = order.iter().map(|&i| len(i)).sum();
    if total < 4 * threads * FAST_CHUNK_FLOOR {
        let wanted = threads * (total / (threads * FAST_CHUNK_FLOOR)).max(1);
        let mut bins: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); wanted.min(order.len())];
        for &i in order {
            let lightest = bins
                .iter_mut()
                .min_by_key(|(tokens, _)| *tokens)
                .expect("at least one bin");
            lightest.0 += len(i);
            lightest.1.push(i);
        }
        return bins.into_iter().map(|(_, chunk)| chunk).collect();
    }
    let budget = |left: usize| (left / (2 * threads)).clamp(FAST_CHUNK_FLOOR, FAST_CHUNK_TOKENS);
    let mut chunks = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0;
    // Tokens not yet in a closed chunk.
    let mut left = total;
    for &i in order {
        if !current.is_empty() && tokens + len(i) > budget(left) {
            chunks.push(std::mem::take(&mut current));
            left -= tokens;
            tokens = 0;
        }
        tokens += len(i);
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The forward pass in use.
enum Engine {
    /// Our BERT forward on candle, f32: the exact vectors.
    Exact(bert::Bert),
    /// candle-transformers' encoder of the folder's architecture, f32: every architecture but
    /// BERT, and BERT's reference.
    Candle(architectures::CandleEncoder),
    /// A model2vec table: the mean of the pieces' stored vectors.
    Static(static_table::StaticTable),
    /// Our forward with the kernels chosen for this CPU.
    #[cfg(target_arch = "x86_64")]
    Fast(fast::FastBert),
}

/// The real model: a transformer encoder run on the CPU.
pub struct SentenceEncoder {
    identity: ModelIdentity,
    tokenizer: Tokenizer,
    untruncated: Tokenizer,
    engine: Engine,
    pooling: Pooling,
    normalize: bool,
    /// Put before each query, and before each stored text (sentence-transformers' prompts).
    query_prompt: Option<String>,
    document_prompt: Option<String>,
    /// Word pieces of a text that fit one window: max_seq_length less the special tokens and the
    /// longer prompt.
    window_pieces: usize,
}

/// Which prompt a text gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Query,
    Document,
}

impl SentenceEncoder {
    /// Loads a checked model folder for exact (f32) vectors.
    pub fn load(folder: &ModelFolder) -> Result<Self, ModelError> {
        Self::load_with(folder, Precision::F32)
    }

    /// Loads a checked model folder to run in `precision` with the kernels of the process
    /// (`--kernels`, `LIKEWISE_KERNELS`, else the fastest here).
    pub fn load_with(folder: &ModelFolder, precision: Precision) -> Result<Self, ModelError> {
        Self::load_with_kernels(folder, precision, None)
    }

    /// As [`Self::load_with`], with the kernels named (auto, avx512, avx2, candle) instead of the
    /// process's choice: for tests and benchmarks that compare them in one process.
    pub fn load_with_kernels(
        folder: &ModelFolder,
        precision: Precision,
        kernels: Option<&str>,
    ) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let problem = |p: String| ModelError::Folder {
            dir: folder.dir.clone(),
            problems: vec![p],
            advice: registry::advice(&folder.identity.name),
        };
        let mut tokenizer = Tokenizer::from_file(folder.dir.join("tokenizer.json"))
            .map_err(|e| problem(format!("tokenizer.json cannot be read: {e}")))?;
        tokenizer.with_padding(None);
        let untruncated = {
            let mut t = tokenizer.clone();
            t.with_truncation(None)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            t
        };
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: folder.max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let weights = map_file(&folder.dir.join("model.safetensors"))
            .map_err(|e| problem(format!("model.safetensors cannot be read: {e}")))?;
        let unreadable =
            |e: &dyn std::fmt::Display| problem(format!("model.safetensors cannot be read: {e}"));
        let reference = kernels == Some(REFERENCE);
        let engine = match (&folder.bert_config, reference) {
            _ if folder.architecture == architectures::Architecture::Model2Vec => {
                if precision != Precision::F32 {
                    return Err(ModelError::Kernels(format!(
                        "--precision {precision}: a model2vec table has no multiplies to run in it; use --precision f32"
                    )));
                }
                let tensors = load_tensors(&weights, &device).map_err(|e| unreadable(&e))?;
                Engine::Static(
                    static_table::StaticTable::load(&tensors, &tokenizer, folder.max_seq_length)
                        .map_err(problem)?,
                )
            }
            (Some(config), false) => 'bert: {
                let checkpoint = |e: bert::BertError| problem(format!("model.safetensors: {e}"));
                #[cfg(target_arch = "x86_64")]
                if let Some(kernel) = Self::fast_kernel(
                    precision,
                    config.hidden_size,
                    config.intermediate_size,
                    kernels,
                )? {
                    // Packed straight from the mapped file: candle's tensors would be copies.
                    let file = safetensors::SafeTensors::deserialize(&weights)
                        .map_err(|e| unreadable(&e))?;
                    let parts = bert::BertParts::from_file(config, &file).map_err(checkpoint)?;
                    break 'bert Engine::Fast(fast::FastBert::from_parts(parts, kernel)?);
                }
                // candle's forward: asked for, or no fast kernels on this CPU or build.
                let tensors = load_tensors(&weights, &device).map_err(|e| unreadable(&e))?;
                let bert =
                    bert::Bert::from_tensors(config, tensors, &device).map_err(checkpoint)?;
                match precision {
                    Precision::F32 => Engine::Exact(bert),
                    other => return Err(ModelError::Kernels(format!(
                        "--precision {other} needs the fast encoder's x86-64 kernels, which this build or CPU lacks; use --precision f32"
                    ))),
                }
            }
            _ => 'other: {
                let fast_runs_it = folder.architecture == architectures::Architecture::MpNet;
                if precision != Precision::F32 && (reference || !fast_runs_it) {
                    return Err(ModelError::Kernels(format!(
                        "--precision {precision} runs on BERT and MPNet models only; this model is {}: use --precision f32",
                        folder.architecture.name()
                    )));
                }
                #[cfg(target_arch = "x86_64")]
                if fast_runs_it && !reference {
                    let config: mpnet::Config = serde_json::from_value(folder.config_json.clone())
                        .map_err(|e| problem(format!("config.json (mpnet): {e}")))?;
                    let kernel =
                        match mpnet::fast_activation(config.hidden_act, config.pad_token_id) {
                            Some(_) => Self::fast_kernel(
                                precision,
                                config.hidden_size,
                                config.intermediate_size,
                                kernels,
                            )?,
                            // candle's forward runs it (in f32 only: see below).
                            None => None,
                        };
                    if let Some(kernel) = kernel {
                        // Packed straight from the mapped file, as a BERT's weights are.
                        let file = safetensors::SafeTensors::deserialize(&weights)
                            .map_err(|e| unreadable(&e))?;
                        let parts = mpnet::parts_from_file(&config, &file)
                            .map_err(|e| problem(format!("model.safetensors (mpnet): {e}")))?;
                        break 'other Engine::Fast(fast::FastBert::from_parts(parts, kernel)?);
                    }
                }
                let encoder = architectures::CandleEncoder::load(
                    folder.architecture,
                    &folder.config_json,
                    load_tensors(&weights, &device).map_err(|e| unreadable(&e))?,
                    &device,
                )
                .map_err(problem)?;
                match precision {
                    Precision::F32 => Engine::Candle(encoder),
                    other => return Err(ModelError::Kernels(format!(
                        "--precision {other} runs on the fast encoder only (MPNet with gelu, gelu_new or relu and padding id 1, on x86-64 with AVX2); this model runs on candle's f32 forward: use --precision f32"
                    ))),
                }
            }
        };
        let specials = tokenizer
            .encode("", true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?
            .len();
        let prompt_pieces = [&folder.query_prompt, &folder.identity.document_prompt]
            .into_iter()
            .flatten()
            .map(|p| untruncated.encode(p.as_str(), false).map(|e| e.len()))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?
            .into_iter()
            .max()
            .unwrap_or(0);
        Ok(Self {
            identity: folder.identity.clone(),
            tokenizer,
            untruncated,
            engine,
            pooling: folder.pooling,
            normalize: folder.normalize,
            query_prompt: folder.query_prompt.clone(),
            document_prompt: folder.identity.document_prompt.clone(),
            window_pieces: folder
                .max_seq_length
                .saturating_sub(specials + prompt_pieces)
                .max(1),
        })
    }

    /// Loads a model folder to run on candle-transformers' encoder of its architecture, whatever
    /// it is: for BERT folders, the reference the fast forward is checked against.
    pub fn load_reference(folder: &ModelFolder) -> Result<Self, ModelError> {
        Self::load_with_kernels(folder, Precision::F32, Some(REFERENCE))
    }

    /// Embeds with candle-transformers: sequences of one length per batch (no padding), longest
    /// first, at most [`BATCH_TOKENS`] tokens a batch.
    fn embed_candle(
        &self,
        encoder: &architectures::CandleEncoder,
        ids: &[Vec<u32>],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let hidden = encoder.hidden_size();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![vec![0f32; hidden]; ids.len()];
        let mut start = 0;
        while start < order.len() {
            let len = ids[order[start]].len();
            let rows_fit = (BATCH_TOKENS / len.max(1)).clamp(1, BATCH_SIZE);
            let end = order[start..]
                .iter()
                .take(rows_fit)
                .take_while(|&&i| ids[i].len() == len)
                .count()
                + start;
            let chunk = &order[start..end];
            start = end;
            if len == 0 {
                // A text with no tokens at all (a tokenizer without special tokens) pools to zeros.
                progress(chunk.len());
                continue;
            }
            let flat: Vec<u32> = chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
            let states = encoder.forward(&flat, chunk.len(), len)?;
            let mask = vec![1u8; chunk.len() * len];
            let pooled = bert::pool(
                &states,
                &mask,
                chunk.len(),
                len,
                hidden,
                self.pooling,
                self.normalize,
            );
            for (&i, v) in chunk.iter().zip(pooled) {
                out[i] = v;
            }
            progress(chunk.len());
        }
        Ok(out)
    }

    /// The texts with the prompt of `role` in front, as sentence-transformers tokenises them.
    fn prompted<'t>(&self, texts: &[&'t str], role: Role) -> Vec<std::borrow::Cow<'t, str>> {
        let prompt = match role {
            Role::Query => &self.query_prompt,
            Role::Document => &self.document_prompt,
        };
        texts
            .iter()
            .map(|t| match prompt {
                Some(p) => std::borrow::Cow::Owned(format!("{p}{t}")),
                None => std::borrow::Cow::Borrowed(*t),
            })
            .collect()
    }

    /// Vectors of `texts` with the prompt of `role`.
    fn embed_role(
        &self,
        texts: &[&str],
        role: Role,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let prompted = self.prompted(texts, role);
        let refs: Vec<&str> = prompted.iter().map(|t| t.as_ref()).collect();
        let bert = match &self.engine {
            Engine::Static(table) => {
                let vectors = table
                    .embed(&self.tokenizer, &refs, self.normalize)
                    .map_err(ModelError::Tokenizer)?;
                progress(texts.len());
                return Ok(vectors);
            }
            Engine::Candle(encoder) => {
                return self.embed_candle(encoder, &self.encode_ids(&refs)?, progress)
            }
            #[cfg(target_arch = "x86_64")]
            Engine::Fast(fast) => {
                return Ok(self.embed_fast(fast, &self.encode_ids(&refs)?, progress))
            }
            Engine::Exact(bert) => bert,
        };
        let ids = self.encode_ids(&refs)?;
        // Longest first: similar lengths share a batch, so little compute goes to padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            // The longest row comes first, so it sets the padded length of the batch.
            let longest = ids[order[start]].len().max(1);
            let rows_fit = (BATCH_TOKENS / longest).clamp(1, BATCH_SIZE);
            let chunk = &order[start..(start + rows_fit).min(order.len())];
            start += chunk.len();
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.embed_batch(bert, &rows)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
            progress(chunk.len());
        }
        Ok(out)
    }

    fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ModelError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    fn embed_batch(&self, bert: &bert::Bert, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let seq_len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let batch = rows.len();
        let mut ids = vec![0u32; batch * seq_len];
        let mut mask = vec![0u8; batch * seq_len];
        for (b, row) in rows.iter().enumerate() {
            ids[b * seq_len..b * seq_len + row.len()].copy_from_slice(row);
            mask[b * seq_len..b * seq_len + row.len()].fill(1);
        }
        let states = bert.forward(&ids, &mask, batch, seq_len)?;
        let flat = bert::states_to_vec(&states)?;
        Ok(bert::pool(
            &flat,
            &mask,
            batch,
            seq_len,
            bert.hidden_size(),
            self.pooling,
            self.normalize,
        ))
    }
}

impl SentenceEncoder {
    /// The fast encoder's kernel for `precision` under the kernel request (named, or the
    /// process's): `None` when candle's f32 forward runs instead (asked for with `candle`, or no
    /// AVX2 on this CPU and nothing forced), an error when nothing can run what was asked.
    #[cfg(target_arch = "x86_64")]
    fn fast_kernel(
        precision: Precision,
        hidden: usize,
        intermediate: usize,
        kernels_named: Option<&str>,
    ) -> Result<Option<kernels::Kernel>, ModelError> {
        let request = match kernels_named {
            Some(name) => kernels::KernelRequest::from_name(name).ok_or_else(|| {
                ModelError::Kernels(format!(
                    "kernels {name:?}: use {}",
                    kernels::KernelRequest::NAMES
                ))
            })?,
            None => kernels_request()?,
        };
        if request == kernels::KernelRequest::Candle && precision == Precision::F32 {
            return Ok(None);
        }
        match fast::FastBert::kernel_for(precision, request, hidden, intermediate) {
            Ok(kernel) => Ok(Some(kernel)),
            // No AVX2 at all and nothing forced: candle's portable f32 path.
            Err(_) if precision == Precision::F32 && request == kernels::KernelRequest::Auto => {
                Ok(None)
            }
            Err(why) => Err(ModelError::Kernels(why)),
        }
    }
}

/// True when this CPU runs the fast encoder (x86-64 with AVX2 and FMA): elsewhere BERT runs on
/// candle's f32 forward and the other architectures on theirs.
pub fn fast_encoder_runs_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        kernels::Isa::Avx2.available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sets which kernels this process runs (`--kernels`): auto, avx512, avx2 or candle.
pub fn set_kernel_request(name: &str) -> Result<(), ModelError> {
    #[cfg(target_arch = "x86_64")]
    {
        let request = kernels::KernelRequest::from_name(name).ok_or_else(|| {
            ModelError::Kernels(format!(
                "--kernels {name:?} is not a kernel choice: use {}",
                kernels::KernelRequest::NAMES
            ))
        })?;
        kernels::set_request(request);
        Ok(())
    }
    #[cfg(not(target_arch = "x86_64"))]
    match name {
        "auto" | "candle" => Ok(()),
        _ => Err(ModelError::Kernels(format!(
            "--kernels {name}: this build has only candle's kernels"
        ))),
    }
}

/// The kernel request in force (`--kernels`, else `LIKEWISE_KERNELS`), with a clear error for an
/// unknown value.
#[cfg(target_arch = "x86_64")]
fn kernels_request() -> Result<kernels::KernelRequest, ModelError> {
    kernels::request().map_err(ModelError::Kernels)
}

#[cfg(target_arch = "x86_64")]
impl SentenceEncoder {
    /// Embeds with the bf16 encoder: sequences packed without padding into chunks of about
    /// [`FAST_CHUNK_TOKENS`], one chunk per thread at a time.
    fn embed_fast(
        &self,
        fast: &fast::FastBert,
        ids: &[Vec<u32>],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Vec<f32>> {
        use rayon::prelude::*;
        let hidden = fast.hidden_size();
        // Longest first, so chunks hold similar lengths and the longest work starts first.
        let mut order: Vec<usize> = (0..ids.len()).filter(|&i| !ids[i].is_empty()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let chunks = fast_chunks(&order, |i| ids[i].len(), rayon::current_num_threads());
        // Fewer chunks than threads (a query, a short batch): the chunks run one after another, each
        // multiply shared with the helper thread (`helper`); otherwise one chunk per thread.
        let parallel = chunks.len() < rayon::current_num_threads();
        let run = |chunk: &Vec<usize>| {
            let lengths: Vec<usize> = chunk.iter().map(|&i| ids[i].len()).collect();
            let packed: Vec<u32> = chunk.iter().flat_map(|&i| ids[i].iter().copied()).collect();
            let vectors = fast.forward_pooled(&packed, &lengths, parallel, |states| {
                let len = states.len() / hidden;
                let mask = vec![1u8; len];
                bert::pool(states, &mask, 1, len, hidden, self.pooling, self.normalize)
                    .pop()
                    .expect("one row pooled")
            });
            progress(chunk.len());
            vectors
        };
        let pooled: Vec<Vec<Vec<f32>>> = if parallel {
            chunks.iter().map(run).collect()
        } else {
            // Every thread takes the next chunk in order until none is left, so the last to run
            // are the last, shortest chunks. (A parallel iterator splits the list in halves: a
            // thread that ran out stole from the middle, and the other waited on a long chunk.)
            let next = std::sync::atomic::AtomicUsize::new(0);
            let done: Vec<std::sync::OnceLock<Vec<Vec<f32>>>> =
                chunks.iter().map(|_| std::sync::OnceLock::new()).collect();
            (0..rayon::current_num_threads())
                .into_par_iter()
                .with_max_len(1)
                .for_each(|_| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(chunk) = chunks.get(i) else { break };
                    // Each index is taken once, so each slot is set once.
                    let _ = done[i].set(run(chunk));
                });
            done.into_iter()
                .map(|slot| slot.into_inner().expect("every chunk taken and run"))
                .collect()
        };
        // A text with no tokens at all (a tokenizer without special tokens) pools to zeros, as in
        // the exact path.
        let mut out = vec![vec![0f32; hidden]; ids.len()];
        for (chunk, vectors) in chunks.iter().zip(pooled) {
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        let empty = ids.len() - order.len();
        if empty > 0 {
            progress(empty);
        }
        out
    }
}

impl Embedder for SentenceEncoder {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn precision(&self) -> Precision {
        match self.engine {
            Engine::Exact(_) | Engine::Candle(_) | Engine::Static(_) => Precision::F32,
            #[cfg(target_arch = "x86_64")]
            Engine::Fast(ref fast) => match fast.kernel().family() {
                kernels::Family::Bf16 => Precision::Bf16,
                kernels::Family::F32 => Precision::F32,
            },
        }
    }

    fn kernels(&self) -> &'static str {
        match self.engine {
            Engine::Exact(_) => "candle",
            Engine::Candle(_) => "candle-transformers",
            Engine::Static(_) => "static-table",
            #[cfg(target_arch = "x86_64")]
            Engine::Fast(ref fast) => fast.kernel().name(),
        }
    }

    fn embed(
        &self,
        texts: &[&str],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_role(texts, Role::Document, progress)
    }

    fn embed_queries(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_role(texts, Role::Query, &|_| {})
    }

    fn window_pieces(&self) -> usize {
        self.window_pieces
    }

    fn windows(&self, text: &str) -> Result<Vec<Range<usize>>, ModelError> {
        let encoding = self
            .untruncated
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let offsets: Vec<(usize, usize)> = encoding.get_offsets().to_vec();
        Ok(split_offsets(text, &offsets, self.window_pieces))
    }

    fn count_tokens(&self, texts: &[&str]) -> Result<usize, ModelError> {
        Ok(self.encode_ids(texts)?.iter().map(|r| r.len()).sum())
    }
}

/// Every tensor of a safetensors buffer, as candle's `load_buffer` reads them but on all threads:
/// copying the weights out of the file (and the kernel providing their fresh pages) was a third
/// of a process's start, on one core while the others waited (AMD EPYC family 25 model 17,
/// 2026-12-04).
fn load_tensors(
    buffer: &[u8],
    device: &Device,
) -> candle_core::Result<std::collections::HashMap<String, candle_core::Tensor>> {
    use candle_core::safetensors::Load;
    use rayon::prelude::*;
    let file = candle_core::safetensors::SliceSafetensors::new(buffer)?;
    file.tensors()
        .into_par_iter()
        .map(|(name, view)| Ok((name, view.load(device)?)))
        .collect()
}

/// Maps a file into memory, so its bytes are read from the page cache without a copy.
fn map_file(path: &std::path::Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is read while the tensors are built and dropped right after; model files are
    // not rewritten in place (fetching replaces a folder whole), so the bytes do not change under us.
    unsafe { memmap2::Mmap::map(&file) }
}

/// Byte ranges of the whitespace-separated words of `text` (the fake embedder's "word pieces").
pub fn whitespace_words(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

/// Splits `text`, whose word pieces have byte `offsets`, into consecutive byte ranges of at most
/// `max_pieces` pieces each. A cut falls where a new word starts, preferably after a sentence end,
/// never inside a word unless a single word is longer than a window.
pub fn split_offsets(
    text: &str,
    offsets: &[(usize, usize)],
    max_pieces: usize,
) -> Vec<Range<usize>> {
    if offsets.len() <= max_pieces {
        return std::iter::once(0..text.len()).collect();
    }
    let bytes = text.as_bytes();
    let starts_word = |t: usize| t == 0 || offsets[t].0 > offsets[t - 1].1;
    let after_sentence = |t: usize| {
        t > 0
            && starts_word(t)
            && text[offsets[t - 1].0..offsets[t - 1].1]
                .chars()
                .last()
                .is_some_and(|c| matches!(c, '.' | '!' | '?' | '"' | '\'' | '”' | '’' | ';'))
    };
    let mut ranges = Vec::new();
    let mut start_tok = 0usize;
    let mut start_byte = 0usize;
    while offsets.len() - start_tok > max_pieces {
        let limit = start_tok + max_pieces; // first token not in this window
        let floor = start_tok + max_pieces / 2;
        let cut = (floor.max(start_tok + 1)..=limit)
            .rev()
            .find(|&t| after_sentence(t))
            .or_else(|| (start_tok + 1..=limit).rev().find(|&t| starts_word(t)))
            .unwrap_or(limit);
        let end_byte = offsets[cut].0;
        ranges.push(start_byte..end_byte);
        start_tok = cut;
        start_byte = end_byte;
    }
    ranges.push(start_byte..bytes.len());
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence lands in exactly one chunk.
    fn assert_partition(chunks: &[Vec<usize>], n: usize) {
        let mut seen: Vec<usize> = chunks.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert!(chunks.iter().all(|c| !c.is_empty()));
    }

    #[test]
    fn a_few_passages_are_shared_evenly_between_the_threads() {
        // Four passages of 80 word pieces, two threads: two chunks of 160, not 240 and 80.
        let lens = [80, 80, 80, 80];
        let chunks = fast_chunks(&[0, 1, 2, 3], |i| lens[i], 2);
        assert_partition(&chunks, 4);
        let tokens: Vec<usize> = chunks
            .iter()
            .map(|c| c.iter().map(|&i| lens[i]).sum())
            .collect();
        assert_eq!(tokens, vec![160, 160]);
        // Seven of uneven length (longest first): a multiple of the threads, none far from even.
        let lens = [120, 100, 90, 80, 60, 40, 30];
        let chunks = fast_chunks(&(0..7).collect::<Vec<_>>(), |i| lens[i], 2);
        assert_partition(&chunks, 7);
        assert_eq!(chunks.len() % 2, 0);
        let tokens: Vec<usize> = chunks
            .iter()
            .map(|c| c.iter().map(|&i| lens[i]).sum())
            .collect();
        assert!(
            tokens.iter().max().unwrap() - tokens.iter().min().unwrap() <= 40,
            "{tokens:?}"
        );
    }

    #[test]
    fn a_lone_passage_is_one_chunk_and_much_work_is_cut_in_order() {
        assert_eq!(fast_chunks(&[0], |_| 33, 2), vec![vec![0]]);
        // 1,000 sequences of 60: chunks of consecutive sequences, at least four per thread, none
        // past the most tokens of a chunk, shrinking to the fewest at the end.
        let order: Vec<usize> = (0..1000).collect();
        let chunks = fast_chunks(&order, |_| 60, 2);
        assert_partition(&chunks, 1000);
        assert!(chunks.len() >= 8);
        assert!(chunks.iter().all(|c| c.len() * 60 <= FAST_CHUNK_TOKENS));
        assert!(chunks.concat() == order);
        let tokens: Vec<usize> = chunks.iter().map(|c| c.len() * 60).collect();
        assert!(tokens.windows(2).all(|w| w[1] <= w[0]), "{tokens:?}");
        assert!(tokens[0] > 4 * FAST_CHUNK_FLOOR, "{tokens:?}");
        assert!(*tokens.last().unwrap() <= FAST_CHUNK_FLOOR, "{tokens:?}");
    }

    fn word_offsets(text: &str) -> Vec<(usize, usize)> {
        whitespace_words(text)
    }

    #[test]
    fn a_short_text_is_one_window() {
        let text = "one two three";
        assert_eq!(split_offsets(text, &word_offsets(text), 5), vec![0..13]);
    }

    #[test]
    fn windows_cover_the_text_and_respect_the_limit() {
        let text = "Aa bb cc. Dd ee ff gg. Hh ii jj kk ll mm nn oo pp. Qq rr.";
        let offsets = word_offsets(text);
        let ranges = split_offsets(text, &offsets, 6);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, text.len());
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for r in &ranges {
            let pieces = word_offsets(&text[r.clone()]).len();
            assert!(pieces <= 6, "{:?} has {pieces} pieces", &text[r.clone()]);
        }
        // The first cut falls after a sentence end.
        assert!(text[ranges[0].clone()].trim_end().ends_with('.'));
    }
}
