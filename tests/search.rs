//! Search features with the real model: filters (source, date range, path glob) combined with
//! -k and --min-score, and many queries answered in one batched pass.

mod common;

use serde_json::Value;

fn hits(cmd: &mut assert_cmd::Command) -> Vec<Value> {
    common::jsonl_of(cmd)
}

fn ids(h: &[Value]) -> Vec<String> {
    h.iter()
        .map(|h| h["id"].as_str().or(h["path"].as_str()).unwrap().to_string())
        .collect()
}

#[test]
fn filters_apply_before_ranking_and_combine() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("feeds");
    std::fs::create_dir_all(corpus.join("wire")).unwrap();
    let lines = [
        (
            "a1",
            "2024-03-20",
            "Reuters",
            "Rafah offensive warning",
            "Blinken warned that a ground operation in Rafah would be a mistake.",
        ),
        (
            "a2",
            "2024-03-22",
            "AP",
            "Rafah talks",
            "US officials said an offensive in Rafah risks isolating Israel.",
        ),
        (
            "a3",
            "March 25, 2024",
            "Reuters",
            "Rafah plans",
            "Israel said it would present its Rafah plans in Washington.",
        ),
        (
            "a4",
            "2023-11-30",
            "AFP",
            "Truce extended",
            "The truce in Gaza was extended by a day as hostages were released.",
        ),
        (
            "a5",
            "",
            "Reuters",
            "Undated Rafah note",
            "Aid groups warned of famine in Rafah.",
        ),
    ];
    let jsonl: String = lines
        .iter()
        .map(|(id, date, source, title, text)| {
            let mut v =
                serde_json::json!({"id": id, "source": source, "title": title, "text": text});
            if !date.is_empty() {
                v["date"] = serde_json::json!(date);
            }
            format!("{v}\n")
        })
        .collect();
    std::fs::write(corpus.join("wire/feed.jsonl"), jsonl).unwrap();
    std::fs::write(
        corpus.join("note.txt"),
        "Rafah crossing reopens\n\nThe Rafah crossing reopened for aid trucks on Monday.\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    common::likewise(&store)
        .args(["index", corpus.to_str().unwrap()])
        .assert()
        .success();
    let q = |extra: &[&str]| {
        let mut cmd = common::likewise(&store);
        cmd.args(["query", "Rafah ground offensive", "--format", "jsonl"])
            .args(extra);
        if !extra.contains(&"-k") {
            cmd.args(["-k", "10"]);
        }
        hits(&mut cmd)
    };
    let all = q(&[]);
    assert_eq!(all.len(), 6);
    let score_of = |id: &str| {
        all.iter().find(|h| ids(&[(*h).clone()])[0] == id).unwrap()["score"]
            .as_f64()
            .unwrap()
    };

    let reuters = q(&["--source", "reuters"]);
    let mut got = ids(&reuters);
    got.sort();
    assert_eq!(got, ["a1", "a3", "a5"]);
    for h in &reuters {
        assert_eq!(
            h["score"].as_f64().unwrap(),
            score_of(h["id"].as_str().unwrap()),
            "exact scores kept"
        );
    }
    let mut got = ids(&q(&["--since", "2024-03-21"]));
    got.sort();
    assert_eq!(
        got,
        ["a2", "a3"],
        "undated articles never pass a date condition"
    );
    assert_eq!(ids(&q(&["--until", "2023-12-31"])), ["a4"]);
    assert_eq!(
        ids(&q(&[
            "--since",
            "2024-03-01",
            "--until",
            "2024-03-24",
            "--source",
            "AP",
            "--source",
            "Reuters"
        ]))
        .len(),
        2
    );
    let by_path = q(&["--path", "*.txt"]);
    assert_eq!(by_path.len(), 1);
    assert!(by_path[0]["path"].as_str().unwrap().ends_with("note.txt"));
    assert_eq!(
        q(&["--path", "feeds/wire"]).len(),
        5,
        "a folder means everything below it"
    );
    // With -k and --min-score: the best of the filtered set, above the floor.
    let top = q(&["--source", "Reuters", "-k", "1"]);
    let best_reuters = ["a1", "a3", "a5"]
        .iter()
        .map(|i| score_of(i))
        .fold(f64::MIN, f64::max);
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["score"].as_f64().unwrap(), best_reuters);
    let floor = q(&[
        "--source",
        "Reuters",
        "--min-score",
        &format!("{}", best_reuters - 1e-6),
    ]);
    assert_eq!(floor.len(), 1);
    // Paragraph level too.
    let paras = q(&["--level", "paragraph", "--until", "2023-12-31"]);
    assert!(!paras.is_empty() && paras.iter().all(|h| h["id"] == "a4"));
    // Nonsense is refused before any work.
    let err = common::stderr_with_code(
        common::likewise(&store).args(["query", "x", "--since", "soon"]),
        1,
    );
    assert!(
        err.contains("--since") && err.contains("YYYY-MM-DD"),
        "{err}"
    );
    let err = common::stderr_with_code(
        common::likewise(&store).args(["query", "x", "--path", "a[b"]),
        1,
    );
    assert!(err.contains("--path"), "{err}");
}

#[test]
fn many_queries_in_one_pass_give_the_answers_of_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::likewise(&store)
        .args(["index", "seeds"])
        .assert()
        .success();
    let passages = dir.path().join("passages.txt");
    std::fs::write(
        &passages,
        "Rafah ground operation would be a mistake\n\nhostages released during the truce\nUN Security Council vote on a ceasefire\n",
    )
    .unwrap();
    for level in ["article", "paragraph"] {
        let batch = hits(common::likewise(&store).args([
            "query",
            "--queries",
            passages.to_str().unwrap(),
            "--level",
            level,
            "-k",
            "4",
            "--format",
            "jsonl",
        ]));
        assert_eq!(batch.len(), 12, "3 passages × 4 hits");
        for (i, text) in [
            "Rafah ground operation would be a mistake",
            "hostages released during the truce",
            "UN Security Council vote on a ceasefire",
        ]
        .iter()
        .enumerate()
        {
            let single = hits(common::likewise(&store).args([
                "query", text, "--level", level, "-k", "4", "--format", "jsonl",
            ]));
            let mine: Vec<&Value> = batch.iter().filter(|h| h["query"] == i).collect();
            assert_eq!(mine.len(), single.len());
            for (b, s) in mine.iter().zip(&single) {
                assert_eq!(b["path"], s["path"], "{level} query {i}");
                assert_eq!(b["paragraph"], s["paragraph"]);
                assert!((b["score"].as_f64().unwrap() - s["score"].as_f64().unwrap()).abs() < 1e-5);
            }
        }
        // --like for several articles: each excluded from its own results only.
        let likes = hits(common::likewise(&store).args([
            "query", "--like", "000", "--like", "003", "--level", level, "-k", "3", "--format",
            "jsonl",
        ]));
        for (i, (me, first)) in [("000_", "001_"), ("003_", "004_")].iter().enumerate() {
            let mine: Vec<&Value> = likes.iter().filter(|h| h["query"] == i).collect();
            assert!(
                mine.iter()
                    .all(|h| !h["path"].as_str().unwrap().contains(me)),
                "{level}: {mine:?}"
            );
            if level == "article" {
                assert!(
                    mine[0]["path"].as_str().unwrap().contains(first),
                    "{mine:?}"
                );
            }
        }
    }
    let out = common::likewise(&store)
        .args([
            "query", "--like", "000", "--like", "003", "--format", "json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["queries"].as_array().unwrap().len(), 2);
}

#[test]
fn compact_scans_answer_as_the_exact_one_and_damage_only_warns() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let seeds = common::seeds();
    common::likewise(&store)
        .args(["index", seeds.to_str().unwrap()])
        .assert()
        .success();
    // No copies yet: asking to scan them is an error that says how to add them.
    let err = common::stderr_with_code(
        common::likewise(&store).args([
            "query",
            "Rafah",
            "--level",
            "paragraph",
            "--scan",
            "binary",
        ]),
        1,
    );
    assert!(err.contains("--compact binary"), "{err}");
    let said = common::stderr_with_code(
        common::likewise(&store).args(["index", "--compact", "binary"]),
        0,
    );
    assert!(said.contains("binary copies"), "{said}");
    let info: Value = serde_json::from_str(&common::stdout_of(
        common::likewise(&store).args(["info", "--format", "json"]),
    ))
    .unwrap();
    assert_eq!(info["compact"], "binary");
    assert!(info["compact_bytes"].as_u64().unwrap() > 0);

    let run = |args: &[&str], scan: &str| -> Vec<(String, u64, String)> {
        let mut cmd = common::likewise(&store);
        cmd.args([
            "query",
            "--level",
            "paragraph",
            "-k",
            "8",
            "--format",
            "jsonl",
            "--scan",
            scan,
        ])
        .args(args);
        hits(&mut cmd)
            .iter()
            .map(|h| {
                (
                    h["path"].as_str().unwrap().to_string(),
                    h["paragraph"].as_u64().unwrap(),
                    h["score"].to_string(),
                )
            })
            .collect()
    };
    let questions: [&[&str]; 3] = [
        &["Blinken said a major ground operation in Rafah would be a mistake"],
        &["humanitarian aid trucks waiting at the border crossing"],
        &["--like", "003"],
    ];
    for q in questions {
        let exact = run(q, "exact");
        assert_eq!(exact.len(), 8);
        assert_eq!(run(q, "binary"), exact, "{q:?}");
        assert_eq!(run(q, "int8"), exact, "{q:?}");
    }

    // A damaged copy: a warning naming it, and the same answers from the exact vectors.
    let lkc: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lkc"))
        .collect();
    assert_eq!(lkc.len(), 1);
    let mut bytes = std::fs::read(&lkc[0]).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(&lkc[0], bytes).unwrap();
    let q = ["Blinken said a major ground operation in Rafah would be a mistake"];
    let mut cmd = common::likewise(&store);
    cmd.args([
        "query",
        "--level",
        "paragraph",
        "-k",
        "8",
        "--format",
        "jsonl",
        "--",
        q[0],
    ]);
    let out = cmd.assert().success().get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    let name = lkc[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(err.contains(&name) && err.contains("damaged"), "{err}");
    assert_eq!(run(&q, "exact").len(), 8);
    assert_eq!(run(&q, "binary"), run(&q, "exact"));
    // Rebuilt on request; then the warning is gone.
    common::likewise(&store)
        .args(["index", "--compact", "binary"])
        .assert()
        .success();
    let out = common::likewise(&store)
        .args(["query", "--level", "paragraph", "--", q[0]])
        .assert()
        .success()
        .get_output()
        .clone();
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
