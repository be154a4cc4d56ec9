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

/// Lone texts from several threads while a batch runs on every core: a lone text's multiplies
/// are shared among rayon's threads, which take up the batch's chunks while they wait, so one
/// thread runs a second forward pass inside the first. Every vector stays the golden one.
#[test]
fn lone_texts_beside_a_batch_on_other_threads_keep_parity() {
    let golden = golden();
    let enc = common::encoder();
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    std::thread::scope(|scope| {
        let batch = scope.spawn(|| {
            for _ in 0..3 {
                let vectors = enc.embed(&texts, &|_| {}).unwrap();
                let (worst, id) = worst_cosine(&golden, &vectors);
                assert!(worst >= 0.99999, "batch, {id}: {worst}");
            }
        });
        let lone: Vec<_> = (0..3)
            .map(|t| {
                let golden = &golden;
                scope.spawn(move || {
                    for g in golden.iter().skip(t).step_by(5) {
                        let v = enc.embed(&[g.text.as_str()], &|_| {}).unwrap();
                        let c = common::cosine(&g.embedding, &v[0]);
                        assert!(c >= 0.99999, "alone, {}: {c}", g.id);
                    }
                })
            })
            .collect();
        batch.join().unwrap();
        for t in lone {
            t.join().unwrap();
        }
    });
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

/// One encoder per kernel choice, each held to its precision's bound against sentence-transformers,
/// and each with a vector that does not depend on its batch. `avx2` is the code an AVX2-only CPU
/// runs (bf16 included: widened to f32 in registers); `candle` is candle's own matrix multiply, the
/// reference the fast forward is checked on. `avx512` on a CPU without AVX-512 must be refused
/// with a message naming what is missing; the bf16 paths of the CPU agree, so a bf16 store stays
/// queryable on a CPU without AVX512-BF16.
#[test]
fn every_kernel_choice_keeps_parity() {
    use likewise::model::{Precision, SentenceEncoder};
    let golden = golden();
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    let cases = [
        (Precision::F32, "auto", 0.99999),
        (Precision::F32, "avx512", 0.99999),
        (Precision::F32, "avx2", 0.99999),
        (Precision::F32, "candle", 0.99999),
        (Precision::Bf16, "auto", 0.999),
        (Precision::Bf16, "avx512", 0.999),
        (Precision::Bf16, "avx2", 0.999),
    ];
    let has_avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let mut bf16_vectors: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    for (precision, kernels, bound) in cases {
        let loaded =
            SentenceEncoder::load_with_kernels(&common::model_folder(), precision, Some(kernels));
        // bf16 runs on AVX-512F alone (`bf16-fma512-12x32`) as well as through AVX512-BF16.
        let runs_here = kernels != "avx512" || has_avx512;
        if !runs_here {
            let e = loaded.err().map(|e| e.to_string()).unwrap_or_default();
            eprintln!("{precision} --kernels {kernels}: refused on this CPU: {e}");
            assert!(
                e.contains("avx512") && e.contains("lacks"),
                "{precision} {kernels} on a CPU without it: {e:?}"
            );
            continue;
        }
        let enc = loaded.unwrap_or_else(|e| panic!("{precision} {kernels}: {e}"));
        assert_eq!(enc.precision(), precision);
        let vectors = enc.embed(&texts, &|_| {}).unwrap();
        let worst = worst_cosine(&golden, &vectors);
        let (prose, prose_vectors): (Vec<_>, Vec<_>) = golden
            .iter()
            .zip(&vectors)
            .filter(|(g, _)| !g.id.starts_with("edge#"))
            .unzip();
        let worst_prose = prose
            .iter()
            .zip(&prose_vectors)
            .map(|(g, v)| (common::cosine(&g.embedding, v), g.id.clone()))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap();
        eprintln!(
            "{precision} --kernels {kernels}: worst on prose {:.8} ({})",
            worst_prose.0, worst_prose.1
        );
        eprintln!(
            "{precision} --kernels {kernels} ({}): worst cosine {:.8} ({})",
            enc.kernels(),
            worst.0,
            worst.1
        );
        assert!(
            worst.0 >= bound,
            "{precision} {kernels} ({}): worst cosine {:.8} on {}",
            enc.kernels(),
            worst.0,
            worst.1
        );
        if kernels == "avx2" {
            assert!(enc.kernels().contains("avx2"), "{}", enc.kernels());
        }
        // Our kernels give the same bits alone as in a batch; candle's blocking of a padded batch
        // moves the last bits only.
        for (g, batched) in golden.iter().zip(&vectors).step_by(11) {
            let alone = enc.embed(&[g.text.as_str()], &|_| {}).unwrap();
            if kernels == "candle" {
                let c = common::cosine(&alone[0], batched);
                assert!(c >= 0.999999, "candle: {} alone at cosine {c}", g.id);
            } else {
                assert!(
                    &alone[0] == batched,
                    "{precision} {kernels}: {} alone differs from in a batch",
                    g.id
                );
            }
        }
        if precision == Precision::Bf16 {
            bf16_vectors.push((enc.kernels().to_string(), vectors));
        }
    }
    // The bf16 paths chosen here (AVX2's, and AVX-512's, AVX512-BF16's or AMX's where present) give
    // the same vectors to within the order of their sums.
    let (first_kernels, first) = &bf16_vectors[0];
    for (kernels, vectors) in &bf16_vectors[1..] {
        let worst = first
            .iter()
            .zip(vectors)
            .map(|(a, b)| common::cosine(a, b))
            .fold(1.0f64, f64::min);
        eprintln!("bf16 {first_kernels} vs {kernels}: worst cosine {worst:.8}");
        assert!(
            worst >= 0.9999,
            "bf16 {first_kernels} vs {kernels}: {worst}"
        );
    }
}

#[test]
fn a_kernel_choice_this_cpu_or_precision_cannot_run_is_a_clear_error() {
    use likewise::model::{Precision, SentenceEncoder};
    let err = |p, k| {
        SentenceEncoder::load_with_kernels(&common::model_folder(), p, Some(k))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let e = err(Precision::Bf16, "candle");
    assert!(e.contains("bf16") && e.contains("candle"), "{e}");
    let e = err(Precision::F32, "sse2");
    assert!(e.contains("sse2") && e.contains("avx2"), "{e}");
}
