//! What a reader produces: articles ready to embed ([`SourceArticle`]) and warnings about
//! inputs that could not be used ([`Warning`]), and the helpers every reader shares.

use crate::text::ParsedArticle;
use sha2::{Digest, Sha256};
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

pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    crate::model::hex(&h.finalize())
}

/// A warning about `path`, or about its record at `place` (a line, or an element's number).
pub fn warning_at(path: &Path, place: Option<usize>, reason: String) -> Warning {
    Warning {
        path: match place {
            Some(n) => PathBuf::from(format!("{}:{n}", path.display())),
            None => path.to_path_buf(),
        },
        reason,
    }
}

/// What a warning says of an article over `--max-article-bytes`.
pub fn over_article_limit(bytes: usize, max_article_bytes: usize) -> String {
    format!(
        "{bytes} bytes, over the {}-byte limit for one article; skipped",
        max_article_bytes
    )
}
