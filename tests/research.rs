//! End-to-end tests of `likewise cluster`, `dupes` and `compare` with the real model, on the
//! seeds and on copies of them edited the way wire copy is edited.

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn json_out(cmd: &mut assert_cmd::Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("JSON on stdout")
}

/// The seed number (`000`…) of an article reference, or its file name for other articles.
fn name(v: &Value) -> String {
    let p = v["path"].as_str().or(v["id"].as_str()).expect("path or id");
    let file = Path::new(p)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if file.len() > 4 && file.as_bytes()[3] == b'_' && file[..3].bytes().all(|b| b.is_ascii_digit())
    {
        file[..3].to_string()
    } else {
        file
    }
}

fn members(cluster: &Value) -> BTreeSet<String> {
    cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(name)
        .collect()
}

fn index(store: &Path, what: &Path) {
    common::likewise(store)
        .args(["index", what.to_str().unwrap()])
        .assert()
        .success();
}

fn seeds_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    index(&dir.path().join("store"), &common::seeds());
    dir
}

#[test]
fn the_seeds_form_their_two_stories_as_topics_and_as_stories() {
    let dir = seeds_store();
    let store = dir.path().join("store");
    let want: BTreeSet<BTreeSet<String>> = [
        ["000", "001"].iter().map(|s| s.to_string()).collect(),
        ["002", "003", "004"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    ]
    .into_iter()
    .collect();
    for by in ["topic", "story"] {
        let doc =
            json_out(common::likewise(&store).args(["cluster", "--by", by, "--format", "json"]));
        let clusters = doc["clusters"].as_array().unwrap();
        let got: BTreeSet<BTreeSet<String>> = clusters.iter().map(members).collect();
        assert_eq!(got, want, "--by {by}: {doc:#}");
        assert_eq!(doc["outliers"].as_array().unwrap().len(), 0);
        for c in clusters {
            assert_eq!(c["size"].as_u64().unwrap() as usize, members(c).len());
            let label = c["label"].as_str().unwrap();
            assert!(
                c["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["title"] == label),
                "the label is a member's headline"
            );
            let kw: Vec<&str> = c["keywords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap())
                .collect();
            assert!(kw.len() >= 3, "{kw:?}");
            for stop in ["the", "and", "said", "that", "with"] {
                assert!(!kw.contains(&stop), "stop word {stop} in {kw:?}");
            }
            let scores: Vec<f64> = c["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["score"].as_f64().unwrap())
                .collect();
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "most central first"
            );
        }
        let rafah = clusters
            .iter()
            .find(|c| members(c).contains("003"))
            .unwrap();
        let kw = rafah["keywords"].to_string();
        assert!(kw.contains("rafah"), "{kw}");
        assert_eq!(
            rafah["dates"]["from"], "2024-03-23",
            "002 carries a date: {rafah}"
        );
    }
    // --k is honoured; nonsense is refused with a reason.
    let doc = json_out(common::likewise(&store).args(["cluster", "--k", "3", "--format", "json"]));
    assert_eq!(doc["clusters"].as_array().unwrap().len(), 3);
    let err = common::stderr_with_code(
        common::likewise(&store).args(["cluster", "--by", "story", "--k", "3"]),
        1,
    );
    assert!(err.contains("--threshold"), "{err}");
    let table = common::stdout_of(common::likewise(&store).arg("cluster"));
    assert!(
        table.contains("keywords:") && table.contains("#1"),
        "{table}"
    );
}

#[test]
fn bench_cluster_scores_folder_labels_with_nmi() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    for (label, files) in [
        ("truce", &["000", "001"][..]),
        ("rafah", &["002", "003", "004"][..]),
    ] {
        std::fs::create_dir_all(corpus.join(label)).unwrap();
        for f in std::fs::read_dir(common::seeds()).unwrap() {
            let f = f.unwrap().path();
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            if files.iter().any(|p| n.starts_with(p)) {
                std::fs::copy(&f, corpus.join(label).join(&n)).unwrap();
            }
        }
    }
    let store = dir.path().join("store");
    index(&store, &corpus);
    let doc = json_out(common::likewise(&store).args(["bench", "cluster"]));
    assert_eq!(doc["labels"], 2);
    for run in doc["runs"].as_array().unwrap().iter().take(2) {
        assert_eq!(run["nmi"].as_f64().unwrap(), 100.0, "{run}");
        assert_eq!(run["outliers"], 0);
    }
}

/// The seeds plus: an exact copy of 003 (spacing and case changed), a near-copy of 004 (new
/// headline, a figure changed, the last paragraphs cut), and an unrelated article quoting one
/// paragraph of 000 word for word.
fn edited_corpus(dir: &Path) -> std::path::PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut texts = std::collections::BTreeMap::new();
    for f in std::fs::read_dir(common::seeds()).unwrap() {
        let f = f.unwrap().path();
        let n = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        std::fs::write(corpus.join(&n), &text).unwrap();
        texts.insert(n[..3].to_string(), text);
    }
    let copy = texts["003"].replace(". ", ".   ").to_uppercase();
    std::fs::write(corpus.join("copy-of-003.txt"), copy).unwrap();
    let mut lines: Vec<String> = texts["004"].lines().map(String::from).collect();
    lines[0] = "Blinken warns Rafah offensive would leave Israel isolated".into();
    let keep = lines.len() - 3;
    lines.truncate(keep);
    let edited = lines.join("\n\n").replace("100%", "nearly all");
    std::fs::write(corpus.join("wire-004.txt"), edited).unwrap();
    let quoted = texts["000"]
        .lines()
        .filter(|l| l.split_whitespace().count() > 25)
        .nth(1)
        .expect("a long paragraph in 000")
        .to_string();
    std::fs::write(
        corpus.join("budget.txt"),
        format!(
            "Council sets next year's budget\n\n\
             The city council approved its budget for next year on Tuesday after a long debate about road repairs and libraries.\n\n\
             {quoted}\n\n\
             Councillors also agreed to raise parking charges in the town centre by ten pence an hour from April."
        ),
    )
    .unwrap();
    corpus
}

#[test]
fn dupes_finds_exact_and_near_copies_and_the_quoted_paragraph_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = edited_corpus(dir.path());
    let store = dir.path().join("store");
    index(&store, &corpus);
    let doc = json_out(common::likewise(&store).args(["dupes", "--format", "json"]));
    let pairs = doc["pairs"].as_array().unwrap();
    let find = |level: &str, x: &str, y: &str| {
        pairs.iter().find(|p| {
            p["level"] == level && {
                let (a, b) = (name(&p["a"]), name(&p["b"]));
                (a == x && b == y) || (a == y && b == x)
            }
        })
    };
    let exact = find("article", "003", "copy-of-003.txt").expect("the copy of 003");
    assert_eq!(exact["tier"], "exact");
    let near = find("article", "004", "wire-004.txt").expect("the wire copy of 004");
    assert_eq!(near["tier"], "near-copy", "{near}");
    assert!(near["overlap"].as_f64().unwrap() > 0.8);
    let quoted = find("paragraph", "000", "budget.txt").expect("the quoted paragraph");
    assert_eq!(quoted["tier"], "exact");
    assert!(quoted["a"]["text"].as_str().unwrap().len() > 100);
    assert!(quoted["a"]["paragraph"].is_u64());
    // 000 and 001 quote Blinken's briefing in the same words: a paragraph-level copy.
    let quote = find("paragraph", "000", "001").expect("the quote 000 and 001 share");
    assert!(
        quote["tier"] == "near-copy" || quote["tier"] == "exact",
        "{quote}"
    );
    assert!(quote["a"]["text"]
        .as_str()
        .unwrap()
        .contains("massive loss of civilian life"));
    // Otherwise, different coverage of one story is never called a copy.
    for p in pairs {
        if p["tier"] == "exact" || p["tier"] == "near-copy" {
            let pair = [name(&p["a"]), name(&p["b"])];
            let mut allowed = vec![
                ["003", "copy-of-003.txt"],
                ["004", "wire-004.txt"],
                ["000", "budget.txt"],
            ];
            if p["level"] == "paragraph" {
                allowed.push(["000", "001"]);
            }
            assert!(
                allowed.iter().any(|a| (a[0] == pair[0] && a[1] == pair[1])
                    || (a[0] == pair[1] && a[1] == pair[0])),
                "{p}"
            );
        }
        assert!(["exact", "near-copy", "rewrite"].contains(&p["tier"].as_str().unwrap()));
    }
    // Paragraphs of the copied pair are not listed again.
    assert!(find("paragraph", "003", "copy-of-003.txt").is_none());
    // --level and --tier filter.
    let doc = json_out(common::likewise(&store).args([
        "dupes", "--level", "article", "--tier", "exact", "--format", "json",
    ]));
    let pairs = doc["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{doc:#}");
}

#[test]
fn compare_aligns_the_rafah_quotes_and_shows_what_each_side_adds() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = edited_corpus(dir.path());
    let store = dir.path().join("store");
    index(&store, &corpus);
    let doc =
        json_out(common::likewise(&store).args(["compare", "003", "004", "--format", "json"]));
    let matches = doc["matches"].as_array().unwrap();
    // 004's ¶0 carries Blinken's "a major military ground operation in Rafah is not the way";
    // 003 reports the same position in its ¶1 and ¶6.
    let to_b0: Vec<u64> = matches
        .iter()
        .filter(|m| m["b"]["paragraph"] == 0)
        .map(|m| m["a"]["paragraph"].as_u64().unwrap())
        .collect();
    assert!(to_b0.contains(&1), "{doc:#}");
    assert!(
        matches.iter().all(|m| m["relation"] == "paraphrased"),
        "no verbatim copying between 003 and 004"
    );
    assert!(!doc["only_a"].as_array().unwrap().is_empty());
    assert!(!doc["only_b"].as_array().unwrap().is_empty());
    // The ceasefire talks in Doha are what 004 adds.
    assert!(
        doc["only_b"].to_string().contains("Doha"),
        "{}",
        doc["only_b"]
    );

    // Against its wire copy: shared paragraphs, and the cut ones unique to 004.
    let doc =
        json_out(common::likewise(&store).args(["compare", "004", "wire-004", "--format", "json"]));
    let shared = doc["matches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["relation"] == "shared")
        .count();
    assert!(shared >= 9, "{doc:#}");
    let only_a = doc["only_a"].to_string();
    assert!(
        only_a.contains("goal line"),
        "the cut last paragraph: {only_a}"
    );
    assert!(doc["only_b"].as_array().unwrap().is_empty());

    let table = common::stdout_of(common::likewise(&store).args(["compare", "003", "004"]));
    assert!(
        table.contains("paraphrased") && table.contains("only in B"),
        "{table}"
    );
    let err = common::stderr_with_code(
        common::likewise(&store).args(["compare", "003", "nonexistent"]),
        1,
    );
    assert!(err.contains("no indexed article is `nonexistent`"), "{err}");
}

#[test]
fn research_commands_on_a_missing_store_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [vec!["cluster"], vec!["dupes"], vec!["compare", "a", "b"]] {
        let err =
            common::stderr_with_code(common::likewise(&dir.path().join("none")).args(&cmd), 5);
        assert!(err.contains("none"), "{cmd:?}: {err}");
    }
}
