//! `likewise cluster`, `dupes` and `compare`: rendering the research analyses of the library
//! ([`crate::cluster`], [`crate::dupes`], [`crate::compare`]) as tables or JSON.

use super::{display_path, find_article, shorten, CliError, Format};
use crate::articles::ArticleTable;
use crate::cluster::{self, Grouping, DEFAULT_STORY_THRESHOLD};
use crate::compare::{self, Relation};
use crate::dupes::{self, DupePair, Thresholds, Tier};
use crate::store::{ArticleLoc, Store};
use clap::{Args, ValueEnum};
use serde_json::json;
use std::io::Write;
use std::time::Instant;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// Broad subjects (k-means; k chosen by silhouette unless --k).
    Topic,
    /// Coverage of the same event (average linkage cut at --threshold).
    Story,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[arg(long, value_enum, default_value_t = By::Topic)]
    pub by: By,
    /// Number of topics (default: chosen by silhouette).
    #[arg(long)]
    pub k: Option<usize>,
    /// Stories: the mean cosine two groups need to merge (default 0.84 for all-MiniLM-L6-v2).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Keywords per cluster.
    #[arg(long, default_value_t = 6)]
    pub keywords: usize,
    /// Members listed per cluster in the table (JSON lists all).
    #[arg(long, default_value_t = 5)]
    pub show: usize,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DupeLevel {
    Article,
    Paragraph,
    Both,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TierArg {
    Exact,
    NearCopy,
    Rewrite,
}

#[derive(Args, Debug)]
pub struct DupesArgs {
    #[arg(long, value_enum, default_value_t = DupeLevel::Both)]
    pub level: DupeLevel,
    /// Only these tiers (repeatable; default: all).
    #[arg(long, value_enum)]
    pub tier: Vec<TierArg>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// An indexed article: its path, id, file name or `folder/name` without extension.
    pub a: String,
    /// The article compared with A.
    pub b: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// `{"path": …}` or `{"id": …}` (and both when an id came from a file), with the title.
pub fn article_ref(store: &Store, loc: ArticleLoc) -> serde_json::Value {
    let rec = store.article(loc);
    let mut v = json!({});
    match &rec.file {
        Some(f) if *f == rec.key => v["path"] = json!(display_path(f, &store.base)),
        Some(f) => {
            v["id"] = json!(rec.key);
            v["path"] = json!(display_path(f, &store.base));
        }
        None => v["id"] = json!(rec.key),
    }
    v["title"] = json!(rec.title);
    v
}

fn place(v: &serde_json::Value) -> String {
    v["path"]
        .as_str()
        .or(v["id"].as_str())
        .unwrap_or("")
        .to_string()
}

pub fn cmd_cluster(store: &Store, args: &ClusterArgs) -> Result<i32, CliError> {
    if args.by == By::Story && args.k.is_some() {
        return Err(CliError::Other(
            "--k sets the number of topics; stories are cut by --threshold".into(),
        ));
    }
    if args.k == Some(0) {
        return Err(CliError::Other("--k must be at least 1".into()));
    }
    if let Some(t) = args.threshold {
        if args.by == By::Topic {
            return Err(CliError::Other(
                "--threshold applies to --by story; topics take --k".into(),
            ));
        }
        if !(-1.0..=1.0).contains(&t) {
            return Err(CliError::Other(
                "--threshold is a cosine, between -1 and 1".into(),
            ));
        }
    }
    let started = Instant::now();
    let table = ArticleTable::new(store);
    let grouping = match args.by {
        By::Topic => cluster::topics(&table, args.k),
        By::Story => cluster::stories(&table, args.threshold.unwrap_or(DEFAULT_STORY_THRESHOLD)),
    };
    let clusters = cluster::label(&table, &grouping, args.keywords);
    let outliers: Vec<usize> = (0..table.len())
        .filter(|&i| grouping.assignment[i].is_none())
        .collect();
    eprintln!(
        "likewise: {} articles in {} {} clusters ({}), {} outliers, in {:.2} s",
        table.len(),
        clusters.len(),
        match args.by {
            By::Topic => "topic",
            By::Story => "story",
        },
        grouping.how,
        outliers.len(),
        started.elapsed().as_secs_f64()
    );
    let member = |i: usize, score: Option<f32>| {
        let mut v = article_ref(store, table.locs[i]);
        if let Some(s) = score {
            v["score"] = json!(s);
        }
        if let Some(d) = &table.record(i).meta.date {
            v["date"] = json!(d);
        }
        v
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json | Format::Jsonl => {
            let clusters_json: Vec<serde_json::Value> = clusters
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "id": c.id,
                        "label": c.label,
                        "keywords": c.keywords,
                        "size": c.size,
                        "members": c.members.iter().map(|&(i, s)| member(i, Some(s))).collect::<Vec<_>>(),
                    });
                    if let Some((a, b)) = &c.dates {
                        v["dates"] = json!({"from": a, "to": b});
                    }
                    v
                })
                .collect();
            let outliers_json: Vec<serde_json::Value> =
                outliers.iter().map(|&i| member(i, None)).collect();
            if args.format == Format::Json {
                let doc = json!({
                    "by": match args.by { By::Topic => "topic", By::Story => "story" },
                    "method": grouping.how,
                    "clusters": clusters_json,
                    "outliers": outliers_json,
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))?;
            } else {
                for c in clusters_json {
                    writeln!(out, "{c}")?;
                }
                for o in outliers_json {
                    writeln!(out, "{}", json!({"outlier": o}))?;
                }
            }
        }
        Format::Table => {
            if clusters.is_empty() {
                writeln!(out, "no clusters")?;
            }
            for c in &clusters {
                let dates = c
                    .dates
                    .as_ref()
                    .map(|(a, b)| {
                        if a == b {
                            format!("  [{a}]")
                        } else {
                            format!("  [{a} … {b}]")
                        }
                    })
                    .unwrap_or_default();
                writeln!(
                    out,
                    "#{:<3} {:>5} articles  {}{}",
                    c.id,
                    c.size,
                    shorten(&c.label, 80),
                    dates
                )?;
                writeln!(out, "      keywords: {}", c.keywords.join(", "))?;
                for &(i, s) in c.members.iter().take(args.show) {
                    let m = member(i, None);
                    writeln!(
                        out,
                        "      {:.3}  {}  {}",
                        s,
                        shorten(&place(&m), 50),
                        shorten(&table.record(i).title, 60)
                    )?;
                }
                if c.members.len() > args.show {
                    writeln!(out, "      … {} more", c.members.len() - args.show)?;
                }
            }
            if !outliers.is_empty() {
                writeln!(out, "outliers ({}):", outliers.len())?;
                for &i in outliers.iter().take(args.show.max(10)) {
                    let m = member(i, None);
                    writeln!(
                        out,
                        "      {}  {}",
                        shorten(&place(&m), 50),
                        shorten(&table.record(i).title, 60)
                    )?;
                }
                if outliers.len() > args.show.max(10) {
                    writeln!(
                        out,
                        "      … {} more (--format json lists all)",
                        outliers.len() - args.show.max(10)
                    )?;
                }
            }
        }
    }
    Ok(super::exit::SUCCESS)
}

pub fn cmd_dupes(store: &Store, args: &DupesArgs) -> Result<i32, CliError> {
    let started = Instant::now();
    let table = ArticleTable::new(store);
    let t = Thresholds::default();
    let articles = dupes::article_pairs(&table, &t);
    let mut pairs: Vec<DupePair> = Vec::new();
    if args.level != DupeLevel::Paragraph {
        pairs.extend(articles.iter().cloned());
    }
    if args.level != DupeLevel::Article {
        let copied = dupes::copied_article_set(&articles);
        pairs.extend(dupes::paragraph_pairs(&table, &t, &copied));
    }
    if !args.tier.is_empty() {
        pairs.retain(|p| {
            args.tier.iter().any(|t| {
                matches!(
                    (t, p.tier),
                    (TierArg::Exact, Tier::Exact)
                        | (TierArg::NearCopy, Tier::NearCopy)
                        | (TierArg::Rewrite, Tier::Rewrite)
                )
            })
        });
    }
    let count = |level: dupes::Level, tier: Tier| {
        pairs
            .iter()
            .filter(|p| p.level == level && p.tier == tier)
            .count()
    };
    eprintln!(
        "likewise: {} articles; article pairs: {} exact, {} near-copy, {} rewrite; paragraph pairs: {} exact, {} near-copy, {} rewrite; in {:.2} s",
        table.len(),
        count(dupes::Level::Article, Tier::Exact),
        count(dupes::Level::Article, Tier::NearCopy),
        count(dupes::Level::Article, Tier::Rewrite),
        count(dupes::Level::Paragraph, Tier::Exact),
        count(dupes::Level::Paragraph, Tier::NearCopy),
        count(dupes::Level::Paragraph, Tier::Rewrite),
        started.elapsed().as_secs_f64()
    );
    let side = |s: &dupes::Side| {
        let mut v = article_ref(store, table.locs[s.article]);
        if let Some(p) = s.paragraph {
            v["paragraph"] = json!(p);
        }
        if let Some(t) = &s.text {
            v["text"] = json!(t);
        }
        v
    };
    let pair_json = |p: &DupePair| {
        json!({
            "tier": p.tier.name(),
            "level": match p.level { dupes::Level::Article => "article", dupes::Level::Paragraph => "paragraph" },
            "score": p.score,
            "overlap": p.overlap,
            "a": side(&p.a),
            "b": side(&p.b),
        })
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let doc = json!({"pairs": pairs.iter().map(pair_json).collect::<Vec<_>>()});
            writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))?;
        }
        Format::Jsonl => {
            for p in &pairs {
                writeln!(out, "{}", pair_json(p))?;
            }
        }
        Format::Table => {
            if pairs.is_empty() {
                writeln!(out, "no duplicates")?;
            }
            for p in &pairs {
                let (a, b) = (side(&p.a), side(&p.b));
                let at = |v: &serde_json::Value| match v["paragraph"].as_u64() {
                    Some(n) => format!("{} ¶{n}", place(v)),
                    None => place(v),
                };
                writeln!(
                    out,
                    "{:<9} {:<9} {:.3}  overlap {:.2}  {}  ⟷  {}",
                    p.tier.name(),
                    match p.level {
                        dupes::Level::Article => "article",
                        dupes::Level::Paragraph => "paragraph",
                    },
                    p.score,
                    p.overlap,
                    shorten(&at(&a), 45),
                    shorten(&at(&b), 45)
                )?;
                match p.level {
                    dupes::Level::Article => {
                        writeln!(
                            out,
                            "          {}  ⟷  {}",
                            shorten(a["title"].as_str().unwrap_or(""), 55),
                            shorten(b["title"].as_str().unwrap_or(""), 55)
                        )?;
                    }
                    dupes::Level::Paragraph => {
                        writeln!(
                            out,
                            "          “{}”",
                            shorten(a["text"].as_str().unwrap_or(""), 110)
                        )?;
                        if p.tier != Tier::Exact {
                            writeln!(
                                out,
                                "          “{}”",
                                shorten(b["text"].as_str().unwrap_or(""), 110)
                            )?;
                        }
                    }
                }
            }
        }
    }
    Ok(super::exit::SUCCESS)
}

pub fn cmd_compare(store: &Store, args: &CompareArgs) -> Result<i32, CliError> {
    let a = find_article(store, &args.a)?;
    let b = find_article(store, &args.b)?;
    let al = compare::compare(store, a, b);
    let text_of = |ps: &[crate::articles::Paragraph], n: u32| {
        ps.iter()
            .find(|p| p.number == n)
            .map(|p| p.text.clone())
            .unwrap_or_default()
    };
    let shared = al
        .matches
        .iter()
        .filter(|m| m.relation == Relation::Shared)
        .count();
    let para = al.matches.len() - shared;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json | Format::Jsonl => {
            let doc = json!({
                "a": article_ref(store, a),
                "b": article_ref(store, b),
                "matches": al.matches.iter().map(|m| json!({
                    "relation": m.relation,
                    "a": {"paragraph": m.a, "text": text_of(&al.a, m.a)},
                    "b": {"paragraph": m.b, "text": text_of(&al.b, m.b)},
                    "score": m.score,
                    "overlap": m.overlap,
                })).collect::<Vec<_>>(),
                "only_a": al.only_a.iter().map(|&n| json!({"paragraph": n, "text": text_of(&al.a, n)})).collect::<Vec<_>>(),
                "only_b": al.only_b.iter().map(|&n| json!({"paragraph": n, "text": text_of(&al.b, n)})).collect::<Vec<_>>(),
            });
            if args.format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json"))?;
            } else {
                writeln!(out, "{doc}")?;
            }
        }
        Format::Table => {
            let (ra, rb) = (article_ref(store, a), article_ref(store, b));
            writeln!(
                out,
                "A  {}  {}",
                shorten(&place(&ra), 60),
                shorten(ra["title"].as_str().unwrap_or(""), 60)
            )?;
            writeln!(
                out,
                "B  {}  {}",
                shorten(&place(&rb), 60),
                shorten(rb["title"].as_str().unwrap_or(""), 60)
            )?;
            writeln!(
                out,
                "{} shared, {} paraphrased; {} of A's {} paragraphs only in A, {} of B's {} only in B",
                shared,
                para,
                al.only_a.len(),
                al.a.len(),
                al.only_b.len(),
                al.b.len()
            )?;
            writeln!(out)?;
            for m in &al.matches {
                let rel = match m.relation {
                    Relation::Shared => "shared",
                    Relation::Paraphrased => "paraphrased",
                };
                writeln!(
                    out,
                    "{rel:<11} A¶{:<3} B¶{:<3} {:.3}  overlap {:.2}",
                    m.a, m.b, m.score, m.overlap
                )?;
                writeln!(out, "    A “{}”", shorten(&text_of(&al.a, m.a), 110))?;
                if m.relation != Relation::Shared || m.overlap < 1.0 {
                    writeln!(out, "    B “{}”", shorten(&text_of(&al.b, m.b), 110))?;
                }
            }
            for (side, only, ps) in [("A", &al.only_a, &al.a), ("B", &al.only_b, &al.b)] {
                if only.is_empty() {
                    continue;
                }
                writeln!(out, "\nonly in {side}:")?;
                for &n in only.iter() {
                    writeln!(out, "  {side}¶{:<3} “{}”", n, shorten(&text_of(ps, n), 120))?;
                }
            }
        }
    }
    Ok(super::exit::SUCCESS)
}

/// `likewise bench cluster`: NMI of the topic clusters of the store against labels taken from
/// each article's folder name (e.g. `bbc/business/001.txt` → `business`), with k = the number of
/// labels and with k chosen automatically; outliers count as one more cluster of their own.
pub fn bench_cluster(store: &Store, story_threshold: f32) -> Result<i32, CliError> {
    let table = ArticleTable::new(store);
    let labels: Vec<String> = (0..table.len())
        .map(|i| {
            let rec = table.record(i);
            let key = rec.file.as_deref().unwrap_or(&rec.key);
            std::path::Path::new(key)
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let n_labels = labels
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len();
    if table.len() < 3 || n_labels < 2 {
        return Err(CliError::Other(
            "bench cluster needs a store of articles in at least two labelled folders (e.g. bbc/<topic>/NNN.txt)".into(),
        ));
    }
    let score = |g: &Grouping| {
        let predicted: Vec<i64> = g
            .assignment
            .iter()
            .map(|c| c.map(|c| c as i64).unwrap_or(-1))
            .collect();
        let outliers = predicted.iter().filter(|&&c| c < 0).count();
        (cluster::nmi(&labels, &predicted), outliers)
    };
    let mut rows = Vec::new();
    for (name, k) in [
        (format!("topics, --k {n_labels}"), Some(n_labels)),
        ("topics, no parameter".to_string(), None),
    ] {
        let started = Instant::now();
        let g = cluster::topics(&table, k);
        let labelled = cluster::label(&table, &g, 6);
        let secs = started.elapsed().as_secs_f64();
        let (nmi, outliers) = score(&g);
        rows.push(json!({
            "run": name, "clusters": labelled.len(), "nmi": (nmi * 1000.0).round() / 10.0,
            "outliers": outliers, "outlier_share": outliers as f64 / table.len() as f64,
            "seconds": secs, "method": g.how,
        }));
    }
    let started = Instant::now();
    let g = cluster::stories(&table, story_threshold);
    let labelled = cluster::label(&table, &g, 6);
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
    let doc = json!({"articles": table.len(), "labels": n_labels, "nmi": "arithmetic-mean normalised mutual information ×100, outliers as one extra cluster", "runs": rows});
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(super::exit::SUCCESS)
}
