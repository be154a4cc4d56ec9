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
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

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
    // Semantic scores at once: searches × articles; searches at paragraph level × chunks.
    let with_vector: Vec<usize> = (0..searches.len())
        .filter(|&s| searches[s].vector.is_some() && searches[s].halves != Halves::LexicalOnly)
        .collect();
    let mut query_vectors = Vec::with_capacity(with_vector.len() * dim);
    for &s in &with_vector {
        query_vectors.extend_from_slice(searches[s].vector.expect("filtered"));
    }
    let mut article_cos = vec![0f32; with_vector.len() * live.len()];
    product(&query_vectors, &article_vectors, dim, &mut article_cos);
    let row_of: HashMap<usize, usize> = with_vector
        .iter()
        .enumerate()
        .map(|(r, &s)| (s, r))
        .collect();
    let by_paragraph: Vec<usize> = with_vector
        .iter()
        .copied()
        .filter(|&s| searches[s].unit == Unit::Paragraph)
        .collect();
    let mut paragraph_vectors = Vec::with_capacity(by_paragraph.len() * dim);
    for &s in &by_paragraph {
        paragraph_vectors.extend_from_slice(searches[s].vector.expect("filtered"));
    }
    let mut chunk_cos = vec![0f32; by_paragraph.len() * chunks.len()];
    product(&paragraph_vectors, &chunk_vectors, dim, &mut chunk_cos);
    let paragraph_row_of: HashMap<usize, usize> = by_paragraph
        .iter()
        .enumerate()
        .map(|(r, &s)| (s, r))
        .collect();

    // Every word the new articles hold (as the index analyses them): a search none of whose
    // words is among them scores 0 on words everywhere, and its postings are not looked up.
    let analysis = searches
        .iter()
        .find_map(|s| s.lexical.map(LexicalQuery::analysis))
        .unwrap_or(lexical::Analysis::CHOSEN);
    let new_words: HashSet<String> = live
        .par_iter()
        .map(|l| {
            let seg = &store.segments[l.segment];
            // One text per article: the analyser is made once per call.
            let mut text = seg.articles[l.article].title.clone();
            for c in seg.article_chunks(l.article) {
                text.push('\n');
                text.push_str(&seg.chunk_text(c));
            }
            analysis
                .words(&text)
                .into_iter()
                .map(|w| w.1)
                .collect::<HashSet<String>>()
        })
        .reduce(HashSet::new, |mut a, b| {
            a.extend(b);
            a
        });

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
    // Each new article's chunks: a range of `chunks`.
    let mut own_chunks = vec![0..0; live.len()];
    {
        let mut n = 0;
        for (i, range) in own_chunks.iter_mut().enumerate() {
            let start = n;
            while n < chunks.len() && chunks[n].0 == i {
                n += 1;
            }
            *range = start..n;
        }
    }
    let chunk_doc = |c: usize| -> Option<(usize, u32)> {
        index_of
            .get(&live[chunks[c].0].segment)
            .map(|&x| (x, chunks[c].1 as u32))
    };

    let per_search = |s: usize| -> Result<(Vec<Match>, f32), LexicalError> {
        let search = &searches[s];
        let mut best_seen = 0f32;
        let mentioned = search
            .lexical
            .is_some_and(|q| q.marked_words().iter().any(|w| new_words.contains(w)));
        let lexq = search
            .lexical
            .filter(|q| !ixs.is_empty() && search.halves != Halves::SemanticOnly && q.has_words());
        if search.halves == Halves::LexicalOnly && !mentioned {
            return Ok((Vec::new(), 0.0));
        }
        let row = row_of.get(&s).copied();
        if search.halves == Halves::Both && !mentioned {
            // Words score 0: the best it can reach is its cosine's share.
            let Fusion::Convex { semantic_weight } = Fusion::CHOSEN else {
                unreachable!("the chosen fusion is convex")
            };
            let best_cos = row.map_or(0.0, |r| {
                article_cos[r * live.len()..(r + 1) * live.len()]
                    .iter()
                    .copied()
                    .fold(f32::MIN, f32::max)
            });
            let best_chunk = paragraph_row_of.get(&s).map_or(f32::MIN, |&r| {
                chunk_cos[r * chunks.len()..(r + 1) * chunks.len()]
                    .iter()
                    .copied()
                    .fold(f32::MIN, f32::max)
            });
            if semantic_weight * best_cos.max(best_chunk) < search.min_score {
                return Ok((Vec::new(), 0.0));
            }
        }
        let lexq = lexq.filter(|_| mentioned);
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
        let lex_articles = match lexq {
            Some(q) if search.unit == Unit::Article => {
                lexical::scores_of(&ixs, q, Unit::Article, &article_docs)?
            }
            _ => Vec::new(),
        };
        let chunk_lex_all: HashMap<usize, f32> = match lexq {
            Some(q) if search.unit == Unit::Paragraph => {
                let wanted: Vec<(usize, usize, u32)> = (0..chunks.len())
                    .filter_map(|c| chunk_doc(c).map(|(x, u)| (c, x, u)))
                    .collect();
                let docs: Vec<(usize, u32)> = wanted.iter().map(|w| (w.1, w.2)).collect();
                let scores = lexical::scores_of(&ixs, q, Unit::Paragraph, &docs)?;
                wanted.iter().map(|w| w.0).zip(scores).collect()
            }
            _ => HashMap::new(),
        };
        let mut found = Vec::new();
        for (i, &loc) in live.iter().enumerate() {
            if search.filter.is_some_and(|f| !f(store, loc)) {
                continue;
            }
            let (sem, lex, chunk) = match search.unit {
                Unit::Article => {
                    if !passes_unit(loc.segment, loc.article) {
                        continue;
                    }
                    let sem = row.map(|r| article_cos[r * live.len() + i]);
                    let lex =
                        lexq.map(|_| article_doc_of.get(&i).map_or(0.0, |&d| lex_articles[d]));
                    (sem, lex, None)
                }
                Unit::Paragraph => {
                    let best = own_chunks[i]
                        .clone()
                        .filter(|&c| passes_unit(loc.segment, chunks[c].1))
                        .map(|c| {
                            let sem = paragraph_row_of
                                .get(&s)
                                .map(|&r| chunk_cos[r * chunks.len() + c]);
                            let lex = lexq.map(|_| chunk_lex_all.get(&c).copied().unwrap_or(0.0));
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
                best_seen = best_seen.max(l);
            }
            // A lexical search needs its words.
            if search.halves == Halves::LexicalOnly && lex.is_none_or(|l| l <= 0.0) {
                continue;
            }
            found.push(Match {
                loc,
                chunk,
                score: 0.0,
                semantic: sem,
                lexical: lex,
            });
        }
        // Scored once the best BM25 among the new articles is known.
        let reference = search.best_lexical.max(best_seen);
        for m in &mut found {
            m.score = fused(search, m.semantic, m.lexical, reference);
        }
        found.retain(|m| m.score >= search.min_score);
        // Article level: the evidence, the paragraph that scores best on both halves (looked
        // up for the matches only).
        if search.unit == Unit::Article {
            let wanted: Vec<(usize, usize, u32)> = found
                .iter()
                .flat_map(|m| {
                    let i = live
                        .iter()
                        .position(|l| *l == m.loc)
                        .expect("a new article");
                    own_chunks[i].clone()
                })
                .filter_map(|c| chunk_doc(c).map(|(x, u)| (c, x, u)))
                .collect();
            let chunk_lex: HashMap<usize, f32> = match lexq {
                Some(q) if !wanted.is_empty() => {
                    let docs: Vec<(usize, u32)> = wanted.iter().map(|w| (w.1, w.2)).collect();
                    let scores = lexical::scores_of(&ixs, q, Unit::Paragraph, &docs)?;
                    wanted.iter().map(|w| w.0).zip(scores).collect()
                }
                _ => HashMap::new(),
            };
            let best_chunk_lex = chunk_lex.values().copied().fold(0f32, f32::max);
            for m in &mut found {
                let i = live
                    .iter()
                    .position(|l| *l == m.loc)
                    .expect("a new article");
                let seg = &store.segments[m.loc.segment];
                m.chunk = own_chunks[i]
                    .clone()
                    .max_by(|&a, &b| {
                        let score = |c: usize| {
                            let sem = search.vector.map(|v| dot(v, seg.chunk_vector(chunks[c].1)));
                            let lex = lexq.map(|_| chunk_lex.get(&c).copied().unwrap_or(0.0));
                            fused(search, sem, lex, best_chunk_lex)
                        };
                        score(a).total_cmp(&score(b)).then(b.cmp(&a))
                    })
                    .map(|c| chunks[c].1);
            }
        }
        found.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then((a.loc.segment, a.loc.article).cmp(&(b.loc.segment, b.loc.article)))
        });
        Ok((found, best_seen))
    };
    let results: Vec<(Vec<Match>, f32)> = (0..searches.len())
        .into_par_iter()
        .map(per_search)
        .collect::<Result<_, _>>()?;
    for (s, (found, best)) in results.into_iter().enumerate() {
        out[s] = found;
        best_seen[s] = best;
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
