//! Exact nearest-neighbour search over a store: every live vector is scored, the best `k` kept.
//!
//! Stored vectors are unit length, so the dot product is the cosine similarity; scores are exact
//! (no approximation, no quantisation). Ties are broken by storage order, so results are
//! deterministic.

use crate::store::{ArticleLoc, Store};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A paragraph (chunk) that matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkHit {
    pub loc: ArticleLoc,
    /// Chunk index within the segment.
    pub chunk: usize,
    pub score: f32,
}

/// An article that matched, with the paragraph of it that matched best.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArticleHit {
    pub loc: ArticleLoc,
    pub score: f32,
    pub evidence: Option<ChunkHit>,
}

/// A predicate on articles, applied before scoring.
pub type ArticleFilter<'a> = &'a (dyn Fn(&Store, ArticleLoc) -> bool + Sync);

/// Options shared by both levels.
#[derive(Clone, Copy)]
pub struct SearchOptions<'a> {
    pub k: usize,
    pub min_score: Option<f32>,
    /// An article excluded from the results (the one a `--like` query starts from).
    pub exclude: Option<ArticleLoc>,
    pub filter: Option<ArticleFilter<'a>>,
}

/// Dot product of two equal-length vectors. Eight accumulators let the compiler keep several
/// vector registers busy instead of one serial chain of additions.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for j in 0..8 {
            acc[j] += a[i * 8 + j] * b[i * 8 + j];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

#[derive(PartialEq)]
struct Scored<T: PartialEq> {
    score: f32,
    order: (usize, usize),
    item: T,
}

impl<T: PartialEq> Eq for Scored<T> {}
impl<T: PartialEq> PartialOrd for Scored<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: PartialEq> Ord for Scored<T> {
    // Reversed, so the heap's top is the worst kept result: higher score is "less", and on equal
    // scores the later item is "greater" (dropped first).
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.order.cmp(&other.order))
    }
}

struct TopK<T: PartialEq> {
    k: usize,
    heap: BinaryHeap<Scored<T>>,
}

impl<T: PartialEq> TopK<T> {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }
    fn push(&mut self, score: f32, order: (usize, usize), item: T) {
        if self.k == 0 {
            return;
        }
        let candidate = Scored { score, order, item };
        if self.heap.len() < self.k {
            self.heap.push(candidate);
        } else if let Some(worst) = self.heap.peek() {
            if candidate < *worst {
                self.heap.pop();
                self.heap.push(candidate);
            }
        }
    }
    fn merge(mut self, other: TopK<T>) -> Self {
        for s in other.heap {
            self.push(s.score, s.order, s.item);
        }
        self
    }
    fn into_sorted(self) -> Vec<Scored<T>> {
        self.heap.into_sorted_vec()
    }
}

const BLOCK_ROWS: usize = 4096;

/// The `k` best articles for `query` by their article vectors, each with its best paragraph.
pub fn search_articles(store: &Store, query: &[f32], opts: &SearchOptions) -> Vec<ArticleHit> {
    let dim = store.manifest.model.dim;
    let top = store
        .segments
        .par_iter()
        .enumerate()
        .map(|(s, seg)| {
            let mut top = TopK::new(opts.k);
            for (a, v) in seg.article_vectors.chunks_exact(dim).enumerate() {
                let loc = ArticleLoc {
                    segment: s,
                    article: a,
                };
                if !seg.live[a] || Some(loc) == opts.exclude {
                    continue;
                }
                let score = dot(v, query);
                if opts.min_score.is_some_and(|m| score < m) {
                    continue;
                }
                if opts.filter.is_some_and(|f| !f(store, loc)) {
                    continue;
                }
                top.push(score, (s, a), loc);
            }
            top
        })
        .reduce(|| TopK::new(opts.k), TopK::merge);
    top.into_sorted()
        .into_iter()
        .map(|s| ArticleHit {
            loc: s.item,
            score: s.score,
            evidence: best_chunk(store, s.item, query),
        })
        .collect()
}

/// The `k` best paragraphs (chunks) for `query`.
pub fn search_paragraphs(store: &Store, query: &[f32], opts: &SearchOptions) -> Vec<ChunkHit> {
    let dim = store.manifest.model.dim;
    let blocks: Vec<(usize, usize)> = store
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| (0..seg.chunks.len().div_ceil(BLOCK_ROWS)).map(move |b| (s, b)))
        .collect();
    let top = blocks
        .par_iter()
        .map(|&(s, b)| {
            let seg = &store.segments[s];
            let mut top = TopK::new(opts.k);
            let start = b * BLOCK_ROWS;
            let end = (start + BLOCK_ROWS).min(seg.chunks.len());
            for c in start..end {
                let article = seg.chunks[c].article as usize;
                let loc = ArticleLoc {
                    segment: s,
                    article,
                };
                if !seg.live[article] || Some(loc) == opts.exclude {
                    continue;
                }
                let score = dot(&seg.chunk_vectors[c * dim..(c + 1) * dim], query);
                if opts.min_score.is_some_and(|m| score < m) {
                    continue;
                }
                if opts.filter.is_some_and(|f| !f(store, loc)) {
                    continue;
                }
                top.push(
                    score,
                    (s, c),
                    ChunkHit {
                        loc,
                        chunk: c,
                        score,
                    },
                );
            }
            top
        })
        .reduce(|| TopK::new(opts.k), TopK::merge);
    top.into_sorted().into_iter().map(|s| s.item).collect()
}

/// The paragraph of article `loc` closest to `query`.
pub fn best_chunk(store: &Store, loc: ArticleLoc, query: &[f32]) -> Option<ChunkHit> {
    let seg = &store.segments[loc.segment];
    let rec = &seg.articles[loc.article];
    (rec.chunk_start as usize..(rec.chunk_start + rec.chunk_count as u64) as usize)
        .map(|c| ChunkHit {
            loc,
            chunk: c,
            score: dot(seg.chunk_vector(c), query),
        })
        .max_by(|a, b| a.score.total_cmp(&b.score).then(b.chunk.cmp(&a.chunk)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }

    #[test]
    fn top_k_keeps_the_best_in_order() {
        let mut top = TopK::new(3);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.7, 0.3, 0.9].iter().enumerate() {
            top.push(*s, (0, i), i);
        }
        let items: Vec<usize> = top.into_sorted().into_iter().map(|s| s.item).collect();
        // 0.9 twice (the earlier first), then 0.7.
        assert_eq!(items, vec![1, 5, 3]);
    }
}
