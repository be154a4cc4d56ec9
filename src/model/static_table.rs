//! Static embeddings (model2vec, e.g. potion-base-8M): one stored vector per word piece, a text's
//! vector the mean of its pieces' vectors. No network runs, so it embeds hundreds of times faster
//! than a transformer, at a cost in quality docs/benchmarks.md's model table shows.
//!
//! Invariant: a text's vector is what `model2vec.StaticModel.encode` gives: the text cut to
//! `max_length × median piece length` characters, tokenised without special tokens and truncated at
//! `max_length` pieces, unknown pieces dropped, the rows averaged (zeros when nothing is left), then
//! L2-normalised when the model's config says so.

use candle_core::Tensor;
use std::collections::HashMap;
use tokenizers::Tokenizer;

/// The longest text model2vec embeds, in word pieces, when config.json names none.
pub const DEFAULT_MAX_LENGTH: usize = 512;

/// The embedding table of a static model and what its encoding needs from the tokenizer.
pub struct StaticTable {
    rows: Vec<f32>,
    dim: usize,
    unknown: Option<u32>,
    /// Characters kept of a text: max_length × the median length of the vocabulary's pieces.
    max_chars: usize,
}

impl StaticTable {
    /// Builds the table from the weights (`embeddings`, `(vocab, dim)`) and the tokenizer.
    pub fn load(
        tensors: &HashMap<String, Tensor>,
        tokenizer: &Tokenizer,
        max_length: usize,
    ) -> Result<Self, String> {
        let table = tensors
            .get("embeddings")
            .ok_or("model.safetensors has no `embeddings` table (is this a model2vec model?)")?;
        if tensors.contains_key("weights") || tensors.contains_key("mapping") {
            return Err(
                "model.safetensors has per-token weights or a token mapping (a quantised model2vec model), which likewise does not run"
                    .into(),
            );
        }
        let (vocab, dim) = table
            .dims2()
            .map_err(|e| format!("model.safetensors: `embeddings` is not a matrix: {e}"))?;
        if tokenizer.get_vocab_size(true) > vocab {
            return Err(format!(
                "tokenizer.json has {} pieces but the table has {vocab} rows: the tokenizer belongs to another model",
                tokenizer.get_vocab_size(true)
            ));
        }
        let rows = table
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("model.safetensors: {e}"))?;
        // model2vec takes the median over the vocabulary's pieces as Python counts characters.
        let mut lengths: Vec<usize> = tokenizer
            .get_vocab(true)
            .keys()
            .map(|t| t.chars().count())
            .collect();
        lengths.sort_unstable();
        let median = median_of_sorted(&lengths);
        let unknown = unknown_piece(tokenizer);
        Ok(Self {
            rows,
            dim,
            unknown,
            max_chars: max_length * median,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vectors of `texts`, with `tokenizer` truncating at the model's max_length.
    pub fn embed(
        &self,
        tokenizer: &Tokenizer,
        texts: &[&str],
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, String> {
        let cut: Vec<&str> = texts.iter().map(|t| self.cut(t)).collect();
        let encodings = tokenizer
            .encode_batch(cut, false)
            .map_err(|e| e.to_string())?;
        Ok(encodings
            .iter()
            .map(|e| {
                let mut out = vec![0f32; self.dim];
                let mut count = 0usize;
                for &id in e.get_ids() {
                    if Some(id) == self.unknown {
                        continue;
                    }
                    let start = id as usize * self.dim;
                    let Some(row) = self.rows.get(start..start + self.dim) else {
                        continue;
                    };
                    count += 1;
                    out.iter_mut().zip(row).for_each(|(o, r)| *o += r);
                }
                if count > 0 {
                    out.iter_mut().for_each(|o| *o /= count as f32);
                }
                if normalize {
                    // model2vec adds 1e-32 to the norm: a text of unknown pieces only stays zero.
                    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-32;
                    out.iter_mut().for_each(|o| *o /= norm);
                }
                out
            })
            .collect())
    }

    /// The first `max_chars` characters of `text`.
    fn cut<'t>(&self, text: &'t str) -> &'t str {
        match text.char_indices().nth(self.max_chars) {
            Some((end, _)) => &text[..end],
            None => text,
        }
    }
}

/// The median as numpy computes it, truncated to an integer as model2vec does.
fn median_of_sorted(sorted: &[usize]) -> usize {
    match sorted.len() {
        0 => 1,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

/// The unknown piece of a tokenizer whose model names one (`unk_token` of WordPiece and BPE,
/// `unk_id` of Unigram).
fn unknown_piece(tokenizer: &Tokenizer) -> Option<u32> {
    let json: serde_json::Value = serde_json::from_str(&tokenizer.to_string(false).ok()?).ok()?;
    let model = json.get("model")?;
    if let Some(token) = model.get("unk_token").and_then(|t| t.as_str()) {
        return tokenizer.token_to_id(token);
    }
    model
        .get("unk_id")
        .and_then(|v| v.as_u64())
        .map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_numpys_truncated() {
        assert_eq!(median_of_sorted(&[1, 2, 3]), 2);
        assert_eq!(median_of_sorted(&[1, 2, 3, 6]), 2); // 2.5 → 2
        assert_eq!(median_of_sorted(&[4, 6]), 5);
    }
}
