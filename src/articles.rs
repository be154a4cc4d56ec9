//! The live articles of a store as dense tables, for the analyses that look at all of them at
//! once (clusters, duplicates, comparisons): one row per article, vectors contiguous, and each
//! article's paragraphs rebuilt from its stored windows.

use crate::similarity::normalize;
use crate::store::format::ArticleRecord;
use crate::store::{ArticleLoc, Store};

/// Live articles in store order, with their vectors copied into one n × dim matrix.
pub struct ArticleTable<'s> {
    pub store: &'s Store,
    pub locs: Vec<ArticleLoc>,
    pub vectors: Vec<f32>,
    pub dim: usize,
}

/// One paragraph of an article: its text (windows joined back) and one unit vector (the
/// normalised mean of its windows' vectors).
#[derive(Debug, Clone)]
pub struct Paragraph {
    pub number: u32,
    pub text: String,
    pub vector: Vec<f32>,
}

impl<'s> ArticleTable<'s> {
    pub fn new(store: &'s Store) -> ArticleTable<'s> {
        let dim = store.manifest.model.dim;
        let locs: Vec<ArticleLoc> = store.live_articles().map(|(loc, _)| loc).collect();
        let mut vectors = Vec::with_capacity(locs.len() * dim);
        for loc in &locs {
            vectors.extend_from_slice(store.segments[loc.segment].article_vector(loc.article));
        }
        ArticleTable {
            store,
            locs,
            vectors,
            dim,
        }
    }

    pub fn len(&self) -> usize {
        self.locs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locs.is_empty()
    }

    pub fn record(&self, i: usize) -> &'s ArticleRecord {
        self.store.article(self.locs[i])
    }

    pub fn vector(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    pub fn paragraphs(&self, i: usize) -> Vec<Paragraph> {
        paragraphs(self.store, self.locs[i])
    }
}

/// The paragraphs of a stored article, in order.
pub fn paragraphs(store: &Store, loc: ArticleLoc) -> Vec<Paragraph> {
    let seg = &store.segments[loc.segment];
    let dim = seg.dim;
    let mut out: Vec<Paragraph> = Vec::new();
    for c in seg.article_chunks(loc.article) {
        let rec = seg.chunk(c);
        let text = seg.chunk_text(c);
        let vector = seg.chunk_vector(c);
        match out.last_mut() {
            Some(p) if p.number == rec.paragraph => {
                p.text.push(' ');
                p.text.push_str(&text);
                p.vector.iter_mut().zip(vector).for_each(|(a, b)| *a += b);
            }
            _ => out.push(Paragraph {
                number: rec.paragraph,
                text: text.into_owned(),
                vector: vector.to_vec(),
            }),
        }
    }
    for p in &mut out {
        if p.vector.len() == dim {
            normalize(&mut p.vector);
        }
    }
    out
}

/// Text compared for exact copies: whitespace collapsed, lower case.
pub fn normalized(text: &str) -> String {
    crate::text::normalize_whitespace(text).to_lowercase()
}

/// Lower-cased words (letters and digits), the unit of the lexical comparisons.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// Hashes of the word n-grams ("shingles") of a text: verbatim copying shows as shared shingles,
/// rewording does not.
pub fn shingles(words: &[String], n: usize) -> std::collections::HashSet<u64> {
    use std::hash::{Hash, Hasher};
    let hash = |ws: &[String]| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ws.hash(&mut h);
        h.finish()
    };
    if words.len() < n {
        return if words.is_empty() {
            Default::default()
        } else {
            std::iter::once(hash(words)).collect()
        };
    }
    words.windows(n).map(hash).collect()
}

/// The share of the smaller set's shingles found in the other: 1 when one text is copied whole
/// into the other, even with material added around it.
pub fn containment(a: &std::collections::HashSet<u64>, b: &std::collections::HashSet<u64>) -> f32 {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if small.is_empty() {
        return 0.0;
    }
    small.iter().filter(|h| large.contains(h)).count() as f32 / small.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_sees_copied_text_inside_a_longer_one() {
        let a = words("The minister said the talks would resume on Monday in Geneva.");
        let b = words(
            "Officials met overnight. The minister said the talks would resume on Monday in Geneva. More later.",
        );
        let c =
            words("Talks are expected to start again next week in Switzerland, a minister said.");
        let (sa, sb, sc) = (shingles(&a, 3), shingles(&b, 3), shingles(&c, 3));
        assert_eq!(containment(&sa, &sb), 1.0);
        assert!(containment(&sa, &sc) < 0.2);
    }

    #[test]
    fn normalized_ignores_case_and_spacing() {
        assert_eq!(normalized("  Hello\n  World "), normalized("hello world"));
    }
}
