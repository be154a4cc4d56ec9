//! Exact nearest-neighbour search over a store: every allowed vector is scored, the best `k` kept.
//!
//! Stored vectors are unit length, so the dot product is the cosine similarity; scores are exact
//! (no approximation, no quantisation). Ties are broken by storage order, so results are
//! deterministic. Vectors are read in place from the memory-mapped segments, in blocks scored by
//! an AVX-512 kernel when the CPU has one, on all threads; deleted, excluded and filtered-out
//! articles are removed by a bitmap before scoring, never after.

use crate::compact::{Compact, CompactQuery};
use crate::store::{ArticleLoc, Segment, Store};
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

/// Conditions on an article's metadata and path, checked once per article before any vector is
/// scored. All given conditions must hold.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    /// The article's source or agency credit is one of these (case-insensitive).
    pub sources: Vec<String>,
    /// `YYYY-MM-DD`, inclusive. Articles without a date never pass a date condition.
    pub since: Option<String>,
    pub until: Option<String>,
    /// The article's file path (as shown, relative to the store's folder, or absolute) or id
    /// matches one of these globs.
    pub paths: Option<globset::GlobSet>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.paths.is_none()
    }

    pub fn matches(&self, store: &Store, loc: ArticleLoc) -> bool {
        let rec = store.article(loc);
        if !self.sources.is_empty() {
            let ok = [&rec.meta.source, &rec.meta.credit].iter().any(|s| {
                s.as_deref().is_some_and(|s| {
                    self.sources
                        .iter()
                        .any(|w| w.eq_ignore_ascii_case(s.trim()))
                })
            });
            if !ok {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(date) = rec.meta.date.as_deref() else {
                return false;
            };
            if self.since.as_deref().is_some_and(|s| date < s) {
                return false;
            }
            // A date with a time still belongs to its day.
            if self
                .until
                .as_deref()
                .is_some_and(|u| &date[..date.len().min(10)] > u)
            {
                return false;
            }
        }
        if let Some(globs) = &self.paths {
            let file = rec.file.as_deref().unwrap_or(&rec.key);
            let absolute = crate::store::resolve_file(file, &store.base);
            if !(globs.is_match(&rec.key) || globs.is_match(file) || globs.is_match(&absolute)) {
                return false;
            }
        }
        true
    }
}

/// Options shared by both levels.
#[derive(Clone, Copy)]
pub struct SearchOptions<'a> {
    pub k: usize,
    pub min_score: Option<f32>,
    /// An article excluded from the results (the one a `--like` query starts from).
    pub exclude: Option<ArticleLoc>,
    pub filter: Option<ArticleFilter<'a>>,
    /// Paragraph search only: find candidates in the store's compact copies first (`None`: scan
    /// the exact vectors). Returned scores are exact either way.
    pub compact: Option<Compact>,
}

/// Dot product of two equal-length vectors (portable; eight accumulators so the compiler keeps
/// several vector registers busy instead of one serial chain of additions).
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

/// Scores every `dim`-long row of `rows` against `query` into `out` (one score per row).
pub fn score_rows(rows: &[f32], query: &[f32], out: &mut [f32]) {
    let dim = query.len();
    debug_assert_eq!(rows.len(), dim * out.len());
    #[cfg(target_arch = "x86_64")]
    if dim.is_multiple_of(64) && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present (checked above) and every row is `dim` floats, a multiple of 64.
        unsafe { score_rows_avx512(rows, query, out) };
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot(row, query);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn score_rows_avx512(rows: &[f32], query: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let q = query.as_ptr();
    for (r, o) in out.iter_mut().enumerate() {
        let row = rows.as_ptr().add(r * dim);
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < dim {
            for (j, a) in acc.iter_mut().enumerate() {
                let off = i + j * 16;
                *a = _mm512_fmadd_ps(
                    _mm512_loadu_ps(row.add(off)),
                    _mm512_loadu_ps(q.add(off)),
                    *a,
                );
            }
            i += 64;
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        *o = _mm512_reduce_add_ps(sum);
    }
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
        // k may be far more than the store holds (a caller asking for "everything"): reserve
        // for at most that many hits up front and let the heap grow past them.
        const RESERVED_HITS: usize = 1 << 12;
        Self {
            k,
            heap: BinaryHeap::with_capacity(k.min(RESERVED_HITS) + 1),
        }
    }
    /// The score a candidate must beat (or tie with an earlier position) to enter.
    fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap
                .peek()
                .map(|s| s.score)
                .unwrap_or(f32::NEG_INFINITY)
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

/// Rows scored per block: 1,024 rows of 384 floats are 1.5 MiB, which stays in L2 while its
/// scores are ranked.
const BLOCK_ROWS: usize = 1024;

/// Which articles of a segment may appear: `None` when all may (the common, fastest case).
fn allowed_articles(store: &Store, s: usize, opts: &SearchOptions) -> Option<Vec<bool>> {
    let seg = &store.segments[s];
    let excluded_here = opts.exclude.is_some_and(|e| e.segment == s);
    if seg.live.iter().all(|&l| l) && !excluded_here && opts.filter.is_none() {
        return None;
    }
    Some(
        (0..seg.articles.len())
            .map(|a| {
                let loc = ArticleLoc {
                    segment: s,
                    article: a,
                };
                seg.live[a]
                    && Some(loc) != opts.exclude
                    && opts.filter.is_none_or(|f| f(store, loc))
            })
            .collect(),
    )
}

/// Which chunks of a segment may appear, from the allowed articles.
fn allowed_chunks(seg: &Segment, articles: &[bool]) -> Vec<bool> {
    let mut chunks = vec![false; seg.chunk_count()];
    for (a, _) in articles.iter().enumerate().filter(|(_, &ok)| ok) {
        chunks[seg.article_chunks(a)].fill(true);
    }
    chunks
}

/// [`allowed_chunks`] of every segment (`None` where all may appear).
fn allowed_chunk_maps(store: &Store, opts: &SearchOptions) -> Vec<Option<Vec<bool>>> {
    (0..store.segments.len())
        .map(|s| allowed_articles(store, s, opts).map(|a| allowed_chunks(&store.segments[s], &a)))
        .collect()
}

/// Ranks the scores of one block into `top`.
fn rank_block<T: PartialEq>(
    top: &mut TopK<T>,
    scores: &[f32],
    first_row: usize,
    s: usize,
    allowed: Option<&[bool]>,
    min_score: Option<f32>,
    item: impl Fn(usize, f32) -> T,
) {
    let floor = min_score.unwrap_or(f32::NEG_INFINITY);
    for (i, &score) in scores.iter().enumerate() {
        let row = first_row + i;
        if score < floor || score < top.threshold() {
            continue;
        }
        if allowed.is_some_and(|a| !a[row]) {
            continue;
        }
        top.push(score, (s, row), item(row, score));
    }
}

/// The `k` best articles for `query` by their article vectors, each with its best paragraph.
pub fn search_articles(store: &Store, query: &[f32], opts: &SearchOptions) -> Vec<ArticleHit> {
    let top = store
        .segments
        .par_iter()
        .enumerate()
        .map(|(s, seg)| {
            let allowed = allowed_articles(store, s, opts);
            let mut scores = vec![0f32; seg.articles.len()];
            score_rows(seg.article_vectors(), query, &mut scores);
            let mut top = TopK::new(opts.k);
            rank_block(
                &mut top,
                &scores,
                0,
                s,
                allowed.as_deref(),
                opts.min_score,
                |a, _| ArticleLoc {
                    segment: s,
                    article: a,
                },
            );
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

/// A ranked (segment, chunk, score) as a hit, with the chunk's article.
fn chunk_hit(store: &Store, (s, c, score): (usize, usize, f32)) -> ChunkHit {
    ChunkHit {
        loc: ArticleLoc {
            segment: s,
            article: store.segments[s].chunk(c).article as usize,
        },
        chunk: c,
        score,
    }
}

/// The `k` best paragraphs (chunks) for `query`.
pub fn search_paragraphs(store: &Store, query: &[f32], opts: &SearchOptions) -> Vec<ChunkHit> {
    let allowed = allowed_chunk_maps(store, opts);
    if let Some(kind) = opts.compact {
        return search_paragraphs_compact(store, query, opts, kind, &allowed);
    }
    let all: Vec<usize> = (0..store.segments.len()).collect();
    exact_paragraphs(store, query, opts, &allowed, &all)
        .into_sorted()
        .into_iter()
        .map(|hit| chunk_hit(store, hit.item))
        .collect()
}

/// The exact scan of the paragraphs of `segments`: the best `k` as (segment, chunk, score).
fn exact_paragraphs(
    store: &Store,
    query: &[f32],
    opts: &SearchOptions,
    allowed: &[Option<Vec<bool>>],
    segments: &[usize],
) -> TopK<(usize, usize, f32)> {
    let blocks: Vec<(usize, usize)> = segments
        .iter()
        .flat_map(|&s| {
            (0..store.segments[s].chunk_count().div_ceil(BLOCK_ROWS)).map(move |b| (s, b))
        })
        .collect();
    blocks
        .par_iter()
        .fold(
            || (TopK::new(opts.k), vec![0f32; BLOCK_ROWS]),
            |(mut top, mut scores), &(s, b)| {
                let seg = &store.segments[s];
                let start = b * BLOCK_ROWS;
                let end = (start + BLOCK_ROWS).min(seg.chunk_count());
                let dim = seg.dim;
                let out = &mut scores[..end - start];
                score_rows(&seg.chunk_vectors()[start * dim..end * dim], query, out);
                rank_block(
                    &mut top,
                    out,
                    start,
                    s,
                    allowed[s].as_deref(),
                    opts.min_score,
                    |c, score| (s, c, score),
                );
                (top, scores)
            },
        )
        .map(|(top, _)| top)
        .reduce(|| TopK::new(opts.k), TopK::merge)
}

/// Rows the binary stage passes on: 8 × rows^0.6 for ten results (20% of 10,000 rows, 3.2%
/// of a million), in proportion for more. On random unit vectors — the hardest case: no
/// structure, the best barely beat the rest — the rank in the binary order that keeps 99.5%
/// of the exact top 10 grows as rows^0.6 (1,242 of 10,000, 5,604 of 100,000, 16,947 of a
/// million, measured); this keeps about twice that. `likewise bench search` measures the recall.
fn binary_candidates(rows: usize, k: usize) -> usize {
    let base = 8.0 * (rows as f64).powf(0.6);
    (base * k.max(10) as f64 / 10.0).ceil() as usize
}

/// Asks the CPU to bring `bytes` into cache (a hint; nothing on other architectures).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch of a valid address has no effect but on caches.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
}

/// Rows the int8 stage passes on to the exact rescoring.
fn int8_candidates(k: usize) -> usize {
    (10 * k).max(100)
}

/// The binary score the best [`binary_candidates`] allowed rows of `segments` reach, estimated
/// from at most 16,384 rows spread evenly over them (exact when there are no more).
fn binary_threshold(
    store: &Store,
    cq: &CompactQuery,
    segments: &[usize],
    k: usize,
    is_allowed: &(dyn Fn(usize, usize) -> bool + Sync),
) -> i32 {
    const SAMPLE: usize = 16 * 1024;
    let rows: usize = segments
        .iter()
        .map(|&s| store.segments[s].chunk_count())
        .sum();
    if rows == 0 {
        return i32::MIN;
    }
    // Runs of 256 consecutive rows, evenly spaced: read like the scan reads (whole cache lines,
    // the eight-row kernel), spread over the whole store.
    const RUN: usize = 256;
    let stride = (rows.div_ceil(SAMPLE) * RUN).max(RUN);
    let words = crate::compact::words_per_row(store.manifest.model.dim);
    let mut sample: Vec<i32> = Vec::with_capacity(SAMPLE + RUN);
    let mut scores = vec![0i32; RUN];
    let mut allowed = 0usize;
    for &s in segments {
        let seg = &store.segments[s];
        let bits = seg.sign_bits().expect("segment with bits");
        for start in (0..seg.chunk_count()).step_by(stride) {
            let end = (start + RUN).min(seg.chunk_count());
            cq.binary_scores(
                &bits[start * words..end * words],
                &mut scores[..end - start],
            );
            for (row, &score) in (start..end).zip(&scores) {
                if is_allowed(s, row) {
                    allowed += 1;
                    sample.push(score);
                }
            }
        }
    }
    let stride = stride / RUN;
    // The share of rows wanted, applied to the sample.
    let share = binary_candidates(allowed * stride, k) as f64 / (allowed * stride).max(1) as f64;
    let take = ((share * sample.len() as f64).ceil() as usize).max(1);
    if take >= sample.len() {
        return i32::MIN;
    }
    sample.select_nth_unstable_by(take - 1, |a, b| b.cmp(a));
    sample[take - 1]
}

/// Rows per unit of work in the compact stages.
const COMPACT_BLOCK_ROWS: usize = 16 * 1024;

/// [`search_paragraphs`] through the compact copies: sign bits (binary) → int8 → exact f32.
/// Segments without the copy asked for use the next stage they have (int8, or the exact scan).
fn search_paragraphs_compact(
    store: &Store,
    query: &[f32],
    opts: &SearchOptions,
    kind: Compact,
    allowed: &[Option<Vec<bool>>],
) -> Vec<ChunkHit> {
    let k = opts.k;
    if k == 0 {
        return Vec::new();
    }
    let cq = CompactQuery::new(query);
    let dim = query.len();
    let segs = &store.segments;
    let with_bits: Vec<usize> = (0..segs.len())
        .filter(|&s| kind.has_bits() && segs[s].sign_bits().is_some())
        .collect();
    let int8_only: Vec<usize> = (0..segs.len())
        .filter(|&s| !with_bits.contains(&s) && segs[s].int8_vectors().is_some())
        .collect();
    let exact_only: Vec<usize> = (0..segs.len())
        .filter(|&s| segs[s].int8_vectors().is_none())
        .collect();
    let is_allowed = |s: usize, row: usize| allowed[s].as_ref().is_none_or(|a| a[row]);

    let wanted = int8_candidates(k);

    // Stage 1 → 2: sign bits, then int8 for the rows whose binary score reaches the threshold
    // the best `binary_candidates` rows reach, estimated from an even sample of the rows (all
    // of them in a store of up to 16,384 paragraphs). One pass: a block's bits are scored, its
    // candidates' int8 rows fetched ahead and scored, the best kept.
    let words = crate::compact::words_per_row(dim);
    let threshold = binary_threshold(store, &cq, &with_bits, k, &is_allowed);
    let blocks: Vec<(usize, usize)> = with_bits
        .iter()
        .chain(&int8_only)
        .flat_map(|&s| (0..segs[s].chunk_count().div_ceil(COMPACT_BLOCK_ROWS)).map(move |b| (s, b)))
        .collect();
    let shortlist = blocks
        .par_iter()
        .fold(
            || (TopK::new(wanted), Vec::<i32>::new(), Vec::<usize>::new()),
            |(mut top, mut scores, mut rows), &(s, b)| {
                let start = b * COMPACT_BLOCK_ROWS;
                let end = (start + COMPACT_BLOCK_ROWS).min(segs[s].chunk_count());
                rows.clear();
                if let Some(bits) = segs[s].sign_bits().filter(|_| kind.has_bits()) {
                    scores.resize(end - start, 0);
                    cq.binary_scores(&bits[start * words..end * words], &mut scores);
                    rows.extend(
                        (start..end)
                            .filter(|&r| scores[r - start] >= threshold && is_allowed(s, r)),
                    );
                } else {
                    rows.extend((start..end).filter(|&r| is_allowed(s, r)));
                }
                let (bytes, scales) = segs[s].int8_vectors().expect("segment with int8");
                for (i, &row) in rows.iter().enumerate() {
                    // Candidates are scattered over the block: ask for rows ahead of use.
                    if let Some(&ahead) = rows.get(i + 8) {
                        prefetch(&bytes[ahead * dim..(ahead + 1) * dim]);
                    }
                    let score =
                        scales[row] * cq.int8_dot(&bytes[row * dim..(row + 1) * dim]) as f32;
                    if score >= top.threshold() {
                        top.push(score, (s, row), (s, row));
                    }
                }
                (top, scores, rows)
            },
        )
        .map(|(top, _, _)| top)
        .reduce(|| TopK::new(wanted), TopK::merge);

    // Stage 3: exact scores for the shortlist (the same kernel as the exact scan, so the same
    // numbers), and the exact scan of segments without compact copies.
    let mut top = exact_paragraphs(store, query, opts, allowed, &exact_only);
    let floor = opts.min_score.unwrap_or(f32::NEG_INFINITY);
    for hit in shortlist.into_sorted() {
        let (s, row) = hit.item;
        let mut score = [0f32];
        score_rows(segs[s].chunk_vector(row), query, &mut score);
        if score[0] >= floor {
            top.push(score[0], (s, row), (s, row, score[0]));
        }
    }
    top.into_sorted()
        .into_iter()
        .map(|hit| chunk_hit(store, hit.item))
        .collect()
}

/// Rows of a segment scored per block by the batched path: `queries × BATCH_BLOCK_ROWS` scores
/// (1.6 MB for 100 queries) stay in L2 while ranked.
const BATCH_BLOCK_ROWS: usize = 4096;

/// Scores many queries at once, a matrix multiply per block of stored rows (each block on one
/// thread, blocks on all threads), and keeps each query's best `k`. `rows(seg)` gives the vectors
/// scanned and `article_of(seg, row)` their article, for the per-query exclusions.
fn batch_scan<'s>(
    store: &'s Store,
    queries: &[f32],
    excludes: &[Option<ArticleLoc>],
    opts: &SearchOptions,
    allowed: &[Option<Vec<bool>>],
    rows: impl Fn(&'s Segment) -> &'s [f32] + Sync,
    article_of: impl Fn(&Segment, usize) -> usize + Sync,
) -> Vec<TopK<(usize, usize, f32)>> {
    let dim = store.manifest.model.dim;
    let nq = queries.len() / dim;
    let blocks: Vec<(usize, usize)> = store
        .segments
        .iter()
        .enumerate()
        .flat_map(|(s, seg)| {
            let n = rows(seg).len() / dim;
            (0..n.div_ceil(BATCH_BLOCK_ROWS)).map(move |b| (s, b))
        })
        .collect();
    let fresh = || (0..nq).map(|_| TopK::new(opts.k)).collect::<Vec<_>>();
    blocks
        .par_iter()
        .fold(
            || (fresh(), Vec::<f32>::new()),
            |(mut tops, mut scores), &(s, b)| {
                let seg = &store.segments[s];
                let all = rows(seg);
                let n = all.len() / dim;
                let start = b * BATCH_BLOCK_ROWS;
                let end = (start + BATCH_BLOCK_ROWS).min(n);
                let width = end - start;
                scores.resize(nq * width, 0.0);
                crate::similarity::product_serial(
                    queries,
                    &all[start * dim..end * dim],
                    dim,
                    &mut scores,
                );
                for (qi, top) in tops.iter_mut().enumerate() {
                    let row_scores = &scores[qi * width..(qi + 1) * width];
                    let exclude = excludes
                        .get(qi)
                        .copied()
                        .flatten()
                        .filter(|e| e.segment == s);
                    let floor = opts.min_score.unwrap_or(f32::NEG_INFINITY);
                    for (i, &score) in row_scores.iter().enumerate() {
                        if score < floor || score < top.threshold() {
                            continue;
                        }
                        let row = start + i;
                        if allowed[s].as_ref().is_some_and(|a| !a[row]) {
                            continue;
                        }
                        if exclude.is_some_and(|e| article_of(seg, row) == e.article) {
                            continue;
                        }
                        top.push(score, (s, row), (s, row, score));
                    }
                }
                (tops, scores)
            },
        )
        .map(|(tops, _)| tops)
        .reduce(fresh, |a, b| {
            a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect()
        })
}

/// [`search_paragraphs`] for many queries (`queries` is q × dim, row-major) in one pass over the
/// store; `excludes[i]` is an article left out of query i's results. Scores are exact but summed
/// in another order than the one-query scan, so they may differ from it in the last bits.
pub fn search_paragraphs_batch(
    store: &Store,
    queries: &[f32],
    excludes: &[Option<ArticleLoc>],
    opts: &SearchOptions,
) -> Vec<Vec<ChunkHit>> {
    let allowed = allowed_chunk_maps(store, opts);
    batch_scan(
        store,
        queries,
        excludes,
        opts,
        &allowed,
        |seg| seg.chunk_vectors(),
        |seg, row| seg.chunk(row).article as usize,
    )
    .into_iter()
    .map(|top| {
        top.into_sorted()
            .into_iter()
            .map(|hit| chunk_hit(store, hit.item))
            .collect()
    })
    .collect()
}

/// [`search_articles`] for many queries in one pass (see [`search_paragraphs_batch`]).
pub fn search_articles_batch(
    store: &Store,
    queries: &[f32],
    excludes: &[Option<ArticleLoc>],
    opts: &SearchOptions,
) -> Vec<Vec<ArticleHit>> {
    let dim = store.manifest.model.dim;
    let allowed: Vec<Option<Vec<bool>>> = (0..store.segments.len())
        .map(|s| allowed_articles(store, s, opts))
        .collect();
    batch_scan(
        store,
        queries,
        excludes,
        opts,
        &allowed,
        |seg| seg.article_vectors(),
        |_, row| row,
    )
    .into_iter()
    .zip(queries.chunks_exact(dim))
    .map(|(top, query)| {
        top.into_sorted()
            .into_iter()
            .map(|hit| {
                let (s, a, score) = hit.item;
                let loc = ArticleLoc {
                    segment: s,
                    article: a,
                };
                ArticleHit {
                    loc,
                    score,
                    evidence: best_chunk(store, loc, query),
                }
            })
            .collect()
    })
    .collect()
}

/// The paragraph of article `loc` closest to `query`.
pub fn best_chunk(store: &Store, loc: ArticleLoc, query: &[f32]) -> Option<ChunkHit> {
    let seg = &store.segments[loc.segment];
    seg.article_chunks(loc.article)
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
    fn the_block_kernel_matches_the_portable_dot() {
        let dim = 384;
        let rows: Vec<f32> = (0..dim * 7)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let query: Vec<f32> = (0..dim)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0)
            .collect();
        let mut out = vec![0f32; 7];
        score_rows(&rows, &query, &mut out);
        for (r, o) in out.iter().enumerate() {
            let want = dot(&rows[r * dim..(r + 1) * dim], &query);
            assert!((o - want).abs() < 1e-3, "row {r}: {o} vs {want}");
        }
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

    #[test]
    fn a_k_past_any_store_keeps_everything_without_reserving_k() {
        // 2^60 hits cannot be reserved (reserving them panics or aborts); asking for them means
        // "all of them".
        let mut top = TopK::new(1 << 60);
        for i in 0..5000 {
            top.push((i % 7) as f32, (0, i), i);
        }
        let items = top.into_sorted();
        assert_eq!(items.len(), 5000);
        assert!(items.windows(2).all(|w| w[0].score >= w[1].score));
    }
}
