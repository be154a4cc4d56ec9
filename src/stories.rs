//! Stories that keep their name: every article joins a story when it is followed, and a story's
//! id never changes meaning.
//!
//! An article is judged as `likewise cluster --by story` judges groups (average linkage: the
//! mean cosine of its vector to the story's members' vectors, at the same threshold), among the
//! stories active within a time window of its date: it joins the story it is closest to when
//! that mean reaches the threshold, or opens a new one with the next id. The story it joined is
//! then checked against the others by the same rule; two that now belong together are merged,
//! the younger into the older, and the younger's id is kept with `merged_into`, so an old id
//! still resolves. Ids are never reused; adding articles, restarting or re-running renumbers
//! nothing.
//!
//! The book is plain data (serde), committed with the store's generation by the caller; a
//! story's sum of member vectors is not stored but rebuilt from the store when the book is
//! loaded, so the book stays small and cannot disagree with the vectors.

use crate::search::dot;
use crate::store::{ArticleLoc, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Days around an article's date in which a story must have had an article for the article to
/// join it (coverage of one event rarely spans more; undated articles and stories are always in
/// the window).
pub const DEFAULT_WINDOW_DAYS: u32 = 14;

/// One story: its members in the order they joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Story {
    pub id: u64,
    /// Article keys, in the order they joined (empty once merged into another story).
    #[serde(default)]
    pub members: Vec<String>,
    /// The story this one was merged into, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<u64>,
    /// When it was opened, and when it last grew (seconds since the epoch).
    pub opened: u64,
    pub updated: u64,
}

/// Every story, and where each article is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoryBook {
    pub next_id: u64,
    pub threshold: f32,
    pub window_days: u32,
    pub stories: BTreeMap<u64, Story>,
    /// Article key → its story (rebuilt from `stories` on load).
    #[serde(skip)]
    pub assigned: HashMap<String, u64>,
    /// Story id → (sum of member vectors, latest member date), rebuilt from the store on load.
    #[serde(skip)]
    sums: HashMap<u64, (Vec<f32>, Option<i64>)>,
}

/// What following some articles did to the stories.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoryChanges {
    /// (article key, story id) for each article placed, in order.
    pub placed: Vec<(String, u64)>,
    /// Stories opened.
    pub opened: Vec<u64>,
    /// (merged story, story it was merged into).
    pub merged: Vec<(u64, u64)>,
}

/// Days since 1970-01-01 of a stored date (`YYYY-MM-DD…`).
pub fn day_number(date: &str) -> Option<i64> {
    let d = date.get(..10)?;
    let y: i64 = d.get(0..4)?.parse().ok()?;
    let m: i64 = d.get(5..7)?.parse().ok()?;
    let day: i64 = d.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

impl StoryBook {
    pub fn new(threshold: f32, window_days: u32) -> StoryBook {
        StoryBook {
            next_id: 1,
            threshold,
            window_days,
            ..Default::default()
        }
    }

    /// Rebuilds what is not stored (where each article is, each story's vector sum) from
    /// `store`; members no longer in the store are dropped from their stories.
    pub fn attach(&mut self, store: &Store) {
        self.assigned.clear();
        self.sums.clear();
        let dim = store.manifest.model.dim;
        for story in self.stories.values_mut() {
            story.members.retain(|key| store.find_key(key).is_some());
            if story.merged_into.is_some() || story.members.is_empty() {
                continue;
            }
            let mut sum = vec![0f32; dim];
            let mut last = None;
            for key in &story.members {
                let loc = store.find_key(key).expect("kept members are live");
                add(&mut sum, vector(store, loc));
                last = last.max(article_day(store, loc));
                self.assigned.insert(key.clone(), story.id);
            }
            self.sums.insert(story.id, (sum, last));
        }
    }

    /// The live story an id names, following merges (an old id resolves to its successor).
    pub fn resolve(&self, id: u64) -> Option<u64> {
        let mut id = id;
        for _ in 0..=self.stories.len() {
            let story = self.stories.get(&id)?;
            match story.merged_into {
                Some(next) => id = next,
                None => return Some(id),
            }
        }
        None
    }

    /// Removes articles that left the store from their stories (their vectors leave the sums).
    pub fn forget(&mut self, store: &Store, keys: &[String]) {
        if keys.iter().any(|k| self.assigned.contains_key(k)) {
            self.attach(store);
        }
    }

    /// Places each of `locs` (articles of `store`, in arrival order) in a story. Articles
    /// already placed keep their story.
    pub fn place(&mut self, store: &Store, locs: &[ArticleLoc], now: u64) -> StoryChanges {
        let mut changes = StoryChanges::default();
        for &loc in locs {
            let key = store.article(loc).key.clone();
            if self.assigned.contains_key(&key) {
                continue;
            }
            let v = vector(store, loc).to_vec();
            let day = article_day(store, loc);
            let best = self.closest(&v, day, None);
            let id = match best {
                Some((id, mean)) if mean >= self.threshold => id,
                _ => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.stories.insert(
                        id,
                        Story {
                            id,
                            members: Vec::new(),
                            merged_into: None,
                            opened: now,
                            updated: now,
                        },
                    );
                    self.sums.insert(id, (vec![0f32; v.len()], None));
                    changes.opened.push(id);
                    id
                }
            };
            let story = self.stories.get_mut(&id).expect("a live story");
            story.members.push(key.clone());
            story.updated = now;
            let sum = self.sums.get_mut(&id).expect("every live story has a sum");
            add(&mut sum.0, &v);
            sum.1 = sum.1.max(day);
            self.assigned.insert(key.clone(), id);
            changes.placed.push((key, id));
            self.merge_around(id, now, &mut changes);
        }
        changes
    }

    /// The live story closest to vector `v` (mean cosine to its members) among those in the
    /// window of `day`, leaving out `except`.
    fn closest(&self, v: &[f32], day: Option<i64>, except: Option<u64>) -> Option<(u64, f32)> {
        let mut best: Option<(u64, f32)> = None;
        for (&id, (sum, last)) in &self.sums {
            if Some(id) == except || !self.in_window(day, *last) {
                continue;
            }
            let n = self.stories[&id].members.len() as f32;
            let mean = dot(v, sum) / n;
            if best.is_none_or(|(bid, bm)| mean > bm || (mean == bm && id < bid)) {
                best = Some((id, mean));
            }
        }
        best
    }

    fn in_window(&self, day: Option<i64>, last: Option<i64>) -> bool {
        match (day, last) {
            (Some(d), Some(l)) => (d - l).abs() <= self.window_days as i64,
            _ => true,
        }
    }

    /// Merges story `id` with every story whose average linkage to it reaches the threshold,
    /// the younger into the older, until none does.
    fn merge_around(&mut self, id: u64, now: u64, changes: &mut StoryChanges) {
        let mut id = id;
        loop {
            let (sum, last) = self.sums[&id].clone();
            let n = self.stories[&id].members.len() as f32;
            let mut best: Option<(u64, f32)> = None;
            for (&other, (osum, olast)) in &self.sums {
                if other == id || !self.in_window(last, *olast) {
                    continue;
                }
                let m = self.stories[&other].members.len() as f32;
                let mean = dot(&sum, osum) / (n * m);
                if mean >= self.threshold && best.is_none_or(|(_, b)| mean > b) {
                    best = Some((other, mean));
                }
            }
            let Some((other, _)) = best else { return };
            let (keep, gone) = (id.min(other), id.max(other));
            let moved = std::mem::take(&mut self.stories.get_mut(&gone).expect("live").members);
            for key in &moved {
                self.assigned.insert(key.clone(), keep);
            }
            let (gone_sum, gone_last) = self.sums.remove(&gone).expect("live");
            let kept = self.sums.get_mut(&keep).expect("live");
            add(&mut kept.0, &gone_sum);
            kept.1 = kept.1.max(gone_last);
            let story = self.stories.get_mut(&keep).expect("live");
            story.members.extend(moved);
            story.updated = now;
            self.stories
                .get_mut(&gone)
                .expect("kept for its id")
                .merged_into = Some(keep);
            changes.merged.push((gone, keep));
            id = keep;
        }
    }

    /// Live stories, with at least `min_size` articles.
    pub fn live(&self, min_size: usize) -> impl Iterator<Item = &Story> {
        self.stories
            .values()
            .filter(move |s| s.merged_into.is_none() && s.members.len() >= min_size.max(1))
    }
}

fn vector(store: &Store, loc: ArticleLoc) -> &[f32] {
    store.segments[loc.segment].article_vector(loc.article)
}

fn article_day(store: &Store, loc: ArticleLoc) -> Option<i64> {
    store.article(loc).meta.date.as_deref().and_then(day_number)
}

fn add(sum: &mut [f32], v: &[f32]) {
    sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
}

/// Pairwise agreement of two groupings of the same items (`None`: in no group of two or
/// more): precision, recall and F1 of the pairs put together by `found` against those of
/// `reference`.
pub fn pairwise_f1<A: Eq + std::hash::Hash + Copy, B: Eq + std::hash::Hash + Copy>(
    reference: &[Option<A>],
    found: &[Option<B>],
) -> (f64, f64, f64) {
    fn pair_count(sizes: impl Iterator<Item = usize>) -> u64 {
        sizes.map(|n| (n * n.saturating_sub(1) / 2) as u64).sum()
    }
    let mut r: HashMap<A, usize> = HashMap::new();
    let mut f: HashMap<B, usize> = HashMap::new();
    let mut both: HashMap<(A, B), usize> = HashMap::new();
    for (a, b) in reference.iter().zip(found) {
        if let Some(a) = a {
            *r.entry(*a).or_default() += 1;
        }
        if let Some(b) = b {
            *f.entry(*b).or_default() += 1;
        }
        if let (Some(a), Some(b)) = (a, b) {
            *both.entry((*a, *b)).or_default() += 1;
        }
    }
    let (rp, fp, common) = (
        pair_count(r.into_values()),
        pair_count(f.into_values()),
        pair_count(both.into_values()),
    );
    let precision = if fp == 0 {
        1.0
    } else {
        common as f64 / fp as f64
    };
    let recall = if rp == 0 {
        1.0
    } else {
        common as f64 / rp as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(day_number("1970-01-01"), Some(0));
        assert_eq!(day_number("2024-03-05T10:00:00Z"), Some(19_787));
        assert_eq!(day_number("2024-02-29"), Some(19_782));
        assert_eq!(day_number("nonsense"), None);
    }

    #[test]
    fn pairwise_f1_counts_pairs_put_together() {
        let reference = [Some(1), Some(1), Some(1), Some(2), Some(2), None];
        assert_eq!(pairwise_f1(&reference, &reference).2, 1.0);
        let found = [Some(7), Some(7), Some(8), Some(9), Some(9), None];
        let (p, r, _) = pairwise_f1(&reference, &found);
        assert_eq!(p, 1.0);
        assert!((r - 0.5).abs() < 1e-9, "{r}");
    }

    #[test]
    fn old_ids_resolve_through_merges() {
        let mut book = StoryBook::new(0.84, 14);
        for id in 1..=3 {
            book.stories.insert(
                id,
                Story {
                    id,
                    members: vec![],
                    merged_into: None,
                    opened: 0,
                    updated: 0,
                },
            );
        }
        book.stories.get_mut(&3).unwrap().merged_into = Some(2);
        book.stories.get_mut(&2).unwrap().merged_into = Some(1);
        assert_eq!(book.resolve(3), Some(1));
        assert_eq!(book.resolve(1), Some(1));
        assert_eq!(book.resolve(9), None);
    }
}
