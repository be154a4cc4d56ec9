//! Hybrid search: the semantic ranking (cosine of sentence-transformer vectors, [`crate::search`])
//! and the lexical one (BM25 of words, [`crate::lexical`]) fused into one.
//!
//! Both halves see the same candidates: the metadata filters, deleted articles, the `--like`
//! article and the query's conditions (a quoted phrase must occur, a `-word` must not) are
//! applied before either half scores, never after. Each half proposes its best
//! [`CANDIDATES`]; every candidate is then scored by both — its exact cosine and its BM25 score
//! (0 when no word matches), each half's rank when that half proposed it — and the two scores
//! are combined by [`Fusion`]. Ties go to storage order, so results are deterministic.
//!
//! Semantic mode is exactly [`crate::search`]'s ranking (its conditions aside); lexical mode
//! ranks by BM25 alone and needs no model.

use crate::lexical::{self, LexicalHit, LexicalIndex, LexicalQuery, Unit};
use crate::search::{self, dot, SearchOptions};
use crate::store::{ArticleLoc, Store};
use rayon::prelude::*;
use std::collections::HashMap;

/// How many candidates each half proposes before fusion: enough that a document ranked well by
/// one half and badly by the other is still weighed by both.
pub const CANDIDATES: usize = 100;

/// How the two rankings become one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// `semantic_weight × cosine + (1 − semantic_weight) × BM25 / best BM25 of the query`.
    Convex { semantic_weight: f32 },
    /// Reciprocal-rank fusion: `Σ 1 / (k + rank)` over the halves that ranked the document.
    Rrf { k: f32 },
}

impl Fusion {
    /// Chosen on the BBC keyword queries and on passages of the story pairs (docs/benchmarks.md):
    /// 0.4 and 0.5 tie on passages; 0.4 is better on names and quotations and further from the
    /// weights where they start to fall (0.6); reciprocal-rank fusion loses a third of the MRR.
    pub const CHOSEN: Fusion = Fusion::Convex {
        semantic_weight: 0.4,
    };
}

/// A half's verdict on one hit: its score and its rank in that half (1-based; `None` when it
/// ranked past the candidates that half proposed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HalfScore {
    pub score: f32,
    pub rank: Option<usize>,
}

/// One fused hit: an article (with its best chunk) or a chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedHit {
    pub loc: ArticleLoc,
    /// The chunk: the hit itself at paragraph level, the best one of the article at article level.
    pub chunk: Option<usize>,
    pub score: f32,
    pub semantic: Option<HalfScore>,
    pub lexical: Option<HalfScore>,
    /// Article level: the best chunk's own fused score.
    pub chunk_score: Option<f32>,
}

/// Which halves run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halves {
    Both,
    SemanticOnly,
    LexicalOnly,
}

/// A query for [`search`].
pub struct HybridQuery<'a> {
    pub vector: Option<&'a [f32]>,
    pub lexical: Option<&'a LexicalQuery>,
    pub halves: Halves,
    pub fusion: Fusion,
}

/// A document's place: (segment, unit), unit being an article or a chunk index in its segment.
type Key = (usize, usize);

/// The store's lexical indexes and, for each, its segment.
fn indexes(store: &Store) -> (Vec<usize>, Vec<&LexicalIndex>) {
    store.lexical_indexes().into_iter().unzip()
}

/// Article-level or paragraph-level hybrid search.
pub fn search(
    store: &Store,
    query: &HybridQuery,
    unit: Unit,
    opts: &SearchOptions,
) -> Result<Vec<FusedHit>, lexical::LexicalError> {
    let (segs, ixs) = indexes(store);
    let lexq = query.lexical.filter(|_| !ixs.is_empty());
    // The conditions, per segment and unit (None: the segment has no lexical index, or the
    // query has no conditions — everything passes).
    let mut passes: Vec<Option<Vec<bool>>> = vec![None; store.segments.len()];
    if let Some(q) = lexq.filter(|q| q.has_conditions()) {
        for (i, p) in lexical::conditions(&ixs, q, unit)?.into_iter().enumerate() {
            passes[segs[i]] = Some(p);
        }
    }
    let article_ok = |loc: ArticleLoc| -> bool {
        let seg = &store.segments[loc.segment];
        seg.live[loc.article]
            && Some(loc) != opts.exclude
            && opts.filter.is_none_or(|f| f(store, loc))
    };
    let passes_unit = |s: usize, u: usize| passes[s].as_ref().is_none_or(|p| p[u]);
    let unit_article = |s: usize, u: usize| match unit {
        Unit::Article => u,
        Unit::Paragraph => store.segments[s].chunk(u).article as usize,
    };
    let keep = |s: usize, u: usize| {
        passes_unit(s, u)
            && article_ok(ArticleLoc {
                segment: s,
                article: unit_article(s, u),
            })
    };
    let vector_of = |s: usize, u: usize| -> &[f32] {
        match unit {
            Unit::Article => store.segments[s].article_vector(u),
            Unit::Paragraph => store.segments[s].chunk_vector(u),
        }
    };

    // The semantic half's candidates, best first.
    let mut semantic: Vec<(Key, f32)> = Vec::new();
    if let (Some(v), true) = (query.vector, query.halves != Halves::LexicalOnly) {
        let wanted = match query.halves {
            Halves::SemanticOnly => opts.k,
            _ => opts.k.max(CANDIDATES),
        };
        let conditioned = passes.iter().any(Option::is_some);
        semantic = match (unit, conditioned) {
            (Unit::Article, _) => {
                let filter = |st: &Store, loc: ArticleLoc| {
                    passes_unit(loc.segment, loc.article) && opts.filter.is_none_or(|f| f(st, loc))
                };
                let o = SearchOptions {
                    k: wanted,
                    filter: Some(&filter),
                    min_score: if query.halves == Halves::SemanticOnly {
                        opts.min_score
                    } else {
                        None
                    },
                    ..*opts
                };
                search::search_articles(store, v, &o)
                    .into_iter()
                    .map(|h| ((h.loc.segment, h.loc.article), h.score))
                    .collect()
            }
            (Unit::Paragraph, false) => {
                let o = SearchOptions {
                    k: wanted,
                    min_score: if query.halves == Halves::SemanticOnly {
                        opts.min_score
                    } else {
                        None
                    },
                    ..*opts
                };
                search::search_paragraphs(store, v, &o)
                    .into_iter()
                    .map(|h| ((h.loc.segment, h.chunk), h.score))
                    .collect()
            }
            // Chunks that pass the conditions, scored one by one: exact, and the conditions
            // usually leave few.
            (Unit::Paragraph, true) => {
                let mut all: Vec<(Key, f32)> = (0..store.segments.len())
                    .into_par_iter()
                    .flat_map_iter(|s| {
                        (0..store.segments[s].chunk_count())
                            .filter(move |&c| keep(s, c))
                            .map(move |c| ((s, c), dot(vector_of(s, c), v)))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                sort_keyed(&mut all);
                all.truncate(wanted);
                all
            }
        };
        if query.halves == Halves::SemanticOnly {
            if let Some(floor) = opts.min_score {
                semantic.retain(|(_, s)| *s >= floor);
            }
        }
    }

    // The lexical half's candidates, best first.
    let mut lexical_hits: Vec<LexicalHit> = Vec::new();
    if let (Some(q), true) = (lexq, query.halves != Halves::SemanticOnly) {
        let wanted = match query.halves {
            Halves::LexicalOnly => opts.k,
            _ => opts.k.max(CANDIDATES),
        };
        lexical_hits = lexical::top_k(&ixs, q, unit, wanted, &|i, u| keep(segs[i], u as usize))?;
    }
    let lexical_rank: HashMap<Key, (usize, f32)> = lexical_hits
        .iter()
        .enumerate()
        .map(|(r, h)| ((segs[h.index], h.unit as usize), (r + 1, h.score)))
        .collect();
    let semantic_rank: HashMap<Key, (usize, f32)> = semantic
        .iter()
        .enumerate()
        .map(|(r, (key, s))| (*key, (r + 1, *s)))
        .collect();
    let best_lexical = lexical_hits.first().map_or(0.0, |h| h.score);

    // Candidates: the best of each half, in a fixed order.
    let mut candidates: Vec<Key> = Vec::new();
    match query.halves {
        Halves::SemanticOnly => candidates.extend(semantic.iter().map(|(k, _)| *k)),
        Halves::LexicalOnly => candidates.extend(
            lexical_hits
                .iter()
                .take(opts.k)
                .map(|h| (segs[h.index], h.unit as usize)),
        ),
        Halves::Both => {
            candidates.extend(semantic.iter().map(|(k, _)| *k));
            candidates.extend(
                lexical_hits
                    .iter()
                    .take(opts.k.max(CANDIDATES))
                    .map(|h| (segs[h.index], h.unit as usize)),
            );
            candidates.sort_unstable();
            candidates.dedup();
        }
    }

    // The lexical scores of the semantic candidates the lexical half did not propose.
    let index_of: HashMap<usize, usize> = segs.iter().enumerate().map(|(i, &s)| (s, i)).collect();
    let mut lexical_rank = lexical_rank;
    if let (Some(q), Halves::Both) = (lexq, query.halves) {
        let missing: Vec<(usize, u32)> = candidates
            .iter()
            .filter(|k| !lexical_rank.contains_key(k))
            .filter_map(|k| index_of.get(&k.0).map(|&i| (i, k.1 as u32)))
            .collect();
        for (w, score) in missing
            .iter()
            .zip(lexical::scores_of(&ixs, q, unit, &missing)?)
        {
            lexical_rank.insert((segs[w.0], w.1 as usize), (0, score));
        }
    }
    let mut fused: Vec<(Key, f32, Option<HalfScore>, Option<HalfScore>)> = candidates
        .into_iter()
        .map(|key| {
            let sem = match (query.halves, query.vector) {
                (Halves::LexicalOnly, _) | (_, None) => None,
                (_, Some(v)) => Some(HalfScore {
                    score: semantic_rank
                        .get(&key)
                        .map_or_else(|| dot(vector_of(key.0, key.1), v), |x| x.1),
                    rank: semantic_rank.get(&key).map(|x| x.0),
                }),
            };
            let lex = match query.halves {
                Halves::SemanticOnly => None,
                _ if lexq.is_none() => None,
                _ => Some(HalfScore {
                    score: lexical_rank.get(&key).map_or(0.0, |x| x.1),
                    rank: lexical_rank.get(&key).map(|x| x.0).filter(|&r| r > 0),
                }),
            };
            let score = match query.halves {
                Halves::SemanticOnly => sem.map_or(0.0, |s| s.score),
                Halves::LexicalOnly => lex.map_or(0.0, |l| l.score),
                Halves::Both => fuse(query.fusion, sem, lex, best_lexical),
            };
            (key, score, sem, lex)
        })
        .collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if query.halves != Halves::SemanticOnly {
        if let Some(floor) = opts.min_score {
            fused.retain(|f| f.1 >= floor);
        }
    }
    fused.truncate(opts.k);

    // Article level: each article's best chunk, judged by both halves.
    let mut out = Vec::with_capacity(fused.len());
    let chunk_scores = match (unit, lexq, query.halves) {
        (Unit::Article, Some(q), Halves::Both | Halves::LexicalOnly) => {
            // Every chunk of the hits, scored as paragraphs. Article-level conditions say
            // nothing of single chunks: any chunk of a passing article may be its evidence.
            let chunks: Vec<(usize, u32)> = fused
                .iter()
                .filter_map(|f| {
                    let i = *index_of.get(&f.0 .0)?;
                    let seg = &store.segments[f.0 .0];
                    Some(seg.article_chunks(f.0 .1).map(move |c| (i, c as u32)))
                })
                .flatten()
                .collect();
            let scores = lexical::scores_of(&ixs, q, Unit::Paragraph, &chunks)?;
            Some(
                chunks
                    .iter()
                    .zip(scores)
                    .map(|(c, s)| ((segs[c.0], c.1 as usize), s))
                    .collect::<HashMap<Key, f32>>(),
            )
        }
        _ => None,
    };
    // The best paragraph score among every hit's paragraphs: paragraph scores stay comparable
    // from hit to hit.
    let best_chunk_lex = chunk_scores
        .as_ref()
        .map_or(0.0, |m| m.values().copied().fold(0f32, f32::max));
    for (key, score, sem, lex) in fused {
        let (loc, chunk, chunk_score) = match unit {
            Unit::Paragraph => (
                ArticleLoc {
                    segment: key.0,
                    article: store.segments[key.0].chunk(key.1).article as usize,
                },
                Some(key.1),
                None,
            ),
            Unit::Article => {
                let loc = ArticleLoc {
                    segment: key.0,
                    article: key.1,
                };
                let best = best_chunk(store, loc, query, chunk_scores.as_ref(), best_chunk_lex);
                (loc, best.map(|b| b.0), best.map(|b| b.1))
            }
        };
        out.push(FusedHit {
            loc,
            chunk,
            score,
            semantic: sem,
            lexical: lex,
            chunk_score,
        });
    }
    Ok(out)
}

/// The chunk of `loc` that both halves like best, with its fused score.
fn best_chunk(
    store: &Store,
    loc: ArticleLoc,
    query: &HybridQuery,
    lexical_scores: Option<&HashMap<Key, f32>>,
    best_lex: f32,
) -> Option<(usize, f32)> {
    let seg = &store.segments[loc.segment];
    let chunks = seg.article_chunks(loc.article);
    let lex = |c: usize| {
        lexical_scores
            .and_then(|m| m.get(&(loc.segment, c)).copied())
            .unwrap_or(0.0)
    };

    chunks
        .map(|c| {
            let sem = query.vector.map(|v| HalfScore {
                score: dot(seg.chunk_vector(c), v),
                rank: None,
            });
            let l = (lexical_scores.is_some()).then(|| HalfScore {
                score: lex(c),
                rank: None,
            });
            let score = match (query.halves, lexical_scores) {
                (Halves::LexicalOnly, _) => lex(c),
                (_, None) => sem.map_or(0.0, |s| s.score),
                (Halves::Both, Some(_)) => fuse(query.fusion, sem, l, best_lex),
                (Halves::SemanticOnly, _) => sem.map_or(0.0, |s| s.score),
            };
            (c, score)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// The fused score of a document from its two halves' verdicts.
pub fn fuse(
    fusion: Fusion,
    semantic: Option<HalfScore>,
    lexical: Option<HalfScore>,
    best_lexical: f32,
) -> f32 {
    match fusion {
        Fusion::Convex { semantic_weight } => {
            let sem = semantic.map_or(0.0, |s| s.score);
            let lex = match lexical {
                Some(l) if best_lexical > 0.0 => l.score / best_lexical,
                _ => 0.0,
            };
            semantic_weight * sem + (1.0 - semantic_weight) * lex
        }
        Fusion::Rrf { k } => {
            let part =
                |h: Option<HalfScore>| h.and_then(|h| h.rank).map_or(0.0, |r| 1.0 / (k + r as f32));
            part(semantic) + part(lexical)
        }
    }
}

fn sort_keyed(v: &mut [(Key, f32)]) {
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convex_fusion_weighs_both_halves() {
        let h = |score, rank| {
            Some(HalfScore {
                score,
                rank: Some(rank),
            })
        };
        let f = Fusion::Convex {
            semantic_weight: 0.5,
        };
        assert_eq!(fuse(f, h(0.8, 1), h(10.0, 1), 10.0), 0.9);
        assert_eq!(fuse(f, h(0.8, 1), None, 10.0), 0.4);
        // No lexical match anywhere: the semantic half alone orders the hits.
        assert_eq!(fuse(f, h(0.6, 1), h(0.0, 1), 0.0), 0.3);
        let r = Fusion::Rrf { k: 60.0 };
        assert!((fuse(r, h(0.1, 1), h(1.0, 2), 1.0) - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert!(
            (fuse(
                r,
                h(0.1, 1),
                Some(HalfScore {
                    score: 0.0,
                    rank: None
                }),
                1.0
            ) - 1.0 / 61.0)
                .abs()
                < 1e-7
        );
    }
}
