//! The flat vector store on disk: a folder (default `.likewise/`) of immutable segment files and
//! one manifest that names the live ones.
//!
//! - `MANIFEST` — the model's identity, the vector precision, and the live segments with their
//!   sizes and deleted articles. It is replaced atomically (temp file, fsync, rename, fsync of the
//!   folder), so a reader sees the old or the new state, never a mix, and a crash at any moment
//!   leaves the previous state readable.
//! - `seg-*.lkw` — segments, written whole (temp file, fsync, rename) before the manifest names
//!   them; never changed afterwards. A segment not named by the manifest is debris of an
//!   interrupted write and is removed by the next writer.
//! - `LOCK` — held (an OS file lock) by the one writer; the OS drops it when that process dies, so a
//!   killed writer never leaves a stale lock.
//!
//! Invariants: stored vectors are L2-normalised, so a dot product is the cosine; an article key
//! is live in at most one segment; every byte read from disk is checked (see `format`) before use.

pub mod format;

use crate::compact::Compact;
use crate::lexical::{self, Analysis, ArticleText, LexicalIndex};
use crate::model::ModelIdentity;
use format::{ArticleRecord, ChunkRecord, FormatError, SegmentData};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The manifest's file name in the store folder.
pub const MANIFEST: &str = "MANIFEST";
const LOCK: &str = "LOCK";

/// Errors of opening, reading and writing a store; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no store at {dir} (build one with `likewise index PATH...`, or choose another with --index / LIKEWISE_INDEX)")]
    NotFound { dir: PathBuf },
    #[error("store {path} is damaged: {reason}. Its earlier content cannot be trusted; move it away and rebuild with `likewise index PATH...`")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot commit {path}: {reason}; the store is unchanged")]
    Rejected { path: PathBuf, reason: String },
    #[error("store {path} has format version {found}; this likewise reads version {}. Rebuild it: move it away and run `likewise index PATH...`", format::FORMAT_VERSION)]
    Version { path: PathBuf, found: u32 },
    #[error("{0}")]
    ModelMismatch(Box<ModelMismatch>),
    #[error("store {dir} holds vectors of precision {store}, not {asked}; one store never mixes precisions: leave out --precision (the store's own is used), or use another store (--index PATH)")]
    PrecisionMismatch {
        dir: PathBuf,
        store: String,
        asked: String,
    },
    #[error("store {dir} is being written by another likewise process{holder}; wait for it to finish, or use another --index")]
    Locked { dir: PathBuf, holder: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A store and a model whose vectors cannot be compared.
#[derive(Debug)]
pub struct ModelMismatch {
    pub dir: PathBuf,
    pub store_model: String,
    pub store_sha: String,
    pub store_detail: String,
    pub model: String,
    pub model_sha: String,
    pub model_detail: String,
}

impl std::fmt::Display for ModelMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store {} was built with model {} (weights sha256 {}…, {}); the model in use is {} (weights sha256 {}…, {}). Vectors of different models cannot be compared: use --model {}, or another store (--index PATH)",
            self.dir.display(),
            self.store_model,
            self.store_sha,
            self.store_detail,
            self.model,
            self.model_sha,
            self.model_detail,
            self.store_model
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How each article's own vector is made from its parts (docs/benchmarks.md, "Article vectors"). A store
/// records the way its articles were made, and every article added later is made the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ArticleVectorMode {
    /// The mean of two unit vectors: the paragraphs' mean, and the headline-and-body window.
    /// Stores made before the method was recorded hold these.
    ParagraphsAndLead,
    /// The whole text (headline and body) embedded window by window, the windows weighted by
    /// their word pieces, plus a quarter of the lede (headline and first paragraph, one
    /// embedding). It judges "same story?" better than sentence-transformers' first window, and
    /// "same topic?" as well as the paragraphs' mean does (docs/benchmarks.md, "Article vectors").
    #[default]
    WholeTextAndLede,
}

impl ArticleVectorMode {
    pub fn name(self) -> &'static str {
        match self {
            ArticleVectorMode::ParagraphsAndLead => "paragraphs-and-lead",
            ArticleVectorMode::WholeTextAndLede => "whole-text-and-lede",
        }
    }

    /// What a manifest without the field holds.
    fn unrecorded() -> Self {
        ArticleVectorMode::ParagraphsAndLead
    }
}

/// The manifest: what the store is and which segments hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub model: ModelIdentity,
    /// Precision the vectors were computed in (`f32` for the exact model).
    pub precision: String,
    /// Increases with every committed change.
    pub generation: u64,
    /// Compact copies of the paragraph vectors every segment keeps (see `compact`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact: Option<Compact>,
    /// How the article vectors were made.
    #[serde(default = "ArticleVectorMode::unrecorded")]
    pub article_vectors: ArticleVectorMode,
    /// The analysis the segments' lexical indexes were made with ([`crate::lexical::Analysis`]);
    /// absent in a store made before lexical search. An index of another analysis is rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<String>,
    pub segments: Vec<SegmentEntry>,
    /// What following the news keeps beside the articles (stories, feeds, saved-search
    /// bookkeeping; see `crate::follow`): one file per generation, `follow-<generation>.json`,
    /// replaced whole. Absent until the store is first followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<CompactFile>,
    /// Bytes of [`ALERT_LOG`] that are committed: a tail past them is debris of an interrupted
    /// commit, cut by the next writer and never read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alert_log_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The alert log: one JSON line per alert, appended by the commits that record them.
pub const ALERT_LOG: &str = "alerts.log";

/// How old a temp file written outside the commit protocol must be to count as abandoned (its
/// writer takes milliseconds).
const ABANDONED_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

impl Manifest {
    /// Bytes of the segments' compact-vector files.
    pub fn compact_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| s.compact.as_ref().map(|c| c.bytes))
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub file: String,
    pub bytes: u64,
    pub articles: u64,
    pub chunks: u64,
    /// Article indices within the segment that were deleted or replaced since it was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<u32>,
    /// The file of this segment's compact vectors, when the store keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compact: Option<CompactFile>,
    /// The folder of this segment's lexical index (absent in a store made before lexical search).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<CompactFile>,
}

impl SegmentEntry {
    /// The segment's file, its compact file and its lexical index folder, if any.
    pub fn files(&self) -> Vec<String> {
        std::iter::once(self.file.clone())
            .chain(self.compact.as_ref().map(|c| c.file.clone()))
            .chain(self.lexical.as_ref().map(|c| c.file.clone()))
            .collect()
    }
}

/// A compact-vectors file (`.lkc`) or a lexical index folder (`.lex`) as the manifest names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactFile {
    pub file: String,
    pub bytes: u64,
}

/// Text and vector bytes checked against their CRC each time a store is opened, in manifest
/// order, section by section while they fit (the article and chunk tables are always checked).
/// The rest is checked when written, when committed and by `likewise verify`, not on every
/// query: reading a 10M-article archive (tens of gigabytes) before answering would defeat a
/// memory-mapped store.
pub const VERIFY_ON_OPEN_BYTES: usize = 256 << 20;

/// A segment opened for reading: the file is memory-mapped, and vectors and text are read in
/// place; only the article table is decoded.
pub struct Segment {
    pub file: String,
    pub dim: usize,
    map: memmap2::Mmap,
    layout: format::SegmentLayout,
    pub articles: Vec<ArticleRecord>,
    /// `live[i]` is false for deleted articles.
    pub live: Vec<bool>,
    /// The compact copies of the chunk vectors, when the store keeps them and they are sound.
    compact: Option<CompactView>,
    /// The segment's lexical index, when it has a sound one.
    pub lexical: Option<LexicalIndex>,
}

/// A compact-vectors file opened for reading (memory-mapped, read in place).
struct CompactView {
    map: memmap2::Mmap,
    layout: format::CompactLayout,
}

impl Segment {
    pub fn chunk_count(&self) -> usize {
        self.layout.n_chunks
    }
    pub fn chunk(&self, chunk: usize) -> ChunkRecord {
        format::read_chunk(&self.map, &self.layout, chunk)
    }
    /// The text of a chunk. Checked UTF-8 when the text section's CRC was verified; a damaged
    /// byte in an unverified section shows as U+FFFD rather than failing a query.
    pub fn chunk_text(&self, chunk: usize) -> std::borrow::Cow<'_, str> {
        let c = self.chunk(chunk);
        let start = self.layout.text.start + c.text_start as usize;
        String::from_utf8_lossy(&self.map[start..start + c.text_len as usize])
    }
    pub fn chunk_vectors(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.layout.chunk_vectors.clone()])
    }
    pub fn article_vectors(&self) -> &[f32] {
        bytemuck::cast_slice(&self.map[self.layout.article_vectors.clone()])
    }
    pub fn chunk_vector(&self, chunk: usize) -> &[f32] {
        &self.chunk_vectors()[chunk * self.dim..(chunk + 1) * self.dim]
    }
    pub fn article_vector(&self, article: usize) -> &[f32] {
        &self.article_vectors()[article * self.dim..(article + 1) * self.dim]
    }
    /// Chunk indices of article `a`.
    pub fn article_chunks(&self, a: usize) -> std::ops::Range<usize> {
        let rec = &self.articles[a];
        rec.chunk_start as usize..(rec.chunk_start + rec.chunk_count as u64) as usize
    }
    /// Which compact copy this segment has (none when the store keeps none or it is unusable).
    pub fn compact_kind(&self) -> Option<Compact> {
        self.compact.as_ref().map(|c| c.layout.kind)
    }
    /// The int8 copy: `dim` bytes per chunk (code + 128), and one scale per chunk.
    pub fn int8_vectors(&self) -> Option<(&[u8], &[f32])> {
        self.compact.as_ref().map(|c| {
            (
                &c.map[c.layout.int8.clone()],
                bytemuck::cast_slice(&c.map[c.layout.scales.clone()]),
            )
        })
    }
    /// The sign bits: `compact::words_per_row(dim)` words per chunk.
    pub fn sign_bits(&self) -> Option<&[u64]> {
        self.compact
            .as_ref()
            .filter(|c| c.layout.kind.has_bits())
            .map(|c| bytemuck::cast_slice(&c.map[c.layout.bits.clone()]))
    }
}

#[cfg(target_endian = "big")]
compile_error!("the store keeps little-endian f32 vectors and reads them in place");

/// Where an article lives: segment index in the store, article index in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArticleLoc {
    pub segment: usize,
    pub article: usize,
}

/// A store opened for reading: a consistent snapshot of one manifest generation.
pub struct Store {
    pub dir: PathBuf,
    /// The folder stored file names are relative to (see [`store_base`]).
    pub base: PathBuf,
    pub manifest: Manifest,
    pub segments: Vec<Segment>,
    /// Segments whose lexical index is missing or unusable, each with why: lexical search
    /// leaves them out (a query warns), and the next `likewise index` rebuilds them.
    pub lexical_problems: Vec<String>,
    /// Problems that did not stop the store from opening (an unusable compact-vectors file:
    /// its segment is then scanned with the exact vectors). Each names its file.
    pub warnings: Vec<String>,
    by_key: HashMap<String, ArticleLoc>,
}

impl Store {
    /// Opens the store in `dir` and checks every segment it names.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // A compaction may remove a segment between our reading of the manifest and of the
        // segment; the manifest then names new segments, so read it again.
        let mut attempt = 0;
        loop {
            let manifest = read_manifest(dir)?.ok_or_else(|| StoreError::NotFound {
                dir: dir.to_path_buf(),
            })?;
            match Self::load(dir, manifest) {
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && attempt < 3 =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn load(dir: &Path, manifest: Manifest) -> Result<Store, StoreError> {
        let mut segments = Vec::with_capacity(manifest.segments.len());
        let mut warnings = Vec::new();
        let mut lexical_problems = Vec::new();
        let mut budget = VERIFY_ON_OPEN_BYTES;
        for entry in &manifest.segments {
            let mut seg = load_segment(dir, entry, manifest.model.dim, &mut budget)?;
            if let (Some(kind), Some(file)) = (manifest.compact, &entry.compact) {
                match load_compact(dir, file, &seg, kind, &mut budget) {
                    Ok(view) => seg.compact = Some(view),
                    Err(reason) => warnings.push(format!(
                        "{}: {reason}; the paragraphs of {} are scanned with their exact vectors instead (slower, same results). `likewise index --compact {kind}` rebuilds it",
                        dir.join(&file.file).display(),
                        entry.file
                    )),
                }
            } else if let Some(kind) = manifest.compact {
                warnings.push(format!(
                    "segment {} has no {kind} copy; its paragraphs are scanned with their exact vectors. `likewise index --compact {kind}` adds it",
                    dir.join(&entry.file).display()
                ));
            }
            match open_lexical(dir, &manifest, entry) {
                Ok(ix) => seg.lexical = Some(ix),
                Err(problem) => lexical_problems.push(problem),
            }
            segments.push(seg);
        }
        let mut by_key = HashMap::new();
        for (s, seg) in segments.iter().enumerate() {
            for (a, rec) in seg.articles.iter().enumerate() {
                if seg.live[a] {
                    by_key.insert(
                        rec.key.clone(),
                        ArticleLoc {
                            segment: s,
                            article: a,
                        },
                    );
                }
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            base: store_base(dir),
            manifest,
            segments,
            warnings,
            lexical_problems,
            by_key,
        })
    }

    /// Fails unless vectors of `model` can be compared with this store's.
    pub fn check_model(&self, model: &ModelIdentity, precision: &str) -> Result<(), StoreError> {
        check_model(&self.dir, &self.manifest, model, precision)
    }

    pub fn article(&self, loc: ArticleLoc) -> &ArticleRecord {
        &self.segments[loc.segment].articles[loc.article]
    }

    pub fn find_key(&self, key: &str) -> Option<ArticleLoc> {
        self.by_key.get(key).copied()
    }

    /// Live articles, in segment order.
    pub fn live_articles(&self) -> impl Iterator<Item = (ArticleLoc, &ArticleRecord)> {
        self.segments.iter().enumerate().flat_map(|(s, seg)| {
            seg.articles
                .iter()
                .enumerate()
                .filter(move |(a, _)| seg.live[*a])
                .map(move |(a, rec)| {
                    (
                        ArticleLoc {
                            segment: s,
                            article: a,
                        },
                        rec,
                    )
                })
        })
    }

    pub fn article_count(&self) -> usize {
        self.by_key.len()
    }

    pub fn paragraph_count(&self) -> usize {
        self.live_articles()
            .map(|(_, a)| a.paragraphs as usize)
            .sum()
    }

    pub fn chunk_count(&self) -> usize {
        self.live_articles()
            .map(|(_, a)| a.chunk_count as usize)
            .sum()
    }

    /// Bytes of the manifest and the live segments.
    pub fn disk_bytes(&self) -> u64 {
        let manifest = std::fs::metadata(self.dir.join(MANIFEST))
            .map(|m| m.len())
            .unwrap_or(0);
        manifest
            + self
                .manifest
                .segments
                .iter()
                .map(|s| {
                    s.bytes
                        + s.compact.as_ref().map_or(0, |c| c.bytes)
                        + s.lexical.as_ref().map_or(0, |c| c.bytes)
                })
                .sum::<u64>()
    }

    /// Bytes of the lexical indexes (a part of [`Store::disk_bytes`]).
    pub fn lexical_bytes(&self) -> u64 {
        self.manifest
            .segments
            .iter()
            .filter_map(|s| s.lexical.as_ref().map(|c| c.bytes))
            .sum()
    }

    /// The lexical indexes of the segments that have a sound one, with their segment's index.
    pub fn lexical_indexes(&self) -> Vec<(usize, &LexicalIndex)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.lexical.as_ref().map(|ix| (i, ix)))
            .collect()
    }

    /// Bytes of the compact copies (a part of [`Store::disk_bytes`]).
    pub fn compact_bytes(&self) -> u64 {
        self.manifest.compact_bytes()
    }
}

fn model_detail(m: &ModelIdentity, precision: &str) -> String {
    format!(
        "dim {}, {} pooling, max_seq_length {}, {}normalised, {precision}",
        m.dim,
        m.pooling,
        m.max_seq_length,
        if m.normalize { "" } else { "not " }
    )
}

fn check_model(
    dir: &Path,
    manifest: &Manifest,
    model: &ModelIdentity,
    precision: &str,
) -> Result<(), StoreError> {
    if manifest.model.compatible_with(model) {
        if manifest.precision == precision {
            return Ok(());
        }
        return Err(StoreError::PrecisionMismatch {
            dir: dir.to_path_buf(),
            store: manifest.precision.clone(),
            asked: precision.to_string(),
        });
    }
    Err(StoreError::ModelMismatch(Box::new(ModelMismatch {
        dir: dir.to_path_buf(),
        store_model: manifest.model.name.clone(),
        store_sha: manifest.model.weights_sha256.chars().take(12).collect(),
        store_detail: model_detail(&manifest.model, &manifest.precision),
        model: model.name.clone(),
        model_sha: model.weights_sha256.chars().take(12).collect(),
        model_detail: model_detail(model, precision),
    })))
}

/// What [`verify_all`] checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verified {
    pub segments: usize,
    pub compact_files: usize,
    pub bytes_checked: u64,
    /// Compact copies that failed a check, each naming its file (the store still answers,
    /// scanning those segments' exact vectors).
    pub damaged_compact: Vec<String>,
    pub lexical_indexes: usize,
    /// Lexical indexes missing or failing a check, each naming its files (the store still
    /// answers semantic queries; `likewise index` rebuilds them from the stored text).
    pub damaged_lexical: Vec<String>,
}

/// Checks every byte of the store against its CRCs: each segment's every section (a damaged
/// one is the error, naming its file) and each compact copy (a damaged one is listed).
pub fn verify_all(dir: &Path) -> Result<Verified, StoreError> {
    let manifest = read_manifest(dir)?.ok_or_else(|| StoreError::NotFound {
        dir: dir.to_path_buf(),
    })?;
    let mut done = Verified::default();
    for entry in &manifest.segments {
        let mut everything = usize::MAX;
        let seg = load_segment(dir, entry, manifest.model.dim, &mut everything)?;
        done.segments += 1;
        done.bytes_checked += entry.bytes;
        if let (Some(kind), Some(file)) = (manifest.compact, &entry.compact) {
            let mut everything = usize::MAX;
            match load_compact(dir, file, &seg, kind, &mut everything) {
                Ok(_) => {
                    done.compact_files += 1;
                    done.bytes_checked += file.bytes;
                }
                Err(reason) => done
                    .damaged_compact
                    .push(format!("{}: {reason}", dir.join(&file.file).display())),
            }
        }
        match open_lexical(dir, &manifest, entry) {
            Ok(ix) => match ix.verify() {
                Ok(damaged) if damaged.is_empty() => {
                    done.lexical_indexes += 1;
                    done.bytes_checked += ix.disk_bytes();
                }
                Ok(damaged) => done.damaged_lexical.push(format!(
                    "{}: damaged files {}",
                    ix.path.display(),
                    damaged.join(", ")
                )),
                Err(e) => done.damaged_lexical.push(e.to_string()),
            },
            Err(problem) => done.damaged_lexical.push(problem),
        }
    }
    // What following keeps: the follow state must be JSON, the alert log's committed lines
    // each a JSON object.
    if let Some(bytes) = read_follow(dir, &manifest)? {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            return Err(StoreError::Corrupt {
                path: dir.join(manifest.follow.as_ref().map_or("", |f| f.file.as_str())),
                reason: format!("not JSON: {e}"),
            });
        }
        done.bytes_checked += bytes.len() as u64;
    }
    let log = read_alert_log(dir, &manifest)?;
    for (n, line) in log.split(|&b| b == b'\n').enumerate() {
        if !line.is_empty() && serde_json::from_slice::<serde_json::Value>(line).is_err() {
            return Err(StoreError::Corrupt {
                path: dir.join(ALERT_LOG),
                reason: format!("line {} is not JSON", n + 1),
            });
        }
    }
    done.bytes_checked += log.len() as u64;
    Ok(done)
}

/// Reads the manifest; `None` when the folder holds no store.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>, StoreError> {
    let path = dir.join(MANIFEST);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let json = format::decode_manifest(&bytes).map_err(|e| format_error(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(json).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        reason: format!("the manifest does not parse: {e}"),
    })?;
    for s in &manifest.segments {
        let valid_name = s.file.starts_with("seg-")
            && s.file.ends_with(".lkw")
            && !s.file.contains(['/', '\\'])
            && !s.file.contains("..");
        if !valid_name || s.deleted.iter().any(|&d| d as u64 >= s.articles) {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("the manifest's entry for `{}` is invalid", s.file),
            });
        }
    }
    Ok(Some(manifest))
}

fn format_error(path: &Path, e: FormatError) -> StoreError {
    match e {
        FormatError::Version { found } => StoreError::Version {
            path: path.to_path_buf(),
            found,
        },
        other => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Opens a segment file and checks it against its manifest entry, verifying the sections that
/// fit in `budget` bytes (see [`format::verify_sections_within`]).
fn load_segment(
    dir: &Path,
    entry: &SegmentEntry,
    dim: usize,
    budget: &mut usize,
) -> Result<Segment, StoreError> {
    let path = dir.join(&entry.file);
    let map = map_segment(&path)?;
    if map.len() as u64 != entry.bytes {
        return Err(StoreError::Corrupt {
            path,
            reason: format!(
                "the file has {} bytes, the manifest says {} (truncated or overwritten)",
                map.len(),
                entry.bytes
            ),
        });
    }
    let layout = format::decode_layout(&map).map_err(|e| format_error(&path, e))?;
    format::verify_sections_within(&map, &layout, budget).map_err(|e| format_error(&path, e))?;
    let articles = format::decode_articles(&map, &layout).map_err(|e| format_error(&path, e))?;
    if layout.dim != dim
        || articles.len() as u64 != entry.articles
        || layout.n_chunks as u64 != entry.chunks
    {
        return Err(StoreError::Corrupt {
            path,
            reason: "the segment does not match its manifest entry".into(),
        });
    }
    let mut live = vec![true; articles.len()];
    for &d in &entry.deleted {
        live[d as usize] = false;
    }
    Ok(Segment {
        file: entry.file.clone(),
        dim: layout.dim,
        map,
        layout,
        articles,
        live,
        compact: None,
        lexical: None,
    })
}

/// Opens a segment's lexical index, made with the analysis in use; why not otherwise.
fn open_lexical(
    dir: &Path,
    manifest: &Manifest,
    entry: &SegmentEntry,
) -> Result<LexicalIndex, String> {
    let analysis = Analysis::CHOSEN;
    let Some(file) = &entry.lexical else {
        return Err(format!(
            "segment {} has no lexical index (made by an older likewise)",
            dir.join(&entry.file).display()
        ));
    };
    if manifest.lexical.as_deref() != Some(analysis.name().as_str()) {
        return Err(format!(
            "the lexical index {} was made with another analysis ({})",
            dir.join(&file.file).display(),
            manifest.lexical.as_deref().unwrap_or("none")
        ));
    }
    LexicalIndex::open(
        &dir.join(&file.file),
        analysis,
        entry.articles,
        entry.chunks,
    )
    .map_err(|e| format!("{e}"))
}

/// Opens a segment's compact file and checks it belongs to that segment; the reason otherwise.
fn load_compact(
    dir: &Path,
    file: &CompactFile,
    seg: &Segment,
    kind: Compact,
    budget: &mut usize,
) -> Result<CompactView, String> {
    let path = dir.join(&file.file);
    let map = map_segment(&path).map_err(|e| match e {
        StoreError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    })?;
    if map.len() as u64 != file.bytes {
        return Err(format!(
            "the file has {} bytes, the manifest says {} (truncated or overwritten)",
            map.len(),
            file.bytes
        ));
    }
    let layout = format::decode_compact(&map, budget)
        .map_err(|e| format!("damaged compact vectors ({e})"))?;
    if layout.dim != seg.dim
        || layout.n_chunks != seg.chunk_count()
        || layout.source_crc != format::chunk_vectors_crc(&seg.map)
    {
        return Err("these compact vectors were made from other vectors".into());
    }
    if layout.kind != kind && kind.has_bits() {
        return Err(format!(
            "it holds {} vectors, the store keeps {kind}",
            layout.kind
        ));
    }
    Ok(CompactView { map, layout })
}

/// Maps a segment file into memory.
fn map_segment(path: &Path) -> Result<memmap2::Mmap, StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    // SAFETY: segment files are immutable: a writer creates each under a temporary name and
    // renames it into place, and never writes to a named segment again. Readers keep their map
    // valid even when a compaction unlinks the file. Only an outside process truncating the file
    // while it is mapped could break this, which the store's contract (FORMAT.md) forbids.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
    // Vectors are read in place as f32: the map must be aligned (it is page-aligned).
    debug_assert_eq!(map.as_ptr() as usize % format::ALIGN, 0);
    Ok(map)
}

/// The one writer of a store: holds the lock for its lifetime.
pub struct Writer {
    dir: PathBuf,
    _lock: File,
    manifest: Manifest,
}

impl Writer {
    /// Opens (or creates) the store in `dir` for writing with vectors of `model`. Fails at once
    /// when another process writes it, or when it was built with another model.
    pub fn open(dir: &Path, model: &ModelIdentity, precision: &str) -> Result<Writer, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&lock_path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(StoreError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        lock.set_len(0).map_err(io_err(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        let manifest = match read_manifest(dir)? {
            Some(m) => {
                check_model(dir, &m, model, precision)?;
                m
            }
            None => Manifest {
                model: model.clone(),
                precision: precision.to_string(),
                generation: 0,
                compact: None,
                article_vectors: ArticleVectorMode::default(),
                lexical: Some(Analysis::CHOSEN.name()),
                segments: Vec::new(),
                follow: None,
                alert_log_bytes: 0,
            },
        };
        let writer = Writer {
            dir: dir.to_path_buf(),
            _lock: lock,
            manifest,
        };
        writer.remove_debris();
        Ok(writer)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the current state for reading (the writer's own view).
    pub fn snapshot(&self) -> Result<Store, StoreError> {
        Store::load(&self.dir, self.manifest.clone())
    }

    /// Removes files no manifest names: segments and temp files of an interrupted write.
    fn remove_debris(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let named_files: HashSet<String> = self
            .manifest
            .segments
            .iter()
            .flat_map(SegmentEntry::files)
            .chain(self.manifest.follow.iter().map(|f| f.file.clone()))
            .collect();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let named = named_files.contains(&name);
            let written_by_writer = name.starts_with("seg-")
                || name.starts_with("follow-")
                || name.starts_with(MANIFEST);
            // Files kept beside the store outside the commit protocol (the saved searches, the
            // webhooks' cursors) are replaced by other locks' holders, maybe right now: their
            // temp files are debris only once clearly abandoned.
            let abandoned = || {
                entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED_TEMP_AGE)
            };
            let debris = ((name.starts_with("seg-") || name.starts_with("follow-")) && !named)
                || (name.ends_with(".tmp") && (written_by_writer || abandoned()));
            if debris {
                remove_path(&entry.path());
            }
        }
    }

    /// Commits one change atomically: a new segment (if any) and deletions of articles in existing
    /// segments, given as (segment file, article index).
    pub fn commit(
        &mut self,
        new_segment: Option<&SegmentData>,
        deletions: &[(String, u32)],
    ) -> Result<(), StoreError> {
        let mut next = self.manifest.clone();
        next.generation += 1;
        // Gathered, then sorted once per segment: a commit that replaces many articles stays
        // O(n log n), not quadratic.
        let position = positions(&self.manifest.segments);
        let mut touched = HashSet::new();
        for (file, article) in deletions {
            if let Some(&i) = position.get(file.as_str()) {
                next.segments[i].deleted.push(*article);
                touched.insert(i);
            }
        }
        for i in touched {
            let deleted = &mut next.segments[i].deleted;
            deleted.sort_unstable();
            deleted.dedup();
        }
        if let Some(seg) = new_segment.filter(|s| !s.articles.is_empty()) {
            next.segments
                .push(self.write_segment(seg, next.generation)?);
        }
        self.publish(next)
    }

    /// Commits what following the news keeps (`state`, replacing the previous file) and appends
    /// `alert_lines` (whole JSON lines) to the alert log, as one new generation: a kill at any
    /// moment leaves both as they were or both as given. A tail of the log that an interrupted
    /// commit wrote is cut first, so it is never read, nor appended to.
    pub fn commit_follow(&mut self, state: &[u8], alert_lines: &[u8]) -> Result<(), StoreError> {
        let mut next = self.manifest.clone();
        next.generation += 1;
        let file = format!("follow-{:08}.json", next.generation);
        atomic_write(&self.dir, &file, state)?;
        if !alert_lines.is_empty() {
            let path = self.dir.join(ALERT_LOG);
            let result = (|| {
                let mut log = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)?;
                log.set_len(self.manifest.alert_log_bytes)?;
                use std::io::Seek;
                log.seek(std::io::SeekFrom::End(0))?;
                log.write_all(alert_lines)?;
                log.sync_all()?;
                File::open(&self.dir)?.sync_all()
            })();
            result.map_err(io_err(&path))?;
            next.alert_log_bytes += alert_lines.len() as u64;
        }
        let old = next.follow.replace(CompactFile {
            file,
            bytes: state.len() as u64,
        });
        self.write_manifest(&next)?;
        self.manifest = next;
        if let Some(old) = old {
            remove_path(&self.dir.join(old.file));
        }
        Ok(())
    }

    /// Writes `next` as the manifest, leaving out the segments whose every article is deleted,
    /// and removes their files once it is in place.
    fn publish(&mut self, mut next: Manifest) -> Result<(), StoreError> {
        let dropped: Vec<String> = next
            .segments
            .iter()
            .filter(|s| s.deleted.len() as u64 == s.articles)
            .flat_map(SegmentEntry::files)
            .collect();
        next.segments
            .retain(|s| s.deleted.len() as u64 != s.articles);
        self.write_manifest(&next)?;
        self.manifest = next;
        for file in dropped {
            remove_path(&self.dir.join(file));
        }
        Ok(())
    }

    /// Merges segments when there are too many, and rewrites those with many deleted articles,
    /// by [`compaction_plan`]: small segments merge among themselves, so appending to a large
    /// store never rewrites its large segments. Each merge is one atomic commit. Returns whether
    /// it changed anything.
    pub fn compact_if_needed(&mut self) -> Result<bool, StoreError> {
        let mut changed = false;
        loop {
            let plan = compaction_plan(&self.manifest.segments);
            if plan.is_empty() {
                return Ok(changed);
            }
            let snapshot = self.snapshot()?;
            let merged = merge_segments(&snapshot, &plan);
            let mut next = self.manifest.clone();
            next.generation += 1;
            let old: Vec<String> = plan
                .iter()
                .flat_map(|&i| next.segments[i].files())
                .collect();
            let first = plan[0];
            let mut kept: Vec<SegmentEntry> = Vec::new();
            for (i, entry) in next.segments.iter().enumerate() {
                if i == first && !merged.articles.is_empty() {
                    kept.push(self.write_segment(&merged, next.generation)?);
                }
                if !plan.contains(&i) {
                    kept.push(entry.clone());
                }
            }
            next.segments = kept;
            self.write_manifest(&next)?;
            self.manifest = next;
            for file in old {
                remove_path(&self.dir.join(file));
            }
            changed = true;
        }
    }

    fn write_segment(
        &self,
        seg: &SegmentData,
        generation: u64,
    ) -> Result<SegmentEntry, StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let file = format!(
            "seg-{generation:08}-{:x}{nanos:08x}.lkw",
            std::process::id()
        );
        write_segment_file(&self.dir, seg, &file, self.manifest.compact, generation)
    }

    /// Commits segments written apart from this writer (by [`write_segment_file`], e.g. one per
    /// Spark task) as one new generation. Each of their articles replaces the live copy the store
    /// holds under its key, if any. Every file is opened and checked first (name, size,
    /// checksums, article count), and no key may be in two of them: a file that fails a check, or
    /// a key written twice, fails the commit and leaves the store as it was. The store's article
    /// tables are read once, and a deletion costs O(log n), so a commit stays linear in the
    /// articles it names. Files of the folder no manifest names are removed afterwards (the
    /// segments of failed or retried tasks).
    pub fn commit_segments(&mut self, entries: &[SegmentEntry]) -> Result<(), StoreError> {
        let mut next = self.manifest.clone();
        next.generation += 1;
        let named: HashSet<&str> = next.segments.iter().map(|s| s.file.as_str()).collect();
        let mut fresh: HashSet<&str> = HashSet::new();
        for entry in entries {
            let valid_name = entry.file.starts_with("seg-")
                && entry.file.ends_with(".lkw")
                && !entry.file.contains(['/', '\\'])
                && !named.contains(entry.file.as_str())
                && fresh.insert(entry.file.as_str())
                && entry.lexical.as_ref().is_none_or(|l| {
                    l.file.starts_with("seg-")
                        && l.file.ends_with(".lex")
                        && !l.file.contains(['/', '\\'])
                        && !named.contains(l.file.as_str())
                });
            if !valid_name {
                return Err(StoreError::Rejected {
                    path: self.dir.join(&entry.file),
                    reason: "not a new segment file name (seg-*.lkw, in the store's folder, named once, not already in the store)".into(),
                });
            }
        }
        let current = self.snapshot()?;
        // Snapshot segment index → manifest index (the same order, looked up by name to be sure).
        let position = positions(&next.segments);
        let mut deletions: Vec<Vec<u32>> = vec![Vec::new(); next.segments.len()];
        let mut written: HashSet<String> = HashSet::new();
        let mut added = Vec::with_capacity(entries.len());
        for entry in entries {
            // Written on other machines: every byte checked before the store names it.
            let mut everything = usize::MAX;
            let seg = load_segment(&self.dir, entry, next.model.dim, &mut everything)?;
            if seg.articles.len() as u64 != entry.articles
                || seg.chunk_count() as u64 != entry.chunks
            {
                return Err(StoreError::Rejected {
                    path: self.dir.join(&entry.file),
                    reason: format!(
                        "holds {} articles and {} paragraphs, not the {} and {} it was written with",
                        seg.articles.len(),
                        seg.chunk_count(),
                        entry.articles,
                        entry.chunks
                    ),
                });
            }
            for rec in &seg.articles {
                if !written.insert(rec.key.clone()) {
                    return Err(StoreError::Rejected {
                        path: self.dir.join(&entry.file),
                        reason: format!(
                            "article `{}` is in another segment of this commit too",
                            rec.key
                        ),
                    });
                }
                if let Some(loc) = current.find_key(&rec.key) {
                    let file = current.segments[loc.segment].file.as_str();
                    if let Some(&i) = position.get(file) {
                        deletions[i].push(loc.article as u32);
                    }
                }
            }
            let mut entry = entry.clone();
            entry.deleted.clear();
            added.push(entry);
        }
        drop(current);
        for (entry, mut gone) in next.segments.iter_mut().zip(deletions) {
            if !gone.is_empty() {
                gone.extend_from_slice(&entry.deleted);
                gone.sort_unstable();
                gone.dedup();
                entry.deleted = gone;
            }
        }
        next.segments.extend(added);
        self.publish(next)?;
        self.remove_debris();
        Ok(())
    }

    /// Makes the store keep `kind` compact copies (or none): writes the copies every segment
    /// lacks (or whose copy is unusable or of another kind) in one atomic commit, and removes the
    /// ones no longer needed. Returns whether anything changed.
    pub fn set_compact(&mut self, kind: Option<Compact>) -> Result<bool, StoreError> {
        let snapshot = self.snapshot()?;
        let mut next = self.manifest.clone();
        next.generation += 1;
        next.compact = kind;
        let mut old = Vec::new();
        let mut changed = self.manifest.compact != kind;
        for (entry, seg) in next.segments.iter_mut().zip(&snapshot.segments) {
            let fits = kind.is_some() && seg.compact_kind() == kind;
            if fits {
                continue;
            }
            if let Some(c) = entry.compact.take() {
                old.push(c.file);
                changed = true;
            }
            if let Some(kind) = kind {
                entry.compact = Some(write_compact(
                    &self.dir,
                    &entry.file,
                    next.generation,
                    kind,
                    seg.dim,
                    seg.chunk_vectors(),
                    format::chunk_vectors_crc(&seg.map),
                )?);
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        drop(snapshot);
        self.write_manifest(&next)?;
        self.manifest = next;
        for file in old {
            remove_path(&self.dir.join(file));
        }
        Ok(true)
    }

    /// Gives every segment a sound lexical index of the analysis in use, built from its stored
    /// text (nothing is embedded again), in one atomic commit: a store made before lexical
    /// search, or whose lexical files are damaged or missing. Returns how many were built.
    pub fn ensure_lexical(&mut self) -> Result<usize, StoreError> {
        let snapshot = self.snapshot()?;
        let wanted = Analysis::CHOSEN.name();
        let mut next = self.manifest.clone();
        next.generation += 1;
        next.lexical = Some(wanted.clone());
        let mut old = Vec::new();
        let mut built = 0;
        for (entry, seg) in next.segments.iter_mut().zip(&snapshot.segments) {
            if seg.lexical.is_some() && self.manifest.lexical.as_deref() == Some(wanted.as_str()) {
                continue;
            }
            let texts: Vec<(String, Vec<String>)> = seg
                .articles
                .iter()
                .enumerate()
                .map(|(a, rec)| {
                    let chunks = seg
                        .article_chunks(a)
                        .map(|c| seg.chunk_text(c).into_owned())
                        .collect();
                    (rec.title.clone(), chunks)
                })
                .collect();
            let texts: Vec<ArticleText> = texts
                .iter()
                .map(|(title, chunks)| ArticleText {
                    title,
                    chunks: chunks.iter().map(String::as_str).collect(),
                })
                .collect();
            let file = lexical_file(&self.dir, &entry.file, next.generation, &texts)?;
            if let Some(previous) = entry.lexical.replace(file) {
                old.push(previous.file);
            }
            built += 1;
        }
        if built == 0 && self.manifest.lexical == next.lexical {
            return Ok(0);
        }
        drop(snapshot);
        self.write_manifest(&next)?;
        self.manifest = next;
        for file in old {
            remove_path(&self.dir.join(file));
        }
        Ok(built)
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        atomic_write(&self.dir, MANIFEST, &format::encode_manifest(&json))
    }
}

/// Writes `seg` whole as segment `file` in `dir` (with its compact copy when the store keeps
/// `compact`), without naming it in the manifest: a writer's commit, or
/// [`Writer::commit_segments`] for files written elsewhere, names it afterwards.
pub fn write_segment_file(
    dir: &Path,
    seg: &SegmentData,
    file: &str,
    compact: Option<Compact>,
    generation: u64,
) -> Result<SegmentEntry, StoreError> {
    let bytes = format::encode_segment(seg);
    let lexical = Some(write_lexical(dir, file, generation, seg)?);
    let compact = match compact {
        Some(kind) => Some(write_compact(
            dir,
            file,
            generation,
            kind,
            seg.dim,
            &seg.chunk_vectors,
            format::chunk_vectors_crc(&bytes),
        )?),
        None => None,
    };
    atomic_write(dir, file, &bytes)?;
    Ok(SegmentEntry {
        file: file.to_string(),
        bytes: bytes.len() as u64,
        articles: seg.articles.len() as u64,
        chunks: seg.chunks.len() as u64,
        deleted: Vec::new(),
        compact,
        lexical,
    })
}

/// Writes the lexical index of a segment's articles next to it (see [`crate::lexical`]).
fn write_lexical(
    dir: &Path,
    segment_file: &str,
    generation: u64,
    seg: &SegmentData,
) -> Result<CompactFile, StoreError> {
    let texts: Vec<ArticleText> = seg
        .articles
        .iter()
        .map(|a| {
            let range = a.chunk_start as usize..(a.chunk_start + a.chunk_count as u64) as usize;
            ArticleText {
                title: &a.title,
                chunks: seg.chunks[range]
                    .iter()
                    .map(|c| {
                        let start = c.text_start as usize;
                        &seg.text[start..start + c.text_len as usize]
                    })
                    .collect(),
            }
        })
        .collect();
    lexical_file(dir, segment_file, generation, &texts)
}

fn lexical_file(
    dir: &Path,
    segment_file: &str,
    generation: u64,
    texts: &[ArticleText<'_>],
) -> Result<CompactFile, StoreError> {
    let stem = segment_file.trim_end_matches(".lkw");
    let file = format!("{stem}.{generation}.lex");
    let built =
        lexical::build(dir, &file, Analysis::CHOSEN, texts).map_err(|e| StoreError::Io {
            path: dir.join(&file),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(CompactFile {
        file,
        bytes: built.bytes,
    })
}

/// Writes the compact copies of a segment's chunk vectors next to it.
fn write_compact(
    dir: &Path,
    segment_file: &str,
    generation: u64,
    kind: Compact,
    dim: usize,
    vectors: &[f32],
    source_crc: u32,
) -> Result<CompactFile, StoreError> {
    let stem = segment_file.trim_end_matches(".lkw");
    let file = format!("{stem}.{generation}.{kind}.lkc");
    let data = crate::compact::quantize(vectors, dim, kind);
    let bytes = format::encode_compact(kind, dim, source_crc, &data);
    atomic_write(dir, &file, &bytes)?;
    Ok(CompactFile {
        file,
        bytes: bytes.len() as u64,
    })
}

/// Each segment's place in `segments`, by file name.
fn positions(segments: &[SegmentEntry]) -> HashMap<&str, usize> {
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| (s.file.as_str(), i))
        .collect()
}

/// Segments a store keeps before small ones are merged.
pub const MAX_SEGMENTS: usize = 8;

/// Live bytes from which a segment is settled: never merged for size, and not counted against
/// [`MAX_SEGMENTS`]. A store of any size then needs no merge bigger than [`MAX_MERGED_BYTES`]:
/// a commit of thousands of segments from a cluster job is never rewritten into one file on
/// the machine that commits it.
pub const SETTLED_BYTES: f64 = (32u64 << 20) as f64;

/// The most live bytes one size merge takes (a merge is built in memory).
pub const MAX_MERGED_BYTES: f64 = (512u64 << 20) as f64;

/// Which segments to merge next, in store order; empty when none need it.
///
/// - A segment with more than a quarter of its articles deleted is rewritten (space back).
/// - With more than [`MAX_SEGMENTS`] segments smaller than [`SETTLED_BYTES`], the smallest
///   merge: taken smallest first, each next one only while it is at most twice the size of
///   those taken so far, and while the merge stays within [`MAX_MERGED_BYTES`]. Sizes then grow
///   geometrically, every article is rewritten O(log n) times in its life, and a large segment
///   is never rewritten for a small append.
pub fn compaction_plan(segments: &[SegmentEntry]) -> Vec<usize> {
    let live = |e: &SegmentEntry| {
        let share = if e.articles == 0 {
            0.0
        } else {
            1.0 - e.deleted.len() as f64 / e.articles as f64
        };
        e.bytes as f64 * share
    };
    let mut plan: Vec<usize> = segments
        .iter()
        .enumerate()
        .filter(|(_, e)| e.articles > 0 && e.deleted.len() as u64 * 4 > e.articles)
        .map(|(i, _)| i)
        .collect();
    let mut order: Vec<usize> = (0..segments.len())
        .filter(|&i| live(&segments[i]) < SETTLED_BYTES)
        .collect();
    if order.len() > MAX_SEGMENTS {
        order.sort_by(|&a, &b| {
            live(&segments[a])
                .total_cmp(&live(&segments[b]))
                .then(a.cmp(&b))
        });
        let mut taken = 0.0;
        for (n, &i) in order.iter().enumerate() {
            let size = live(&segments[i]);
            if n >= 2 && (size > 2.0 * taken || taken + size > MAX_MERGED_BYTES) {
                break;
            }
            taken += size;
            if !plan.contains(&i) {
                plan.push(i);
            }
        }
    }
    plan.sort_unstable();
    // One segment without deletions gains nothing from a rewrite.
    if plan.len() == 1 && segments[plan[0]].deleted.is_empty() {
        plan.clear();
    }
    plan
}

/// Copies the live articles of a store into one segment.
pub fn merge_live(store: &Store) -> SegmentData {
    let all: Vec<usize> = (0..store.segments.len()).collect();
    merge_segments(store, &all)
}

/// Copies the live articles of the given segments into one segment, in store order.
pub fn merge_segments(store: &Store, which: &[usize]) -> SegmentData {
    let dim = store.manifest.model.dim;
    let mut out = SegmentData {
        dim,
        ..Default::default()
    };
    for (loc, rec) in store
        .live_articles()
        .filter(|(loc, _)| which.contains(&loc.segment))
    {
        let seg = &store.segments[loc.segment];
        let new_index = out.articles.len() as u32;
        let mut record = rec.clone();
        record.chunk_start = out.chunks.len() as u64;
        for c in seg.article_chunks(loc.article) {
            let text = seg.chunk_text(c);
            let mut chunk = seg.chunk(c);
            chunk.article = new_index;
            chunk.text_start = out.text.len() as u64;
            chunk.text_len = text.len() as u32;
            out.text.push_str(&text);
            out.chunks.push(chunk);
            out.chunk_vectors.extend_from_slice(seg.chunk_vector(c));
        }
        out.article_vectors
            .extend_from_slice(seg.article_vector(loc.article));
        out.articles.push(record);
    }
    out
}

/// Removes a store file, or a folder (a lexical index) with what it holds; a failure leaves
/// debris that the next writer removes.
fn remove_path(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Writes `bytes` to `dir/name` so that the file is either absent/old or complete: temp file,
/// fsync, rename, fsync of the folder.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let target = dir.join(name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // The rename itself must reach the disk before we report success.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(&target))
}

/// The follow state of the store's generation (see [`Writer::commit_follow`]), if it has one.
pub fn read_follow(dir: &Path, manifest: &Manifest) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(entry) = &manifest.follow else {
        return Ok(None);
    };
    let path = dir.join(&entry.file);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::Corrupt {
            path: path.clone(),
            reason: "the manifest names this file but it is missing".into(),
        },
        _ => io_err(&path)(e),
    })?;
    if bytes.len() as u64 != entry.bytes {
        return Err(StoreError::Corrupt {
            path,
            reason: format!(
                "it holds {} bytes, not the {} it was committed with",
                bytes.len(),
                entry.bytes
            ),
        });
    }
    Ok(Some(bytes))
}

/// The committed part of the alert log: whole JSON lines, oldest first.
pub fn read_alert_log(dir: &Path, manifest: &Manifest) -> Result<Vec<u8>, StoreError> {
    read_alert_log_from(dir, manifest, 0)
}

/// The committed part of the alert log from byte `from` on (a line boundary a reader reached
/// before): what followers of the log read, so a long log is not read again for each alert.
pub fn read_alert_log_from(
    dir: &Path,
    manifest: &Manifest,
    from: u64,
) -> Result<Vec<u8>, StoreError> {
    let committed = manifest.alert_log_bytes;
    if committed <= from {
        return Ok(Vec::new());
    }
    let path = dir.join(ALERT_LOG);
    let read = || -> std::io::Result<(u64, Vec<u8>)> {
        let mut file = File::open(&path)?;
        let length = file.metadata()?.len();
        if length < committed {
            return Ok((length, Vec::new()));
        }
        file.seek(std::io::SeekFrom::Start(from))?;
        let mut bytes = vec![0; (committed - from) as usize];
        file.read_exact(&mut bytes)?;
        Ok((length, bytes))
    };
    let (length, bytes) = read().map_err(io_err(&path))?;
    if length < committed {
        return Err(StoreError::Corrupt {
            path,
            reason: format!("it holds {length} bytes, fewer than the {committed} committed"),
        });
    }
    Ok(bytes)
}

/// The folder stored file names are relative to: the one that holds the store folder, so a
/// project moved or cloned together with its store keeps its articles.
pub fn store_base(store_dir: &Path) -> PathBuf {
    std::fs::canonicalize(store_dir)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

/// How a file is named in the store: relative to `base` (with `/`) when it lies below it, else
/// its absolute path.
pub fn file_key(path: &Path, base: &Path) -> String {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    match canonical.strip_prefix(base) {
        Ok(rel) if !base.as_os_str().is_empty() => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        _ => canonical.to_string_lossy().into_owned(),
    }
}

/// Article or paragraph level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Article,
    Paragraph,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Article => "article",
            Level::Paragraph => "paragraph",
        }
    }
}

/// Shows a stored file name relative to the working directory when it lies below it.
pub fn display_path(file: &str, base: &Path) -> String {
    let path = resolve_file(file, base);
    if let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) {
        if let Ok(rel) = path.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    path.display().to_string()
}

/// The path on disk of a stored file name.
pub fn resolve_file(file: &str, base: &Path) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod compaction_tests {
    use super::*;

    fn entry(bytes: u64, articles: u64, deleted: usize) -> SegmentEntry {
        SegmentEntry {
            file: String::new(),
            bytes,
            articles,
            chunks: articles,
            deleted: (0..deleted as u32).collect(),
            compact: None,
            lexical: None,
        }
    }

    #[test]
    fn appends_to_a_large_segment_never_rewrite_it() {
        let mut segs = vec![entry(1_500_000_000, 125_000, 0)];
        segs.extend((0..9).map(|_| entry(1_000_000, 64, 0)));
        let plan = compaction_plan(&segs);
        assert_eq!(plan, (1..10).collect::<Vec<_>>());
    }

    #[test]
    fn few_clean_segments_stay_and_deleted_ones_are_rewritten() {
        let segs: Vec<_> = (0..8).map(|i| entry(1000 << i, 10, 0)).collect();
        assert!(compaction_plan(&segs).is_empty());
        let mut segs = segs;
        segs[7] = entry(1 << 30, 100, 30);
        assert_eq!(compaction_plan(&segs), vec![7]);
    }

    #[test]
    fn a_cluster_jobs_many_segments_merge_in_bounded_pieces() {
        // 5,000 segments of 28 MB, as 5,000 Spark tasks write them: each merge takes at most
        // MAX_MERGED_BYTES, never the whole store; settled segments are left alone.
        let mut segs: Vec<_> = (0..5000).map(|_| entry(28 << 20, 2000, 0)).collect();
        let plan = compaction_plan(&segs);
        let bytes: u64 = plan.iter().map(|&i| segs[i].bytes).sum();
        assert!(
            plan.len() >= 2 && bytes as f64 <= MAX_MERGED_BYTES,
            "{}",
            plan.len()
        );
        segs = (0..5000).map(|_| entry(100 << 20, 7000, 0)).collect();
        assert!(compaction_plan(&segs).is_empty());
    }

    #[test]
    fn geometric_sizes_merge_the_smallest_pair_first() {
        let segs: Vec<_> = (0..9).map(|i| entry(3u64.pow(i), 10, 0)).collect();
        assert_eq!(compaction_plan(&segs), vec![0, 1]);
    }
}
