//! Vectors identical to sentence-transformers: every line of the golden file (made by
//! sentence-transformers 6.2 from the same model files) must reach cosine ≥ 0.99999.

mod common;

use likewise::model::Embedder;

#[derive(serde::Deserialize)]
struct Golden {
    id: String,
    text: String,
    embedding: Vec<f32>,
}

fn golden() -> Vec<Golden> {
    let text = std::fs::read_to_string(
        common::root().join("tests/fixtures/golden-all-MiniLM-L6-v2.jsonl"),
    )
    .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The lowest cosine between a golden vector and ours, and the line it is on.
fn worst_cosine(golden: &[Golden], vectors: &[Vec<f32>]) -> (f64, String) {
    let mut worst = (1.0f64, String::new());
    for (g, v) in golden.iter().zip(vectors) {
        let c = common::cosine(&g.embedding, v);
        if c < worst.0 {
            worst = (c, g.id.clone());
        }
    }
    worst
}

#[test]
fn every_golden_vector_matches_sentence_transformers() {
    let golden = golden();
    assert_eq!(golden.len(), 124);
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    let vectors = common::encoder().embed(&texts, &|_| {}).unwrap();
    let worst = worst_cosine(&golden, &vectors);
    eprintln!("worst cosine {:.8} ({})", worst.0, worst.1);
    assert!(
        worst.0 >= 0.99999,
        "worst cosine {:.8} on {}",
        worst.0,
        worst.1
    );
}

#[test]
fn bf16_vectors_stay_within_cosine_0_999_of_sentence_transformers() {
    let golden = golden();
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    let enc = common::fast_encoder();
    assert_eq!(likewise::model::Embedder::precision(enc).as_str(), "bf16");
    let vectors = enc.embed(&texts, &|_| {}).unwrap();
    let worst = worst_cosine(&golden, &vectors);
    eprintln!("bf16: worst cosine {:.8} ({})", worst.0, worst.1);
    assert!(
        worst.0 >= 0.999,
        "worst cosine {:.8} on {}",
        worst.0,
        worst.1
    );
    // Sequences are packed into chunks without padding; a vector must not depend on its chunk.
    for (g, batched) in golden.iter().zip(&vectors).step_by(7) {
        let alone = enc.embed(&[g.text.as_str()], &|_| {}).unwrap();
        assert_eq!(
            &alone[0], batched,
            "{}: alone differs from in a batch",
            g.id
        );
    }
}

#[test]
fn one_text_at_a_time_gives_the_same_vectors_as_a_batch() {
    // Batching pads shorter texts; padding must not change any vector.
    let golden = golden();
    let enc = common::encoder();
    for g in golden.iter().step_by(9) {
        let alone = enc.embed(&[g.text.as_str()], &|_| {}).unwrap();
        let c = common::cosine(&g.embedding, &alone[0]);
        assert!(c >= 0.99999, "{}: {c}", g.id);
    }
}

#[test]
fn long_texts_are_truncated_like_sentence_transformers() {
    // The whole-article lines are longer than 256 word pieces: truncation must match.
    let golden = golden();
    let articles: Vec<&Golden> = golden
        .iter()
        .filter(|g| g.id.ends_with("#article"))
        .collect();
    assert!(!articles.is_empty());
    let enc = common::encoder();
    for g in articles {
        assert!(
            enc.count_tokens(&[g.text.as_str()]).unwrap() == 256,
            "{} should hit the window",
            g.id
        );
        let v = enc.embed(&[g.text.as_str()], &|_| {}).unwrap();
        assert!(common::cosine(&g.embedding, &v[0]) >= 0.99999, "{}", g.id);
    }
}
