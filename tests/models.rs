//! Every architecture candle-transformers runs, against sentence-transformers: tiny random-weight
//! models of each (tests/fixtures/models/, made by make.py there with PyTorch `transformers` and
//! `sentence-transformers`) and the vectors sentence-transformers gave for them, as documents and
//! as queries with the folders' prompts. Also the real model's fast forward against
//! candle-transformers' `BertModel`, and clear errors for architectures nothing here runs.

mod common;

use likewise::model::{Embedder, ModelFolder, Precision, SentenceEncoder};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Expected {
    architecture: String,
    texts: Vec<String>,
    tokens: Vec<usize>,
    documents: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    prompts: std::collections::BTreeMap<String, String>,
}

fn fixtures() -> Vec<(PathBuf, Expected)> {
    let dir = common::root().join("tests/fixtures/models");
    let mut out: Vec<(PathBuf, Expected)> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/models")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let bytes = std::fs::read(path.join("expected.json")).ok()?;
            Some((path, serde_json::from_slice(&bytes).expect("expected.json")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Cosine, and the ratio of lengths (vectors that are not normalised must match in length too).
fn agreement(a: &[f32], b: &[f32]) -> (f64, f64) {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    (common::cosine(a, b), norm(a) / norm(b))
}

fn check(name: &str, role: &str, texts: &[String], got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for ((text, g), w) in texts.iter().zip(got).zip(want) {
        assert_eq!(g.len(), w.len(), "{name}: dimension");
        let (cos, ratio) = agreement(g, w);
        assert!(
            cos >= 0.99999 && (ratio - 1.0).abs() < 1e-4,
            "{name} {role} {text:?}: cosine {cos}, length ratio {ratio}"
        );
    }
}

#[test]
fn every_architecture_matches_sentence_transformers() {
    let fixtures = fixtures();
    let names: Vec<&str> = fixtures
        .iter()
        .map(|(_, e)| e.architecture.as_str())
        .collect();
    for required in [
        "bert",
        "xlm-roberta",
        "distilbert",
        "modernbert",
        "nomic_bert",
        "jina_bert",
    ] {
        assert!(
            names.contains(&required),
            "no fixture for {required}: {names:?}"
        );
    }
    for (dir, expected) in &fixtures {
        let name = &expected.architecture;
        let folder = ModelFolder::open(dir, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(folder.architecture.name(), name.as_str());
        let encoder = SentenceEncoder::load(&folder).unwrap_or_else(|e| panic!("{name}: {e}"));
        let texts: Vec<&str> = expected.texts.iter().map(String::as_str).collect();
        // The same truncation as sentence-transformers (the prompt counted in), or every later
        // comparison would be luck.
        for (text, &tokens) in texts.iter().zip(&expected.tokens) {
            let prompt = expected
                .prompts
                .get("document")
                .or(expected.prompts.get("passage"))
                .cloned()
                .unwrap_or_default();
            let ours = encoder.count_tokens(&[&format!("{prompt}{text}")]).unwrap();
            assert_eq!(ours, tokens, "{name}: tokens of {text:?}");
        }
        let documents = encoder.embed(&texts, &|_| {}).unwrap();
        check(
            name,
            "document",
            &expected.texts,
            &documents,
            &expected.documents,
        );
        let queries = encoder.embed_queries(&texts).unwrap();
        check(name, "query", &expected.texts, &queries, &expected.queries);
        if !expected.prompts.is_empty() {
            // The prompts must make a difference, or the query check above proves nothing.
            assert!(
                agreement(&documents[0], &queries[0]).0 < 0.99999,
                "{name}: query and document vectors are the same"
            );
        }
        // One text at a time gives what the batch gave.
        let alone = encoder.embed(&texts[3..4], &|_| {}).unwrap();
        check(
            name,
            "alone",
            &expected.texts[3..4],
            &alone,
            &documents[3..4],
        );
    }
}

#[test]
fn the_fast_bert_forward_matches_candle_transformers() {
    let folder = common::model_folder();
    let reference = SentenceEncoder::load_reference(&folder).expect("candle-transformers loads");
    assert_eq!(reference.kernels(), "candle-transformers");
    let fast = common::encoder();
    assert_ne!(fast.kernels(), "candle-transformers");
    let text = std::fs::read_to_string(common::seeds().join("003_d6a61527be0b1163.txt")).unwrap();
    let paragraphs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(paragraphs.len() > 5);
    let want = reference.embed(&paragraphs, &|_| {}).unwrap();
    let got = fast.embed(&paragraphs, &|_| {}).unwrap();
    for ((p, g), w) in paragraphs.iter().zip(&got).zip(&want) {
        let cos = common::cosine(g, w);
        assert!(cos >= 0.99999, "{p:?}: cosine {cos}");
    }
}

#[test]
fn an_architecture_nothing_here_runs_is_named_in_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t5");
    common::copy_dir(&common::root().join("tests/fixtures/models/bert"), &dir);
    let config_path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["model_type"] = "t5".into();
    config["architectures"] = serde_json::json!(["T5EncoderModel"]);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = ModelFolder::open(&dir, "t5").unwrap_err().to_string();
    assert!(
        err.contains("model_type `t5` (T5EncoderModel)")
            && err.contains("xlm-roberta")
            && err.contains("modernbert"),
        "{err}"
    );

    // A folder whose pooling nothing here does is refused before any work, naming the mode.
    let pooling = dir.join("1_Pooling/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pooling).unwrap()).unwrap();
    cfg["pooling_mode"] = "weightedmean".into();
    std::fs::write(&pooling, cfg.to_string()).unwrap();
    let err = ModelFolder::open(&dir, "t5").unwrap_err().to_string();
    assert!(err.contains("pooling mode `weightedmean`"), "{err}");
}

#[test]
fn bf16_on_an_architecture_without_a_fast_forward_is_a_clear_error() {
    let dir = common::root().join("tests/fixtures/models/xlm-roberta");
    let folder = ModelFolder::open(&dir, "xlm-roberta").unwrap();
    let err = SentenceEncoder::load_with(&folder, likewise::model::Precision::Bf16)
        .err()
        .expect("bf16 is refused")
        .to_string();
    assert!(
        err.contains("xlm-roberta") && err.contains("--precision f32"),
        "{err}"
    );
}

/// A known model's folder, fetched (and verified) when missing, as the default model is.
fn fetched(name: &str) -> PathBuf {
    std::env::set_current_dir(common::root()).unwrap();
    let lock = std::fs::File::create(common::root().join("models/.fetch.lock")).unwrap();
    lock.lock().unwrap();
    likewise::model::fetch::fetch_model(name, false)
        .unwrap_or_else(|e| panic!("the test needs {name} and could not fetch it: {e}"))
}

#[test]
fn mpnet_matches_sentence_transformers_on_every_golden_line() {
    let dir = fetched("all-mpnet-base-v2");
    let folder = ModelFolder::open(&dir, "all-mpnet-base-v2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(folder.architecture.name(), "mpnet");
    assert_eq!(
        (folder.identity.dim, folder.identity.max_seq_length),
        (768, 384)
    );

    #[derive(Deserialize)]
    struct Line {
        id: String,
        text: String,
        embedding: Vec<f32>,
    }
    let golden: Vec<Line> = std::fs::read_to_string(
        common::root().join("tests/fixtures/golden-all-mpnet-base-v2.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    assert!(golden.len() > 100);
    let texts: Vec<&str> = golden.iter().map(|g| g.text.as_str()).collect();
    // The worst cosine of `encoder`'s vectors to `reference`'s, and where.
    let worst_against = |got: &[Vec<f32>], reference: &dyn Fn(usize) -> Vec<f32>| {
        let mut worst = (1.0f64, "");
        for (i, (g, v)) in golden.iter().zip(got).enumerate() {
            let c = common::cosine(&reference(i), v);
            if c < worst.0 {
                worst = (c, g.id.as_str());
            }
        }
        worst
    };
    // The fast encoder (relative attention bias in its own attention) where this CPU runs it,
    // and candle's MPNet forward (`mpnet.rs`), its reference.
    let mut exact = Vec::new();
    for kernels in [None, Some("candle")] {
        let encoder = SentenceEncoder::load_with_kernels(&folder, Precision::F32, kernels)
            .unwrap_or_else(|e| panic!("{e}"));
        if kernels.is_none() && likewise::model::fast_encoder_runs_here() {
            assert_ne!(
                encoder.kernels(),
                "candle-transformers",
                "MPNet runs on the fast encoder"
            );
        }
        let got = encoder.embed(&texts, &|_| {}).unwrap();
        let worst = worst_against(&got, &|i| golden[i].embedding.clone());
        eprintln!(
            "{}: worst cosine {} ({})",
            encoder.kernels(),
            worst.0,
            worst.1
        );
        assert!(
            worst.0 >= 0.99999,
            "{}: worst cosine {} on {}",
            encoder.kernels(),
            worst.0,
            worst.1
        );
        exact = got;
    }
    // bf16 stays as close to f32 as MiniLM's does.
    if likewise::model::fast_encoder_runs_here() {
        let bf16 =
            SentenceEncoder::load_with(&folder, Precision::Bf16).unwrap_or_else(|e| panic!("{e}"));
        let got = bf16.embed(&texts, &|_| {}).unwrap();
        let worst = worst_against(&got, &|i| exact[i].clone());
        eprintln!(
            "{}: worst cosine {} to f32 ({})",
            bf16.kernels(),
            worst.0,
            worst.1
        );
        assert!(
            worst.0 >= 0.999,
            "bf16: worst cosine {} on {}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn potion_static_vectors_match_model2vec() {
    let dir = fetched("potion-base-8M");
    let folder = ModelFolder::open(&dir, "potion-base-8M").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(folder.identity.name, "minishlab/potion-base-8M");
    assert_eq!(folder.identity.dim, 256);
    let encoder = SentenceEncoder::load(&folder).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(encoder.kernels(), "static-table");

    #[derive(Deserialize)]
    struct Golden {
        texts: Vec<String>,
        vectors: Vec<Vec<f32>>,
    }
    let golden: Golden = serde_json::from_slice(
        &std::fs::read(common::root().join("tests/fixtures/potion-base-8M.golden.json")).unwrap(),
    )
    .unwrap();
    assert!(golden.texts.len() > 50);
    let texts: Vec<&str> = golden.texts.iter().map(String::as_str).collect();
    let got = encoder.embed(&texts, &|_| {}).unwrap();
    for ((text, g), w) in texts.iter().zip(&got).zip(&golden.vectors) {
        let short: String = text.chars().take(60).collect();
        if w.iter().all(|x| *x == 0.0) {
            // Nothing known to average: zeros, as model2vec gives.
            assert!(g.iter().all(|x| *x == 0.0), "{short:?}: not zeros");
            continue;
        }
        let cos = common::cosine(g, w);
        assert!(cos >= 0.99999, "{short:?}: cosine {cos}");
    }
}
