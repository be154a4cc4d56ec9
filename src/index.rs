//! Indexing: from files on disk to articles, paragraphs and vectors in the store.
//!
//! Steps: walk the inputs (files and folders, recursively; `.txt`, `.md`, `.jsonl`, `.json`,
//! `.csv`, `.tsv`, `.parquet`), read and parse each article (a record of a JSONL, JSON or table
//! file is one), skip articles the store already holds with the same content cut the same way
//! (content hash, headline, metadata, paragraphs), embed the rest
//! paragraph by paragraph (a paragraph over the model's window is cut into windows, none dropped),
//! and commit them in groups, so an interrupted run keeps every group it committed and a rerun
//! embeds only what is missing.
//!
//! Reading the inputs is `ingest`'s work; this module decides what to embed, embeds and commits.

pub use crate::ingest::{
    collect_files, read_file, GivenChunk, GivenVectors, SourceArticle, Warning,
};
use crate::ingest::{has_extension, read_jsonl, sha256_hex, PARQUET_EXTENSIONS};
use crate::model::{Embedder, ModelError};
use crate::store::format::{ArticleRecord, ChunkRecord, SegmentData};
use crate::store::{file_key, resolve_file, store_base, ArticleVectorMode, StoreError, Writer};
use crate::text::{self, Metadata, ParsedArticle};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Errors that stop indexing (a bad input file only warns).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// When set (by Ctrl-C), indexing stops after the group being embedded is committed.
    pub interrupt: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Remove articles whose files are gone (or no longer hold them).
    pub prune: bool,
    /// Articles per committed group.
    pub group_articles: usize,
    /// Articles with more text than this are skipped with a warning.
    pub max_article_bytes: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            interrupt: None,
            prune: false,
            group_articles: 64,
            max_article_bytes: 4 << 20,
        }
    }
}

/// What an indexing run did.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct IndexReport {
    pub files: usize,
    pub articles_new: usize,
    pub articles_changed: usize,
    pub articles_unchanged: usize,
    pub articles_removed: usize,
    pub paragraphs_embedded: usize,
    pub chunks_embedded: usize,
    pub skipped_inputs: usize,
    /// Articles left to embed when an interrupt stopped the run.
    pub articles_left: usize,
    pub interrupted: bool,
    pub seconds: f64,
    /// Word pieces embedded (special tokens included), and the wall time of the embedding stages.
    pub tokens_embedded: usize,
    pub embed_seconds: f64,
    /// Segments whose lexical index was built from their stored text (a store made before
    /// lexical search, or a damaged or missing index).
    pub lexical_rebuilt: usize,
}

/// What the indexing stages tell the reporting thread.
enum Stage {
    Warnings(Vec<Warning>),
    Embedded {
        paragraphs: usize,
        chunks: usize,
        tokens: usize,
    },
    Committed(usize),
    Failed(IndexError),
}

/// Progress callbacks: set up with the number of articles to embed, then told of each group.
pub trait Progress {
    fn start(&self, articles: usize);
    fn advance(&self, articles: usize);
    fn warn(&self, warning: &Warning);
    /// Something to know that skipped nothing (article vectors made again, …); by default told
    /// as a warning.
    fn notice(&self, note: &Warning) {
        self.warn(note)
    }
    fn finish(&self);
}

/// A `Progress` that keeps every warning, for a caller that answers with them (the server,
/// the MCP tools, the Python module).
#[derive(Default)]
pub struct CollectWarnings(std::sync::Mutex<Vec<String>>);

impl CollectWarnings {
    pub fn into_warnings(self) -> Vec<String> {
        self.0.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl Progress for CollectWarnings {
    fn start(&self, _: usize) {}
    fn advance(&self, _: usize) {}
    fn warn(&self, w: &Warning) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w.to_string());
    }
    fn finish(&self) {}
}

/// A `Progress` that says nothing (tests, scripts).
pub struct Silent;
impl Progress for Silent {
    fn start(&self, _: usize) {}
    fn advance(&self, _: usize) {}
    fn warn(&self, _: &Warning) {}
    fn finish(&self) {}
}

/// What the store holds of an article, to tell whether its input changed.
struct StoredArticle {
    loc: crate::store::ArticleLoc,
    segment: String,
    article: u32,
    content_hash: String,
    title: String,
    meta: Metadata,
    paragraphs: u32,
}

impl StoredArticle {
    /// Whether the same content is now cut otherwise than it was stored (another headline,
    /// paragraph count, metadata, or a paragraph that no longer starts with its stored first
    /// window): the text reader improved since (a one-line text once kept out of the paragraphs,
    /// a front matter block or a Markdown heading's marks once read as text), so the article is
    /// cut and embedded again. Articles whose paragraphs came with their vectors are stored as
    /// given.
    fn cut_otherwise(&self, now: &SourceArticle, store: &crate::store::Store) -> bool {
        if now.given.is_some() {
            return false;
        }
        if self.title != now.parsed.title
            || self.paragraphs as usize != now.parsed.paragraphs.len()
            || self.meta != now.parsed.meta
        {
            return true;
        }
        let seg = &store.segments[self.loc.segment];
        seg.article_chunks(self.loc.article).any(|c| {
            let chunk = seg.chunk(c);
            chunk.window == 0
                && now
                    .parsed
                    .paragraphs
                    .get(chunk.paragraph as usize)
                    .is_none_or(|p| !p.starts_with(seg.chunk_text(c).as_ref()))
        })
    }
}

/// Indexes `paths` into the store held by `writer`.
pub fn index(
    writer: &mut Writer,
    embedder: &dyn Embedder,
    paths: &[PathBuf],
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport, IndexError> {
    let started = std::time::Instant::now();
    let mut report = IndexReport::default();
    let mut warn = |w: Warning| {
        progress.warn(&w);
        report.skipped_inputs += 1;
    };
    let files = collect_files(paths, &mut warn);
    let base = store_base(writer.dir());
    let mut inputs = Vec::new();
    let mut read_files: HashSet<String> = HashSet::new();
    for path in &files {
        report.files += 1;
        read_files.insert(file_key(path, &base));
        let articles = if has_extension(path, PARQUET_EXTENSIONS) {
            read_parquet(path, writer, embedder, progress, &mut warn)?
        } else {
            read_file(path, &base, opts.max_article_bytes, &mut warn)
        };
        for a in articles {
            inputs.push((path.clone(), a));
        }
    }
    index_articles(
        writer,
        embedder,
        inputs,
        &read_files,
        opts,
        progress,
        report,
        started,
    )
}

/// Reads the articles of a Parquet file (`likewise export`, Spark, pandas…). Rows with vectors
/// keep them, when the file's model is the store's (otherwise the file is refused, naming both);
/// its article vectors, only when the file says they were made the store's way (otherwise they
/// are made again, with a notice on `progress`, so a store never mixes two kinds). What is
/// missing is embedded. Unusable rows are warnings.
fn read_parquet(
    path: &Path,
    writer: &Writer,
    embedder: &dyn Embedder,
    progress: &dyn Progress,
    warn: &mut dyn FnMut(Warning),
) -> Result<Vec<SourceArticle>, IndexError> {
    let input = |reason: String| IndexError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let imported = crate::exchange::read_parquet(path).map_err(|e| input(e.reason))?;
    for p in &imported.problems {
        warn(Warning {
            path: path.to_path_buf(),
            reason: p.clone(),
        });
    }
    let store_model = &writer.manifest().model;
    let store_precision = &writer.manifest().precision;
    let vectors_usable = match &imported.model {
        _ if !imported.has_vectors => false,
        None => {
            return Err(input(format!(
                "it has vectors but does not say which model made them (no likewise.model metadata); this store holds {} vectors. Drop the `vector` column to have the texts embedded, or write the file with `likewise export`",
                store_model.name
            )))
        }
        Some((model, precision)) => {
            if !model.compatible_with(store_model) || precision != store_precision {
                return Err(input(format!(
                    "its vectors were made by {} ({} weights {}…, {precision}); this store holds {} ({} weights {}…, {store_precision}). Index it into a store of that model, or drop the `vector` column to embed the texts again",
                    model.name,
                    model.dim,
                    model.weights_sha256.chars().take(12).collect::<String>(),
                    store_model.name,
                    store_model.dim,
                    store_model.weights_sha256.chars().take(12).collect::<String>(),
                )));
            }
            true
        }
    };
    let store_method = writer.manifest().article_vectors.name();
    let article_vectors_usable =
        vectors_usable && imported.article_vectors.as_deref() == Some(store_method);
    if vectors_usable
        && !article_vectors_usable
        && imported.articles.iter().any(|a| a.vector.is_some())
    {
        let why = match &imported.article_vectors {
            Some(method) => format!("its article vectors were made as `{method}`"),
            None => "it does not say how its article vectors were made (no likewise.article_vectors metadata, no article_vectors column)".into(),
        };
        progress.notice(&Warning {
            path: path.to_path_buf(),
            reason: format!("{why}; this store makes them as `{store_method}`, so they are made again from the text (the paragraph vectors are kept)"),
        });
    }
    let dim = embedder.identity().dim;
    let mut out = Vec::new();
    for a in imported.articles {
        let row = a.first_row;
        let bad_dim = |v: &Option<Vec<f32>>| v.as_ref().is_some_and(|v| v.len() != dim);
        if bad_dim(&a.vector) || a.chunks.iter().any(|c| bad_dim(&c.vector)) {
            warn(Warning {
                path: PathBuf::from(format!("{}:row {row}", path.display())),
                reason: format!(
                    "article `{}` has a vector of another length than {dim}; skipped",
                    a.key
                ),
            });
            continue;
        }
        let (parsed, chunks) = if a.chunks.is_empty() {
            let text = a.text.clone().unwrap_or_default();
            let mut parsed = if a.title.trim().is_empty() {
                text::parse_article_text(&text)
            } else {
                text::parse_titled(&a.title, &text)
            };
            parsed.meta = a.meta.clone();
            (parsed, None)
        } else {
            let mut chunks = a.chunks.clone();
            chunks.sort_by_key(|c| (c.paragraph, c.window));
            // Paragraphs rebuilt from their windows, for whatever must still be embedded.
            let mut paragraphs: Vec<String> = Vec::new();
            let mut last = None;
            for c in &chunks {
                if last == Some(c.paragraph) {
                    let p = paragraphs.last_mut().expect("a paragraph");
                    p.push(' ');
                    p.push_str(&c.text);
                } else {
                    paragraphs.push(c.text.clone());
                }
                last = Some(c.paragraph);
            }
            let all_given = vectors_usable && chunks.iter().all(|c| c.vector.is_some());
            let given = all_given.then(|| {
                chunks
                    .iter()
                    .map(|c| {
                        (
                            c.paragraph,
                            c.window,
                            c.text.clone(),
                            c.vector.clone().unwrap_or_default(),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            (
                ParsedArticle {
                    title: text::normalize_whitespace(&a.title),
                    paragraphs,
                    meta: a.meta.clone(),
                },
                given,
            )
        };
        if parsed.paragraphs.is_empty() && parsed.title.is_empty() {
            warn(Warning {
                path: PathBuf::from(format!("{}:row {row}", path.display())),
                reason: format!("article `{}` has no text; skipped", a.key),
            });
            continue;
        }
        let article_vector = if article_vectors_usable {
            a.vector.clone()
        } else {
            None
        };
        let content_hash = a.content_hash.clone().unwrap_or_else(|| {
            let mut parts: Vec<Vec<u8>> = vec![a.title.as_bytes().to_vec()];
            for p in &parsed.paragraphs {
                parts.push(p.as_bytes().to_vec());
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            sha256_hex(&refs)
        });
        out.push(SourceArticle {
            key: a.key,
            file: a.file,
            parsed,
            content_hash,
            given: (chunks.is_some() || article_vector.is_some()).then_some(GivenVectors {
                chunks,
                article: article_vector,
            }),
        });
    }
    Ok(out)
}

/// Indexes articles sent as JSON lines (the fields of a `.jsonl` input), with no file behind
/// them; `origin` names them in warnings.
pub fn index_json_lines(
    writer: &mut Writer,
    embedder: &dyn Embedder,
    origin: &str,
    lines: &str,
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport, IndexError> {
    let started = std::time::Instant::now();
    let mut report = IndexReport::default();
    let mut warn = |w: Warning| {
        progress.warn(&w);
        report.skipped_inputs += 1;
    };
    let path = PathBuf::from(origin);
    let articles = read_jsonl(
        &path,
        None,
        lines.as_bytes(),
        opts.max_article_bytes,
        &mut warn,
    );
    let inputs = articles.into_iter().map(|a| (path.clone(), a)).collect();
    index_articles(
        writer,
        embedder,
        inputs,
        &HashSet::new(),
        opts,
        progress,
        report,
        started,
    )
}

/// Indexes articles read elsewhere (a feed's entries), named `origin` in warnings: the new
/// and changed ones are embedded and committed, the rest left as they are.
pub fn index_sources(
    writer: &mut Writer,
    embedder: &dyn Embedder,
    origin: &Path,
    articles: Vec<SourceArticle>,
    opts: &IndexOptions,
    progress: &dyn Progress,
) -> Result<IndexReport, IndexError> {
    let started = std::time::Instant::now();
    let inputs = articles
        .into_iter()
        .map(|a| (origin.to_path_buf(), a))
        .collect();
    index_articles(
        writer,
        embedder,
        inputs,
        &HashSet::new(),
        opts,
        progress,
        IndexReport::default(),
        started,
    )
}

/// Embeds and commits the new and changed articles among `inputs` (each with the input it was
/// read from); `read_files` are the stored file names read whole (for pruning).
#[allow(clippy::too_many_arguments)]
fn index_articles(
    writer: &mut Writer,
    embedder: &dyn Embedder,
    inputs: Vec<(PathBuf, SourceArticle)>,
    read_files: &HashSet<String>,
    opts: &IndexOptions,
    progress: &dyn Progress,
    mut report: IndexReport,
    started: std::time::Instant,
) -> Result<IndexReport, IndexError> {
    let base = store_base(writer.dir());
    let mut warn = |w: Warning| {
        progress.warn(&w);
        report.skipped_inputs += 1;
    };
    let store = writer.snapshot()?;
    let mut existing: HashMap<String, StoredArticle> = HashMap::new();
    for (loc, rec) in store.live_articles() {
        existing.insert(
            rec.key.clone(),
            StoredArticle {
                loc,
                segment: store.segments[loc.segment].file.clone(),
                article: loc.article as u32,
                content_hash: rec.content_hash.clone(),
                title: rec.title.clone(),
                meta: rec.meta.clone(),
                paragraphs: rec.paragraphs,
            },
        );
    }
    let mut todo: Vec<SourceArticle> = Vec::new();
    let mut seen_keys: HashSet<String> = HashSet::new();
    for (path, a) in inputs {
        if !seen_keys.insert(a.key.clone()) {
            warn(Warning {
                path: path.clone(),
                reason: format!(
                    "article `{}` was already read from another input; skipped",
                    a.key
                ),
            });
            continue;
        }
        match existing.get(&a.key) {
            Some(stored) if stored.content_hash == a.content_hash => {
                if stored.cut_otherwise(&a, &store) {
                    report.articles_changed += 1;
                    todo.push(a);
                } else {
                    report.articles_unchanged += 1;
                }
            }
            Some(_) => {
                report.articles_changed += 1;
                todo.push(a);
            }
            None => {
                report.articles_new += 1;
                todo.push(a);
            }
        }
    }

    progress.start(todo.len());
    let groups: Vec<&[SourceArticle]> = todo.chunks(opts.group_articles.max(1)).collect();
    // Three stages, each on its own thread, one group apart: cutting and tokenising the next
    // group, embedding this one (the model on all cores), committing the previous one (encoding,
    // compact copies, fsync). Channels of one slot keep at most one group waiting per stage.
    let interrupted = || {
        opts.interrupt
            .as_ref()
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::SeqCst))
    };
    // The store says how its articles are made, so articles added later agree with the rest.
    let mode = writer.manifest().article_vectors;
    let embed_started = std::time::Instant::now();
    let (to_embed, prepared) = std::sync::mpsc::sync_channel::<(usize, PreparedGroup)>(1);
    let (to_commit, finished) =
        std::sync::mpsc::sync_channel::<(usize, SegmentData, Vec<(String, u32)>)>(1);
    let (to_main, events) = std::sync::mpsc::channel::<Stage>();
    let writer_ref = &mut *writer;
    let groups_ref = &groups;
    let existing_ref = &existing;
    let outcome: Result<(), IndexError> = std::thread::scope(|scope| {
        let prepare_events = to_main.clone();
        scope.spawn(move || {
            for (g, group) in groups_ref.iter().enumerate() {
                if interrupted() {
                    break;
                }
                let mut warnings = Vec::new();
                match prepare_group(embedder, group, mode, &mut |w| warnings.push(w)) {
                    Ok(p) => {
                        let _ = prepare_events.send(Stage::Warnings(warnings));
                        if to_embed.send((g, p)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = prepare_events.send(Stage::Failed(e.into()));
                        break;
                    }
                }
            }
        });
        let commit_events = to_main.clone();
        scope.spawn(move || {
            for (g, segment, replaced) in finished {
                match writer_ref.commit(Some(&segment), &replaced) {
                    Ok(()) => {
                        let _ = commit_events.send(Stage::Committed(g));
                    }
                    Err(e) => {
                        let _ = commit_events.send(Stage::Failed(e.into()));
                        break;
                    }
                }
            }
        });
        let embed_events = to_main;
        scope.spawn(move || {
            for (g, p) in prepared {
                let tokens = p.tokens;
                match finish_group(embedder, p) {
                    Ok(segment) => {
                        let _ = embed_events.send(Stage::Embedded {
                            paragraphs: segment
                                .articles
                                .iter()
                                .map(|a| a.paragraphs as usize)
                                .sum(),
                            chunks: segment.chunks.len(),
                            tokens,
                        });
                        let replaced: Vec<(String, u32)> = groups_ref[g]
                            .iter()
                            .filter_map(|a| {
                                existing_ref
                                    .get(&a.key)
                                    .map(|stored| (stored.segment.clone(), stored.article))
                            })
                            .collect();
                        if to_commit.send((g, segment, replaced)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = embed_events.send(Stage::Failed(e.into()));
                        break;
                    }
                }
            }
        });
        // This thread reports: warnings and progress as the stages send them, the first error.
        let mut first_error = None;
        let mut committed = 0usize;
        for event in events {
            match event {
                Stage::Warnings(ws) => {
                    for w in ws {
                        progress.warn(&w);
                        report.skipped_inputs += 1;
                    }
                }
                Stage::Embedded {
                    paragraphs,
                    chunks,
                    tokens,
                } => {
                    report.paragraphs_embedded += paragraphs;
                    report.chunks_embedded += chunks;
                    report.tokens_embedded += tokens;
                }
                Stage::Committed(g) => {
                    committed += groups[g].len();
                    progress.advance(groups[g].len());
                }
                Stage::Failed(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if interrupted() && committed < todo.len() {
            report.interrupted = true;
            report.articles_left = todo.len() - committed;
        }
        first_error.map_or(Ok(()), Err)
    });
    progress.finish();
    report.embed_seconds = embed_started.elapsed().as_secs_f64();
    outcome?;
    progress.finish();
    if report.interrupted {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    if opts.prune {
        let mut gone = Vec::new();
        for (loc, rec) in store.live_articles() {
            let Some(file) = &rec.file else { continue };
            let missing = !resolve_file(file, &base).exists();
            let dropped_from_read_file = read_files.contains(file) && !seen_keys.contains(&rec.key);
            if missing || dropped_from_read_file {
                gone.push((store.segments[loc.segment].file.clone(), loc.article as u32));
            }
        }
        report.articles_removed = gone.len();
        if !gone.is_empty() {
            writer.commit(None, &gone)?;
        }
    }
    writer.compact_if_needed()?;
    report.lexical_rebuilt = writer.ensure_lexical()?;
    // A first run that found nothing to store still leaves a store (empty), so the commands
    // after it say "0 articles" rather than "no store here".
    if writer.manifest().generation == 0 {
        writer.commit(None, &[])?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Embeds a group of articles into one segment's worth of data.
/// Windows embedded per paragraph at most: a paragraph of 100,000 words would otherwise hold up
/// indexing for minutes. What is left out is reported, never dropped silently.
pub const MAX_WINDOWS_PER_PARAGRAPH: usize = 64;
/// Windows of an article's whole text embedded for its own vector, at most (the first ones: the
/// rest of a very long text adds little to what the article is about).
const MAX_WINDOWS_PER_ARTICLE: usize = 64;

pub fn embed_group(
    embedder: &dyn Embedder,
    group: &[SourceArticle],
    mode: ArticleVectorMode,
    warn: &mut dyn FnMut(Warning),
) -> Result<SegmentData, ModelError> {
    let prepared = prepare_group(embedder, group, mode, warn)?;
    finish_group(embedder, prepared)
}

/// Makes a given vector unit length, leaving one that already is (to f32 rounding) bit for bit
/// as it was: vectors exported by likewise come back unchanged.
fn unit_length(v: &mut [f32]) {
    let norm2: f32 = v.iter().map(|x| x * x).sum();
    if (norm2 - 1.0).abs() > 1e-5 {
        crate::model::bert::normalize_in_place(v);
    }
}

/// Where a chunk's vector comes from.
enum ChunkSource {
    /// The model, from this index of the group's texts.
    Embedded(usize),
    /// The input.
    Given(Vec<f32>),
}

/// The texts embedded for an article's own vector, beside its paragraphs (indices in the
/// group's texts).
enum OwnTexts {
    /// None: the input gave the article's vector.
    Given,
    /// The headline and body, the first window (`paragraphs-and-lead`).
    Lead(usize),
    /// Every window of headline and body with its word pieces, and the lede
    /// (`whole-text-and-lede`).
    WholeAndLede {
        windows: Vec<(usize, usize)>,
        lede: usize,
    },
}

/// Weight of the lede against the whole text's unit vector: on the story pairs and on BBC a
/// quarter added the lede's signal without losing the whole text's topic (docs/benchmarks.md, "Article
/// vectors").
const LEDE_WEIGHT: f32 = 0.25;

/// The headline and the first paragraph: what the story is, in the order news writes it.
fn lede_text(a: &ParsedArticle) -> String {
    [
        Some(a.title.as_str()),
        below_headline(a).first().map(String::as_str),
    ]
    .into_iter()
    .flatten()
    .filter(|t| !t.is_empty())
    .collect::<Vec<_>>()
    .join("\n")
}

/// A group of articles cut into the texts to embed, before the model runs.
pub struct PreparedGroup {
    seg: SegmentData,
    /// What the model will embed: chunk texts, and the articles' own texts (headline or lead).
    texts: Vec<String>,
    /// Where each chunk's vector comes from.
    sources: Vec<ChunkSource>,
    /// Per article, its own texts in `texts`, when they are embedded.
    extra: Vec<OwnTexts>,
    /// Per article, its vector when the input gave it.
    given_articles: Vec<Option<Vec<f32>>>,
    /// Word pieces the model will see (after truncation, special tokens included).
    pub tokens: usize,
    /// Articles in the group.
    pub articles: usize,
}

/// Cuts a group's paragraphs into windows (tokenising them) and lists the texts to embed.
pub fn prepare_group(
    embedder: &dyn Embedder,
    group: &[SourceArticle],
    mode: ArticleVectorMode,
    warn: &mut dyn FnMut(Warning),
) -> Result<PreparedGroup, ModelError> {
    let dim = embedder.identity().dim;
    let mut seg = SegmentData {
        dim,
        ..Default::default()
    };
    // Texts to embed: every chunk of every article, then each article's extra text (headline, or
    // lead text), in one call so batches stay full.
    let mut texts: Vec<String> = Vec::new();
    let mut sources: Vec<ChunkSource> = Vec::new();
    for (i, a) in group.iter().enumerate() {
        let mut record = ArticleRecord {
            key: a.key.clone(),
            file: a.file.clone(),
            title: a.parsed.title.clone(),
            meta: a.parsed.meta.clone(),
            content_hash: a.content_hash.clone(),
            chunk_start: seg.chunks.len() as u64,
            chunk_count: 0,
            paragraphs: a.parsed.paragraphs.len() as u32,
        };
        if let Some(chunks) = a.given.as_ref().and_then(|g| g.chunks.as_ref()) {
            for (p, w, text, vector) in chunks {
                seg.chunks.push(ChunkRecord {
                    article: i as u32,
                    paragraph: *p,
                    window: *w,
                    text_start: seg.text.len() as u64,
                    text_len: text.len() as u32,
                });
                seg.text.push_str(text);
                sources.push(ChunkSource::Given(vector.clone()));
                record.chunk_count += 1;
            }
            seg.articles.push(record);
            continue;
        }
        for (p, paragraph) in a.parsed.paragraphs.iter().enumerate() {
            let windows = embedder.windows(paragraph)?;
            if windows.len() > MAX_WINDOWS_PER_PARAGRAPH {
                let kept_bytes = windows[MAX_WINDOWS_PER_PARAGRAPH - 1].end;
                warn(Warning {
                    path: PathBuf::from(a.file.as_deref().unwrap_or(&a.key)),
                    reason: format!(
                        "paragraph {p} is {} windows long; only its first {MAX_WINDOWS_PER_PARAGRAPH} ({kept_bytes} of {} bytes) are embedded and stored",
                        windows.len(),
                        paragraph.len()
                    ),
                });
            }
            for (w, range) in windows
                .into_iter()
                .take(MAX_WINDOWS_PER_PARAGRAPH)
                .enumerate()
            {
                let piece = paragraph[range].trim();
                if piece.is_empty() {
                    continue;
                }
                seg.chunks.push(ChunkRecord {
                    article: i as u32,
                    paragraph: p as u32,
                    window: w as u32,
                    text_start: seg.text.len() as u64,
                    text_len: piece.len() as u32,
                });
                seg.text.push_str(piece);
                sources.push(ChunkSource::Embedded(texts.len()));
                texts.push(piece.to_string());
                record.chunk_count += 1;
            }
        }
        seg.articles.push(record);
    }
    let mut extra = Vec::with_capacity(group.len());
    for a in group {
        if a.given.as_ref().is_some_and(|g| g.article.is_some()) {
            extra.push(OwnTexts::Given);
            continue;
        }
        let whole = lead_text(&a.parsed);
        match mode {
            ArticleVectorMode::ParagraphsAndLead => {
                texts.push(whole);
                extra.push(OwnTexts::Lead(texts.len() - 1));
            }
            ArticleVectorMode::WholeTextAndLede => {
                let mut windows = Vec::new();
                for range in embedder
                    .windows(&whole)?
                    .into_iter()
                    .take(MAX_WINDOWS_PER_ARTICLE)
                {
                    let piece = whole[range].trim();
                    if piece.is_empty() {
                        continue;
                    }
                    let pieces = embedder.count_tokens(&[piece])?;
                    texts.push(piece.to_string());
                    windows.push((texts.len() - 1, pieces));
                }
                texts.push(lede_text(&a.parsed));
                extra.push(OwnTexts::WholeAndLede {
                    windows,
                    lede: texts.len() - 1,
                });
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = embedder.count_tokens(&refs)?;
    let given_articles = group
        .iter()
        .map(|a| a.given.as_ref().and_then(|g| g.article.clone()))
        .collect();
    Ok(PreparedGroup {
        seg,
        texts,
        sources,
        extra,
        given_articles,
        tokens,
        articles: group.len(),
    })
}

/// Embeds a prepared group: its chunk vectors and each article's vector.
pub fn finish_group(
    embedder: &dyn Embedder,
    prepared: PreparedGroup,
) -> Result<SegmentData, ModelError> {
    let PreparedGroup {
        mut seg,
        texts,
        sources,
        extra,
        given_articles,
        ..
    } = prepared;
    let dim = seg.dim;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut vectors = if refs.is_empty() {
        Vec::new()
    } else {
        embedder.embed(&refs, &|_| {})?
    };
    for v in vectors.iter_mut() {
        crate::model::bert::normalize_in_place(v);
    }
    let chunk_vectors: Vec<Vec<f32>> = sources
        .into_iter()
        .map(|s| match s {
            ChunkSource::Embedded(t) => vectors[t].clone(),
            ChunkSource::Given(mut v) => {
                unit_length(&mut v);
                v
            }
        })
        .collect();
    for v in &chunk_vectors {
        seg.chunk_vectors.extend_from_slice(v);
    }
    for (i, rec) in seg.articles.iter().enumerate() {
        if let Some(given) = &given_articles[i] {
            let mut v = given.clone();
            unit_length(&mut v);
            seg.article_vectors.extend_from_slice(&v);
            continue;
        }
        let chunks = rec.chunk_start as usize..(rec.chunk_start + rec.chunk_count as u64) as usize;
        let v = match &extra[i] {
            OwnTexts::Given => unreachable!("a given article vector is taken above"),
            OwnTexts::Lead(lead) => {
                let lead = vectors[*lead].as_slice();
                if chunks.is_empty() {
                    lead.to_vec()
                } else {
                    let paragraphs = mean_vector(dim, chunks.map(|c| chunk_vectors[c].as_slice()));
                    mean_vector(dim, [paragraphs.as_slice(), lead].into_iter())
                }
            }
            OwnTexts::WholeAndLede { windows, lede } => {
                let mut sum = vec![0f32; dim];
                for &(w, pieces) in windows {
                    for (s, x) in sum.iter_mut().zip(&vectors[w]) {
                        *s += x * pieces as f32;
                    }
                }
                crate::model::bert::normalize_in_place(&mut sum);
                for (s, x) in sum.iter_mut().zip(&vectors[*lede]) {
                    *s += LEDE_WEIGHT * x;
                }
                crate::model::bert::normalize_in_place(&mut sum);
                sum
            }
        };
        seg.article_vectors.extend_from_slice(&v);
    }
    Ok(seg)
}

/// Headline and body as one text, as sentence-transformers would see a whole article.
pub fn lead_text(a: &ParsedArticle) -> String {
    let mut s = a.title.clone();
    for p in below_headline(a) {
        if !s.is_empty() {
            s.push('\n');
        }
        s.push_str(p);
    }
    s
}

/// The paragraphs under the headline: none when the only paragraph is the headline itself (a
/// one-line text), so an article's own texts carry its headline once.
fn below_headline(a: &ParsedArticle) -> &[String] {
    match a.paragraphs.as_slice() {
        [only] if *only == a.title => &[],
        all => all,
    }
}

/// The renormalised mean of unit vectors (a zero vector when there are none).
pub fn mean_vector<'a>(dim: usize, vectors: impl Iterator<Item = &'a [f32]>) -> Vec<f32> {
    let mut sum = vec![0f32; dim];
    let mut n = 0;
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x;
        }
        n += 1;
    }
    if n > 0 {
        crate::model::bert::normalize_in_place(&mut sum);
    }
    sum
}

/// What one part of a distributed indexing job (a Spark task) did: the segment file it wrote,
/// the articles in it, and every input it did not use, with the reason.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PartWritten {
    /// The segment file, not yet named by the manifest; none when nothing needed embedding.
    pub segments: Vec<crate::store::SegmentEntry>,
    /// Keys of the articles written, in segment order.
    pub keys: Vec<String>,
    pub articles_new: usize,
    pub articles_changed: usize,
    pub articles_unchanged: usize,
    /// Inputs not used, each naming itself and why (bad JSON, empty text, a repeated id…).
    pub skipped: Vec<String>,
    pub paragraphs_embedded: usize,
    pub chunks_embedded: usize,
    pub tokens_embedded: usize,
}

/// Where one part writes: the store's folder, a file name stem unique to the part and attempt
/// (`seg-…`), the store's compact layout and the generation its commit will have.
#[derive(Debug, Clone)]
pub struct PartTarget<'a> {
    pub dir: &'a Path,
    pub file_stem: &'a str,
    pub compact: Option<crate::compact::Compact>,
    pub generation: u64,
    /// Articles per segment file (bounds the memory one part holds).
    pub articles_per_segment: usize,
    /// How the store makes its article vectors.
    pub article_vectors: ArticleVectorMode,
}

/// How a distributed job knows a stored article: its content hash and a fingerprint of how it
/// was cut (headline, metadata, paragraph count), so that a part re-cuts an article whose
/// unchanged content a newer reader cuts otherwise, as [`index`] does.
pub fn known_form(record: &ArticleRecord) -> String {
    cut_form(
        &record.content_hash,
        &record.title,
        &record.meta,
        record.paragraphs as usize,
    )
}

fn cut_form(content_hash: &str, title: &str, meta: &Metadata, paragraphs: usize) -> String {
    let meta = serde_json::to_string(meta).unwrap_or_default();
    let cut = sha256_hex(&[title.as_bytes(), meta.as_bytes(), &paragraphs.to_le_bytes()]);
    format!("{content_hash}:{}", &cut[..16])
}

/// Indexes one part of a larger job without the store's lock: reads `lines` (JSON lines, the
/// fields `index` takes), skips articles whose key and [`known_form`] are in `known` (the
/// store's live articles), embeds the rest exactly as [`index`] does and writes them as segment files
/// that [`Writer::commit_segments`] names afterwards. Nothing is visible to readers until then.
pub fn write_part(
    target: &PartTarget,
    embedder: &dyn Embedder,
    origin: &str,
    lines: &str,
    known: &HashMap<String, String>,
    opts: &IndexOptions,
) -> Result<PartWritten, IndexError> {
    if !target.file_stem.starts_with("seg-")
        || !target
            .file_stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(IndexError::Input {
            path: target.dir.join(target.file_stem),
            reason: "a part's file stem must start with `seg-` and hold only letters, digits, `-` and `_`".into(),
        });
    }
    let mut written = PartWritten::default();
    let path = PathBuf::from(origin);
    let mut skipped = Vec::new();
    let articles = read_jsonl(
        &path,
        None,
        lines.as_bytes(),
        opts.max_article_bytes,
        &mut |w| skipped.push(w.to_string()),
    );
    let mut todo = Vec::new();
    for a in articles {
        let form = || {
            cut_form(
                &a.content_hash,
                &a.parsed.title,
                &a.parsed.meta,
                a.parsed.paragraphs.len(),
            )
        };
        match known.get(&a.key) {
            Some(stored) if *stored == form() => written.articles_unchanged += 1,
            Some(_) => {
                written.articles_changed += 1;
                todo.push(a);
            }
            None => {
                written.articles_new += 1;
                todo.push(a);
            }
        }
    }
    // Even shares: 12,500 articles at 10,000 a segment make two of 6,250, not one full segment
    // and a small remainder that the commit would have to merge.
    let segments = todo
        .len()
        .div_ceil(target.articles_per_segment.max(1))
        .max(1);
    let per_segment = todo.len().div_ceil(segments).max(1);
    for (n, part) in todo.chunks(per_segment).enumerate() {
        let (seg, tokens) =
            embed_articles(embedder, part, opts, target.article_vectors, &mut skipped)?;
        written.tokens_embedded += tokens;
        written.paragraphs_embedded += seg
            .articles
            .iter()
            .map(|a| a.paragraphs as usize)
            .sum::<usize>();
        written.chunks_embedded += seg.chunks.len();
        written
            .keys
            .extend(seg.articles.iter().map(|a| a.key.clone()));
        let file = format!("{}-{n:04}.lkw", target.file_stem);
        written.segments.push(crate::store::write_segment_file(
            target.dir,
            &seg,
            &file,
            target.compact,
            target.generation,
        )?);
    }
    written.skipped = skipped;
    Ok(written)
}

/// Reads JSON lines (the fields `index` takes; `origin` names them in warnings) and embeds every
/// usable article as [`index`] would store it: the segment's articles, chunks (paragraph, window,
/// text) and vectors, with the inputs not used, and the word pieces embedded.
pub fn embed_json_lines(
    embedder: &dyn Embedder,
    origin: &str,
    lines: &str,
    opts: &IndexOptions,
) -> Result<(SegmentData, Vec<String>, usize), IndexError> {
    let mut skipped = Vec::new();
    let articles = read_jsonl(
        &PathBuf::from(origin),
        None,
        lines.as_bytes(),
        opts.max_article_bytes,
        &mut |w| skipped.push(w.to_string()),
    );
    let (seg, tokens) = embed_articles(
        embedder,
        &articles,
        opts,
        ArticleVectorMode::default(),
        &mut skipped,
    )?;
    Ok((seg, skipped, tokens))
}

/// Embeds `articles` into one segment's data, a group at a time.
fn embed_articles(
    embedder: &dyn Embedder,
    articles: &[SourceArticle],
    opts: &IndexOptions,
    mode: ArticleVectorMode,
    skipped: &mut Vec<String>,
) -> Result<(SegmentData, usize), IndexError> {
    let mut seg = SegmentData {
        dim: embedder.identity().dim,
        ..Default::default()
    };
    let mut tokens = 0;
    for group in articles.chunks(opts.group_articles.max(1)) {
        let prepared = prepare_group(embedder, group, mode, &mut |w| skipped.push(w.to_string()))?;
        tokens += prepared.tokens;
        append_segment(&mut seg, finish_group(embedder, prepared)?);
    }
    Ok((seg, tokens))
}

/// Appends the articles, paragraphs and vectors of `from` to `into` (same model).
fn append_segment(into: &mut SegmentData, from: SegmentData) {
    let (articles, chunks, text) = (
        into.articles.len() as u32,
        into.chunks.len() as u64,
        into.text.len() as u64,
    );
    into.articles.extend(from.articles.into_iter().map(|mut a| {
        a.chunk_start += chunks;
        a
    }));
    into.chunks.extend(from.chunks.into_iter().map(|mut c| {
        c.article += articles;
        c.text_start += text;
        c
    }));
    into.text.push_str(&from.text);
    into.chunk_vectors.extend_from_slice(&from.chunk_vectors);
    into.article_vectors
        .extend_from_slice(&from.article_vectors);
}

/// Commits the parts of a distributed job as one generation: their segments named, the older
/// copies of the articles they rewrote deleted, then the store's small segments merged when it
/// needs it (a merge is bounded: see [`crate::store::compaction_plan`]). All or nothing: a part
/// whose file fails its checks, or an article in two parts, fails the commit and the store stays
/// as it was (the files are removed by the next writer).
pub fn commit_parts(writer: &mut Writer, parts: &[PartWritten]) -> Result<(), IndexError> {
    let entries: Vec<_> = parts.iter().flat_map(|p| p.segments.clone()).collect();
    writer.commit_segments(&entries)?;
    writer.compact_if_needed()?;
    writer.ensure_lexical()?;
    Ok(())
}
