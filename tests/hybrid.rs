//! Hybrid search end to end on the seeds, with the real model: names, phrases and exclusions,
//! the three modes at both levels, a store made before lexical search, a damaged lexical index.

mod common;

use common::{indexed_seeds, likewise};
use serde_json::Value;
use std::path::Path;

const RAFAH: &str = "Blinken said a major ground operation in Rafah would be a mistake";

fn query(store: &Path, args: &[&str]) -> Value {
    let out = likewise(store)
        .arg("query")
        .args(args)
        .args(["--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("JSON on stdout")
}

fn seeds_of(doc: &Value) -> Vec<String> {
    doc["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let path = h["path"].as_str().unwrap();
            Path::new(path).file_name().unwrap().to_string_lossy()[..3].to_string()
        })
        .collect()
}

#[test]
fn names_phrases_and_exclusions_find_their_articles() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    // 000 is the only article naming Isaac Herzog; 003 the only one naming Sameh Shoukry.
    assert_eq!(seeds_of(&query(&store, &["Herzog"]))[0], "000");
    assert_eq!(seeds_of(&query(&store, &["Shoukry"]))[0], "003");
    assert_eq!(seeds_of(&query(&store, &["Herzog's"]))[0], "000");
    // A quoted phrase must occur, in every mode.
    for mode in ["hybrid", "semantic", "lexical"] {
        let doc = query(&store, &["\"hypocritical spectacle\"", "--mode", mode]);
        assert_eq!(seeds_of(&doc), ["002"], "{mode}");
    }
    // The same words in another order are not the phrase.
    let doc = query(&store, &["\"spectacle hypocritical\"", "--mode", "lexical"]);
    assert!(seeds_of(&doc).is_empty());
    // `-word` leaves out the articles that have it.
    let found = seeds_of(&query(&store, &["Rafah -Shoukry"]));
    assert!(
        found.contains(&"002".to_string()) && found.contains(&"004".to_string()),
        "{found:?}"
    );
    assert!(!found.contains(&"003".to_string()), "{found:?}");
    // A query may start with its exclusion.
    let found = seeds_of(&query(&store, &["-Shoukry Rafah", "-k", "5"]));
    assert!(
        !found.is_empty() && !found.contains(&"003".to_string()),
        "{found:?}"
    );
    // A passage is still found by its meaning.
    let mut top3 = seeds_of(&query(&store, &[RAFAH]))[..3].to_vec();
    top3.sort();
    assert_eq!(top3, ["002", "003", "004"]);
}

#[test]
fn every_hit_says_why_it_ranks_where_it_does() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    let doc = query(&store, &["Herzog"]);
    assert_eq!(doc["mode"], "hybrid");
    let first = &doc["hits"][0];
    assert!(first["semantic"]["score"].is_f64(), "{first}");
    assert_eq!(first["lexical"]["rank"], 1, "{first}");
    assert!(first["lexical"]["score"].as_f64().unwrap() > 0.0);
    // Its evidence is the paragraph naming Herzog, with the word as written there marked.
    assert!(
        first["text"].as_str().unwrap().contains("Herzog"),
        "{first}"
    );
    assert_eq!(first["matched"], serde_json::json!(["Herzog"]));
    // Semantic mode is the plain semantic document; lexical mode scores BM25 only.
    let semantic = query(&store, &["Herzog", "--mode", "semantic"]);
    assert_eq!(semantic["mode"], "semantic");
    assert!(semantic["hits"][0].get("lexical").is_none());
    let lexical = query(&store, &["Herzog", "--mode", "lexical"]);
    assert_eq!(seeds_of(&lexical), ["000"]);
    assert!(lexical["hits"][0].get("semantic").is_none());
    assert_eq!(
        lexical["hits"][0]["score"],
        lexical["hits"][0]["lexical"]["score"]
    );
}

#[test]
fn semantic_mode_is_the_semantic_search_of_before() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    // Plain semantic scores are the cosines of the article vectors: the same as `--like`'s path
    // and the same document shape as before hybrid search (no half verdicts).
    let doc = query(&store, &[RAFAH, "--mode", "semantic"]);
    let hybrid = query(&store, &[RAFAH]);
    for h in doc["hits"].as_array().unwrap() {
        assert!(h.get("semantic").is_none() && h.get("lexical").is_none());
        // The semantic half of a hybrid hit is the very same cosine.
        let same = hybrid["hits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["key"] == h["key"])
            .unwrap();
        assert_eq!(same["semantic"]["score"], h["score"], "{h} vs {same}");
    }
}

#[test]
fn paragraph_level_and_batches_work_in_every_mode() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    let queries = dir.path().join("queries.txt");
    std::fs::write(&queries, format!("Herzog\nShoukry\n{RAFAH}\n")).unwrap();
    for mode in ["hybrid", "semantic", "lexical"] {
        let doc = query(&store, &["Shoukry", "--level", "paragraph", "--mode", mode]);
        let first = &doc["hits"][0];
        assert_eq!(doc["level"], "paragraph");
        if mode != "semantic" {
            assert!(
                first["text"].as_str().unwrap().contains("Shoukry"),
                "{mode}: {first}"
            );
        }
        let batch = query(
            &store,
            &["--queries", queries.to_str().unwrap(), "--mode", mode],
        );
        let answers = batch["queries"].as_array().unwrap();
        assert_eq!(answers.len(), 3, "{mode}");
        if mode != "semantic" {
            let first_of = |i: usize| {
                let path = answers[i]["hits"][0]["path"].as_str().unwrap().to_string();
                Path::new(&path).file_name().unwrap().to_string_lossy()[..3].to_string()
            };
            assert_eq!(
                (first_of(0), first_of(1)),
                ("000".into(), "003".into()),
                "{mode}"
            );
        }
    }
}

#[test]
fn bad_queries_and_impossible_dates_are_refused_with_a_reason() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    let refused = |args: &[&str], says: &str| {
        let out = likewise(&store)
            .arg("query")
            .args(args)
            .assert()
            .code(1)
            .get_output()
            .clone();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(
        &["the of and", "--mode", "lexical"],
        "no word to search for",
    );
    refused(&["?!", "--mode", "lexical"], "no word to search for");
    refused(&["Rafah \"\""], "empty phrase");
    refused(
        &["Rafah", "--since", "2024-13-45"],
        "not a day of the calendar",
    );
    refused(
        &["Rafah", "--until", "2024-02-30"],
        "not a day of the calendar",
    );
    refused(&["--like", "000", "--mode", "lexical"], "by meaning");
    // A pasted passage with stray syntax is never an error.
    for text in [
        "He said \"we will not (see: https://example.org/a?b=c) [x] {y} AND OR",
        "Нетаньяху заявил, что операция в Рафахе",
        "2024-02-29 -- the leap day: -5 degrees",
    ] {
        query(&store, &[text]);
    }
    // A leap day that exists is a date.
    query(&store, &["Rafah", "--since", "2024-02-29"]);
}

/// Rewrites the manifest as a store made before lexical search has it, and removes the indexes.
fn make_older(store: &Path) {
    let raw = std::fs::read_to_string(store.join("MANIFEST")).unwrap();
    let body = raw
        .split_once('\n')
        .unwrap()
        .1
        .rsplit_once("\ncrc32")
        .unwrap()
        .0;
    let mut manifest: Value = serde_json::from_str(body).unwrap();
    manifest.as_object_mut().unwrap().remove("lexical");
    for seg in manifest["segments"].as_array_mut().unwrap() {
        let dir = seg["lexical"]["file"].as_str().unwrap().to_string();
        std::fs::remove_dir_all(store.join(dir)).unwrap();
        seg.as_object_mut().unwrap().remove("lexical");
    }
    let json = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(
        store.join("MANIFEST"),
        likewise::store::format::encode_manifest(&json),
    )
    .unwrap();
}

#[test]
fn an_older_store_gets_its_lexical_index_on_its_next_index_without_embedding() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    make_older(&store);
    // Hybrid answers by meaning, with a warning naming what is missing; lexical cannot answer.
    let out = likewise(&store)
        .args(["query", "Herzog", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no lexical index") && err.contains("likewise index"),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["hits"][0].get("lexical").is_none());
    likewise(&store)
        .args(["query", "Herzog", "--mode", "lexical"])
        .assert()
        .code(1);
    // `index` builds it from the stored text: nothing embedded.
    let out = likewise(&store)
        .args(["index", "seeds"])
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built the lexical index of 1 segment"),
        "{err}"
    );
    assert!(err.contains(" 0 paragraphs (0 chunks"), "{err}");
    assert_eq!(
        seeds_of(&query(&store, &["Herzog", "--mode", "lexical"])),
        ["000"]
    );
    likewise(&store).arg("verify").assert().success();
}

#[test]
fn a_damaged_lexical_index_is_named_by_verify_skipped_by_queries_and_rebuilt_by_index() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    let lex = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "lex"))
        .unwrap();
    // Flip bytes in the middle of the largest file of the index.
    let victim = std::fs::read_dir(&lex)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap() != "meta.json")
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, bytes).unwrap();
    let out = likewise(&store)
        .arg("verify")
        .assert()
        .code(5)
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    let lex_name = lex.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&lex_name), "{err}");
    // The semantic half still answers the passage.
    let mut top3 = seeds_of(&query(&store, &[RAFAH]))[..3].to_vec();
    top3.sort();
    assert_eq!(top3, ["002", "003", "004"]);
    // A missing index: queries warn and answer by meaning; `index` rebuilds it.
    std::fs::remove_dir_all(&lex).unwrap();
    let out = likewise(&store)
        .args(["query", "Herzog"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&lex_name));
    likewise(&store).args(["index", "seeds"]).assert().success();
    likewise(&store).arg("verify").assert().success();
    assert_eq!(
        seeds_of(&query(&store, &["Herzog", "--mode", "lexical"])),
        ["000"]
    );
}

#[test]
fn lexical_scores_do_not_depend_on_how_the_store_was_committed() {
    let whole = indexed_seeds();
    let parts = tempfile::tempdir().unwrap();
    let store = parts.path().join("store");
    let mut files: Vec<_> = std::fs::read_dir("seeds")
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        likewise(&store)
            .args(["index", f.to_str().unwrap()])
            .assert()
            .success();
    }
    for q in [
        "Rafah ground operation",
        "Blinken Netanyahu hostages",
        "\"Rafah\" aid",
    ] {
        for level in ["article", "paragraph"] {
            let args = [q, "--mode", "lexical", "--level", level, "-k", "50"];
            let a = query(&whole.path().join("store"), &args);
            let b = query(&store, &args);
            let scores = |d: &Value| {
                let mut v: Vec<(String, Option<u64>, f64)> = d["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| {
                        (
                            h["key"].as_str().unwrap().to_string(),
                            h["paragraph"].as_u64(),
                            h["score"].as_f64().unwrap(),
                        )
                    })
                    .collect();
                v.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.cmp(&y.1)));
                v
            };
            let (sa, sb) = (scores(&a), scores(&b));
            assert!(!sa.is_empty());
            assert_eq!(sa.len(), sb.len(), "{q} {level}");
            for (x, y) in sa.iter().zip(&sb) {
                assert_eq!((&x.0, x.1), (&y.0, y.1));
                assert!((x.2 - y.2).abs() < 1e-5, "{q} {level}: {x:?} vs {y:?}");
            }
        }
    }
}
