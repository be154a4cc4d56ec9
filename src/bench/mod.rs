//! Benchmarks anyone can rerun: `likewise bench embed FILE` prints tokens/s in the same JSON shape
//! as the peers' script (`../shared/bench/peers.sh embed FILE`), so the two can be set side by
//! side; `likewise bench article-vectors DIR` compares ways of making an article's vector on a
//! labelled corpus.
//!
//! One file per kind: `embed` (speed of the model), `scale` (the store at scale), `quality`
//! (labelled data), `serve` (the server under load), `hybrid` (words and meaning), `follow`
//! (incremental stories, saved searches against new articles).

mod embed;
mod follow;
mod hybrid;
mod quality;
mod scale;
mod serve;

pub use embed::{embed, kernels, precision, query};
pub use follow::{alerts, arrival, stories};
pub use hybrid::{hybrid, lexical};
pub use quality::{article_vectors, cluster, map, story_pairs};
pub use scale::{commit, search, synthetic_identity, synthetic_segment, synthetic_vectors};
pub use serve::{serve, ServeBenchArgs};

use crate::engine::EngineError;
use serde_json::json;
use std::path::Path;

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// `dir` when it is missing or empty (a benchmark builds its store there); an error otherwise.
fn empty_folder(dir: &Path) -> Result<std::path::PathBuf, EngineError> {
    let holds_files = dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut e| e.next().is_some())
            .unwrap_or(true);
    if holds_files {
        return Err(EngineError::Input(format!(
            "{}: not empty; give --dir a new or empty folder",
            dir.display()
        )));
    }
    Ok(dir.to_path_buf())
}

/// This process's resident anonymous memory in bytes (Linux, from /proc): its heap, without
/// the pages of the memory-mapped store files that resident counts include.
fn anonymous_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The CPU's model name, family and model, as /proc/cpuinfo gives them (for the record of
/// every speed figure).
pub fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{} (family {}, model {})",
        field("model name"),
        field("cpu family"),
        field("model")
    )
}

/// A fresh folder under the system's temporary folder.
fn tempdir_in_temp(prefix: &str) -> Result<std::path::PathBuf, EngineError> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A 25-word passage, the size of a typical analyst's query.
const QUERY_25_WORDS: &str = "Blinken said a major ground operation in Rafah would be a mistake and would put more than a million sheltering civilians in grave danger, officials said.";

/// Median, 10th and 90th percentile of `ms` (sorted in place), rounded to microseconds.
fn percentiles(ms: &mut [f64]) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "median_ms": round(ms[n / 2]),
        "p10_ms": round(ms[n / 10]),
        "p90_ms": round(ms[n * 9 / 10]),
    })
}
