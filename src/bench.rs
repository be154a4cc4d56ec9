//! Benchmarks anyone can rerun: `likewise bench embed FILE` prints tokens/s in the same JSON shape
//! as the peers' script (`../shared/bench/peers.sh embed FILE`), so the two can be set side by
//! side; `likewise bench article-vectors DIR` compares ways of making an article's vector on a
//! labelled corpus.

use crate::articles::ArticleTable;
use crate::engine::{embed_passage, EngineError};
use crate::index::{lead_text, mean_vector};
use crate::model::Embedder;
use crate::search::{self, dot, SearchOptions};
use crate::store::Store;
use crate::text;
use serde_json::json;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

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

/// Unit vectors from a seeded generator (sums of uniforms, close enough to Gaussian that the
/// directions are spread over the sphere).
/// A segment of `n` synthetic paragraph vectors in articles of 8, numbered from `first_article`,
/// laid out as the indexer lays out real ones.
pub fn synthetic_segment(
    first_article: usize,
    n: usize,
    dim: usize,
    seed: u64,
) -> crate::store::format::SegmentData {
    segment_of(first_article, synthetic_vectors(n, dim, seed), dim)
}

/// The identity recorded in stores of synthetic vectors.
pub fn synthetic_identity(dim: usize) -> crate::model::ModelIdentity {
    crate::model::ModelIdentity {
        name: "synthetic".into(),
        dim,
        pooling: crate::model::Pooling::Mean,
        max_seq_length: 256,
        normalize: true,
        weights_sha256: "synthetic".into(),
        document_prompt: None,
    }
}

/// A segment holding `chunk_vectors` as paragraphs, in articles of 8.
fn segment_of(
    first_article: usize,
    chunk_vectors: Vec<f32>,
    dim: usize,
) -> crate::store::format::SegmentData {
    use crate::store::format::{ArticleRecord, ChunkRecord, SegmentData};
    let n = chunk_vectors.len() / dim;
    let per_article = 8;
    let mut seg = SegmentData {
        dim,
        ..Default::default()
    };
    for a in 0..n.div_ceil(per_article) {
        let first = a * per_article;
        let count = per_article.min(n - first);
        seg.articles.push(ArticleRecord {
            key: format!("synthetic/{}", first_article + a),
            file: None,
            title: format!("article {}", first_article + a),
            meta: Default::default(),
            content_hash: String::new(),
            chunk_start: first as u64,
            chunk_count: count as u32,
            paragraphs: count as u32,
        });
        for p in 0..count {
            seg.chunks.push(ChunkRecord {
                article: a as u32,
                paragraph: p as u32,
                window: 0,
                text_start: 0,
                text_len: 0,
            });
        }
        let mean = crate::index::mean_vector(
            dim,
            chunk_vectors[first * dim..(first + count) * dim].chunks_exact(dim),
        );
        seg.article_vectors.extend_from_slice(&mean);
    }
    seg.chunk_vectors = chunk_vectors;
    seg
}

pub fn synthetic_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut v: Vec<f32> = (0..n * dim)
        .map(|_| next() + next() + next() + next())
        .collect();
    for row in v.chunks_exact_mut(dim) {
        crate::model::bert::normalize_in_place(row);
    }
    v
}

/// `likewise bench commit`: the commit a distributed job ends with (`likewise.spark.index`'s
/// driver), at archive scale. `parts` segment files holding `articles` synthetic articles (one
/// paragraph each, `dim`-dimensional vectors) are written as tasks write them, then committed
/// as one generation into a new store; then a second job of `parts` files rewrites 1% of the
/// articles and adds as many new ones, committed into that store (each rewritten article's old
/// copy deleted). Reports each commit's seconds, the bytes it read (checked), the manifest's
/// size, the peak resident memory, and the time to open the store for queries afterwards.
pub fn commit(
    articles: usize,
    parts: usize,
    dim: usize,
    dir: Option<&Path>,
) -> Result<(), EngineError> {
    use crate::store::{format::SegmentData, write_segment_file, Store, Writer, MANIFEST};
    use rayon::prelude::*;
    let parts = parts.clamp(1, articles.max(1));
    let dir = match dir {
        Some(d) => empty_folder(d)?,
        None => std::env::temp_dir().join(format!("likewise-bench-commit-{}", std::process::id())),
    };
    let identity = synthetic_identity(dim);
    let mut writer = Writer::open(&dir, &identity, "f32")?;
    // One job: part p holds the articles numbered `numbers(p)`; each is written as a task would.
    let write_job = |job: &str,
                     generation: u64,
                     numbers: &(dyn Fn(usize) -> Vec<usize> + Sync)|
     -> Result<Vec<crate::store::SegmentEntry>, EngineError> {
        (0..parts)
            .into_par_iter()
            .map(|p| {
                let keys = numbers(p);
                let mut seg = SegmentData {
                    dim,
                    ..Default::default()
                };
                for (a, n) in keys.iter().enumerate() {
                    let text = format!("Synthetic article {n} of a {job} job.");
                    seg.articles.push(crate::store::format::ArticleRecord {
                        key: format!("archive/{n:09}"),
                        file: None,
                        title: format!("Article {n}"),
                        meta: Default::default(),
                        content_hash: format!("{job}{n:016x}"),
                        chunk_start: a as u64,
                        chunk_count: 1,
                        paragraphs: 1,
                    });
                    seg.chunks.push(crate::store::format::ChunkRecord {
                        article: a as u32,
                        paragraph: 0,
                        window: 0,
                        text_start: seg.text.len() as u64,
                        text_len: text.len() as u32,
                    });
                    seg.text.push_str(&text);
                }
                let vectors = synthetic_vectors(keys.len(), dim, p as u64 + 1);
                seg.article_vectors = vectors.clone();
                seg.chunk_vectors = vectors;
                let file = format!("seg-{generation:08}-bench-{job}-p{p:05}.lkw");
                Ok(write_segment_file(&dir, &seg, &file, None, generation)?)
            })
            .collect()
    };
    let share = |p: usize, total: usize| (p * total / parts, (p + 1) * total / parts);
    let t = Instant::now();
    let first = write_job("first", writer.manifest().generation + 1, &|p| {
        let (a, b) = share(p, articles);
        (a..b).collect()
    })?;
    let write_s = t.elapsed().as_secs_f64();
    let bytes_first: u64 = first.iter().map(|e| e.bytes).sum();
    // A job's commit, then the merges it calls for: seconds of each.
    let commit_and_merge = |writer: &mut Writer,
                            entries: &[crate::store::SegmentEntry]|
     -> Result<(f64, f64), EngineError> {
        let t = Instant::now();
        writer.commit_segments(entries)?;
        let commit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        writer.compact_if_needed()?;
        Ok((commit_s, t.elapsed().as_secs_f64()))
    };
    let (commit_s, merge_s) = commit_and_merge(&mut writer, &first)?;
    let manifest_bytes = std::fs::metadata(dir.join(MANIFEST))
        .map(|m| m.len())
        .unwrap_or(0);
    let rss_after_first = anonymous_resident_bytes();
    // The second job: every 100th article rewritten, and as many new ones.
    let changed = articles / 100;
    let second = write_job("second", writer.manifest().generation + 1, &|p| {
        let (a, b) = share(p, changed);
        (a..b)
            .map(|i| i * 100)
            .chain((a..b).map(|i| articles + i))
            .collect()
    })?;
    let bytes_second: u64 = second.iter().map(|e| e.bytes).sum();
    let (second_s, second_merge_s) = commit_and_merge(&mut writer, &second)?;
    let segments = writer.manifest().segments.len();
    drop(writer);
    let t = Instant::now();
    let store = Store::open(&dir)?;
    let open_s = t.elapsed().as_secs_f64();
    let live = store.article_count();
    drop(store);
    let round = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        json!({
            "cpu": cpu_name(),
            "threads": threads(),
            "articles": articles,
            "parts": parts,
            "dim": dim,
            "tasks_write_s": round(write_s),
            "first_commit": {
                "seconds": round(commit_s),
                "then_merging_small_segments_s": round(merge_s),
                "segment_bytes": bytes_first,
                "manifest_bytes": manifest_bytes,
                "heap_bytes_after": rss_after_first,
            },
            "second_commit": {
                "articles_rewritten": changed,
                "articles_new": changed,
                "seconds": round(second_s),
                "then_merging_small_segments_s": round(second_merge_s),
                "segment_bytes": bytes_second,
                "heap_bytes_after": anonymous_resident_bytes(),
            },
            "segments_after": segments,
            "articles_after": live,
            "open_store_s": round(open_s),
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
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

/// Synthetic vectors per segment of the search benchmark (1.5 GB at 384 dimensions).
const SYNTHETIC_SEGMENT_ROWS: usize = 1 << 20;

/// Builds a store of `n` synthetic paragraph vectors (8 per article) with the store's writer, or
/// of the paragraph vectors of a real store (`from`, holding `queries` of them out as queries),
/// keeping int8 and 1-bit copies; then times top-10 queries one at a time with each layout —
/// the exact f32 scan, int8 then exact rescoring, 1-bit then int8 then exact rescoring — checks
/// the exact scan against a plain one and measures each layout's recall@10 against it.
pub fn search(
    n: usize,
    queries: usize,
    batch: usize,
    append: usize,
    dir: Option<&Path>,
    from: Option<&Path>,
    identity_from: Option<&Path>,
) -> Result<(), EngineError> {
    use crate::compact::{words_per_row, Compact};
    use crate::store::{Store, Writer};
    let dim = 384;
    let queries = queries.max(1);
    let temporary = dir.is_none();
    let dir = match dir {
        Some(d) => empty_folder(d)?,
        None => std::env::temp_dir().join(format!("likewise-bench-{}", std::process::id())),
    };
    // Synthetic vectors are made and written a segment at a time (one seed each), so a store
    // of 10M vectors (15 GB) is built without holding it in memory.
    let (data, qs, source) = match from {
        None => (
            Vec::new(),
            synthetic_vectors(queries, dim, 7),
            "synthetic unit vectors".to_string(),
        ),
        Some(real) => {
            let store = Store::open(real)?;
            if store.manifest.model.dim != dim {
                return Err(EngineError::Input(format!(
                    "{}: vectors of dim {}, the benchmark uses {dim}",
                    real.display(),
                    store.manifest.model.dim
                )));
            }
            let mut all = Vec::new();
            for (loc, _) in store.live_articles() {
                let seg = &store.segments[loc.segment];
                for c in seg.article_chunks(loc.article) {
                    all.extend_from_slice(seg.chunk_vector(c));
                }
            }
            let total = all.len() / dim;
            if total <= queries {
                return Err(EngineError::Input(format!(
                    "{}: {total} paragraphs, fewer than the {queries} queries held out",
                    real.display()
                )));
            }
            // Every (total / queries)-th paragraph is held out as a query.
            let step = total / queries;
            let (mut data, mut qs) = (Vec::new(), Vec::new());
            for (i, row) in all.chunks_exact(dim).enumerate() {
                if i % step == 0 && qs.len() < queries * dim {
                    qs.extend_from_slice(row);
                } else {
                    data.extend_from_slice(row);
                }
            }
            (
                data,
                qs,
                format!("the paragraph vectors of {}", real.display()),
            )
        }
    };
    let n = if from.is_some() { data.len() / dim } else { n };
    let (identity, precision) = match identity_from {
        Some(other) => {
            let m = Store::open(other)?.manifest;
            (m.model, m.precision)
        }
        None => (synthetic_identity(dim), "f32".to_string()),
    };
    let started = Instant::now();
    {
        let mut writer = Writer::open(&dir, &identity, &precision)?;
        writer.set_compact(Some(Compact::Binary))?;
        if from.is_some() {
            writer.commit(Some(&segment_of(0, data, dim)), &[])?;
        } else {
            for (i, first) in (0..n).step_by(SYNTHETIC_SEGMENT_ROWS).enumerate() {
                let rows = SYNTHETIC_SEGMENT_ROWS.min(n - first);
                let seg = synthetic_segment(first / 8, rows, dim, 42 + i as u64);
                writer.commit(Some(&seg), &[])?;
            }
        }
    }
    let build_s = started.elapsed().as_secs_f64();
    let opened = Instant::now();
    let store = Store::open(&dir)?;
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    for w in &store.warnings {
        eprintln!("likewise: warning: {w}");
    }
    let options = |compact| crate::search::SearchOptions {
        k: 10,
        min_score: None,
        exclude: None,
        filter: None,
        compact,
    };
    let opts = options(None);
    // One query at a time with each layout; the first is the exact scan the others are judged by.
    let words = words_per_row(dim);
    let mut layouts = Vec::new();
    let mut exact: Vec<Vec<crate::search::ChunkHit>> = Vec::new();
    for (name, compact, scanned, extra_disk) in [
        ("f32", None, n * dim * 4, 0),
        ("int8", Some(Compact::Int8), n * (dim + 4), n * (dim + 4)),
        (
            "binary",
            Some(Compact::Binary),
            n * words * 8,
            n * (dim + 4 + words * 8),
        ),
    ] {
        let o = options(compact);
        crate::search::search_paragraphs(&store, &qs[..dim], &o); // warm-up: pages in
        let t = Instant::now();
        let results: Vec<_> = qs
            .chunks_exact(dim)
            .map(|q| crate::search::search_paragraphs(&store, q, &o))
            .collect();
        let ms = t.elapsed().as_secs_f64() * 1e3 / queries as f64;
        if compact.is_none() {
            exact = results.clone();
        }
        let (mut found, mut wanted) = (0usize, 0usize);
        // Compact layouts only choose candidates: a hit they share with the exact scan carries
        // the same score, to the bit.
        let mut same_scores = true;
        for (got, truth) in results.iter().zip(&exact) {
            wanted += truth.len();
            for t in truth {
                if let Some(g) = got
                    .iter()
                    .find(|g| (g.loc.segment, g.chunk) == (t.loc.segment, t.chunk))
                {
                    found += 1;
                    same_scores &= g.score.to_bits() == t.score.to_bits();
                }
            }
        }
        layouts.push(json!({
            "layout": name,
            "ms_per_query": (ms * 100.0).round() / 100.0,
            "recall_at_10": (found as f64 / wanted.max(1) as f64 * 10000.0).round() / 10000.0,
            "scanned_bytes_per_query": scanned,
            "disk_bytes_beyond_f32": extra_disk,
            "scores_exact": same_scores,
        }));
    }
    let ms_per_query = layouts[0]["ms_per_query"].as_f64().unwrap_or(0.0);
    // The exact scan gives the same answers as a straightforward one (ids and scores).
    let mut identical = true;
    for (q, hits) in qs.chunks_exact(dim).zip(&exact) {
        // The best 10 by a plain pass over every stored vector, in (segment, paragraph) order.
        let mut best: Vec<(f32, (usize, usize))> = Vec::with_capacity(11);
        for (s, seg) in store.segments.iter().enumerate() {
            for (c, v) in seg.chunk_vectors().chunks_exact(dim).enumerate() {
                let score = dot(v, q);
                if best.len() < 10 || score > best[best.len() - 1].0 {
                    let at = best.partition_point(|b| b.0 >= score);
                    best.insert(at, (score, (s, c)));
                    best.truncate(10);
                }
            }
        }
        identical &= hits.len() == best.len();
        for (h, (score, id)) in hits.iter().zip(&best) {
            identical &= (h.loc.segment, h.chunk) == *id && (h.score - score).abs() <= 1e-5;
        }
    }
    // Many queries at once: one pass, a matrix multiply per block; the same ids as one at a time.
    let mut batch_report = json!(null);
    if batch > 0 {
        let bq = synthetic_vectors(batch, dim, 9);
        let t = Instant::now();
        let batched = crate::search::search_paragraphs_batch(&store, &bq, &[], &opts);
        let batch_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut same = true;
        for (q, hits) in bq.chunks_exact(dim).zip(&batched) {
            let single = crate::search::search_paragraphs(&store, q, &opts);
            same &= single.len() == hits.len()
                && single.iter().zip(hits).all(|(a, b)| {
                    (a.score - b.score).abs() <= 1e-5
                        && (a.chunk == b.chunk || (a.score - b.score).abs() <= 1e-6)
                });
        }
        batch_report = json!({
            "queries": batch,
            "ms_total": (batch_ms * 10.0).round() / 10.0,
            "ms_per_query": (batch_ms / batch as f64 * 100.0).round() / 100.0,
            "same_as_one_at_a_time": same,
        });
    }
    // Appending: small commits (64 articles of 8 paragraphs), then compaction as `index` does.
    let mut append_report = json!(null);
    if append > 0 {
        let before = Store::open(&dir)?.manifest.segments[0].clone();
        let t = Instant::now();
        let mut writer = Writer::open(&dir, &identity, &precision)?;
        let per_commit = 512;
        let mut written = 0u64;
        let mut done = 0;
        while done < append {
            let count = per_commit.min(append - done);
            let extra =
                synthetic_segment(n.div_ceil(8) + done / 8 + 1, count, dim, 1000 + done as u64);
            writer.commit(Some(&extra), &[])?;
            written += writer
                .manifest()
                .segments
                .last()
                .map(|e| e.bytes)
                .unwrap_or(0);
            done += count;
        }
        let segments_before_compaction = writer.manifest().segments.len();
        let gen = writer.manifest().generation;
        writer.compact_if_needed()?;
        if writer.manifest().generation != gen {
            // What compaction wrote: the segments that were not there before it.
            written += writer
                .manifest()
                .segments
                .iter()
                .filter(|e| e.file != before.file)
                .map(|e| e.bytes)
                .sum::<u64>();
        }
        let after = writer.manifest().clone();
        drop(writer);
        append_report = json!({
            "vectors": append,
            "commits": append.div_ceil(per_commit),
            "seconds": (t.elapsed().as_secs_f64() * 100.0).round() / 100.0,
            "segments_before_compaction": segments_before_compaction,
            "segments_after": after.segments.len(),
            "large_segment_rewritten": !after.segments.iter().any(|e| e.file == before.file),
            "bytes_written": written,
            "store_bytes": after.segments.iter().map(|e| e.bytes).sum::<u64>(),
        });
    }
    let bytes = n * dim * 4;
    println!(
        "{}",
        json!({
            "cpu": cpu_name(),
            "append": append_report,
            "batch": batch_report,
            "system": format!("likewise {} exact f32 scan", env!("CARGO_PKG_VERSION")),
            "data": source,
            "n": n,
            "queries": queries,
            "layouts": layouts,
            "threads": threads(),
            "build_s": (build_s * 100.0).round() / 100.0,
            "open_ms": (open_ms * 100.0).round() / 100.0,
            "ms_per_query": (ms_per_query * 100.0).round() / 100.0,
            "gb_per_s": ((bytes as f64 / 1e9) / (ms_per_query / 1e3) * 10.0).round() / 10.0,
            "identical_to_plain_scan": identical,
            "vector_bytes": bytes,
        })
    );
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
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

/// A 25-word passage, the size of a typical analyst's query.
const QUERY_25_WORDS: &str = "Blinken said a major ground operation in Rafah would be a mistake and would put more than a million sheltering civilians in grave danger, officials said.";

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

/// For each way of making article vectors, the mean share of each article's 10 nearest
/// neighbours that carry its label (leave-one-out), and the share whose nearest neighbour does.
pub fn article_vectors(
    encoder: &dyn Embedder,
    corpus: &Path,
    per_topic: Option<usize>,
) -> Result<(), EngineError> {
    let mut labels = Vec::new();
    let mut articles = Vec::new();
    let mut topics: Vec<_> = std::fs::read_dir(corpus)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    topics.sort();
    for (t, topic) in topics.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(topic)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt" || e == "md"))
            .collect();
        files.sort();
        for f in files.into_iter().take(per_topic.unwrap_or(usize::MAX)) {
            let (content, _) = text::decode_text(&std::fs::read(&f)?);
            articles.push(text::parse_article_text(&content));
            labels.push(t);
        }
    }
    let started = Instant::now();
    let modes = article_vector_candidates(encoder, &articles, None)?;
    eprintln!(
        "likewise: embedded {} articles in {:.1}s",
        articles.len(),
        started.elapsed().as_secs_f64()
    );
    let mut results = Vec::new();
    for (name, vecs) in &modes {
        let (p10, p1, r_precision) = knn_label_precision(vecs, &labels, 10);
        let round = |x: f64| (x * 10000.0).round() / 10000.0;
        results.push(json!({"article_vector": name, "precision_at_10": round(p10), "precision_at_1": round(p1), "r_precision": round(r_precision)}));
    }
    println!("{}", serde_json::to_string_pretty(&json!({"corpus": corpus.display().to_string(), "articles": articles.len(), "labels": topics.len(), "results": results})).expect("json"));
    Ok(())
}

/// Named candidates, each with one vector per article.
type Candidates = Vec<(&'static str, Vec<Vec<f32>>)>;

/// Each way of making an article's vector that the article-vector benchmarks compare, with the
/// vectors it gives `articles`. `raw` (the texts as given, before parsing) adds the plain
/// sentence-transformers embedding of the raw text, truncated at the model's window.
fn article_vector_candidates(
    encoder: &dyn Embedder,
    articles: &[text::ParsedArticle],
    raw: Option<&[&str]>,
) -> Result<Candidates, EngineError> {
    let dim = encoder.identity().dim;
    let mut chunk_texts: Vec<String> = Vec::new();
    let mut owners = Vec::new();
    for (i, a) in articles.iter().enumerate() {
        // A text of one line is all headline: that line is its one paragraph here, as the lead
        // is then the same text.
        let lines = if a.paragraphs.is_empty() {
            std::slice::from_ref(&a.title)
        } else {
            a.paragraphs.as_slice()
        };
        for p in lines {
            for r in encoder.windows(p)? {
                chunk_texts.push(p[r].trim().to_string());
                owners.push(i);
            }
        }
    }
    let embed_all = |texts: Vec<&str>| -> Result<Vec<Vec<f32>>, EngineError> {
        let mut v = encoder.embed(&texts, &|_| {})?;
        v.iter_mut()
            .for_each(|x| crate::model::bert::normalize_in_place(x));
        Ok(v)
    };
    let chunk_vecs = embed_all(chunk_texts.iter().map(String::as_str).collect())?;
    let chunk_pieces: Vec<usize> = chunk_texts
        .iter()
        .map(|t| encoder.count_tokens(&[t.as_str()]))
        .collect::<Result<_, _>>()?;
    let titles: Vec<&str> = articles.iter().map(|a| a.title.as_str()).collect();
    let title_vecs = embed_all(titles)?;
    let leads: Vec<String> = articles.iter().map(lead_text).collect();
    let lead_vecs = embed_all(leads.iter().map(String::as_str).collect())?;
    let mut per_article: Vec<Vec<(&[f32], usize)>> = vec![Vec::new(); articles.len()];
    for ((v, &o), &pieces) in chunk_vecs.iter().zip(&owners).zip(&chunk_pieces) {
        per_article[o].push((v, pieces));
    }
    let paragraphs = |i: usize| mean_vector(dim, per_article[i].iter().map(|(v, _)| *v));
    // Each chunk counted by its word pieces: a one-line caption weighs less than a long paragraph.
    let weighted = |i: usize| {
        let mut sum = vec![0f32; dim];
        for (v, pieces) in &per_article[i] {
            sum.iter_mut()
                .zip(*v)
                .for_each(|(s, x)| *s += x * *pieces as f32);
        }
        if !per_article[i].is_empty() {
            crate::model::bert::normalize_in_place(&mut sum);
        }
        sum
    };
    let with_lead = |v: Vec<f32>, i: usize| {
        mean_vector(dim, [v.as_slice(), lead_vecs[i].as_slice()].into_iter())
    };
    // The first window counted `lead` times against the paragraphs' mean once.
    let lead_weighted = |v: Vec<f32>, i: usize, lead: f32| {
        let mut sum: Vec<f32> = v
            .iter()
            .zip(&lead_vecs[i])
            .map(|(p, l)| p + lead * l)
            .collect();
        crate::model::bert::normalize_in_place(&mut sum);
        sum
    };
    // Windows weighted by their place, `rate`^k for the k-th: the lead says what the story is,
    // the tail adds background that other stories share.
    let by_place = |i: usize, rate: f32| {
        let mut sum = vec![0f32; dim];
        let mut weight = 1.0f32;
        for (v, _) in &per_article[i] {
            sum.iter_mut().zip(*v).for_each(|(s, x)| *s += x * weight);
            weight *= rate;
        }
        if !per_article[i].is_empty() {
            crate::model::bert::normalize_in_place(&mut sum);
        }
        sum
    };
    let n = articles.len();
    // The whole text window by window, each window counted by its word pieces.
    let mut window_texts = Vec::new();
    let mut window_owners = Vec::new();
    for (i, lead) in leads.iter().enumerate() {
        for r in encoder.windows(lead)? {
            window_texts.push(lead[r].trim());
            window_owners.push(i);
        }
    }
    let window_pieces: Vec<usize> = window_texts
        .iter()
        .map(|t| encoder.count_tokens(&[t]))
        .collect::<Result<_, _>>()?;
    let mut whole_text = vec![vec![0f32; dim]; n];
    for ((v, &o), &pieces) in embed_all(window_texts)?
        .iter()
        .zip(&window_owners)
        .zip(&window_pieces)
    {
        whole_text[o]
            .iter_mut()
            .zip(v)
            .for_each(|(s, x)| *s += x * pieces as f32);
    }
    whole_text
        .iter_mut()
        .for_each(|v| crate::model::bert::normalize_in_place(v));
    // What `index` stores, made by its own code.
    let sources: Vec<crate::index::SourceArticle> = articles
        .iter()
        .enumerate()
        .map(|(i, a)| crate::index::SourceArticle {
            key: i.to_string(),
            file: None,
            parsed: a.clone(),
            content_hash: String::new(),
            given: None,
        })
        .collect();
    let stored = crate::index::embed_group(
        encoder,
        &sources,
        crate::store::ArticleVectorMode::default(),
        &mut |_| {},
    )?;
    let mut modes: Vec<(&'static str, Vec<Vec<f32>>)> = vec![
        (
            "whole text window by window, and a quarter of the lede (stored)",
            stored
                .article_vectors
                .chunks(dim)
                .map(<[f32]>::to_vec)
                .collect(),
        ),
        ("whole text, window by window", whole_text),
        (
            "first window and headline",
            (0..n)
                .map(|i| {
                    mean_vector(
                        dim,
                        [lead_vecs[i].as_slice(), title_vecs[i].as_slice()].into_iter(),
                    )
                })
                .collect(),
        ),
        (
            "first window twice and headline",
            (0..n)
                .map(|i| {
                    let mut sum: Vec<f32> = lead_vecs[i]
                        .iter()
                        .zip(&title_vecs[i])
                        .map(|(l, t)| 2.0 * l + t)
                        .collect();
                    crate::model::bert::normalize_in_place(&mut sum);
                    sum
                })
                .collect(),
        ),
        (
            "first window, headline and mean of paragraphs",
            (0..n)
                .map(|i| {
                    let p = paragraphs(i);
                    mean_vector(
                        dim,
                        [
                            lead_vecs[i].as_slice(),
                            title_vecs[i].as_slice(),
                            p.as_slice(),
                        ]
                        .into_iter(),
                    )
                })
                .collect(),
        ),
        (
            "paragraphs weighted by place (0.8^k)",
            (0..n).map(|i| by_place(i, 0.8)).collect(),
        ),
        (
            "paragraphs weighted by place (0.8^k), and first window",
            (0..n).map(|i| with_lead(by_place(i, 0.8), i)).collect(),
        ),
        (
            "paragraphs weighted by place (0.6^k), and first window",
            (0..n).map(|i| with_lead(by_place(i, 0.6), i)).collect(),
        ),
        (
            "paragraphs weighted by place (0.9^k), and first window twice",
            (0..n)
                .map(|i| lead_weighted(by_place(i, 0.9), i, 2.0))
                .collect(),
        ),
        (
            "mean of headline and paragraphs",
            (0..n)
                .map(|i| {
                    mean_vector(
                        dim,
                        per_article[i]
                            .iter()
                            .map(|(v, _)| *v)
                            .chain([title_vecs[i].as_slice()]),
                    )
                })
                .collect(),
        ),
        ("mean of paragraphs", (0..n).map(paragraphs).collect()),
        (
            "mean of paragraphs weighted by word pieces",
            (0..n).map(weighted).collect(),
        ),
        ("headline + body, first window", lead_vecs.clone()),
        (
            "mean of paragraphs, and first window (stored before)",
            (0..n).map(|i| with_lead(paragraphs(i), i)).collect(),
        ),
        (
            "weighted mean of paragraphs, and first window",
            (0..n).map(|i| with_lead(weighted(i), i)).collect(),
        ),
        (
            "mean of paragraphs, and first window twice",
            (0..n)
                .map(|i| lead_weighted(paragraphs(i), i, 2.0))
                .collect(),
        ),
        (
            "mean of paragraphs, and first window three times",
            (0..n)
                .map(|i| lead_weighted(paragraphs(i), i, 3.0))
                .collect(),
        ),
        (
            "weighted mean of paragraphs, and first window twice",
            (0..n).map(|i| lead_weighted(weighted(i), i, 2.0)).collect(),
        ),
    ];
    if let Some(raw) = raw {
        modes.push((
            "raw text, first window (sentence-transformers)",
            embed_all(raw.to_vec())?,
        ));
    }
    Ok(modes)
}

/// `likewise bench story-pairs FILE`: each article-vector candidate's Pearson correlation between
/// the cosine of a pair's two articles and how alike people judged them (−overall: 1 = same
/// story … 4 = unrelated), on SemEval-2022 Task 8 pairs as JSON lines
/// (`{"overall", "a": {"title", "text"}, "b": {…}}`).
pub fn story_pairs(encoder: &dyn Embedder, file: &Path) -> Result<(), EngineError> {
    #[derive(serde::Deserialize)]
    struct Side {
        #[serde(default)]
        title: String,
        text: String,
    }
    #[derive(serde::Deserialize)]
    struct Pair {
        overall: f64,
        a: Side,
        b: Side,
    }
    let mut judged = Vec::new();
    let mut raw = Vec::new();
    for (n, line) in std::io::BufReader::new(std::fs::File::open(file)?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let pair: Pair = serde_json::from_str(&line).map_err(|e| {
            EngineError::Input(format!(
                "{}:{}: not a story pair: {e}",
                file.display(),
                n + 1
            ))
        })?;
        judged.push(-pair.overall);
        for side in [pair.a, pair.b] {
            raw.push(if side.title.is_empty() {
                side.text
            } else {
                format!("{}\n{}", side.title, side.text)
            });
        }
    }
    if judged.len() < 3 {
        return Err(EngineError::Input(format!(
            "{}: fewer than 3 pairs",
            file.display()
        )));
    }
    let articles: Vec<text::ParsedArticle> =
        raw.iter().map(|t| text::parse_article_text(t)).collect();
    let raw_refs: Vec<&str> = raw.iter().map(String::as_str).collect();
    let started = Instant::now();
    let modes = article_vector_candidates(encoder, &articles, Some(&raw_refs))?;
    let round = |x: f64| (x * 10000.0).round() / 10000.0;
    let cosines_of = |vecs: &[Vec<f32>]| -> Vec<f64> {
        vecs.chunks(2)
            .map(|ab| dot(&ab[0], &ab[1]) as f64)
            .collect()
    };
    // How sure a difference from the plain embedding is: the same resamples of the pairs (with
    // replacement) for every candidate, and the share in which the candidate correlates better.
    let plain = cosines_of(&modes.last().expect("the plain embedding is a candidate").1);
    let resamples: Vec<Vec<usize>> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(2022);
        (0..BOOTSTRAP_RESAMPLES)
            .map(|_| {
                (0..judged.len())
                    .map(|_| rng.random_range(0..judged.len()))
                    .collect()
            })
            .collect()
    };
    let pick = |xs: &[f64], idx: &[usize]| idx.iter().map(|&i| xs[i]).collect::<Vec<f64>>();
    let results: Vec<serde_json::Value> = modes
        .iter()
        .map(|(name, vecs)| {
            let cosines = cosines_of(vecs);
            let better = resamples
                .iter()
                .filter(|idx| {
                    let y = pick(&judged, idx);
                    pearson(&pick(&cosines, idx), &y) > pearson(&pick(&plain, idx), &y)
                })
                .count();
            json!({
                "article_vector": name,
                "pearson": round(pearson(&cosines, &judged)),
                "beats_plain_in_resamples": round(better as f64 / resamples.len() as f64),
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "file": file.display().to_string(),
            "pairs": judged.len(),
            "model": encoder.identity().name,
            "seconds": round(started.elapsed().as_secs_f64()),
            "results": results,
        }))
        .expect("json")
    );
    Ok(())
}

/// Resamples of the story pairs for the bootstrap of `bench story-pairs`.
const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Pearson's correlation of two equally long series.
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    sxy / (sxx * syy).sqrt()
}

/// Leave-one-out: mean share of the `k` nearest neighbours with the same label, the share of
/// articles whose nearest neighbour has it, and R-precision (the share with the same label among
/// the R nearest, R being how many others carry the label).
fn knn_label_precision(vecs: &[Vec<f32>], labels: &[usize], k: usize) -> (f64, f64, f64) {
    let n = vecs.len();
    let k = k.min(n.saturating_sub(1)).max(1);
    let mut sum_k = 0.0;
    let mut sum_1 = 0.0;
    let mut sum_r = 0.0;
    for i in 0..n {
        let mut scored: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (dot(&vecs[i], &vecs[j]), j))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let same = scored
            .iter()
            .take(k)
            .filter(|(_, j)| labels[*j] == labels[i])
            .count();
        sum_k += same as f64 / k as f64;
        if scored.first().is_some_and(|(_, j)| labels[*j] == labels[i]) {
            sum_1 += 1.0;
        }
        let r = labels
            .iter()
            .enumerate()
            .filter(|&(j, l)| j != i && *l == labels[i])
            .count();
        if r > 0 {
            sum_r += scored
                .iter()
                .take(r)
                .filter(|(_, j)| labels[*j] == labels[i])
                .count() as f64
                / r as f64;
        }
    }
    (sum_k / n as f64, sum_1 / n as f64, sum_r / n as f64)
}

/// `likewise bench cluster`: NMI of the topic clusters of the store against labels taken from
/// each article's folder name (e.g. `bbc/business/001.txt` → `business`), with k = the number of
/// labels and with k chosen automatically; outliers count as one more cluster of their own.
pub fn cluster(store: &Store, story_threshold: f32) -> Result<(), EngineError> {
    let table = ArticleTable::new(store);
    let labels = folder_labels(&table);
    let n_labels = labels
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if table.len() < 3 || n_labels < 2 {
        return Err(EngineError::Invalid(
            "bench cluster needs a store of articles in at least two labelled folders (e.g. bbc/<topic>/NNN.txt)".into(),
        ));
    }
    let score = |g: &crate::cluster::Grouping| {
        let predicted: Vec<i64> = g
            .assignment
            .iter()
            .map(|c| c.map(|c| c as i64).unwrap_or(-1))
            .collect();
        let outliers = predicted.iter().filter(|&&c| c < 0).count();
        (crate::cluster::nmi(&labels, &predicted), outliers)
    };
    let mut rows = Vec::new();
    for (name, k) in [
        (format!("topics, --k {n_labels}"), Some(n_labels)),
        ("topics, no parameter".to_string(), None),
    ] {
        let started = Instant::now();
        let g = crate::cluster::topics(&table, k);
        let labelled = crate::cluster::label(&table, &g, 6);
        let secs = started.elapsed().as_secs_f64();
        let (nmi, outliers) = score(&g);
        rows.push(json!({
            "run": name, "clusters": labelled.len(), "nmi": (nmi * 1000.0).round() / 10.0,
            "outliers": outliers, "outlier_share": outliers as f64 / table.len() as f64,
            "seconds": secs, "method": g.how,
        }));
    }
    let started = Instant::now();
    let g = crate::cluster::stories(&table, story_threshold);
    let labelled = crate::cluster::label(&table, &g, 6);
    let secs = started.elapsed().as_secs_f64();
    let in_stories: usize = labelled.iter().map(|c| c.size).sum();
    let mixed = labelled
        .iter()
        .filter(|c| {
            c.members
                .iter()
                .map(|&(i, _)| &labels[i])
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        })
        .count();
    rows.push(json!({
        "run": format!("stories, threshold {story_threshold}"), "clusters": labelled.len(),
        "articles_in_stories": in_stories, "stories_mixing_labels": mixed, "seconds": secs,
    }));
    let doc = json!({"cpu": cpu_name(), "articles": table.len(), "labels": n_labels, "nmi": "arithmetic-mean normalised mutual information ×100, outliers as one extra cluster", "runs": rows});
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}

/// Labels from each article's folder name (`bbc/business/001.txt` → `business`).
fn folder_labels(table: &ArticleTable) -> Vec<String> {
    (0..table.len())
        .map(|i| {
            let rec = table.record(i);
            let key = rec.file.as_deref().unwrap_or(&rec.key);
            std::path::Path::new(key)
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// `likewise bench map`: the time the map of the store takes, and the share of each article's
/// 10 nearest neighbours on the map that share its folder (and the same in the full vectors,
/// by cosine, for comparison).
pub fn map(store: &Store) -> Result<(), EngineError> {
    let table = ArticleTable::new(store);
    let labels = folder_labels(&table);
    let started = Instant::now();
    let result = crate::engine::map_of(store);
    let secs = started.elapsed().as_secs_f64();
    let by_key: std::collections::HashMap<&str, usize> = (0..table.len())
        .map(|i| (table.record(i).key.as_str(), i))
        .collect();
    let point_labels: Vec<String> = result
        .points
        .iter()
        .map(|p| labels[by_key[p.key.as_str()]].clone())
        .collect();
    let xy: Vec<f32> = result.points.iter().flat_map(|p| [p.x, p.y]).collect();
    let on_map = crate::engine::map::neighbour_agreement(&xy, &point_labels, 10);
    // The same in the full vectors: cosine neighbours.
    let n = table.len();
    let full = crate::engine::map::neighbour_agreement_by(&labels, 10, |i, j| {
        -dot(table.vector(i), table.vector(j))
    });
    let doc = json!({
        "articles": n,
        "points": result.points.len(),
        "method": result.method,
        "seconds": secs,
        "threads": threads(),
        "neighbours_sharing_folder_on_map": on_map,
        "neighbours_sharing_folder_in_vectors": full,
        "cpu": cpu_name(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
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

/// Words of each passage `bench serve` sends: the 25 of `bench query`, an analyst's sentence.
const PASSAGE_WORDS: usize = 25;

/// `likewise bench serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    /// Numbers of concurrent clients, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub clients: Vec<usize>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Then a run of this many seconds at the largest number of clients, the server's resident
    /// memory sampled every 10 s (0: none).
    #[arg(long, default_value_t = 0)]
    pub soak: u64,
}

/// The server's resident memory in bytes (Linux), from /proc.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A `likewise serve` child process on a free loopback port; stopped when dropped.
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(store: &Path) -> Result<ServerProcess, EngineError> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["--index"])
        .arg(store)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
    let base = line.trim().trim_end_matches('/').to_string();
    if !base.starts_with("http://127.0.0.1:") {
        let _ = child.kill();
        return Err(EngineError::Input(format!(
            "likewise serve did not start (it printed {line:?})"
        )));
    }
    Ok(ServerProcess { child, base })
}

/// Makes the body of the i-th request.
type RequestBody = std::sync::Arc<dyn Fn(usize) -> String + Send + Sync>;

/// One client's connection: HTTP/1.1 keep-alive, one request at a time (hyper's client).
async fn load_client(
    addr: String,
    deadline: Instant,
    first: usize,
    step: usize,
    body: RequestBody,
) -> (Vec<f64>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0usize;
    let connect = async {
        let stream = tokio::net::TcpStream::connect(&addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        Some(sender)
    };
    let Some(mut sender) = connect.await else {
        return (latencies, 1);
    };
    let mut i = first;
    while Instant::now() < deadline {
        let req = hyper::Request::post("/api/query")
            .header("host", &addr)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body(i)))
            .expect("a valid request");
        let t = Instant::now();
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let bytes =
                    axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 1 << 26).await;
                status == 200 && bytes.is_ok()
            }
            Err(_) => false,
        };
        if ok {
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            errors += 1;
            break;
        }
        i += step;
    }
    (latencies, errors)
}

/// One timed run: `clients` connections sending requests made by `body(i)` until `seconds`
/// pass, each waiting for its answer before the next.
fn load_run(base: &str, clients: usize, seconds: u64, body: &RequestBody) -> serde_json::Value {
    let addr = base.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the clients");
    let started = Instant::now();
    let deadline = started + std::time::Duration::from_secs(seconds);
    let results: Vec<(Vec<f64>, usize)> = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            set.spawn(load_client(
                addr.clone(),
                deadline,
                c,
                clients,
                body.clone(),
            ));
        }
        set.join_all().await
    });
    let wall = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let errors: usize = results.iter().map(|r| r.1).sum();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize]
        }
    };
    json!({
        "clients": clients,
        "requests": all.len(),
        "errors": errors,
        "queries_per_s": all.len() as f64 / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    })
}

/// `likewise bench serve`: starts `likewise serve` on the store, then loads it from this
/// process over loopback with passage queries (the first 25 words of the store's own paragraphs,
/// a different one each request) and `like` queries (its articles), at each number of clients for a bounded
/// time; the server's resident memory is read before and after each run.
pub fn serve(store_dir: &Path, args: &ServeBenchArgs) -> Result<(), EngineError> {
    let store = Store::open(store_dir)?;
    let mut passages = Vec::new();
    let mut keys = Vec::new();
    for (loc, rec) in store.live_articles() {
        keys.push(rec.key.clone());
        let seg = &store.segments[loc.segment];
        for c in seg.article_chunks(loc.article).take(3) {
            let text = seg.chunk_text(c);
            if text.split_whitespace().count() >= PASSAGE_WORDS {
                passages.push(
                    text.split_whitespace()
                        .take(60)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        }
    }
    drop(store);
    if passages.is_empty() || keys.len() < 2 {
        return Err(EngineError::Invalid(
            "bench serve needs a store of at least two articles with paragraphs".into(),
        ));
    }
    let server = start_server(store_dir)?;
    let pid = server.child.id();
    let (passages, keys) = (std::sync::Arc::new(passages), std::sync::Arc::new(keys));
    let passage: RequestBody = {
        let p = passages.clone();
        std::sync::Arc::new(move |i| json!({"text": p[i * 7919 % p.len()]}).to_string())
    };
    let like: RequestBody = {
        let k = keys.clone();
        std::sync::Arc::new(move |i| json!({"like": k[i * 7919 % k.len()]}).to_string())
    };
    // Wait for the map the server computes at start (it takes both cores for seconds), then
    // warm up: the model's first batches, the store's pages.
    ureq::get(&format!("{}/api/map", server.base))
        .timeout(std::time::Duration::from_secs(600))
        .call()
        .map_err(|e| EngineError::Input(format!("the server's map: {e}")))?;
    // (The load itself goes through hyper's client, one keep-alive connection per client.)
    load_run(&server.base, 2, 2, &passage);
    let mut runs = Vec::new();
    for (kind, body) in [("passage", &passage), ("like", &like)] {
        for &c in &args.clients {
            let before = resident_bytes(pid);
            let mut r = load_run(&server.base, c.max(1), args.seconds, body);
            r["kind"] = json!(kind);
            r["server_rss_mb_before"] = json!(before.map(|b| b as f64 / 1e6));
            r["server_rss_mb_after"] = json!(resident_bytes(pid).map(|b| b as f64 / 1e6));
            eprintln!("likewise: {r}");
            runs.push(r);
        }
    }
    let mut soak = Vec::new();
    if args.soak > 0 {
        let clients = args.clients.iter().copied().max().unwrap_or(32);
        let mut left = args.soak;
        while left > 0 {
            let step = left.min(10);
            let r = load_run(&server.base, clients, step, &passage);
            let rss = resident_bytes(pid).map(|b| b as f64 / 1e6);
            eprintln!("likewise: soak {}s left: rss {rss:?} MB, {r}", left - step);
            soak.push(json!({"rss_mb": rss, "queries_per_s": r["queries_per_s"], "errors": r["errors"], "p99_ms": r["p99_ms"]}));
            left -= step;
        }
    }
    let doc = json!({
        "store": store_dir.display().to_string(),
        "articles": keys.len(),
        "cpu": cpu_name(),
        "threads": threads(),
        "seconds_per_run": args.seconds,
        "runs": runs,
        "soak": soak,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}

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

/// A passage, names and a phrase queried on the store of `engine` in each mode, the whole query
/// path timed (embedding, both halves, fusion, the result document): what hybrid search adds.
pub fn hybrid(
    engine: &crate::engine::Engine,
    text: Option<&str>,
    runs: usize,
) -> Result<(), EngineError> {
    use crate::engine::docs::{QueryRequest, SearchMode};
    let runs = runs.max(1);
    let passage = text.unwrap_or(QUERY_25_WORDS);
    let store = engine.store()?;
    let mut rows = Vec::new();
    for (what, q) in [
        ("passage", passage),
        ("name", "Gordon Brown"),
        ("phrase", "\"interest rates\" inflation"),
    ] {
        let modes = [
            SearchMode::Semantic,
            SearchMode::Hybrid,
            SearchMode::Lexical,
        ];
        let requests: Vec<QueryRequest> = modes
            .iter()
            .map(|&mode| QueryRequest {
                text: Some(q.to_string()),
                mode,
                ..Default::default()
            })
            .collect();
        for req in &requests {
            engine.query(req)?; // warm-up: the model and the store are loaded once
        }
        // The modes take turns, run after run, so that the machine's ups and downs fall on
        // all of them alike.
        let mut ms: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); modes.len()];
        for _ in 0..runs {
            for (req, times) in requests.iter().zip(&mut ms) {
                let t = Instant::now();
                engine.query(req)?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (mode, mut times) in modes.iter().zip(ms) {
            rows.push(json!({
                "query": what,
                "mode": mode.name(),
                "timing": percentiles(&mut times),
            }));
        }
    }
    println!(
        "{}",
        json!({
            "cpu": cpu_name(),
            "threads": rayon::current_num_threads(),
            "articles": store.article_count(),
            "paragraphs": store.chunk_count(),
            "runs": runs,
            "queries": rows,
        })
    );
    Ok(())
}

/// Lexical search speed on `paragraphs` synthetic paragraphs (Zipf-distributed words from a
/// 100,000-word vocabulary, 40–80 words each, 8 to an article), in lexical indexes of at most
/// 250,000 paragraphs each as a store's segments would hold them: the time to build them and
/// the median time of a top-10 search for two rare words and for a 25-word passage.
pub fn lexical(paragraphs: usize, queries: usize) -> Result<(), EngineError> {
    use crate::lexical::{self, Analysis, ArticleText, LexicalIndex, LexicalQuery, Unit};
    use rand::{Rng, SeedableRng};
    const VOCABULARY: usize = 100_000;
    const PER_SEGMENT: usize = 250_000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Words are letters from their rank ("w" + base 26), so none is a stop word or a plural.
    let word = |mut r: usize| {
        let mut w = String::from("w");
        loop {
            w.push((b'a' + (r % 26) as u8) as char);
            r /= 26;
            if r == 0 {
                return w;
            }
        }
    };
    let words: Vec<String> = (0..VOCABULARY).map(word).collect();
    let mut cumulative = Vec::with_capacity(VOCABULARY);
    let mut total = 0f64;
    for r in 0..VOCABULARY {
        total += 1.0 / ((r + 1) as f64).powf(1.07);
        cumulative.push(total);
    }
    let zipf = |rng: &mut rand::rngs::StdRng| {
        let x = rng.random::<f64>() * total;
        cumulative.partition_point(|&c| c < x).min(VOCABULARY - 1)
    };
    let dir = tempdir_in_temp("likewise-bench-lexical")?;
    let started = Instant::now();
    let mut indexes = Vec::new();
    let mut done = 0;
    while done < paragraphs {
        let n = PER_SEGMENT.min(paragraphs - done);
        let texts: Vec<String> = (0..n)
            .map(|_| {
                let len = rng.random_range(40..=80);
                (0..len)
                    .map(|_| words[zipf(&mut rng)].as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let articles: Vec<ArticleText> = texts
            .chunks(8)
            .map(|c| ArticleText {
                title: "",
                chunks: c.iter().map(String::as_str).collect(),
            })
            .collect();
        let name = format!("seg-{}.lex", indexes.len());
        lexical::build(&dir, &name, Analysis::CHOSEN, &articles)
            .map_err(|e| EngineError::Input(e.to_string()))?;
        indexes.push(
            LexicalIndex::open(
                &dir.join(&name),
                Analysis::CHOSEN,
                articles.len() as u64,
                n as u64,
            )
            .map_err(|e| EngineError::Input(e.to_string()))?,
        );
        done += n;
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = indexes.iter().map(LexicalIndex::disk_bytes).sum();
    let ixs: Vec<&LexicalIndex> = indexes.iter().collect();
    let mut rows = Vec::new();
    for what in ["two rare words", "25-word passage"] {
        for unit in [Unit::Paragraph, Unit::Article] {
            let mut ms = Vec::with_capacity(queries);
            for _ in 0..queries.max(1) {
                let text = if what == "two rare words" {
                    format!(
                        "{} {}",
                        words[rng.random_range(2_000..VOCABULARY)],
                        words[rng.random_range(2_000..VOCABULARY)]
                    )
                } else {
                    (0..25)
                        .map(|_| words[zipf(&mut rng)].as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let q = LexicalQuery::new(
                    &lexical::parse_query(&text).map_err(|e| EngineError::Input(e.to_string()))?,
                    Analysis::CHOSEN,
                );
                let t = Instant::now();
                let hits = lexical::top_k(&ixs, &q, unit, 10, &|_, _| true)
                    .map_err(|e| EngineError::Input(e.to_string()))?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(hits);
            }
            rows.push(json!({
                "query": what,
                "level": if unit == Unit::Paragraph { "paragraph" } else { "article" },
                "timing": percentiles(&mut ms),
            }));
        }
    }
    drop(ixs);
    drop(indexes);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        json!({
            "cpu": cpu_name(),
            "paragraphs": paragraphs,
            "segments": paragraphs.div_ceil(PER_SEGMENT),
            "build_seconds": (build_seconds * 100.0).round() / 100.0,
            "index_bytes": bytes,
            "bytes_per_paragraph": (bytes as f64 / paragraphs.max(1) as f64).round(),
            "queries": queries,
            "searches": rows,
        })
    );
    Ok(())
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
