//! Files and folders: which files are read (by extension, recursively), and each file's
//! articles by its kind — text and Markdown here, records through [`super::records`].

use super::records::{read_json_document, read_jsonl, read_table};
use super::source::{over_article_limit, sha256_hex, SourceArticle, Warning};
use crate::store::file_key;
use crate::text;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

/// Whether a file inside a folder is read (by its extension).
pub fn is_indexable(path: &Path) -> bool {
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
