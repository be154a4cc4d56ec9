//! Saved searches matched against new articles only (a "percolator"): the cost grows with the
//! new articles times the saved searches, never with the store.
//!
//! Each saved search is scored as `query` scores: the cosine of its passage's vector to the
//! article's vector (or, at paragraph level, to its best paragraph), and the BM25 of its words
//! with the whole store's statistics (looked up in the new articles' postings only), fused as
//! [`crate::hybrid::Fusion::CHOSEN`] fuses them. One thing differs, and must: `query` divides
//! BM25 by the best BM25 among its candidates, which a stream does not have; here it is divided
//! by the best BM25 the search has reached over the store (found when it was saved, raised as
//! better matches arrive), so a score means the same from one commit to the next. The search's
//! conditions (a phrase that must occur, a `-word` that must not) and filters hold as in `query`.

use crate::hybrid::{Fusion, Halves};
use crate::lexical::{self, LexicalError, LexicalQuery, Unit};
use crate::search::{dot, ArticleFilter};
use crate::similarity::product;
use crate::store::{ArticleLoc, Store};
use std::collections::HashMap;

/// One saved search, ready to run.
pub struct Percolation<'a> {
    pub vector: Option<&'a [f32]>,
    pub lexical: Option<&'a LexicalQuery>,
    pub halves: Halves,
    pub unit: Unit,
    /// Matches scored below this are dropped.
    pub min_score: f32,
    /// The BM25 a full match reaches (the best the search has reached over the store); the
    /// lexical half is divided by it, at most 1.
    pub best_lexical: f32,
    pub filter: Option<ArticleFilter<'a>>,
}

/// A new article a saved search matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub loc: ArticleLoc,
    /// The best chunk (the evidence shown with the alert).
    pub chunk: Option<usize>,
    pub score: f32,
    pub semantic: Option<f32>,
    pub lexical: Option<f32>,
}

/// Every match of every search among `new` articles of `store`, best first per search; also
/// the best BM25 each search reached among them (to raise its reference).
pub fn percolate(
    store: &Store,
    new: &[ArticleLoc],
    searches: &[Percolation],
) -> Result<(Vec<Vec<Match>>, Vec<f32>), LexicalError> {
    let dim = store.manifest.model.dim;
    let live: Vec<ArticleLoc> = new
        .iter()
        .copied()
        .filter(|l| store.segments[l.segment].live[l.article])
        .collect();
    let mut out = vec![Vec::new(); searches.len()];
    let mut best_seen = vec![0f32; searches.len()];
    if live.is_empty() || searches.is_empty() {
        return Ok((out, best_seen));
    }
    // The chunks of the new articles, and their vectors, for paragraph-level searches and for
    // each match's evidence.
    let chunks: Vec<(usize, usize)> = live
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            store.segments[l.segment]
                .article_chunks(l.article)
                .map(move |c| (i, c))
        })
        .collect();
    let mut chunk_vectors = Vec::with_capacity(chunks.len() * dim);
    for &(i, c) in &chunks {
        chunk_vectors.extend_from_slice(store.segments[live[i].segment].chunk_vector(c));
    }
    let mut article_vectors = Vec::with_capacity(live.len() * dim);
    for l in &live {
        article_vectors.extend_from_slice(store.segments[l.segment].article_vector(l.article));
    }
    // All semantic scores at once: searches × articles, searches × chunks.
    let with_vector: Vec<usize> = (0..searches.len())
        .filter(|&s| searches[s].vector.is_some() && searches[s].halves != Halves::LexicalOnly)
        .collect();
    let mut query_vectors = Vec::with_capacity(with_vector.len() * dim);
    for &s in &with_vector {
        query_vectors.extend_from_slice(searches[s].vector.expect("filtered"));
    }
    let mut article_cos = vec![0f32; with_vector.len() * live.len()];
    product(&query_vectors, &article_vectors, dim, &mut article_cos);
    let mut chunk_cos = vec![0f32; with_vector.len() * chunks.len()];
    product(&query_vectors, &chunk_vectors, dim, &mut chunk_cos);
    let row_of: HashMap<usize, usize> = with_vector
        .iter()
        .enumerate()
        .map(|(r, &s)| (s, r))
        .collect();

    // The lexical indexes of the segments that hold new articles: conditions and scores are
    // looked up there only; statistics are the whole store's.
    let all = store.lexical_indexes();
    let segs: Vec<usize> = all.iter().map(|(s, _)| *s).collect();
    let ixs: Vec<&lexical::LexicalIndex> = all.iter().map(|(_, ix)| *ix).collect();
    let index_of: HashMap<usize, usize> = segs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let new_segments: Vec<usize> = {
        let mut v: Vec<usize> = live.iter().map(|l| l.segment).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let local: Vec<&lexical::LexicalIndex> = new_segments
        .iter()
        .filter_map(|s| index_of.get(s).map(|&i| ixs[i]))
        .collect();
    let local_of: HashMap<usize, usize> = new_segments
        .iter()
        .filter(|s| index_of.contains_key(s))
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let article_docs: Vec<(usize, u32)> = live
        .iter()
        .filter_map(|l| index_of.get(&l.segment).map(|&i| (i, l.article as u32)))
        .collect();
    let article_doc_of: HashMap<usize, usize> = live
        .iter()
        .enumerate()
        .filter(|(_, l)| index_of.contains_key(&l.segment))
        .enumerate()
        .map(|(d, (i, _))| (i, d))
        .collect();
    let chunk_docs: Vec<(usize, u32)> = chunks
        .iter()
        .filter_map(|&(i, c)| index_of.get(&live[i].segment).map(|&x| (x, c as u32)))
        .collect();
    let chunk_doc_of: HashMap<usize, usize> = chunks
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| index_of.contains_key(&live[*i].segment))
        .enumerate()
        .map(|(d, (n, _))| (n, d))
        .collect();

    for (s, search) in searches.iter().enumerate() {
        let lexq = search
            .lexical
            .filter(|q| !ixs.is_empty() && search.halves != Halves::SemanticOnly && q.has_words());
        // Conditions, per new segment and unit.
        let passes: Option<Vec<Vec<bool>>> = match search.lexical {
            Some(q) if q.has_conditions() && !local.is_empty() => {
                Some(lexical::conditions(&local, q, search.unit)?)
            }
            _ => None,
        };
        let passes_unit = |seg: usize, unit: usize| match (&passes, local_of.get(&seg)) {
            (Some(p), Some(&i)) => p[i].get(unit).copied().unwrap_or(false),
            _ => true,
        };
        let (lex_articles, lex_chunks) = match lexq {
            Some(q) => (
                if search.unit == Unit::Article {
                    lexical::scores_of(&ixs, q, Unit::Article, &article_docs)?
                } else {
                    Vec::new()
                },
                lexical::scores_of(&ixs, q, Unit::Paragraph, &chunk_docs)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let row = row_of.get(&s).copied();
        let mut found = Vec::new();
        let mut n = 0;
        for (i, &loc) in live.iter().enumerate() {
            let own_chunks = {
                let start = n;
                while n < chunks.len() && chunks[n].0 == i {
                    n += 1;
                }
                start..n
            };
            if search.filter.is_some_and(|f| !f(store, loc)) {
                continue;
            }
            let chunk_sem = |c: usize| row.map(|r| chunk_cos[r * chunks.len() + c]);
            let chunk_lex =
                |c: usize| lexq.map(|_| chunk_doc_of.get(&c).map_or(0.0, |&d| lex_chunks[d]));
            let (sem, lex, chunk) = match search.unit {
                Unit::Article => {
                    if !passes_unit(loc.segment, loc.article) {
                        continue;
                    }
                    let sem = row.map(|r| article_cos[r * live.len() + i]);
                    let lex =
                        lexq.map(|_| article_doc_of.get(&i).map_or(0.0, |&d| lex_articles[d]));
                    // Evidence: the paragraph that scores best on both halves.
                    let chunk = own_chunks.clone().max_by(|&a, &b| {
                        let score =
                            |c| fused(search, chunk_sem(c), chunk_lex(c), search.best_lexical);
                        score(a).total_cmp(&score(b)).then(b.cmp(&a))
                    });
                    (sem, lex, chunk.map(|c| chunks[c].1))
                }
                Unit::Paragraph => {
                    let best = own_chunks
                        .clone()
                        .filter(|&c| passes_unit(loc.segment, chunks[c].1))
                        .map(|c| {
                            let (sem, lex) = (chunk_sem(c), chunk_lex(c));
                            (c, sem, lex, fused(search, sem, lex, search.best_lexical))
                        })
                        .max_by(|a, b| a.3.total_cmp(&b.3).then(b.0.cmp(&a.0)));
                    let Some((c, sem, lex, _)) = best else {
                        continue;
                    };
                    (sem, lex, Some(chunks[c].1))
                }
            };
            if let Some(l) = lex {
                best_seen[s] = best_seen[s].max(l);
            }
            // A lexical search needs its words; so do a search's phrases in any mode.
            if search.halves == Halves::LexicalOnly && lex.is_none_or(|l| l <= 0.0) {
                continue;
            }
            let score = fused(search, sem, lex, search.best_lexical.max(best_seen[s]));
            if score >= search.min_score {
                found.push(Match {
                    loc,
                    chunk,
                    score,
                    semantic: sem,
                    lexical: lex,
                });
            }
        }
        found.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.loc.segment, a.loc.article).cmp(&(b.loc.segment, b.loc.article)))
        });
        out[s] = found;
    }
    Ok((out, best_seen))
}

/// The score `query` would give, the lexical half divided by `best_lexical`.
fn fused(search: &Percolation, sem: Option<f32>, lex: Option<f32>, best_lexical: f32) -> f32 {
    match search.halves {
        Halves::SemanticOnly => sem.unwrap_or(0.0),
        Halves::LexicalOnly => lex.unwrap_or(0.0),
        Halves::Both => {
            let Fusion::Convex { semantic_weight } = Fusion::CHOSEN else {
                unreachable!("the chosen fusion is convex")
            };
            let normalised = match (lex, best_lexical > 0.0) {
                (Some(l), true) => (l / best_lexical).min(1.0),
                _ => 0.0,
            };
            semantic_weight * sem.unwrap_or(0.0) + (1.0 - semantic_weight) * normalised
        }
    }
}

/// The cosine of two stored articles (for telling copies apart among matches).
pub fn article_cosine(store: &Store, a: ArticleLoc, b: ArticleLoc) -> f32 {
    dot(
        store.segments[a.segment].article_vector(a.article),
        store.segments[b.segment].article_vector(b.article),
    )
}
