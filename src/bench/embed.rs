//! Embedding speed: tokens/s of a file, one passage's latency, each multiply kernel's GFLOP/s,
//! and what bf16 costs in quality against f32.

use crate::engine::{embed_passage, EngineError};
use crate::model::Embedder;
use crate::search::{self, dot, SearchOptions};
use crate::store::Store;
use serde_json::json;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use super::*;

/// Top-`k` paragraph agreement between two stores of the same files made in two precisions, on
/// `count` passages of `file` (evenly spaced lines), each store queried with its own encoder.
pub fn precision(
    reference: (&dyn Embedder, &Path),
    other: (&dyn Embedder, &Path),
    file: &Path,
    count: usize,
    k: usize,
) -> Result<(), EngineError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| EngineError::Input(format!("{}: {e}", file.display())))?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() || count == 0 || k == 0 {
        return Err(EngineError::Input(format!(
            "{}: no passages",
            file.display()
        )));
    }
    let step = (lines.len() / count.min(lines.len())).max(1);
    let passages: Vec<&str> = lines.iter().step_by(step).take(count).copied().collect();
    // Each passage's top k as (article key, paragraph ordinal in its article): stable across stores.
    let top_k = |(encoder, dir): (&dyn Embedder, &Path)| -> Result<_, EngineError> {
        let store = Store::open(dir)?;
        store.check_model(encoder.identity(), encoder.precision().as_str())?;
        let mut vectors = Vec::new();
        for p in &passages {
            vectors.push(embed_passage(encoder, p)?);
        }
        let opts = SearchOptions {
            k,
            min_score: None,
            exclude: None,
            filter: None,
            compact: None,
        };
        let hits: Vec<Vec<(String, usize)>> = vectors
            .iter()
            .map(|v| {
                search::search_paragraphs(&store, v, &opts)
                    .into_iter()
                    .map(|h| {
                        let segment = &store.segments[h.loc.segment];
                        let first = segment.article_chunks(h.loc.article).start;
                        (store.article(h.loc).key.clone(), h.chunk - first)
                    })
                    .collect()
            })
            .collect();
        Ok((vectors, hits))
    };
    let (ref_vectors, ref_hits) = top_k(reference)?;
    let (other_vectors, other_hits) = top_k(other)?;
    let overlaps: Vec<f64> = ref_hits
        .iter()
        .zip(&other_hits)
        .map(|(a, b)| a.iter().filter(|h| b.contains(h)).count() as f64 / k as f64)
        .collect();
    let cosines: Vec<f64> = ref_vectors
        .iter()
        .zip(&other_vectors)
        .map(|(a, b)| dot(a, b) as f64)
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{}",
        json!({
            "cpu": cpu_name(),
            "kernels": [reference.0.kernels(), other.0.kernels()],
            "queries": passages.len(),
            "k": k,
            "reference": reference.0.precision().as_str(),
            "other": other.0.precision().as_str(),
            "top_k_overlap_mean": (mean(&overlaps) * 1e4).round() / 1e4,
            "top_k_overlap_min": min(&overlaps),
            "queries_with_identical_top_k_sets": overlaps.iter().filter(|&&o| o == 1.0).count(),
            "query_cosine_mean": (mean(&cosines) * 1e6).round() / 1e6,
            "query_cosine_min": (min(&cosines) * 1e6).round() / 1e6,
        })
    );
    Ok(())
}

/// Embeds the lines of `file` (after a warm-up) and prints throughput as one JSON line.
pub fn embed(encoder: &dyn Embedder, file: &Path, lines: Option<usize>) -> Result<(), EngineError> {
    let f = std::fs::File::open(file)
        .map_err(|e| EngineError::Input(format!("{}: {e}", file.display())))?;
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        texts.push(line?);
        if lines.is_some_and(|n| texts.len() >= n) {
            break;
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens = encoder.count_tokens(&refs)?;
    encoder.embed(&refs[..refs.len().min(64)], &|_| {})?; // warm-up, as the peers' script does
    let start = Instant::now();
    encoder.embed(&refs, &|_| {})?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "system": format!("likewise {} ({})", env!("CARGO_PKG_VERSION"), encoder.precision()),
            "cpu": cpu_name(),
            "kernels": encoder.kernels(),
            "threads": threads(),
            "texts": texts.len(),
            "tokens": tokens,
            "seconds": (seconds * 1000.0).round() / 1000.0,
            "texts_per_s": (texts.len() as f64 / seconds * 10.0).round() / 10.0,
            "tokens_per_s": (tokens as f64 / seconds).round(),
        })
    );
    Ok(())
}

/// `likewise bench kernels`: GFLOP/s of every multiply kernel this CPU runs on MiniLM's four
/// layer shapes (384 → 1,152, 384 → 384, 384 → 1,536, 1,536 → 384), one thread (the inputs'
/// conversion to the kernel's format included), beside the CPU's own rate for the kernel's
/// multiply-add instruction, and which kernel the automatic choice takes for each precision. One
/// JSON line per kernel.
#[cfg(target_arch = "x86_64")]
pub fn kernels(rows: usize) -> Result<(), EngineError> {
    use crate::model::kernels;
    let shapes = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
    let request = kernels::request().map_err(crate::model::ModelError::Kernels)?;
    let chosen: Vec<_> = [kernels::Family::F32, kernels::Family::Bf16]
        .into_iter()
        .filter_map(|f| kernels::choose(f, request, 384, 1536))
        .collect();
    for kernel in kernels::all_available() {
        let rates: Vec<f64> = shapes
            .iter()
            .map(|&(i, o)| (kernels::gflops(kernel, rows, i, o, 5) * 10.0).round() / 10.0)
            .collect();
        let flops: f64 = shapes.iter().map(|&(i, o)| (i * o) as f64).sum();
        let seconds: f64 = shapes
            .iter()
            .zip(&rates)
            .map(|(&(i, o), r)| (i * o) as f64 / r)
            .sum();
        println!(
            "{}",
            json!({
                "cpu": cpu_name(),
                "kernel": kernel.name(),
                "rows": rows,
                "gflops_by_shape": rates,
                "gflops_layer": ((flops / seconds) * 10.0).round() / 10.0,
                "instruction_peak_gflops": kernels::instruction_peak_gflops(kernel)
                    .map(|g| (g * 10.0).round() / 10.0),
                "chosen": chosen.contains(&kernel),
            })
        );
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub fn kernels(_rows: usize) -> Result<(), EngineError> {
    Err(EngineError::Input(
        "bench kernels: this build runs candle's kernels only".into(),
    ))
}

/// Embeds one passage `runs` times with the model loaded and prints the median and spread.
pub fn query(encoder: &dyn Embedder, text: Option<&str>, runs: usize) -> Result<(), EngineError> {
    let text = text.unwrap_or(QUERY_25_WORDS);
    let runs = runs.max(1);
    embed_passage(encoder, text)?; // warm-up
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            embed_passage(encoder, text).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({
            "precision": encoder.precision().as_str(),
            "cpu": cpu_name(),
            "kernels": encoder.kernels(),
            "words": text.split_whitespace().count(),
            "tokens": encoder.count_tokens(&[text])?,
            "threads": threads(),
            "runs": runs,
            "median_ms": round(ms[runs / 2]),
            "p10_ms": round(ms[runs / 10]),
            "p90_ms": round(ms[runs * 9 / 10]),
        })
    );
    Ok(())
}
