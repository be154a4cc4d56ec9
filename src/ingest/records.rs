//! Records: JSON lines, a JSON document (an array of articles, or one), and tables with a
//! header row (`.csv`, `.tsv`). A record is one article; a bad record is a warning naming its
//! line (or its place in the array), and the rest of the file is read.

use super::source::{over_article_limit, sha256_hex, warning_at, SourceArticle, Warning};
use crate::text;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

/// The largest `.json` document read whole (parsed, it takes several times its size in memory);
/// past it, JSON lines are read a line at a time.
const MAX_JSON_DOCUMENT_BYTES: usize = 256 << 20;

/// Reads a JSON file holding an array of articles (objects with the JSONL fields), or one
/// article; warnings name an element by its place in the array (`file:3` is the third).
pub fn read_json_document(
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
pub fn read_table(
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
