//! Reading articles from inputs: files and folders (`.txt`, `.md`, `.jsonl`, `.json`, `.csv`,
//! `.tsv`), and JSON lines sent over the API. Each reader turns bytes into [`SourceArticle`]s:
//! parsed text, metadata and a content hash, keyed by file, line or `id`. Nothing here knows the
//! store's contents or the model; every input that cannot be used gets one [`Warning`] naming it
//! (the file, or the file and the record's line) and the reason, and the rest is read.
//!
//! Parquet inputs carry vectors that must be checked against the store's model, so the indexer
//! (`index.rs`) reads them, through `exchange`.

use crate::store::file_key;
use crate::text::{self, ParsedArticle};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// An input that was skipped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// An article read from an input, ready to embed.
#[derive(Debug, Clone)]
pub struct SourceArticle {
    pub key: String,
    pub file: Option<String>,
    pub parsed: ParsedArticle,
    pub content_hash: String,
    /// Vectors that came with the article (a Parquet input): what is given is stored as it
    /// is, only what is missing is embedded.
    pub given: Option<GivenVectors>,
}

/// A window an input brought with its vector: (paragraph, window, text, vector).
pub type GivenChunk = (u32, u32, String, Vec<f32>);

/// Vectors an input brought, made by the store's own model.
#[derive(Debug, Clone, Default)]
pub struct GivenVectors {
    /// Every window of the article, in order: (paragraph, window, text, vector).
    pub chunks: Option<Vec<GivenChunk>>,
    /// The article's own vector.
    pub article: Option<Vec<f32>>,
}

const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "markdown"];
pub const JSONL_EXTENSIONS: &[&str] = &["jsonl", "ndjson"];
/// One JSON document: an array of articles (or one article).
const JSON_EXTENSIONS: &[&str] = &["json"];
/// Markup, refused when named directly (inside folders it is not looked at).
const MARKUP_EXTENSIONS: &[&str] = &["html", "htm", "xhtml", "xml"];
/// Tables with a header row (comma, semicolon or tab separated).
const TABLE_EXTENSIONS: &[&str] = &["csv", "tsv"];
pub const PARQUET_EXTENSIONS: &[&str] = &["parquet"];

pub fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_indexable(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .is_some_and(|e| {
            [
                TEXT_EXTENSIONS,
                JSONL_EXTENSIONS,
                JSON_EXTENSIONS,
                TABLE_EXTENSIONS,
                PARQUET_EXTENSIONS,
            ]
            .iter()
            .any(|kind| kind.contains(&e.as_str()))
        })
}

/// The files to index under `paths`, sorted. A file named directly is taken whatever its
/// extension; inside folders only `.txt`, `.md`, `.jsonl` and `.parquet` files are (a folder
/// with none is a warning).
pub fn collect_files(paths: &[PathBuf], warn: &mut dyn FnMut(Warning)) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for root in paths {
        let meta = match std::fs::metadata(root) {
            Ok(m) => m,
            Err(e) => {
                warn(Warning {
                    path: root.clone(),
                    reason: format!("cannot be read: {e}"),
                });
                continue;
            }
        };
        if meta.is_file() {
            files.push(root.clone());
            continue;
        }
        let before = files.len();
        for entry in walkdir::WalkDir::new(root)
            .follow_links(true)
            .sort_by_file_name()
        {
            match entry {
                Ok(e) if e.file_type().is_file() && is_indexable(e.path()) => {
                    files.push(e.path().to_path_buf())
                }
                Ok(_) => {}
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_path_buf)
                        .unwrap_or_else(|| root.clone());
                    let reason = if e.loop_ancestor().is_some() {
                        "a symbolic link loop; not followed".to_string()
                    } else {
                        format!(
                            "cannot be read: {}",
                            e.io_error()
                                .map(|i| i.to_string())
                                .unwrap_or_else(|| e.to_string())
                        )
                    };
                    warn(Warning { path, reason });
                }
            }
        }
        if files.len() == before {
            warn(Warning {
                path: root.clone(),
                reason: format!(
                    "no file to index in this folder (it looks for .{} files)",
                    [
                        TEXT_EXTENSIONS,
                        JSONL_EXTENSIONS,
                        JSON_EXTENSIONS,
                        TABLE_EXTENSIONS,
                        PARQUET_EXTENSIONS
                    ]
                    .concat()
                    .join(", .")
                ),
            });
        }
    }
    let mut seen = HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    files
}

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    crate::model::hex(&h.finalize())
}

/// Reads the articles of one file; problems become warnings.
pub fn read_file(
    path: &Path,
    base: &Path,
    max_article_bytes: usize,
    warn: &mut dyn FnMut(Warning),
) -> Vec<SourceArticle> {
    let w = |reason: String| Warning {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            warn(w(format!("cannot be read: {e}")));
            return Vec::new();
        }
    };
    let file = file_key(path, base);
    let is_jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| JSONL_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        warn(w("empty; skipped".into()));
        return Vec::new();
    }
    if text::looks_binary(&bytes) {
        warn(w("looks binary, not text; skipped".into()));
        return Vec::new();
    }
    if has_extension(path, MARKUP_EXTENSIONS) {
        // Read as text, its tags, scripts and styles would be embedded with the story.
        warn(w(
            "markup (HTML or XML) is not read: give the article's text as .txt or .md, or records as .jsonl, .csv or .parquet; skipped"
                .into(),
        ));
        return Vec::new();
    }
    if is_jsonl {
        return read_jsonl(path, Some(&file), &bytes, max_article_bytes, warn);
    }
    if has_extension(path, JSON_EXTENSIONS) {
        return read_json_document(path, &file, &bytes, max_article_bytes, warn);
    }
    if has_extension(path, TABLE_EXTENSIONS) {
        return read_table(path, &file, &bytes, max_article_bytes, warn);
    }
    if bytes.len() > max_article_bytes {
        warn(w(over_article_limit(bytes.len(), max_article_bytes)));
        return Vec::new();
    }
    let (content, fallback) = text::decode_text(&bytes);
    if let Some(note) = fallback {
        warn(w(note.into()));
    }
    let parsed = text::parse_article_text(&content);
    if parsed.paragraphs.is_empty() && parsed.title.is_empty() {
        warn(w("no text; skipped".into()));
        return Vec::new();
    }
    vec![SourceArticle {
        key: file.clone(),
        file: Some(file),
        parsed,
        content_hash: sha256_hex(&[&bytes]),
        given: None,
    }]
}

#[derive(serde::Deserialize)]
struct JsonArticle {
    text: String,
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

/// Reads the articles of JSON lines named `path` in warnings; `file` is the stored file they
/// came from (none for articles sent over the API: their key is then their `id`, or the start
/// of their content hash).
pub fn read_jsonl(
    path: &Path,
    file: Option<&str>,
    bytes: &[u8],
    max_article_bytes: usize,
    warn: &mut dyn FnMut(Warning),
) -> Vec<SourceArticle> {
    let (content, fallback) = text::decode_text(bytes);
    if let Some(note) = fallback {
        warn(Warning {
            path: path.into(),
            reason: note.into(),
        });
    }
    let mut out = Vec::new();
    let mut keys = HashSet::new();
    for (n, line) in content.lines().enumerate() {
        let line_no = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let w = |reason: String| Warning {
            path: PathBuf::from(format!("{}:{line_no}", path.display())),
            reason,
        };
        if line.len() > max_article_bytes {
            warn(w(over_article_limit(line.len(), max_article_bytes)));
            continue;
        }
        let article: JsonArticle = match serde_json::from_str(line) {
            Ok(a) => a,
            Err(e) => {
                warn(w(format!(
                    "not a JSON article with a `text` field ({e}); skipped"
                )));
                continue;
            }
        };
        let record = Record {
            number: line_no,
            content_hash: sha256_hex(&[line.as_bytes()]),
            article,
        };
        out.extend(record.into_article(file, &mut keys, &mut |r| warn(w(r))));
    }
    out
}

/// One article record of a JSONL, JSON or table file, before it is parsed.
struct Record {
    /// Its line (JSONL, and the line a table's row starts on) or place (a JSON array's element),
    /// from 1: its key when it has no `id`, and where warnings point.
    number: usize,
    content_hash: String,
    article: JsonArticle,
}

impl Record {
    /// The article, keyed by its `id` (else its place in `file`, else its content); `None`, with
    /// a warning, for a bad or repeated id or an empty text.
    fn into_article(
        self,
        file: Option<&str>,
        keys: &mut HashSet<String>,
        warn: &mut dyn FnMut(String),
    ) -> Option<SourceArticle> {
        let Record {
            number,
            content_hash,
            article,
        } = self;
        let key = match (&article.id, file) {
            (Some(serde_json::Value::String(s)), _) if !s.is_empty() => s.clone(),
            (Some(serde_json::Value::Number(n)), _) => n.to_string(),
            (Some(other), _) if !other.is_null() && other != "" => {
                warn(format!(
                    "`id` must be a string or a number, not {other}; skipped"
                ));
                return None;
            }
            (_, Some(file)) => format!("{file}#{number}"),
            (_, None) => format!("sha256:{}", &content_hash[..16]),
        };
        if !keys.insert(key.clone()) {
            warn(format!("id `{key}` repeats an earlier record; skipped"));
            return None;
        }
        let mut parsed = match &article.title {
            Some(t) if !t.trim().is_empty() => text::parse_titled(t, &article.text),
            _ => text::parse_article_text(&article.text),
        };
        if parsed.paragraphs.is_empty() && parsed.title.is_empty() {
            warn("empty text; skipped".into());
            return None;
        }
        let meta = &mut parsed.meta;
        if let Some(d) = article.date.filter(|d| !d.trim().is_empty()) {
            meta.date = Some(text::normalize_date(&d));
        }
        if let Some(s) = article.source.filter(|s| !s.trim().is_empty()) {
            meta.source = Some(s);
        }
        if let Some(u) = article.url.filter(|u| !u.trim().is_empty()) {
            meta.url = Some(u);
        }
        Some(SourceArticle {
            key,
            file: file.map(str::to_string),
            content_hash,
            parsed,
            given: None,
        })
    }
}

/// A warning about `path`, or about its record at `place` (a line, or an element's number).
fn warning_at(path: &Path, place: Option<usize>, reason: String) -> Warning {
    Warning {
        path: match place {
            Some(n) => PathBuf::from(format!("{}:{n}", path.display())),
            None => path.to_path_buf(),
        },
        reason,
    }
}

/// What a warning says of an article over `--max-article-bytes`.
fn over_article_limit(bytes: usize, max_article_bytes: usize) -> String {
    format!(
        "{bytes} bytes, over the {}-byte limit for one article; skipped",
        max_article_bytes
    )
}

/// The largest `.json` document read whole (parsed, it takes several times its size in memory);
/// past it, JSON lines are read a line at a time.
const MAX_JSON_DOCUMENT_BYTES: usize = 256 << 20;

/// Reads a JSON file holding an array of articles (objects with the JSONL fields), or one
/// article; warnings name an element by its place in the array (`file:3` is the third).
fn read_json_document(
    path: &Path,
    file: &str,
    bytes: &[u8],
    max_article_bytes: usize,
    warn: &mut dyn FnMut(Warning),
) -> Vec<SourceArticle> {
    let at = |number: Option<usize>, reason: String| warning_at(path, number, reason);
    if bytes.len() > MAX_JSON_DOCUMENT_BYTES {
        warn(at(None, format!(
            "{} bytes, over the {}-byte limit for one JSON document (write it as JSON lines, one article a line); skipped",
            bytes.len(),
            MAX_JSON_DOCUMENT_BYTES
        )));
        return Vec::new();
    }
    let (content, fallback) = text::decode_text(bytes);
    if let Some(note) = fallback {
        warn(at(None, note.into()));
    }
    let elements = match serde_json::from_str::<serde_json::Value>(&content) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(one @ serde_json::Value::Object(_)) => vec![one],
        Ok(other) => {
            warn(at(None, format!(
                "a JSON {} — give an array of articles, or one article (an object with a `text` field); skipped",
                json_kind(&other)
            )));
            return Vec::new();
        }
        Err(e) => {
            warn(at(None, format!("not JSON ({e}); skipped")));
            return Vec::new();
        }
    };
    let mut keys = HashSet::new();
    let mut out = Vec::new();
    for (i, element) in elements.into_iter().enumerate() {
        let number = i + 1;
        let raw = element.to_string();
        if raw.len() > max_article_bytes {
            warn(at(
                Some(number),
                over_article_limit(raw.len(), max_article_bytes),
            ));
            continue;
        }
        if !element.is_object() {
            warn(at(
                Some(number),
                format!(
                    "a JSON {}, not an article (an object with a `text` field); skipped",
                    json_kind(&element)
                ),
            ));
            continue;
        }
        let article: JsonArticle = match serde_json::from_value(element) {
            Ok(a) => a,
            Err(e) => {
                warn(at(
                    Some(number),
                    format!("not a JSON article with a `text` field ({e}); skipped"),
                ));
                continue;
            }
        };
        let record = Record {
            number,
            content_hash: sha256_hex(&[raw.as_bytes()]),
            article,
        };
        out.extend(record.into_article(Some(file), &mut keys, &mut |r| warn(at(Some(number), r))));
    }
    out
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "true or false",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Header names (lower case) each field of an article is read from in a table, first match.
const TABLE_COLUMNS: [(&str, &[&str]); 6] = [
    ("text", &["text", "body", "content", "article"]),
    ("id", &["id"]),
    ("title", &["title", "headline"]),
    ("date", &["date", "published"]),
    ("source", &["source", "publisher"]),
    ("url", &["url", "link"]),
];

/// Reads a table with a header row (`.csv`, `.tsv`): one article a row, from the columns of
/// [`TABLE_COLUMNS`] (the text's column is required; others are left as they are). The
/// separator is the one of comma, semicolon and tab the header line has most of; fields may be
/// quoted and span lines. Warnings name the line a row starts on.
fn read_table(
    path: &Path,
    file: &str,
    bytes: &[u8],
    max_article_bytes: usize,
    warn: &mut dyn FnMut(Warning),
) -> Vec<SourceArticle> {
    let at = |line: Option<u64>, reason: String| warning_at(path, line.map(|l| l as usize), reason);
    let (content, fallback) = text::decode_text(bytes);
    if let Some(note) = fallback {
        warn(at(None, note.into()));
    }
    let header_line = content.lines().next().unwrap_or_default();
    let separator = [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&c| header_line.bytes().filter(|&b| b == c).count())
        .unwrap_or(b',');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(separator)
        .flexible(true)
        .from_reader(content.as_bytes());
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_lowercase()).collect(),
        Err(e) => {
            warn(at(None, format!("not a table ({e}); skipped")));
            return Vec::new();
        }
    };
    let column = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| headers.iter().position(|h| h == n))
    };
    let columns: Vec<(&str, Option<usize>)> = TABLE_COLUMNS
        .iter()
        .map(|(field, names)| (*field, column(names)))
        .collect();
    let Some(text_column) = columns[0].1 else {
        warn(at(
            None,
            format!(
            "no text column in its header (it looks for one named {}; the header has: {}); skipped",
            TABLE_COLUMNS[0].1.join(", "),
            headers.join(", ")
        ),
        ));
        return Vec::new();
    };
    let mut keys = HashSet::new();
    let mut out = Vec::new();
    let mut row = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                warn(at(
                    Some(line),
                    format!("not a row of the table ({e}); skipped"),
                ));
                continue;
            }
        }
        let line = row.position().map_or(line, |p| p.line());
        if row.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        if row.get(text_column).is_none() {
            warn(at(
                Some(line),
                format!(
                    "{} fields, and the text is field {}; skipped",
                    row.len(),
                    text_column + 1
                ),
            ));
            continue;
        }
        let field = |c: Option<usize>| {
            c.and_then(|c| row.get(c))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let text = row.get(text_column).unwrap_or_default().to_string();
        if text.len() > max_article_bytes {
            warn(at(
                Some(line),
                over_article_limit(text.len(), max_article_bytes),
            ));
            continue;
        }
        let mut raw = Vec::new();
        for (_, c) in &columns {
            raw.push(field(*c).unwrap_or_default());
        }
        let article = JsonArticle {
            text,
            id: field(columns[1].1).map(serde_json::Value::String),
            title: field(columns[2].1),
            date: field(columns[3].1),
            source: field(columns[4].1),
            url: field(columns[5].1),
        };
        let parts: Vec<&[u8]> = raw.iter().map(|f| f.as_bytes()).collect();
        let record = Record {
            number: line as usize,
            content_hash: sha256_hex(&parts),
            article,
        };
        out.extend(record.into_article(Some(file), &mut keys, &mut |r| warn(at(Some(line), r))));
    }
    out
}
