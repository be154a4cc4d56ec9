//! Measures search modes and fusions on judged queries, as docs/benchmarks.md reports them.
//!
//! Keyword queries (names, surnames, quotation pieces; one JSON object per line with `kind`,
//! `query` and `relevant`: article paths without extension, e.g. `politics/168`):
//!
//!     cargo run --release --example hybrid_eval -- keywords STORE QUERIES.jsonl
//!
//! Story pairs (passage queries: each article of a pair judged the same story, `overall` ≤ 2,
//! searches for the other one in a store of every pair's articles, indexed from the JSONL that
//! `stories-jsonl` writes):
//!
//!     cargo run --release --example hybrid_eval -- stories-jsonl PAIRS.jsonl > pairs-articles.jsonl
//!     likewise --index STORE index pairs-articles.jsonl
//!     cargo run --release --example hybrid_eval -- stories STORE PAIRS.jsonl
//!
//! Lexical search alone with each analysis (stems or not, stop words or not), its indexes built
//! afresh in a temporary folder from the store's text:
//!
//!     cargo run --release --example hybrid_eval -- analysis STORE QUERIES.jsonl
//!
//! Each prints recall@10 and MRR (first relevant hit within 10) per mode and fusion, per kind.

use likewise::engine::{Engine, ModelSpec};
use likewise::hybrid::{self, Fusion, Halves, HybridQuery};
use likewise::lexical::{
    self, parse_query, Analysis, ArticleText, LexicalIndex, LexicalQuery, Unit,
};
use likewise::search::SearchOptions;
use likewise::store::Store;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

struct Case {
    kind: String,
    query: String,
    relevant: HashSet<String>,
    /// A key to leave out of the results (the query's own article).
    exclude: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("stories-jsonl") => stories_jsonl(Path::new(&args[1])),
        Some("keywords") => run(Path::new(&args[1]), keyword_cases(Path::new(&args[2]))?),
        Some("stories") => run(Path::new(&args[1]), story_cases(Path::new(&args[2]))?),
        Some("analysis") => analyses(Path::new(&args[1]), keyword_cases(Path::new(&args[2]))?),
        _ => {
            anyhow::bail!("usage: hybrid_eval keywords|stories STORE FILE, or stories-jsonl PAIRS")
        }
    }
}

fn lines(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    std::fs::read_to_string(path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

fn keyword_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    Ok(lines(path)?
        .into_iter()
        .map(|v| Case {
            kind: v["kind"].as_str().unwrap_or("").to_string(),
            query: v["query"].as_str().unwrap_or("").to_string(),
            relevant: v["relevant"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(String::from))
                .collect(),
            exclude: None,
        })
        .collect())
}

fn story_id(pair: &serde_json::Value, side: &str) -> String {
    format!("{}-{side}", pair["pair_id"].as_str().unwrap_or(""))
}

fn stories_jsonl(path: &Path) -> anyhow::Result<()> {
    for pair in lines(path)? {
        for side in ["a", "b"] {
            let text = pair[side]["text"].as_str().unwrap_or("");
            println!(
                "{}",
                serde_json::json!({"id": story_id(&pair, side), "text": text})
            );
        }
    }
    Ok(())
}

fn story_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let mut out = Vec::new();
    for pair in lines(path)? {
        if pair["overall"].as_f64().unwrap_or(4.0) > 2.0 {
            continue;
        }
        for (from, to) in [("a", "b"), ("b", "a")] {
            out.push(Case {
                kind: "passage".into(),
                query: pair[from]["text"].as_str().unwrap_or("").to_string(),
                relevant: [story_id(&pair, to)].into_iter().collect(),
                exclude: Some(story_id(&pair, from)),
            });
        }
    }
    Ok(out)
}

/// The relevance name of a stored article: its id, or its path below the corpus folder without
/// extension (`…/politics/168.txt` → `politics/168`).
fn name_of(store: &Store, loc: likewise::store::ArticleLoc) -> String {
    let key = &store.article(loc).key;
    let stem = key.strip_suffix(".txt").unwrap_or(key);
    let parts: Vec<&str> = stem.rsplitn(3, '/').collect();
    match parts.as_slice() {
        [file, topic, ..] => format!("{topic}/{file}"),
        _ => stem.to_string(),
    }
}

fn run(store_dir: &Path, cases: Vec<Case>) -> anyhow::Result<()> {
    let engine = Engine::new(store_dir, ModelSpec::default());
    let store = engine.store()?;
    let texts: Vec<String> = cases
        .iter()
        .map(|c| parse_query(&c.query).map(|s| s.passage))
        .collect::<Result<_, _>>()?;
    eprintln!("embedding {} queries", texts.len());
    let vectors = engine.embed_passages(&texts)?;
    let runs: Vec<(String, Halves, Fusion)> = {
        let mut r = vec![
            ("semantic".to_string(), Halves::SemanticOnly, Fusion::CHOSEN),
            ("lexical".to_string(), Halves::LexicalOnly, Fusion::CHOSEN),
        ];
        for w in [0.2f32, 0.3, 0.4, 0.5, 0.6, 0.7] {
            r.push((
                format!("convex w={w}"),
                Halves::Both,
                Fusion::Convex { semantic_weight: w },
            ));
        }
        for k in [10f32, 60.0] {
            r.push((format!("rrf k={k}"), Halves::Both, Fusion::Rrf { k }));
        }
        r
    };
    println!("| run | kind | queries | recall@10 | MRR |");
    println!("|---|---|---|---|---|");
    for (name, halves, fusion) in runs {
        let mut per_kind = Tallies::new();
        for (case, vector) in cases.iter().zip(&vectors) {
            let syntax = parse_query(&case.query)?;
            let words = LexicalQuery::new(&syntax, Analysis::CHOSEN);
            let exclude = case.exclude.as_ref().and_then(|k| store.find_key(k));
            let opts = SearchOptions {
                k: 10,
                min_score: None,
                exclude,
                filter: None,
                compact: None,
            };
            let q = HybridQuery {
                vector: Some(vector),
                lexical: Some(&words),
                halves,
                fusion,
            };
            let hits = hybrid::search(&store, &q, Unit::Article, &opts)?;
            let names: Vec<String> = hits.iter().map(|h| name_of(&store, h.loc)).collect();
            tally(&mut per_kind, case, &names);
        }
        print_rows(&name, per_kind);
    }
    Ok(())
}

/// Per kind (and "all"): queries, summed recall@10, summed reciprocal rank.
type Tallies = BTreeMap<String, (usize, f64, f64)>;

/// Counts one query's hits (`names`, best first) under its kind and under "all".
fn tally(per_kind: &mut Tallies, case: &Case, names: &[String]) {
    let (recall, rr) = score(names, case);
    for kind in [case.kind.clone(), "all".to_string()] {
        let e = per_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += recall;
        e.2 += rr;
    }
}

fn print_rows(name: &str, per_kind: Tallies) {
    for (kind, (n, recall, rr)) in per_kind {
        println!(
            "| {name} | {kind} | {n} | {:.3} | {:.3} |",
            recall / n as f64,
            rr / n as f64
        );
    }
}

fn score(names: &[String], case: &Case) -> (f64, f64) {
    let found = case.relevant.iter().filter(|r| names.contains(r)).count();
    let recall = found as f64 / case.relevant.len().max(1) as f64;
    let rr = names
        .iter()
        .position(|n| case.relevant.contains(n))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);
    (recall, rr)
}

fn analyses(store_dir: &Path, cases: Vec<Case>) -> anyhow::Result<()> {
    let engine = Engine::new(store_dir, ModelSpec::default());
    let store = engine.store()?;
    let tmp = std::env::temp_dir().join(format!("likewise-analysis-{}", std::process::id()));
    println!("| analysis | kind | queries | recall@10 | MRR |");
    println!("|---|---|---|---|---|");
    use likewise::lexical::Stemming;
    for stem in [Stemming::Snowball, Stemming::Plurals, Stemming::None] {
        for stop_words in [true, false] {
            let analysis = Analysis { stem, stop_words };
            std::fs::create_dir_all(&tmp)?;
            let mut indexes: Vec<LexicalIndex> = Vec::new();
            for (s, seg) in store.segments.iter().enumerate() {
                let owned: Vec<(String, Vec<String>)> = (0..seg.articles.len())
                    .map(|a| {
                        let chunks = seg
                            .article_chunks(a)
                            .map(|c| seg.chunk_text(c).into_owned());
                        (seg.articles[a].title.clone(), chunks.collect())
                    })
                    .collect();
                let texts: Vec<ArticleText> = owned
                    .iter()
                    .map(|(t, c)| ArticleText {
                        title: t,
                        chunks: c.iter().map(String::as_str).collect(),
                    })
                    .collect();
                let name = format!("{s}.lex");
                lexical::build(&tmp, &name, analysis, &texts)?;
                indexes.push(LexicalIndex::open(
                    &tmp.join(&name),
                    analysis,
                    seg.articles.len() as u64,
                    seg.chunk_count() as u64,
                )?);
            }
            let ixs: Vec<&LexicalIndex> = indexes.iter().collect();
            let mut per_kind = Tallies::new();
            for case in &cases {
                let q = LexicalQuery::new(&parse_query(&case.query)?, analysis);
                let hits = lexical::top_k(&ixs, &q, Unit::Article, 10, &|i, a| {
                    store.segments[i].live[a as usize]
                })?;
                let names: Vec<String> = hits
                    .iter()
                    .map(|h| {
                        name_of(
                            &store,
                            likewise::store::ArticleLoc {
                                segment: h.index,
                                article: h.unit as usize,
                            },
                        )
                    })
                    .collect();
                tally(&mut per_kind, case, &names);
            }
            print_rows(&analysis.name(), per_kind);
            drop(indexes);
            std::fs::remove_dir_all(&tmp)?;
        }
    }
    Ok(())
}
