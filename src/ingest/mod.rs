//! Reading articles from inputs: files and folders (`.txt`, `.md`, `.jsonl`, `.json`, `.csv`,
//! `.tsv`), RSS and Atom feeds and the pages they link to ([`feeds`]), and JSON lines sent over the API. Each reader turns bytes into [`SourceArticle`]s:
//! parsed text, metadata and a content hash, keyed by file, line or `id`. Nothing here knows the
//! store's contents or the model; every input that cannot be used gets one [`Warning`] naming it
//! (the file, or the file and the record's line) and the reason, and the rest is read.
//!
//! Parquet inputs carry vectors that must be checked against the store's model, so the indexer
//! (`index.rs`) reads them, through `exchange`.

pub mod feeds;
mod files;
mod records;
mod source;

pub use files::{
    collect_files, has_extension, is_indexable, read_file, JSONL_EXTENSIONS, PARQUET_EXTENSIONS,
};
pub use records::read_jsonl;
pub use source::{
    over_article_limit, sha256_hex, GivenChunk, GivenVectors, SourceArticle, Warning,
};
