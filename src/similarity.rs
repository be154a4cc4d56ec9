//! Many-against-many cosine similarity of unit vectors, by blocks of a matrix multiply.
//!
//! Clustering, duplicate finding and batched queries all need the similarities of many vectors
//! with many others. Materialising an n × n matrix is out of the question for a large store, so
//! the product is computed a block of rows at a time (`BLOCK_ROWS` × n) with the `gemm` crate
//! (the multiply candle uses, AVX-512 on this machine), and each block is handed to the caller,
//! who keeps only what it needs (pairs above a threshold, a top-k).

use rayon::prelude::*;

/// Rows of the left-hand side per block: 512 × 100k similarities are 200 MB at most.
pub const BLOCK_ROWS: usize = 512;

/// `out[i × n + j] = a_i · b_j` for `a` (m × dim) and `b` (n × dim), both row-major; on all
/// threads when the product is large enough to gain from them.
pub fn product(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    product_on(a, b, dim, out, true)
}

/// [`product`] on the calling thread only (for callers that already run one block per thread).
pub fn product_serial(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    product_on(a, b, dim, out, false)
}

fn product_on(a: &[f32], b: &[f32], dim: usize, out: &mut [f32], threaded: bool) {
    assert!(dim > 0 && a.len().is_multiple_of(dim) && b.len().is_multiple_of(dim));
    let m = a.len() / dim;
    let n = b.len() / dim;
    assert_eq!(out.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threaded && threads > 1 && m * n * dim > 1 << 20 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the lengths were checked above; dst is m × n row-major (column stride 1, row
    // stride n); lhs is a, m × dim row-major; rhs is bᵀ, dim × n, read with row stride 1 and
    // column stride dim. No two of them overlap (out is a distinct &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            dim,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            dim as isize,
            b.as_ptr(),
            dim as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Calls `visit(first_row, block)` for each block of rows of `a · bᵀ`; `block` holds
/// `rows × n` similarities, row-major.
pub fn for_each_block(a: &[f32], b: &[f32], dim: usize, mut visit: impl FnMut(usize, &[f32])) {
    let n = b.len() / dim;
    let m = a.len() / dim;
    let mut buf = vec![0f32; BLOCK_ROWS.min(m.max(1)) * n];
    for start in (0..m).step_by(BLOCK_ROWS) {
        let rows = BLOCK_ROWS.min(m - start);
        let block = &mut buf[..rows * n];
        product(&a[start * dim..(start + rows) * dim], b, dim, block);
        visit(start, block);
    }
}

/// A pair of rows and their cosine similarity; `a < b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub a: u32,
    pub b: u32,
    pub score: f32,
}

/// Every pair `i < j` of rows of `v` (n × dim) with `v_i · v_j ≥ threshold`, sorted by score,
/// best first. Memory is one block plus the pairs kept; the n × n matrix never exists.
pub fn pairs_above(v: &[f32], dim: usize, threshold: f32) -> Vec<Pair> {
    let n = v.len() / dim;
    let mut pairs = Vec::new();
    for_each_block(v, v, dim, |start, block| {
        let found: Vec<Pair> = block
            .par_chunks(n)
            .enumerate()
            .flat_map_iter(|(r, row)| {
                let i = start + r;
                row.iter()
                    .enumerate()
                    .skip(i + 1)
                    .filter(move |(_, &s)| s >= threshold)
                    .map(move |(j, &s)| Pair {
                        a: i as u32,
                        b: j as u32,
                        score: s,
                    })
            })
            .collect();
        pairs.extend(found);
    });
    pairs.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    pairs
}

/// Normalises `v` to unit length in place; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        v.chunks_mut(dim).for_each(normalize);
        v
    }

    #[test]
    fn product_matches_plain_dot_products() {
        let dim = 37;
        let a = pseudo_random(13, dim, 1);
        let b = pseudo_random(1100, dim, 2);
        let mut out = vec![0.0; 13 * 1100];
        product(&a, &b, dim, &mut out);
        for i in 0..13 {
            for j in 0..1100 {
                let want: f32 = (0..dim).map(|d| a[i * dim + d] * b[j * dim + d]).sum();
                assert!((out[i * 1100 + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn pairs_above_finds_exactly_the_pairs_of_a_plain_double_loop() {
        let dim = 8;
        let n = 1300; // more than two blocks
        let v = pseudo_random(n, dim, 3);
        let got = pairs_above(&v, dim, 0.9);
        let mut want = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                let s: f32 = (0..dim).map(|d| v[i * dim + d] * v[j * dim + d]).sum();
                if s >= 0.9 + 1e-5 {
                    want.push((i as u32, j as u32));
                }
            }
        }
        let got_ids: std::collections::HashSet<(u32, u32)> =
            got.iter().map(|p| (p.a, p.b)).collect();
        assert!(!want.is_empty());
        for w in &want {
            assert!(got_ids.contains(w), "missing {w:?}");
        }
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(got.iter().all(|p| p.a < p.b && p.score >= 0.9));
    }
}
