//! A deterministic stand-in for the model, for fast tests of the store, search and indexing.
//!
//! Each lower-cased word is hashed to a few signed coordinates, so texts that share words get
//! similar vectors. Windows hold at most `max_words` words. Nothing here is used by the binary;
//! the real model is tested end to end on its own.

use super::{Embedder, ModelError, ModelIdentity, Pooling};
use std::ops::Range;

pub struct FakeEmbedder {
    identity: ModelIdentity,
    max_words: usize,
}

impl FakeEmbedder {
    pub fn new(dim: usize, max_words: usize) -> Self {
        Self {
            identity: ModelIdentity {
                name: "fake/bag-of-words".into(),
                dim,
                pooling: Pooling::Mean,
                max_seq_length: max_words + 2,
                normalize: true,
                weights_sha256: format!("fake-{dim}"),
                document_prompt: None,
            },
            max_words,
        }
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.identity.dim];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .take(self.max_words)
        {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in word.to_lowercase().bytes() {
                h = (h ^ b as u64).wrapping_mul(0x100000001b3);
            }
            for k in 0..3 {
                let bits = h.rotate_left(k * 21);
                let idx = (bits % self.identity.dim as u64) as usize;
                v[idx] += if bits >> 63 == 0 { 1.0 } else { -1.0 };
            }
        }
        if v.iter().all(|&x| x == 0.0) {
            v[0] = 1.0;
        }
        super::bert::normalize_in_place(&mut v);
        v
    }
}

impl Embedder for FakeEmbedder {
    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn embed(
        &self,
        texts: &[&str],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let out = texts.iter().map(|t| self.vector(t)).collect();
        progress(texts.len());
        Ok(out)
    }

    fn windows(&self, text: &str) -> Result<Vec<Range<usize>>, ModelError> {
        let offsets = super::whitespace_words(text);
        Ok(super::split_offsets(text, &offsets, self.max_words))
    }

    fn count_tokens(&self, texts: &[&str]) -> Result<usize, ModelError> {
        Ok(texts
            .iter()
            .map(|t| t.split_whitespace().count().min(self.max_words) + 2)
            .sum())
    }
}
