//! Topic and story clusters of the stored article vectors, with labels that need no language model.
//!
//! - **Topics** (broad subjects): k-means (Lloyd, Euclidean on unit vectors), k-means++ seeding, several restarts
//!   keeping the best. Without `k`, every k from 2 up to `⌈√(n/2)⌉` (at most 30) is tried and the
//!   one with the best mean silhouette (cosine distance) is kept — the standard, parameter-free
//!   criterion; the silhouette is computed on at most `SILHOUETTE_SAMPLE` articles. Outliers are
//!   the articles whose similarity to their cluster's centre lies more than 3 robust standard
//!   deviations (1.4826 × MAD) below the cluster's median: far from every topic, rather than
//!   merely between two.
//! - **Stories** (coverage of one event): average-linkage agglomeration of articles, cut where the
//!   mean similarity between two groups falls below a threshold (0.84 for all-MiniLM-L6-v2,
//!   calibrated on BBC News and the seeds; see docs/benchmarks.md). Articles in no group of two or more are
//!   outliers. Because an average of at least t needs one pair of at least t, groups never span
//!   two components of the graph of pairs ≥ t, so only those components are agglomerated
//!   (nearest-neighbour chain, O(m²) for a component of m articles).
//! - **Labels**: the most central headline (closest to the centre), keywords by class-based
//!   TF-IDF over the members' headlines and paragraphs (stop words removed), the date span.

use crate::articles::{words, ArticleTable};
use crate::search::dot;
use crate::similarity::{normalize, pairs_above, product};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::collections::HashMap;

/// Articles the silhouette is computed on, at most (an n × n similarity matrix of this many).
pub const SILHOUETTE_SAMPLE: usize = 3000;
/// The default story threshold for all-MiniLM-L6-v2 (mean cosine between two groups).
pub const DEFAULT_STORY_THRESHOLD: f32 = 0.84;
/// Robust z beyond which an article is a topic outlier.
pub const OUTLIER_Z: f32 = 3.0;
const RESTARTS: usize = 10;
const SCAN_RESTARTS: usize = 3;
const MAX_ITERATIONS: usize = 100;
const MAX_AUTO_K: usize = 30;

/// A grouping of the table's rows: `assignment[i]` is the cluster of row i, or `None` for an
/// outlier.
#[derive(Debug, Clone)]
pub struct Grouping {
    pub assignment: Vec<Option<usize>>,
    pub k: usize,
    /// How k was chosen, for the report: e.g. `silhouette 0.147 (k = 2..=30 tried)`.
    pub how: String,
    /// Mean silhouette of each k tried (automatic k only).
    pub silhouettes: Vec<(usize, f32)>,
}

/// Result of k-means.
#[derive(Debug, Clone)]
pub struct KMeans {
    pub assignment: Vec<usize>,
    /// k × dim unit vectors.
    pub centroids: Vec<f32>,
    /// Σ x·c − |c|²/2 over rows and their centres: −(inertia − n)/2, higher is better.
    pub objective: f64,
}

/// k-means (Euclidean, as scikit-learn's) on unit rows `v` (n × dim), best of `restarts` k-means++ seedings.
pub fn kmeans(v: &[f32], dim: usize, k: usize, restarts: usize, seed: u64) -> KMeans {
    let n = v.len() / dim;
    assert!(k >= 1 && k <= n.max(1));
    (0..restarts.max(1))
        .into_par_iter()
        .map(|r| kmeans_once(v, dim, k, seed.wrapping_add(r as u64 * 7919)))
        .max_by(|a, b| a.objective.total_cmp(&b.objective))
        .expect("at least one restart")
}

fn kmeans_once(v: &[f32], dim: usize, k: usize, seed: u64) -> KMeans {
    let n = v.len() / dim;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // k-means++: each next centre drawn with probability ∝ distance² to the nearest chosen one.
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&v[first * dim..(first + 1) * dim]);
    let mut nearest = vec![f32::INFINITY; n];
    for c in 1..k {
        let last = &centroids[(c - 1) * dim..c * dim];
        let mut total = 0.0f64;
        for (i, d) in nearest.iter_mut().enumerate() {
            let dist = (1.0 - dot(&v[i * dim..(i + 1) * dim], last)).max(0.0);
            *d = d.min(dist * dist);
            total += *d as f64;
        }
        let pick = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, d) in nearest.iter().enumerate() {
                target -= *d as f64;
                if target <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        centroids.extend_from_slice(&v[pick * dim..(pick + 1) * dim]);
    }
    let mut assignment = vec![usize::MAX; n];
    let mut sims = vec![0f32; n * k];
    let mut objective = 0.0;
    for _ in 0..MAX_ITERATIONS {
        product(v, &centroids, dim, &mut sims);
        // Nearest centre in Euclidean distance: argmax x·c − |c|²/2 (|x| = 1 for every row).
        let half_norms: Vec<f32> = centroids
            .chunks(dim)
            .map(|c| c.iter().map(|x| x * x).sum::<f32>() / 2.0)
            .collect();
        let mut changed = false;
        objective = 0.0;
        for i in 0..n {
            let row = &sims[i * k..(i + 1) * k];
            let (best, s) = row.iter().zip(&half_norms).enumerate().fold(
                (0, f32::NEG_INFINITY),
                |acc, (c, (&s, &h))| if s - h > acc.1 { (c, s - h) } else { acc },
            );
            objective += s as f64;
            if assignment[i] != best {
                assignment[i] = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f32; k * dim];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            let c = assignment[i];
            counts[c] += 1;
            sums[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&v[i * dim..(i + 1) * dim])
                .for_each(|(s, x)| *s += x);
        }
        for c in 0..k {
            if counts[c] == 0 {
                // An empty cluster takes the row farthest from its centre.
                let far = (0..n)
                    .min_by(|&a, &b| {
                        sims[a * k + assignment[a]].total_cmp(&sims[b * k + assignment[b]])
                    })
                    .expect("n > 0");
                sums[c * dim..(c + 1) * dim].copy_from_slice(&v[far * dim..(far + 1) * dim]);
                counts[c] = 1;
            }
            let count = counts[c] as f32;
            sums[c * dim..(c + 1) * dim]
                .iter_mut()
                .for_each(|s| *s /= count);
        }
        centroids = sums;
    }
    // Callers compare by cosine: hand back unit centres.
    centroids.chunks_mut(dim).for_each(normalize);
    KMeans {
        assignment,
        centroids,
        objective,
    }
}

/// Mean silhouette (cosine distance) of `assignment` over the rows in `sample`, given their
/// pairwise similarities `gram` (sample × sample).
fn silhouette(gram: &[f32], sample_assignment: &[usize], k: usize) -> f32 {
    let m = sample_assignment.len();
    let sizes = {
        let mut s = vec![0usize; k];
        sample_assignment.iter().for_each(|&c| s[c] += 1);
        s
    };
    let total: f64 = (0..m)
        .into_par_iter()
        .map(|i| {
            let own = sample_assignment[i];
            if sizes[own] <= 1 {
                return 0.0;
            }
            let mut sums = vec![0f64; k];
            for (j, &s) in gram[i * m..(i + 1) * m].iter().enumerate() {
                if j != i {
                    sums[sample_assignment[j]] += 1.0 - s as f64;
                }
            }
            let a = sums[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && sizes[c] > 0)
                .map(|c| sums[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if !b.is_finite() {
                return 0.0;
            }
            let d = a.max(b);
            if d > 0.0 {
                (b - a) / d
            } else {
                0.0
            }
        })
        .sum();
    (total / m as f64) as f32
}

/// Topic clusters: k-means with the given `k`, or with k chosen by silhouette when `None`.
pub fn topics(table: &ArticleTable, k: Option<usize>) -> Grouping {
    let n = table.len();
    let dim = table.dim;
    if n == 0 {
        return Grouping {
            assignment: vec![],
            k: 0,
            how: "no articles".into(),
            silhouettes: vec![],
        };
    }
    if n < 3 || k == Some(1) {
        return Grouping {
            assignment: vec![Some(0); n],
            k: 1,
            how: if n < 3 {
                "fewer than 3 articles: one group".into()
            } else {
                "k = 1".into()
            },
            silhouettes: vec![],
        };
    }
    let (chosen, how, silhouettes) = match k {
        Some(k) => (
            kmeans(&table.vectors, dim, k.min(n), RESTARTS, 1),
            if k <= n {
                format!("k = {k} as asked")
            } else {
                format!("k = {n}: {k} asked, and there are {n} articles")
            },
            vec![],
        ),
        None => {
            let sample: Vec<usize> = if n <= SILHOUETTE_SAMPLE {
                (0..n).collect()
            } else {
                let mut rng = rand::rngs::StdRng::seed_from_u64(7);
                rand::seq::index::sample(&mut rng, n, SILHOUETTE_SAMPLE).into_vec()
            };
            let sv: Vec<f32> = sample
                .iter()
                .flat_map(|&i| table.vector(i).iter().copied())
                .collect();
            let mut gram = vec![0f32; sample.len() * sample.len()];
            product(&sv, &sv, dim, &mut gram);
            let k_max = (((n as f64) / 2.0).sqrt().ceil() as usize)
                .clamp(2, MAX_AUTO_K)
                .min(n - 1);
            let mut scores = Vec::new();
            let mut best: Option<(f32, usize)> = None;
            for k in 2..=k_max {
                let km = kmeans(&table.vectors, dim, k, SCAN_RESTARTS, 1);
                let sa: Vec<usize> = sample.iter().map(|&i| km.assignment[i]).collect();
                let s = silhouette(&gram, &sa, k);
                scores.push((k, s));
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, k));
                }
            }
            let (s, k) = best.expect("k_max >= 2");
            (
                kmeans(&table.vectors, dim, k, RESTARTS, 1),
                format!("k = {k} by silhouette {s:.3}, k = 2..={k_max} tried"),
                scores,
            )
        }
    };
    let k = chosen.centroids.len() / dim;
    let mut assignment: Vec<Option<usize>> = chosen.assignment.iter().map(|&c| Some(c)).collect();
    let mut sims = vec![0f32; n * k];
    product(&table.vectors, &chosen.centroids, dim, &mut sims);
    for c in 0..k {
        let members: Vec<usize> = (0..n).filter(|&i| chosen.assignment[i] == c).collect();
        let own: Vec<f32> = members.iter().map(|&i| sims[i * k + c]).collect();
        if own.len() < 5 {
            continue;
        }
        let med = median(&own);
        let mad = 1.4826 * median(&own.iter().map(|x| (x - med).abs()).collect::<Vec<_>>());
        if mad <= 0.0 {
            continue;
        }
        for (&i, &s) in members.iter().zip(&own) {
            if (med - s) / mad > OUTLIER_Z {
                assignment[i] = None;
            }
        }
    }
    Grouping {
        assignment,
        k,
        how,
        silhouettes,
    }
}

fn median(x: &[f32]) -> f32 {
    let mut v = x.to_vec();
    v.sort_by(f32::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Story clusters: average linkage cut at `threshold`; groups of one are outliers.
pub fn stories(table: &ArticleTable, threshold: f32) -> Grouping {
    let n = table.len();
    let dim = table.dim;
    let pairs = pairs_above(&table.vectors, dim, threshold);
    let mut components = UnionFind::new(n);
    for p in &pairs {
        components.union(p.a as usize, p.b as usize);
    }
    let mut by_root: HashMap<usize, Vec<usize>> = HashMap::new();
    for i in 0..n {
        by_root.entry(components.find(i)).or_default().push(i);
    }
    let mut comps: Vec<Vec<usize>> = by_root.into_values().filter(|m| m.len() > 1).collect();
    comps.sort();
    let groups: Vec<Vec<usize>> = comps
        .par_iter()
        .flat_map_iter(|members| {
            let sub: Vec<f32> = members
                .iter()
                .flat_map(|&i| table.vector(i).iter().copied())
                .collect();
            let m = members.len();
            let mut sim = vec![0f32; m * m];
            product(&sub, &sub, dim, &mut sim);
            average_linkage(&sim, m, threshold)
                .into_iter()
                .map(|g| g.into_iter().map(|j| members[j]).collect::<Vec<usize>>())
                .collect::<Vec<_>>()
        })
        .filter(|g| g.len() > 1)
        .collect();
    let mut assignment = vec![None; n];
    for (c, g) in groups.iter().enumerate() {
        for &i in g {
            assignment[i] = Some(c);
        }
    }
    Grouping {
        assignment,
        k: groups.len(),
        how: format!("average linkage cut at mean cosine {threshold}"),
        silhouettes: vec![],
    }
}

/// Groups of rows of a similarity matrix (m × m) merged while the mean similarity between two
/// groups is ≥ `threshold`, by the nearest-neighbour chain algorithm (exact for average linkage,
/// which never inverts).
pub fn average_linkage(sim: &[f32], m: usize, threshold: f32) -> Vec<Vec<usize>> {
    let mut s: Vec<f64> = sim.iter().map(|&x| x as f64).collect();
    let mut size = vec![1usize; m];
    let mut active = vec![true; m];
    let mut members: Vec<Vec<usize>> = (0..m).map(|i| vec![i]).collect();
    let mut remaining = m;
    let mut chain: Vec<usize> = Vec::new();
    // Merges below the threshold are not needed: the cut keeps only those at or above it. A group
    // whose nearest neighbour is below it is final: a merge of others averages similarities
    // that are all below the threshold.
    let mut stopped = vec![false; m];
    while remaining > 1 {
        if chain.is_empty() {
            match (0..m).find(|&i| active[i] && !stopped[i]) {
                Some(i) => chain.push(i),
                None => break,
            }
        }
        let a = *chain.last().expect("non-empty");
        let prev = if chain.len() >= 2 {
            Some(chain[chain.len() - 2])
        } else {
            None
        };
        let mut best: Option<(usize, f64)> = None;
        for c in 0..m {
            if c == a || !active[c] {
                continue;
            }
            let v = s[a * m + c];
            let better = match best {
                None => true,
                Some((b, bv)) => v > bv || (v == bv && Some(c) == prev && Some(b) != prev),
            };
            if better {
                best = Some((c, v));
            }
        }
        let Some((b, v)) = best else { break };
        if v < threshold as f64 {
            // a's nearest group is too far: a is final. The chain behind it is rebuilt.
            stopped[a] = true;
            chain.clear();
            continue;
        }
        if Some(b) == prev {
            chain.pop();
            chain.pop();
            // Merge b into a (Lance–Williams update for average linkage).
            let (na, nb) = (size[a] as f64, size[b] as f64);
            for c in 0..m {
                if active[c] && c != a && c != b {
                    let merged = (na * s[a * m + c] + nb * s[b * m + c]) / (na + nb);
                    s[a * m + c] = merged;
                    s[c * m + a] = merged;
                }
            }
            size[a] += size[b];
            active[b] = false;
            let moved = std::mem::take(&mut members[b]);
            members[a].extend(moved);
            remaining -= 1;
        } else {
            chain.push(b);
        }
    }
    (0..m)
        .filter(|&i| active[i])
        .map(|i| {
            let mut g = std::mem::take(&mut members[i]);
            g.sort_unstable();
            g
        })
        .collect()
}

struct UnionFind(Vec<usize>);
impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// A labelled cluster, ready to print.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cluster {
    pub id: usize,
    /// The most central member's headline.
    pub label: String,
    pub keywords: Vec<String>,
    pub size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dates: Option<(String, String)>,
    /// Members, most central first: (row, cosine to the cluster's centre).
    #[serde(skip)]
    pub members: Vec<(usize, f32)>,
}

/// Labels each group of `grouping`: centre, most central headline, c-TF-IDF keywords, dates.
/// Clusters are numbered from 1, largest first.
pub fn label(table: &ArticleTable, grouping: &Grouping, keywords: usize) -> Vec<Cluster> {
    let dim = table.dim;
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); grouping.k];
    for (i, c) in grouping.assignment.iter().enumerate() {
        if let Some(c) = c {
            groups[*c].push(i);
        }
    }
    groups.retain(|g| !g.is_empty());
    groups.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));
    let terms: Vec<HashMap<String, f64>> =
        groups.par_iter().map(|g| term_counts(table, g)).collect();
    let keywords = c_tf_idf(&terms, keywords);
    groups
        .iter()
        .zip(keywords)
        .enumerate()
        .map(|(id, (g, keywords))| {
            let mut centre = vec![0f32; dim];
            for &i in g {
                centre
                    .iter_mut()
                    .zip(table.vector(i))
                    .for_each(|(c, x)| *c += x);
            }
            normalize(&mut centre);
            let mut members: Vec<(usize, f32)> = g
                .iter()
                .map(|&i| (i, dot(table.vector(i), &centre)))
                .collect();
            members.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut dates: Vec<&str> = g
                .iter()
                .filter_map(|&i| table.record(i).meta.date.as_deref())
                .collect();
            dates.sort_unstable();
            Cluster {
                id: id + 1,
                label: table.record(members[0].0).title.clone(),
                keywords,
                size: g.len(),
                dates: match (dates.first(), dates.last()) {
                    (Some(a), Some(b)) => Some((a.to_string(), b.to_string())),
                    _ => None,
                },
                members,
            }
        })
        .collect()
}

fn stop_words() -> &'static std::collections::HashSet<&'static str> {
    static WORDS: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    WORDS.get_or_init(|| {
        let mut set: std::collections::HashSet<&'static str> =
            stop_words::get("en").iter().copied().collect();
        // Reporting verbs and titles that every news cluster shares.
        set.extend([
            "said", "says", "told", "mr", "mrs", "ms", "also", "would", "could", "year",
        ]);
        set
    })
}

fn term_counts(table: &ArticleTable, rows: &[usize]) -> HashMap<String, f64> {
    let stop = stop_words();
    let mut counts = HashMap::new();
    for &i in rows {
        let mut text = table.record(i).title.clone();
        for p in table.paragraphs(i) {
            text.push('\n');
            text.push_str(&p.text);
        }
        for w in words(&text) {
            if w.chars().count() < 3
                || w.chars().all(|c| c.is_ascii_digit())
                || stop.contains(w.as_str())
            {
                continue;
            }
            *counts.entry(w).or_insert(0.0) += 1.0;
        }
    }
    counts
}

/// Class-based TF-IDF (as in BERTopic): a term's weight in a class is its frequency in the class
/// times log(1 + mean words per class / its frequency over all classes).
fn c_tf_idf(classes: &[HashMap<String, f64>], top: usize) -> Vec<Vec<String>> {
    let mut total: HashMap<&str, f64> = HashMap::new();
    let mut all_words = 0.0;
    for class in classes {
        for (w, c) in class {
            *total.entry(w.as_str()).or_insert(0.0) += c;
            all_words += c;
        }
    }
    let mean_words = all_words / classes.len().max(1) as f64;
    classes
        .iter()
        .map(|class| {
            let size: f64 = class.values().sum::<f64>().max(1.0);
            let mut scored: Vec<(&str, f64)> = class
                .iter()
                .map(|(w, c)| {
                    (
                        w.as_str(),
                        c / size * (1.0 + mean_words / total[w.as_str()]).ln(),
                    )
                })
                .collect();
            scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            scored
                .into_iter()
                .take(top)
                .map(|(w, _)| w.to_string())
                .collect()
        })
        .collect()
}

/// Normalised mutual information (arithmetic mean of the entropies, as scikit-learn's default)
/// between two labelings of the same items.
pub fn nmi<A: Eq + std::hash::Hash, B: Eq + std::hash::Hash>(a: &[A], b: &[B]) -> f64 {
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let mut ca: HashMap<&A, f64> = HashMap::new();
    let mut cb: HashMap<&B, f64> = HashMap::new();
    let mut joint: HashMap<(&A, &B), f64> = HashMap::new();
    for (x, y) in a.iter().zip(b) {
        *ca.entry(x).or_default() += 1.0;
        *cb.entry(y).or_default() += 1.0;
        *joint.entry((x, y)).or_default() += 1.0;
    }
    let h = |c: &mut dyn Iterator<Item = f64>| -> f64 {
        c.map(|v| {
            let p = v / n;
            -p * p.ln()
        })
        .sum()
    };
    let ha = h(&mut ca.values().copied());
    let hb = h(&mut cb.values().copied());
    let mi: f64 = joint
        .iter()
        .map(|((x, y), &v)| {
            let p = v / n;
            p * (p / ((ca[x] / n) * (cb[y] / n))).ln()
        })
        .sum();
    let denom = (ha + hb) / 2.0;
    if denom <= 0.0 {
        1.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmi_matches_known_values() {
        assert!((nmi(&[0, 0, 1, 1], &[5, 5, 7, 7]) - 1.0).abs() < 1e-12);
        assert!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]).abs() < 1e-12);
        // scikit-learn: normalized_mutual_info_score([0,0,0,1,1,1],[0,0,1,1,2,2]) = 0.5158037429793889
        assert!((nmi(&[0, 0, 0, 1, 1, 1], &[0, 0, 1, 1, 2, 2]) - 0.5158037429793889).abs() < 1e-9);
    }

    #[test]
    fn average_linkage_cuts_at_the_threshold() {
        // Two tight pairs, far apart; the mean across pairs is below 0.5.
        #[rustfmt::skip]
        let sim = [
            1.0, 0.9, 0.2, 0.1,
            0.9, 1.0, 0.1, 0.3,
            0.2, 0.1, 1.0, 0.8,
            0.1, 0.3, 0.8, 1.0,
        ];
        let mut groups = average_linkage(&sim, 4, 0.5);
        groups.sort();
        assert_eq!(groups, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(average_linkage(&sim, 4, 0.1).len(), 1);
        assert_eq!(average_linkage(&sim, 4, 0.95).len(), 4);
    }

    #[test]
    fn average_linkage_agrees_with_naive_agglomeration() {
        let m = 40;
        let mut state = 11u64;
        let mut pts: Vec<f32> = (0..m * 3)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        pts.chunks_mut(3).for_each(normalize);
        let mut sim = vec![0f32; m * m];
        product(&pts, &pts, 3, &mut sim);
        for t in [0.0f32, 0.5, 0.8] {
            let mut fast = average_linkage(&sim, m, t);
            // Naive: repeatedly merge the two groups of highest mean similarity.
            let mut groups: Vec<Vec<usize>> = (0..m).map(|i| vec![i]).collect();
            loop {
                let mut best = (0, 0, f64::NEG_INFINITY);
                for x in 0..groups.len() {
                    for y in x + 1..groups.len() {
                        let sim = &sim;
                        let mean = groups[x]
                            .iter()
                            .flat_map(|&i| groups[y].iter().map(move |&j| sim[i * m + j] as f64))
                            .sum::<f64>()
                            / (groups[x].len() * groups[y].len()) as f64;
                        if mean > best.2 {
                            best = (x, y, mean);
                        }
                    }
                }
                if groups.len() < 2 || best.2 < t as f64 {
                    break;
                }
                let moved = groups.remove(best.1);
                groups[best.0].extend(moved);
            }
            groups.iter_mut().for_each(|g| g.sort_unstable());
            groups.sort();
            fast.sort();
            assert_eq!(fast, groups, "threshold {t}");
        }
    }

    #[test]
    fn kmeans_separates_clear_groups() {
        let dim = 4;
        let mut v = Vec::new();
        for i in 0..30 {
            let mut x = [0.05 * (i % 3) as f32; 4];
            x[i % 3] = 1.0;
            v.extend_from_slice(&x);
        }
        v.chunks_mut(dim).for_each(normalize);
        let km = kmeans(&v, dim, 3, 4, 1);
        for i in 0..30 {
            assert_eq!(km.assignment[i], km.assignment[i % 3]);
        }
        assert_eq!(
            km.assignment[..3]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            3
        );
    }
}
