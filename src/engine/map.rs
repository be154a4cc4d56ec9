//! A 2-D map of the articles that keeps neighbours together: t-SNE of the article vectors.
//!
//! Why t-SNE, and ours: of the projections measured on BBC with sentence-transformers vectors
//! (share of each article's 10 nearest map neighbours in its own topic folder), PCA keeps 0.73,
//! t-SNE 0.94, UMAP 0.93 and the full 384-d vectors 0.92. Exact t-SNE is O(n²) per iteration,
//! which at a few thousand articles is a few seconds once the inner loop runs in vector
//! registers; it is deterministic (seeded start from the two leading principal axes), needs no
//! native library, and the affinities come from the cosine similarities the store already has.
//!
//! Steps (van der Maaten & Hinton 2008, with the usual practice of openTSNE / scikit-learn):
//! affinities from each point's 90 nearest neighbours (3 × perplexity 30), each row's
//! bandwidth found by bisection to that perplexity, symmetrised; 250 iterations of early
//! exaggeration (×12, momentum 0.5) then 500 plain (momentum 0.8), learning rate n / 12, with
//! per-coordinate gains. Stores of more than [`MAX_POINTS`] articles are mapped on an even
//! sample of that many, and the method line says so.

use rayon::prelude::*;

/// Most articles on one map: t-SNE's cost grows with the square of the points.
pub const MAX_POINTS: usize = 6000;
pub const PERPLEXITY: f32 = 30.0;
const EXAGGERATION: f32 = 12.0;
const EXAGGERATED_ITERATIONS: usize = 250;
const ITERATIONS: usize = 750;
/// Independent sums in the repulsion loop: two AVX-512 registers' worth.
const LANES: usize = 32;

/// Symmetric sparse affinities: for each point, (neighbour, p_ij) with Σ p = 1 overall.
fn affinities(v: &[f32], dim: usize) -> Vec<Vec<(u32, f32)>> {
    let n = v.len() / dim;
    let k = ((3.0 * PERPLEXITY) as usize).min(n.saturating_sub(1));
    let target = PERPLEXITY
        .min((n.saturating_sub(1)) as f32 / 3.0)
        .max(1.0)
        .ln();
    let rows: Vec<Vec<(u32, f32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let q = &v[i * dim..(i + 1) * dim];
            // Squared Euclidean distance of unit vectors: 2 − 2 cos.
            let mut d: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let c = crate::search::dot(q, &v[j * dim..(j + 1) * dim]);
                    ((2.0 - 2.0 * c).max(0.0), j as u32)
                })
                .collect();
            if k < d.len() {
                d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
                d.truncate(k);
            }
            // Bisection on the precision beta so the row's entropy is ln(perplexity).
            let (mut lo, mut hi, mut beta) = (0.0f32, f32::INFINITY, 1.0f32);
            let dmin = d.iter().map(|x| x.0).fold(f32::INFINITY, f32::min);
            let mut p = vec![0f32; d.len()];
            for _ in 0..64 {
                let mut sum = 0.0f32;
                for (pj, &(dj, _)) in p.iter_mut().zip(&d) {
                    *pj = (-(dj - dmin) * beta).exp();
                    sum += *pj;
                }
                let sum = sum.max(1e-12);
                let mut h = 0.0f32;
                for (pj, &(dj, _)) in p.iter().zip(&d) {
                    h += beta * (dj - dmin) * pj / sum;
                }
                h += sum.ln();
                if (h - target).abs() < 1e-4 {
                    break;
                }
                if h > target {
                    lo = beta;
                    beta = if hi.is_finite() {
                        (beta + hi) / 2.0
                    } else {
                        beta * 2.0
                    };
                } else {
                    hi = beta;
                    beta = (beta + lo) / 2.0;
                }
            }
            let sum: f32 = p.iter().sum::<f32>().max(1e-12);
            d.iter()
                .zip(&p)
                .map(|(&(_, j), &pj)| (j, pj / sum))
                .collect()
        })
        .collect();
    // Symmetrise: p_ij = (p_j|i + p_i|j) / 2n.
    let mut sym: Vec<std::collections::HashMap<u32, f32>> = vec![Default::default(); n];
    for (i, row) in rows.iter().enumerate() {
        for &(j, p) in row {
            *sym[i].entry(j).or_default() += p;
            *sym[j as usize].entry(i as u32).or_default() += p;
        }
    }
    let total = 2.0 * n as f32;
    sym.into_iter()
        .map(|m| {
            let mut row: Vec<(u32, f32)> = m.into_iter().map(|(j, p)| (j, p / total)).collect();
            row.sort_unstable_by_key(|x| x.0);
            row
        })
        .collect()
}

/// Starting positions: the two leading principal axes, scaled to a standard deviation of 1e-4
/// (openTSNE's PCA start), found by power iteration.
fn pca_start(v: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let n = v.len() / dim;
    let mut mean = vec![0f32; dim];
    for row in v.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / n as f32;
        }
    }
    let centred: Vec<f32> = v
        .chunks_exact(dim)
        .flat_map(|row| row.iter().zip(&mean).map(|(x, m)| x - m))
        .collect();
    let mut rng = seed;
    let mut next = || {
        // xorshift: a fixed start, the same map every time.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 2001) as f32 / 1000.0 - 1.0
    };
    let mut axes: Vec<Vec<f32>> = Vec::new();
    for _ in 0..2 {
        let mut a: Vec<f32> = (0..dim).map(|_| next()).collect();
        for _ in 0..60 {
            // a ← Xᵀ X a, with earlier axes projected out.
            let proj: Vec<f32> = centred
                .chunks_exact(dim)
                .map(|r| crate::search::dot(r, &a))
                .collect();
            let mut b = vec![0f32; dim];
            for (r, p) in centred.chunks_exact(dim).zip(&proj) {
                for (bi, x) in b.iter_mut().zip(r) {
                    *bi += p * x;
                }
            }
            for prev in &axes {
                let d = crate::search::dot(&b, prev);
                for (bi, pi) in b.iter_mut().zip(prev) {
                    *bi -= d * pi;
                }
            }
            let norm = crate::search::dot(&b, &b).sqrt().max(1e-12);
            a = b.into_iter().map(|x| x / norm).collect();
        }
        axes.push(a);
    }
    let mut y = vec![0f32; 2 * n];
    for (i, r) in centred.chunks_exact(dim).enumerate() {
        y[2 * i] = crate::search::dot(r, &axes[0]);
        y[2 * i + 1] = crate::search::dot(r, &axes[1]);
    }
    let sd = (y.iter().step_by(2).map(|x| x * x).sum::<f32>() / n.max(1) as f32)
        .sqrt()
        .max(1e-12);
    y.iter_mut().for_each(|x| *x *= 1e-4 / sd);
    y
}

/// t-SNE of the unit rows of `v` (n × dim) to 2-D: x0, y0, x1, y1, …
pub fn tsne(v: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let n = v.len() / dim;
    if n < 3 {
        return (0..n).flat_map(|i| [i as f32, 0.0]).collect();
    }
    let p = affinities(v, dim);
    let mut y = pca_start(v, dim, seed);
    let mut update = vec![0f32; 2 * n];
    let mut gains = vec![1f32; 2 * n];
    let rate = (n as f32 / EXAGGERATION).max(50.0);
    let mut xs = vec![0f32; n];
    let mut ys = vec![0f32; n];
    for it in 0..ITERATIONS {
        let (exaggeration, momentum) = if it < EXAGGERATED_ITERATIONS {
            (EXAGGERATION, 0.5)
        } else {
            (1.0, 0.8)
        };
        for i in 0..n {
            xs[i] = y[2 * i];
            ys[i] = y[2 * i + 1];
        }
        // Repulsion, exactly: for each i, Σ_j q_ij² (y_i − y_j) and Σ_j q_ij with
        // q_ij = 1 / (1 + |y_i − y_j|²); the loop over j is branch-free so it vectorises.
        let rep: Vec<(f32, f32, f32)> = (0..n)
            .into_par_iter()
            .map(|i| repulsion(xs[i], ys[i], &xs, &ys))
            .collect();
        let z: f32 = rep.iter().map(|r| r.2).sum::<f32>().max(1e-12);
        let grad: Vec<(f32, f32)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let (xi, yi) = (xs[i], ys[i]);
                let (mut ax, mut ay) = (0f32, 0f32);
                for &(j, pij) in &p[i] {
                    let dx = xi - xs[j as usize];
                    let dy = yi - ys[j as usize];
                    let q = 1.0 / (1.0 + dx * dx + dy * dy);
                    ax += exaggeration * pij * q * dx;
                    ay += exaggeration * pij * q * dy;
                }
                (4.0 * (ax - rep[i].0 / z), 4.0 * (ay - rep[i].1 / z))
            })
            .collect();
        for (i, &(gx, gy)) in grad.iter().enumerate() {
            for (c, g) in [(2 * i, gx), (2 * i + 1, gy)] {
                // Gains grow where the gradient keeps its direction, shrink where it flips.
                gains[c] = if (g > 0.0) != (update[c] > 0.0) {
                    gains[c] + 0.2
                } else {
                    (gains[c] * 0.8).max(0.01)
                };
                update[c] = momentum * update[c] - rate * gains[c] * g;
                y[c] += update[c];
            }
        }
        // Keep the map centred.
        let (mx, my) = (0..n).fold((0f32, 0f32), |(a, b), i| (a + y[2 * i], b + y[2 * i + 1]));
        for i in 0..n {
            y[2 * i] -= mx / n as f32;
            y[2 * i + 1] -= my / n as f32;
        }
    }
    y
}

/// One point's repulsion, exactly: Σ_j q_ij² (x_i − x_j), Σ_j q_ij² (y_i − y_j) and Σ_{j≠i} q_ij,
/// with q_ij = 1 / (1 + |y_i − y_j|²), in the widest vector registers this CPU has. The sums are
/// the same on every CPU: each of the LANES sums adds its terms in the same order whatever the
/// register width, and no multiply and add are fused.
fn repulsion(xi: f32, yi: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected just above.
            return unsafe { repulsion_avx512(xi, yi, xs, ys) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was detected just above.
            return unsafe { repulsion_avx2(xi, yi, xs, ys) };
        }
    }
    repulsion_lanes(xi, yi, xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn repulsion_avx512(xi: f32, yi: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    repulsion_lanes(xi, yi, xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn repulsion_avx2(xi: f32, yi: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    repulsion_lanes(xi, yi, xs, ys)
}

/// [`repulsion`]'s loop, compiled into each caller's instruction set.
#[inline(always)]
fn repulsion_lanes(xi: f32, yi: f32, xs: &[f32], ys: &[f32]) -> (f32, f32, f32) {
    // LANES separate sums: float addition is not associative, so one running sum would keep the
    // compiler from spreading the loop over vector registers.
    let mut fx = [0f32; LANES];
    let mut fy = [0f32; LANES];
    let mut z = [0f32; LANES];
    let mut xc = xs.chunks_exact(LANES);
    let mut yc = ys.chunks_exact(LANES);
    for (xb, yb) in xc.by_ref().zip(yc.by_ref()) {
        for l in 0..LANES {
            let dx = xi - xb[l];
            let dy = yi - yb[l];
            let q = 1.0 / (1.0 + dx * dx + dy * dy);
            z[l] += q;
            fx[l] += q * q * dx;
            fy[l] += q * q * dy;
        }
    }
    for (xj, yj) in xc.remainder().iter().zip(yc.remainder()) {
        let dx = xi - xj;
        let dy = yi - yj;
        let q = 1.0 / (1.0 + dx * dx + dy * dy);
        z[0] += q;
        fx[0] += q * q * dx;
        fy[0] += q * q * dy;
    }
    let sum = |a: [f32; LANES]| a.iter().sum::<f32>();
    // The j = i term added q = 1 to z and nothing to the forces.
    (sum(fx), sum(fy), sum(z) - 1.0)
}

/// The share of each point's `k` nearest neighbours on the map (Euclidean) that carry its
/// label, averaged over the points: how well the map keeps neighbourhoods.
pub fn neighbour_agreement(xy: &[f32], labels: &[String], k: usize) -> f64 {
    neighbour_agreement_by(labels, k, |i, j| {
        let dx = xy[2 * i] - xy[2 * j];
        let dy = xy[2 * i + 1] - xy[2 * j + 1];
        dx * dx + dy * dy
    })
}

/// [`neighbour_agreement`] under any distance between points `i` and `j` (smaller is nearer).
pub fn neighbour_agreement_by(
    labels: &[String],
    k: usize,
    distance: impl Fn(usize, usize) -> f32 + Sync,
) -> f64 {
    let n = labels.len();
    let total: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut d: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (distance(i, j), j))
                .collect();
            let k = k.min(d.len());
            if k == 0 {
                return 0.0;
            }
            d.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0));
            d[..k]
                .iter()
                .filter(|&&(_, j)| labels[j] == labels[i])
                .count() as f64
                / k as f64
        })
        .sum();
    total / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsne_keeps_separated_groups_apart() {
        // Three groups of 40 unit vectors around three orthogonal directions.
        let dim = 16;
        let mut v = Vec::new();
        let mut labels = Vec::new();
        let mut s = 7u64;
        for g in 0..3 {
            for _ in 0..40 {
                let mut row: Vec<f32> = (0..dim)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.3
                    })
                    .collect();
                row[g] += 1.0;
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.extend(row.iter().map(|x| x / norm));
                labels.push(g.to_string());
            }
        }
        let xy = tsne(&v, dim, 1);
        assert!(xy.iter().all(|x| x.is_finite()));
        let agreement = neighbour_agreement(&xy, &labels, 10);
        assert!(agreement > 0.95, "{agreement}");
        // Deterministic.
        assert_eq!(xy, tsne(&v, dim, 1));
    }

    /// The repulsion in this CPU's widest registers gives the plain loop's sums bit for bit, so a
    /// map does not depend on the CPU it was drawn on.
    #[test]
    fn repulsion_is_the_same_in_every_register_width() {
        let mut s = 3u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 40.0
        };
        let n = 1000 + 7;
        let xs: Vec<f32> = (0..n).map(|_| next()).collect();
        let ys: Vec<f32> = (0..n).map(|_| next()).collect();
        for i in [0, 1, 500, n - 1] {
            let wide = repulsion(xs[i], ys[i], &xs, &ys);
            let plain = repulsion_lanes(xs[i], ys[i], &xs, &ys);
            assert_eq!(
                (wide.0.to_bits(), wide.1.to_bits(), wide.2.to_bits()),
                (plain.0.to_bits(), plain.1.to_bits(), plain.2.to_bits())
            );
        }
    }
}
