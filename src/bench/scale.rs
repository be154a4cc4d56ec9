//! Search at scale on synthetic stores: top-k latency and recall per layout, appends, and a
//! distributed job's commit of millions of articles.

use crate::engine::EngineError;
use crate::search::dot;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

use super::*;

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
