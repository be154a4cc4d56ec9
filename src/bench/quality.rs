//! Quality on labelled data: ways of making article vectors, story pairs against people's
//! judgements, topic clusters against folders, and how well the map keeps neighbours.

use crate::articles::ArticleTable;
use crate::engine::EngineError;
use crate::index::{lead_text, mean_vector};
use crate::model::Embedder;
use crate::search::dot;
use crate::store::Store;
use crate::text;
use serde_json::json;
use std::io::BufRead;
use std::path::Path;
use std::time::Instant;

use super::*;

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
