//! Duplicate coverage in tiers, at the article and the paragraph level.
//!
//! - **exact**: the same text after collapsing whitespace and lower-casing (headline and body for
//!   articles).
//! - **near-copy**: verbatim copying with edits — a new headline, a changed figure, a paragraph
//!   added or cut. Judged lexically: at least half of the shorter text's word n-grams (5-grams
//!   for articles, 3-grams for paragraphs) appear in the other, and the vectors agree.
//! - **rewrite**: the same facts reworded: vectors very close, little shared wording.
//!
//! Candidates come from the vectors (pairs above the lowest cosine threshold, found block by
//! block, see [`crate::similarity::pairs_above`]); the lexical test runs only on them, so all
//! pairs are never materialised. The thresholds were calibrated on BBC News (docs/benchmarks.md, "Duplicate
//! coverage").
//!
//! Paragraph pairs inside two articles already paired as exact or near-copies are not listed
//! again: the article pair says it. Paragraphs under `min_paragraph_words` words (bylines, "Reuters",
//! team sheets' headers) are not compared.

use crate::articles::{containment, normalized, paragraphs, shingles, words, ArticleTable};
use crate::similarity::pairs_above;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    Exact,
    NearCopy,
    Rewrite,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Exact => "exact",
            Tier::NearCopy => "near-copy",
            Tier::Rewrite => "rewrite",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Article,
    Paragraph,
}

/// Thresholds of the tiers; the defaults are calibrated for all-MiniLM-L6-v2 on news.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Share of the shorter article's word 5-grams found in the other.
    pub article_overlap: f32,
    pub article_copy_cosine: f32,
    pub article_rewrite_cosine: f32,
    /// Share of the shorter paragraph's word 3-grams found in the other.
    pub paragraph_overlap: f32,
    pub paragraph_copy_cosine: f32,
    pub paragraph_rewrite_cosine: f32,
    pub min_paragraph_words: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            article_overlap: 0.5,
            article_copy_cosine: 0.88,
            article_rewrite_cosine: 0.93,
            paragraph_overlap: 0.5,
            paragraph_copy_cosine: 0.85,
            paragraph_rewrite_cosine: 0.92,
            min_paragraph_words: 8,
        }
    }
}

/// One side of a pair: an article row of the table, and a paragraph number at paragraph level.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub article: usize,
    pub paragraph: Option<u32>,
    pub text: Option<String>,
}

impl Side {
    /// A whole article (article level).
    pub fn article(article: usize) -> Side {
        Side {
            article,
            paragraph: None,
            text: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DupePair {
    pub tier: Tier,
    pub level: Level,
    /// Cosine similarity of the two vectors.
    pub score: f32,
    /// Share of the shorter side's word n-grams found in the other.
    pub overlap: f32,
    pub a: Side,
    pub b: Side,
}

/// Identical groups of more members than this are reported as pairs with their first member
/// only, not every pair (boilerplate repeated in hundreds of articles).
const ALL_PAIRS_UP_TO: usize = 10;

fn group_pairs(members: &[usize]) -> Vec<(usize, usize)> {
    if members.len() <= ALL_PAIRS_UP_TO {
        let mut out = Vec::new();
        for x in 0..members.len() {
            for y in x + 1..members.len() {
                out.push((members[x], members[y]));
            }
        }
        out
    } else {
        members[1..].iter().map(|&m| (members[0], m)).collect()
    }
}

/// Article-level pairs, best tier first, then by score.
pub fn article_pairs(table: &ArticleTable, t: &Thresholds) -> Vec<DupePair> {
    let n = table.len();
    let texts: Vec<(String, Vec<String>)> = (0..n)
        .map(|i| {
            let body: Vec<String> = table.paragraphs(i).into_iter().map(|p| p.text).collect();
            let full = normalized(&format!("{}\n{}", table.record(i).title, body.join("\n")));
            (full, words(&body.join("\n")))
        })
        .collect();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (full, _)) in texts.iter().enumerate() {
        groups.entry(full.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut group_list: Vec<&Vec<usize>> = groups.values().filter(|g| g.len() > 1).collect();
    group_list.sort();
    for g in group_list {
        for (a, b) in group_pairs(g) {
            out.push(DupePair {
                tier: Tier::Exact,
                level: Level::Article,
                score: crate::search::dot(table.vector(a), table.vector(b)),
                overlap: 1.0,
                a: Side::article(a),
                b: Side::article(b),
            });
        }
    }
    let floor = t.article_copy_cosine.min(t.article_rewrite_cosine);
    let mut shingle_cache: HashMap<usize, HashSet<u64>> = HashMap::new();
    for p in pairs_above(&table.vectors, table.dim, floor) {
        let (a, b) = (p.a as usize, p.b as usize);
        if texts[a].0 == texts[b].0 {
            continue;
        }
        for i in [a, b] {
            shingle_cache
                .entry(i)
                .or_insert_with(|| shingles(&texts[i].1, 5));
        }
        let overlap = containment(&shingle_cache[&a], &shingle_cache[&b]);
        let tier = if overlap >= t.article_overlap && p.score >= t.article_copy_cosine {
            Tier::NearCopy
        } else if p.score >= t.article_rewrite_cosine {
            Tier::Rewrite
        } else {
            continue;
        };
        out.push(DupePair {
            tier,
            level: Level::Article,
            score: p.score,
            overlap,
            a: Side::article(a),
            b: Side::article(b),
        });
    }
    sort_pairs(&mut out);
    out
}

/// The tier of one article pair found elsewhere (a similarity join on Spark), judged exactly as
/// [`article_pairs`] judges the pairs it finds: `title` and `paragraphs` of each side, and the
/// cosine of their vectors. `None` when the pair is similar but in no tier. Returns the tier and
/// the share of the shorter side's word 5-grams found in the other.
pub fn article_tier(
    a: (&str, &[String]),
    b: (&str, &[String]),
    score: f32,
    t: &Thresholds,
) -> Option<(Tier, f32)> {
    let full =
        |(title, body): (&str, &[String])| normalized(&format!("{title}\n{}", body.join("\n")));
    if full(a) == full(b) {
        return Some((Tier::Exact, 1.0));
    }
    let overlap = containment(
        &shingles(&words(&a.1.join("\n")), 5),
        &shingles(&words(&b.1.join("\n")), 5),
    );
    if overlap >= t.article_overlap && score >= t.article_copy_cosine {
        Some((Tier::NearCopy, overlap))
    } else if score >= t.article_rewrite_cosine {
        Some((Tier::Rewrite, overlap))
    } else {
        None
    }
}

fn sort_pairs(out: &mut [DupePair]) {
    out.sort_by(|x, y| {
        x.tier.cmp(&y.tier).then(y.score.total_cmp(&x.score)).then(
            (x.a.article, x.a.paragraph, x.b.article).cmp(&(
                y.a.article,
                y.a.paragraph,
                y.b.article,
            )),
        )
    });
}

/// Paragraph-level pairs between different articles, leaving out those inside article pairs
/// already tiered exact or near-copy (`copied_articles`).
pub fn paragraph_pairs(
    table: &ArticleTable,
    t: &Thresholds,
    copied_articles: &HashSet<(usize, usize)>,
) -> Vec<DupePair> {
    struct Row {
        article: usize,
        number: u32,
        text: String,
        norm: String,
        words: Vec<String>,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut vectors: Vec<f32> = Vec::new();
    for i in 0..table.len() {
        for p in paragraphs(table.store, table.locs[i]) {
            let w = words(&p.text);
            if w.len() < t.min_paragraph_words {
                continue;
            }
            vectors.extend_from_slice(&p.vector);
            rows.push(Row {
                article: i,
                number: p.number,
                norm: normalized(&p.text),
                text: p.text,
                words: w,
            });
        }
    }
    let copied = |a: usize, b: usize| copied_articles.contains(&(a.min(b), a.max(b)));
    let side = |r: &Row| Side {
        article: r.article,
        paragraph: Some(r.number),
        text: Some(r.text.clone()),
    };
    let mut out = Vec::new();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        groups.entry(r.norm.as_str()).or_default().push(i);
    }
    let mut group_list: Vec<Vec<usize>> = groups
        .values()
        .map(|g| {
            // One member per article: a paragraph repeated inside one article is stored once.
            let mut seen_articles = HashSet::new();
            g.iter()
                .copied()
                .filter(|&i| seen_articles.insert(rows[i].article))
                .collect::<Vec<_>>()
        })
        .filter(|g| g.len() > 1)
        .collect();
    group_list.sort();
    for g in group_list {
        for (x, y) in group_pairs(&g) {
            let (ra, rb) = (&rows[x], &rows[y]);
            if copied(ra.article, rb.article) {
                continue;
            }
            out.push(DupePair {
                tier: Tier::Exact,
                level: Level::Paragraph,
                score: crate::search::dot(
                    &vectors[x * table.dim..(x + 1) * table.dim],
                    &vectors[y * table.dim..(y + 1) * table.dim],
                ),
                overlap: 1.0,
                a: side(ra),
                b: side(rb),
            });
        }
    }
    let floor = t.paragraph_copy_cosine.min(t.paragraph_rewrite_cosine);
    let mut shingle_cache: HashMap<usize, HashSet<u64>> = HashMap::new();
    for p in pairs_above(&vectors, table.dim, floor) {
        let (x, y) = (p.a as usize, p.b as usize);
        let (ra, rb) = (&rows[x], &rows[y]);
        if ra.article == rb.article || ra.norm == rb.norm || copied(ra.article, rb.article) {
            continue;
        }
        for i in [x, y] {
            shingle_cache
                .entry(i)
                .or_insert_with(|| shingles(&rows[i].words, 3));
        }
        let overlap = containment(&shingle_cache[&x], &shingle_cache[&y]);
        let tier = if overlap >= t.paragraph_overlap && p.score >= t.paragraph_copy_cosine {
            Tier::NearCopy
        } else if p.score >= t.paragraph_rewrite_cosine {
            Tier::Rewrite
        } else {
            continue;
        };
        out.push(DupePair {
            tier,
            level: Level::Paragraph,
            score: p.score,
            overlap,
            a: side(ra),
            b: side(rb),
        });
    }
    sort_pairs(&mut out);
    out
}

/// The article pairs tiered exact or near-copy, as (smaller row, larger row).
pub fn copied_article_set(pairs: &[DupePair]) -> HashSet<(usize, usize)> {
    pairs
        .iter()
        .filter(|p| p.level == Level::Article && p.tier <= Tier::NearCopy)
        .map(|p| (p.a.article.min(p.b.article), p.a.article.max(p.b.article)))
        .collect()
}
