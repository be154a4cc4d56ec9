//! Hybrid and lexical search: what words add to a passage query, and the lexical index alone
//! on synthetic paragraphs.

use crate::engine::EngineError;
use serde_json::json;
use std::time::Instant;

use super::*;

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
