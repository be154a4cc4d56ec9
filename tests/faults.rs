//! Faults, with the real binary and model: kills at many moments, Ctrl-C, two writers, a full
//! disk, bad input files, damaged model folders, and an old store kept as a fixture.

mod common;

use common::likewise;
use likewise::lexical::{parse_query, Analysis, LexicalQuery, Unit};
use likewise::store::Store;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ARTICLES: usize = 300;

/// Writes `n` short articles; `edition` 1 has two paragraphs each, edition 2 three.
fn write_corpus(dir: &Path, n: usize, edition: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let topics = [
        "the budget vote",
        "the football final",
        "a new phone",
        "the film festival",
        "flooding in the north",
    ];
    for i in 0..n {
        let topic = topics[i % topics.len()];
        let mut text = format!("Report {i} on {topic} (edition {edition})\n");
        text.push_str(&format!(
            "Officials commented on {topic} in statement number {i} on Monday.\n"
        ));
        text.push_str(&format!(
            "Observers said {topic} would matter for weeks, according to source {i}.\n"
        ));
        if edition == 2 {
            text.push_str(&format!(
                "An update added that {topic} had changed again, said person {i}.\n"
            ));
        }
        std::fs::write(dir.join(format!("{i:04}.txt")), text).unwrap();
    }
}

fn spawn_index(store: &Path, input: &Path, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("likewise"))
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", store)
        .current_dir(common::root())
        .arg("index")
        .arg(input)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every article is whole, in its first or its second edition, and none is missing.
fn check_editions(store: &Path) -> usize {
    let s = Store::open(store).unwrap_or_else(|e| panic!("the store must open after a kill: {e}"));
    assert_eq!(s.article_count(), ARTICLES);
    let mut second = 0;
    for (loc, rec) in s.live_articles() {
        let seg = &s.segments[loc.segment];
        let texts: Vec<String> = (rec.chunk_start..rec.chunk_start + rec.chunk_count as u64)
            .map(|c| seg.chunk_text(c as usize).into_owned())
            .collect();
        if rec.title.ends_with("(edition 1)") {
            assert_eq!((rec.paragraphs, texts.len()), (2, 2), "{}", rec.key);
        } else {
            assert!(rec.title.ends_with("(edition 2)"), "{}", rec.title);
            assert_eq!((rec.paragraphs, texts.len()), (3, 3), "{}", rec.key);
            assert!(texts[2].starts_with("An update added"));
            second += 1;
        }
    }
    // The lexical indexes are of the same generation as the segments: every one opens, and
    // the words of the second edition are found in exactly its articles.
    assert!(s.lexical_problems.is_empty(), "{:?}", s.lexical_problems);
    let (segs, indexes): (Vec<usize>, Vec<_>) = s.lexical_indexes().into_iter().unzip();
    let q = LexicalQuery::new(
        &parse_query("\"An update added\"").unwrap(),
        Analysis::CHOSEN,
    );
    let found = likewise::lexical::top_k(&indexes, &q, Unit::Article, ARTICLES * 2, &|i, a| {
        s.segments[segs[i]].live[a as usize]
    })
    .unwrap();
    assert_eq!(found.len(), second, "lexical and stored articles disagree");
    second
}

#[test]
fn a_kill_at_any_moment_leaves_old_or_new_articles_and_a_rerun_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let base = dir.path().join("base");
    write_corpus(&input, ARTICLES, 1);
    let out = spawn_index(&base, &input, &["--commit-every", "16"])
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(check_editions(&base), 0);
    write_corpus(&input, ARTICLES, 2);
    // How long an uninterrupted run of the second edition takes, start-up included.
    let timing = dir.path().join("timing");
    common::copy_dir(&base, &timing);
    let started = Instant::now();
    let mut run = spawn_index(&timing, &input, &["--commit-every", "16"]);
    assert!(run.wait().unwrap().success());
    let full_run = started.elapsed();
    assert_eq!(check_editions(&timing), ARTICLES);

    let kills = 24;
    let mut committed_seen = Vec::new();
    for k in 0..kills {
        let store = dir.path().join(format!("kill{k}"));
        common::copy_dir(&base, &store);
        let mut child = spawn_index(&store, &input, &["--commit-every", "16"]);
        // Spread the kills over a whole run, start-up and model loading included.
        std::thread::sleep(full_run.mul_f64((k as f64 + 0.5) / kills as f64));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        committed_seen.push(check_editions(&store));
    }
    eprintln!("second editions committed at each kill: {committed_seen:?}");
    assert!(
        committed_seen.iter().any(|&c| c > 0 && c < ARTICLES),
        "some kills must land mid-run: {committed_seen:?}"
    );

    // A rerun embeds only what was not committed.
    let k = committed_seen
        .iter()
        .position(|&c| c > 0 && c < ARTICLES)
        .unwrap();
    let store = dir.path().join(format!("kill{k}"));
    let out = spawn_index(&store, &input, &[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let unchanged = committed_seen[k];
    assert!(
        stderr.contains(&format!(
            "0 new, {} changed, {unchanged} unchanged",
            ARTICLES - unchanged
        )),
        "{stderr}"
    );
    assert_eq!(check_editions(&store), ARTICLES);
}

#[test]
fn ctrl_c_stops_at_a_group_boundary_and_says_how_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_corpus(&input, ARTICLES, 2);
    let store = dir.path().join("store");
    let child = spawn_index(&store, &input, &["--commit-every", "16"]);
    // Wait for the first commit, then interrupt.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !store.join("MANIFEST").exists() {
        assert!(Instant::now() < deadline, "no commit within two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("Run the same command again to resume"),
        "{stderr}"
    );
    let kept = Store::open(&store).unwrap().article_count();
    assert!(kept > 0 && kept < ARTICLES, "{kept} articles kept");
    let out = spawn_index(&store, &input, &[]).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} new, 0 changed, {kept} unchanged",
            ARTICLES - kept
        )),
        "{stderr}"
    );
}

#[test]
fn a_second_writer_fails_at_once_readers_see_a_consistent_store_and_a_killed_writer_leaves_no_lock()
{
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_corpus(&input, ARTICLES, 1);
    let store = dir.path().join("store");
    let mut first = spawn_index(&store, &input, &["--commit-every", "8"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !store.join("MANIFEST").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let msg = common::stderr_with_code(likewise(&store).arg("index").arg(&input), 5);
    assert!(
        msg.contains("is being written by another likewise process"),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second writer must not wait"
    );
    // Readers during the write: every snapshot opens and only grows.
    let mut last = 0;
    for _ in 0..10 {
        let n = Store::open(&store)
            .expect("a consistent store during a write")
            .article_count();
        assert!(n >= last);
        last = n;
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // The OS released the dead writer's lock.
    likewise(&store).arg("index").arg(&input).assert().success();
    assert_eq!(Store::open(&store).unwrap().article_count(), ARTICLES);
}

#[test]
fn a_full_disk_leaves_the_previous_store_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    likewise(&store).args(["index", "seeds"]).assert().success();
    let input = dir.path().join("in");
    write_corpus(&input, 40, 1);
    // Files may grow to 64 KiB only; with SIGXFSZ ignored, a longer write fails with EFBIG, as a
    // full disk would fail it with ENOSPC.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec '{}' index '{}' --commit-every 1000",
        assert_cmd::cargo::cargo_bin("likewise").display(),
        input.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .env("LIKEWISE_MODEL", common::model_dir())
        .env("LIKEWISE_INDEX", &store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("File too large") && stderr.contains("store"),
        "{stderr}"
    );
    let s = Store::open(&store).unwrap();
    assert_eq!(s.article_count(), 5, "the seeds are still there");
    assert!(std::fs::read_dir(&store).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn bad_inputs_each_get_one_warning_and_the_rest_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::write(
        input.join("good.txt"),
        "A good headline\nA good paragraph about the election.\n",
    )
    .unwrap();
    std::fs::write(
        input.join("latin1.txt"),
        b"Caf\xe9 society\nThe caf\xe9 opened on the square.\n",
    )
    .unwrap();
    std::fs::write(input.join("binary.txt"), [0u8, 159, 146, 150, 0, 1, 2, 3]).unwrap();
    std::fs::write(input.join("empty.txt"), "").unwrap();
    std::fs::write(input.join("huge.txt"), "word ".repeat(10 << 20)).unwrap(); // 50 MiB
    let long_paragraph = "lorem ipsum dolor sit amet ".repeat(20_000); // 100,000 words
    std::fs::write(
        input.join("long.txt"),
        format!("A long one\n{long_paragraph}\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&input, input.join("sub/loop")).unwrap();
    std::os::unix::fs::symlink(input.join("nowhere.txt"), input.join("dangling.txt")).unwrap();
    std::fs::write(
        input.join("feed.jsonl"),
        "{\"id\": \"ok1\", \"text\": \"Markets rose on Friday.\"}\n{\"id\": \"broken\", \"text\": \n{\"title\": \"no text\"}\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let out = likewise(&store)
        .arg("index")
        .arg(&input)
        .assert()
        .code(3)
        .get_output()
        .stderr
        .clone();
    let stderr = String::from_utf8_lossy(&out).to_string();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("likewise: warning:"))
        .collect();
    for (name, reason) in [
        ("latin1.txt", "Windows-1252"),
        ("binary.txt", "binary"),
        ("empty.txt", "empty"),
        ("huge.txt", "limit"),
        ("long.txt", "windows long"),
        ("loop", "loop"),
        ("dangling.txt", "cannot be read"),
        ("feed.jsonl:2", "not a JSON article"),
        ("feed.jsonl:3", "not a JSON article"),
    ] {
        let hits = warnings
            .iter()
            .filter(|w| w.contains(name) && w.contains(reason))
            .count();
        assert_eq!(hits, 1, "one warning for {name} ({reason}):\n{stderr}");
    }
    assert_eq!(warnings.len(), 9, "{stderr}");
    let s = Store::open(&store).unwrap();
    let titles: Vec<&str> = s.live_articles().map(|(_, r)| r.title.as_str()).collect();
    for t in ["A good headline", "Café society", "A long one"] {
        assert!(titles.contains(&t), "{titles:?}");
    }
    assert!(s.find_key("ok1").is_some());
    assert_eq!(s.article_count(), 4);

    // Queries: empty is an error, 100,000 characters is answered.
    let out = likewise(&store)
        .args(["query", ""])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("empty"));
    let long_query = "the election result ".repeat(5000);
    likewise(&store)
        .args(["query", &long_query, "-k", "1"])
        .assert()
        .success();
}

fn fake_model_dir(dir: &Path, name: &str) -> PathBuf {
    let model = common::copy_model_config(&dir.join(name));
    let real = common::model_dir();
    std::fs::copy(real.join("tokenizer.json"), model.join("tokenizer.json")).unwrap();
    std::os::unix::fs::symlink(
        real.join("model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    model
}

#[test]
fn model_folder_faults_are_caught_before_work_with_every_problem_listed() {
    let dir = tempfile::tempdir().unwrap();
    // A known model with a swapped tokenizer and damaged config: sha256 mismatches, all listed.
    let model = fake_model_dir(dir.path(), "all-MiniLM-L6-v2");
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("tokenizer.json")).unwrap()).unwrap();
    tok["model"]["vocab"]["zzzz-extra-token"] = serde_json::json!(30522);
    std::fs::write(
        model.join("tokenizer.json"),
        serde_json::to_vec(&tok).unwrap(),
    )
    .unwrap();
    std::fs::write(model.join("modules.json"), "[").unwrap();
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("store"))
            .env("LIKEWISE_MODEL", &model)
            .args(["index", "seeds"]),
        4,
    );
    assert!(msg.contains("tokenizer.json has sha256"), "{msg}");
    assert!(msg.contains("modules.json is not valid"), "{msg}");
    assert!(msg.contains("likewise model fetch"), "advice: {msg}");
    assert!(!dir.path().join("store").exists(), "no work may start");

    // An unknown model whose weights do not fit its config.
    let other = fake_model_dir(dir.path(), "my-model");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other.join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = serde_json::json!(3072);
    std::fs::write(
        other.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("store"))
            .env("LIKEWISE_MODEL", &other)
            .args(["index", "seeds"]),
        4,
    );
    assert!(msg.contains("has shape") && msg.contains("1536"), "{msg}");
}

#[test]
fn the_committed_version_1_store_still_opens_and_a_newer_version_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::copy_dir(&common::root().join("tests/fixtures/store-v1"), &store);
    let out = likewise(&store)
        .args(["query", "--like", "000", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        doc["hits"][0]["path"].as_str().unwrap().contains("001_"),
        "{doc}"
    );
    likewise(&store)
        .args(["query", "a major ground operation in Rafah"])
        .assert()
        .success();
    // It was made before lexical search: queries say so and answer by meaning; the next
    // `index` of the same files builds its lexical index from the stored text, embedding nothing.
    let err = common::stderr_with_code(likewise(&store).args(["query", "Herzog"]), 0);
    assert!(err.contains("has no lexical index"), "{err}");
    common::copy_dir(&common::root().join("seeds"), &dir.path().join("seeds"));
    let err = common::stderr_with_code(
        likewise(&store)
            .current_dir(dir.path())
            .args(["index", "seeds"]),
        0,
    );
    assert!(
        err.contains("built the lexical index of 1 segment")
            && err.contains("5 unchanged")
            && err.contains(" 0 paragraphs (0 chunks"),
        "{err}"
    );
    let out = likewise(&store)
        .args(["query", "Herzog", "--mode", "lexical", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(
        doc["hits"][0]["path"].as_str().unwrap().contains("000_")
            && doc["hits"].as_array().unwrap().len() == 1,
        "{doc}"
    );

    let manifest = std::fs::read_to_string(store.join("MANIFEST")).unwrap();
    std::fs::write(
        store.join("MANIFEST"),
        manifest.replacen("likewise-manifest 1", "likewise-manifest 2", 1),
    )
    .unwrap();
    let msg = common::stderr_with_code(likewise(&store).args(["info"]), 5);
    assert!(
        msg.contains("format version 2") && msg.contains("Rebuild"),
        "{msg}"
    );
}
