//! Paragraph-by-paragraph alignment of two stored articles: what they share verbatim, what one
//! says in other words, and what each adds.
//!
//! Every paragraph of A is scored against every paragraph of B (cosine of the paragraph vectors,
//! and the share of word 3-grams of the shorter one found in the other). A pair is a **copy**
//! (3-gram overlap ≥ 0.5, as for `likewise dupes`) or a **paraphrase** (cosine ≥
//! `PARAPHRASE_COSINE`); each paragraph is matched to its best such partner on the other side, so
//! one paragraph may answer several. What matches nothing is unique to its side.

use crate::articles::{containment, normalized, paragraphs, shingles, words, Paragraph};
use crate::similarity::product;
use crate::store::{ArticleLoc, Store};
use serde::Serialize;

/// Cosine from which two paragraphs of related articles say the same thing in other words;
/// calibrated on the seeds' Rafah coverage and BBC News re-writes (docs/guide.md).
pub const PARAPHRASE_COSINE: f32 = 0.62;
/// Share of the shorter paragraph's word 3-grams found in the other for a copy.
pub const COPY_OVERLAP: f32 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Relation {
    /// Verbatim or near-verbatim.
    Shared,
    Paraphrased,
}

#[derive(Debug, Clone, Serialize)]
pub struct Match {
    pub relation: Relation,
    /// Paragraph numbers (0-based) in A and in B.
    pub a: u32,
    pub b: u32,
    pub score: f32,
    pub overlap: f32,
}

#[derive(Debug, Clone)]
pub struct Alignment {
    pub a: Vec<Paragraph>,
    pub b: Vec<Paragraph>,
    /// In A's order.
    pub matches: Vec<Match>,
    /// Paragraph numbers with no match, on each side.
    pub only_a: Vec<u32>,
    pub only_b: Vec<u32>,
}

pub fn compare(store: &Store, a: ArticleLoc, b: ArticleLoc) -> Alignment {
    let pa = paragraphs(store, a);
    let pb = paragraphs(store, b);
    align(pa, pb, store.manifest.model.dim)
}

pub fn align(pa: Vec<Paragraph>, pb: Vec<Paragraph>, dim: usize) -> Alignment {
    let va: Vec<f32> = pa.iter().flat_map(|p| p.vector.iter().copied()).collect();
    let vb: Vec<f32> = pb.iter().flat_map(|p| p.vector.iter().copied()).collect();
    let (m, n) = (pa.len(), pb.len());
    let mut sim = vec![0f32; m * n];
    product(&va, &vb, dim, &mut sim);
    let sa: Vec<_> = pa.iter().map(|p| shingles(&words(&p.text), 3)).collect();
    let sb: Vec<_> = pb.iter().map(|p| shingles(&words(&p.text), 3)).collect();
    let na: Vec<String> = pa.iter().map(|p| normalized(&p.text)).collect();
    let nb: Vec<String> = pb.iter().map(|p| normalized(&p.text)).collect();
    let mut candidates: Vec<(usize, usize, f32, f32, Relation)> = Vec::new();
    for i in 0..m {
        for j in 0..n {
            let score = sim[i * n + j];
            let overlap = if na[i] == nb[j] {
                1.0
            } else {
                containment(&sa[i], &sb[j])
            };
            let relation = if overlap >= COPY_OVERLAP {
                Relation::Shared
            } else if score >= PARAPHRASE_COSINE {
                Relation::Paraphrased
            } else {
                continue;
            };
            candidates.push((i, j, score, overlap, relation));
        }
    }
    // Each paragraph keeps its best partner on the other side (a copy before a paraphrase, then
    // the higher cosine); a pair chosen from either side is a match. Two paragraphs of A that
    // both restate one of B both show, and a paragraph is unique only when nothing matches it.
    let rank = |c: &(usize, usize, f32, f32, Relation)| ((c.4 == Relation::Shared) as u8, c.2);
    let better = |x: &(usize, usize, f32, f32, Relation),
                  y: &(usize, usize, f32, f32, Relation)| {
        let (rx, ry) = (rank(x), rank(y));
        rx.0 > ry.0 || (rx.0 == ry.0 && rx.1 > ry.1)
    };
    let mut best_a: Vec<Option<usize>> = vec![None; m];
    let mut best_b: Vec<Option<usize>> = vec![None; n];
    for (ci, c) in candidates.iter().enumerate() {
        if best_a[c.0].is_none_or(|o| better(c, &candidates[o])) {
            best_a[c.0] = Some(ci);
        }
        if best_b[c.1].is_none_or(|o| better(c, &candidates[o])) {
            best_b[c.1] = Some(ci);
        }
    }
    let mut chosen: Vec<usize> = best_a.iter().chain(&best_b).flatten().copied().collect();
    chosen.sort_unstable();
    chosen.dedup();
    let mut used_a = vec![false; m];
    let mut used_b = vec![false; n];
    let mut matches = Vec::new();
    for ci in chosen {
        let (i, j, score, overlap, relation) = candidates[ci];
        used_a[i] = true;
        used_b[j] = true;
        matches.push(Match {
            relation,
            a: pa[i].number,
            b: pb[j].number,
            score,
            overlap,
        });
    }
    matches.sort_by_key(|x| (x.a, x.b));
    let only_a = (0..m)
        .filter(|&i| !used_a[i])
        .map(|i| pa[i].number)
        .collect();
    let only_b = (0..n)
        .filter(|&j| !used_b[j])
        .map(|j| pb[j].number)
        .collect();
    Alignment {
        a: pa,
        b: pb,
        matches,
        only_a,
        only_b,
    }
}
