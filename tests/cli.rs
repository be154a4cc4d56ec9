//! End-to-end tests of the `likewise` binary on the seeds, with the real model.

mod common;

use common::{indexed_seeds, likewise};
use likewise::store::Store;
use serde_json::Value;
use std::path::Path;

const RAFAH: &str = "Blinken said a major ground operation in Rafah would be a mistake";

fn json_out(cmd: &mut assert_cmd::Command) -> Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("JSON on stdout")
}

fn seed_number(hit: &Value) -> String {
    let path = hit["path"].as_str().unwrap();
    Path::new(path).file_name().unwrap().to_string_lossy()[..3].to_string()
}

#[test]
fn rafah_passage_ranks_the_rafah_articles_first() {
    let dir = indexed_seeds();
    let doc =
        json_out(likewise(&dir.path().join("store")).args(["query", RAFAH, "--format", "json"]));
    let order: Vec<String> = doc["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(seed_number)
        .collect();
    assert_eq!(order.len(), 5, "{order:?}");
    let mut top3 = order[..3].to_vec();
    top3.sort();
    assert_eq!(top3, ["002", "003", "004"], "order was {order:?}");
    // Every article hit carries its best paragraph as evidence, and scores fall.
    for (i, h) in doc["hits"].as_array().unwrap().iter().enumerate() {
        assert_eq!(h["rank"], i + 1);
        assert!(
            h["paragraph"].is_u64() && h["text"].is_string() && h["title"].is_string(),
            "{h}"
        );
    }
    let scores: Vec<f64> = doc["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn like_000_returns_001_first_and_never_itself() {
    let dir = indexed_seeds();
    let doc = json_out(likewise(&dir.path().join("store")).args([
        "query",
        "--like",
        "seeds/000_af634a2fc44c76fa.txt",
        "--format",
        "json",
    ]));
    let order: Vec<String> = doc["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(seed_number)
        .collect();
    assert_eq!(order[0], "001", "{order:?}");
    assert!(!order.contains(&"000".to_string()));
    // A file name prefix names the same article.
    let again = json_out(
        likewise(&dir.path().join("store")).args(["query", "--like", "000", "--format", "json"]),
    );
    assert_eq!(again["hits"], doc["hits"]);
}

#[test]
fn paragraph_hits_carry_position_and_text() {
    let dir = indexed_seeds();
    let doc = json_out(likewise(&dir.path().join("store")).args([
        "query",
        RAFAH,
        "--level",
        "paragraph",
        "-k",
        "3",
        "--format",
        "json",
    ]));
    let hits = doc["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    let top = &hits[0];
    assert!(
        top["text"]
            .as_str()
            .unwrap()
            .contains("major ground operation in Rafah"),
        "{top}"
    );
    for key in ["rank", "score", "path", "title", "paragraph", "text"] {
        assert!(!top[key].is_null(), "missing {key}: {top}");
    }
    // --min-score keeps only what reaches it; jsonl gives one hit per line.
    let lines: Vec<Value> = common::jsonl_of(likewise(&dir.path().join("store")).args([
        "query",
        RAFAH,
        "--level",
        "paragraph",
        "--min-score",
        "0.6",
        "--format",
        "jsonl",
    ]));
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|h| h["score"].as_f64().unwrap() >= 0.6));
}

#[test]
fn the_repeated_block_and_the_furniture_of_002_are_not_paragraphs() {
    let dir = indexed_seeds();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (loc, rec) = store
        .live_articles()
        .find(|(_, r)| r.key.contains("002_"))
        .unwrap();
    let seg = &store.segments[loc.segment];
    let texts: Vec<String> = (rec.chunk_start as usize
        ..(rec.chunk_start + rec.chunk_count as u64) as usize)
        .map(|c| seg.chunk_text(c).into_owned())
        .collect();
    // The file has 5 story paragraphs after the headline, then repeats them verbatim.
    assert_eq!(texts.len(), 5, "{texts:#?}");
    let unique: std::collections::HashSet<_> = texts.iter().collect();
    assert_eq!(unique.len(), texts.len());
    for furniture in [
        "Similar Readings",
        "Blinken meets Netanyahu",
        "Summary",
        "Statistics",
        "Read Count",
        "ID:",
        "Category ID",
        "URL:",
        "Date:",
        "Created:",
        "251",
    ] {
        assert!(
            !texts.iter().any(|t| t.starts_with(furniture)),
            "{furniture} is a paragraph"
        );
    }
    assert_eq!(
        rec.meta.url.as_deref(),
        Some("https://www3.nhk.or.jp/nhkworld/en/news/20240323_N01/")
    );
    assert_eq!(rec.meta.date.as_deref(), Some("2024-03-23"));

    // 004 ends with a bare "Reuters" credit, which is not a paragraph.
    let (loc, rec) = store
        .live_articles()
        .find(|(_, r)| r.key.contains("004_"))
        .unwrap();
    let seg = &store.segments[loc.segment];
    let last = seg.chunk_text((rec.chunk_start + rec.chunk_count as u64 - 1) as usize);
    assert!(last.starts_with("\"We've gotten it down"), "{last}");
    assert_eq!(rec.meta.credit.as_deref(), Some("Reuters"));
}

fn info(store: &Path) -> Value {
    json_out(likewise(store).args(["info", "--format", "json"]))
}

#[test]
fn reindexing_unchanged_files_embeds_nothing_and_changes_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for f in std::fs::read_dir(common::seeds()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, input.join(f.file_name().unwrap())).unwrap();
    }
    let store = dir.path().join("store");
    likewise(&store).arg("index").arg(&input).assert().success();
    let before = info(&store);
    assert_eq!(before["articles"], 5);

    let again = likewise(&store).arg("index").arg(&input).assert().success();
    let stderr = String::from_utf8_lossy(&again.get_output().stderr).to_string();
    assert!(stderr.contains("0 new, 0 changed, 5 unchanged"), "{stderr}");
    assert!(
        stderr.contains("0 paragraphs (0 chunks, 0 tokens) embedded"),
        "{stderr}"
    );
    assert_eq!(
        info(&store)["generation"],
        before["generation"],
        "nothing may be written"
    );

    // A changed file is re-embedded; a removed one goes with --prune.
    let changed = input.join("001_8a1f03382bde83e9.txt");
    let mut text = std::fs::read_to_string(&changed).unwrap();
    text.push_str("\nA new closing paragraph about the truce talks in Doha.\n");
    std::fs::write(&changed, text).unwrap();
    std::fs::remove_file(input.join("003_d6a61527be0b1163.txt")).unwrap();
    let run = likewise(&store)
        .arg("index")
        .arg(&input)
        .arg("--prune")
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).to_string();
    assert!(
        stderr.contains("0 new, 1 changed, 3 unchanged, 1 removed"),
        "{stderr}"
    );
    let after = info(&store);
    assert_eq!(after["articles"], 4);
    // 001 gained a paragraph; 003 (a headline and 8 paragraphs) is gone.
    assert_eq!(
        after["paragraphs"].as_u64().unwrap(),
        before["paragraphs"].as_u64().unwrap() + 1 - 8
    );
}

#[test]
fn a_store_made_with_another_model_is_refused() {
    use likewise::index::{self, IndexOptions, Silent};
    use likewise::model::fake::FakeEmbedder;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let fake = FakeEmbedder::new(384, 200);
    let mut writer =
        likewise::store::Writer::open(&store, likewise::model::Embedder::identity(&fake), "f32")
            .unwrap();
    index::index(
        &mut writer,
        &fake,
        &[common::seeds()],
        &IndexOptions::default(),
        &Silent,
    )
    .unwrap();
    drop(writer);

    for args in [vec!["query", RAFAH], vec!["index", "seeds"]] {
        let msg = common::stderr_with_code(likewise(&store).args(&args), 5);
        assert!(
            msg.contains("fake/bag-of-words") && msg.contains("all-MiniLM-L6-v2"),
            "{msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "one clear line: {msg}");
    }
}

#[test]
fn a_bf16_store_records_its_precision_and_never_mixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    likewise(&store)
        .args(["--precision", "bf16", "index", "seeds"])
        .assert()
        .success();
    assert_eq!(info(&store)["precision"], "bf16");
    // Queries use the store's precision without being told, and find the same top articles.
    let doc = json_out(likewise(&store).args(["query", RAFAH, "--format", "json"]));
    let mut top3: Vec<String> = doc["hits"].as_array().unwrap()[..3]
        .iter()
        .map(seed_number)
        .collect();
    top3.sort();
    assert_eq!(top3, ["002", "003", "004"]);
    // Asking for the other precision is refused, for queries and for writes.
    for args in [
        vec!["--precision", "f32", "query", RAFAH],
        vec!["--precision", "f32", "index", "seeds"],
    ] {
        let msg = common::stderr_with_code(likewise(&store).args(&args), 5);
        assert!(
            msg.contains("precision bf16, not f32") && msg.contains("--precision"),
            "{msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "one clear line: {msg}");
    }
    // An f32 store refuses bf16 the same way.
    let f32_store = dir.path().join("f32");
    likewise(&f32_store)
        .args(["index", "seeds"])
        .assert()
        .success();
    assert_eq!(info(&f32_store)["precision"], "f32");
    let msg = common::stderr_with_code(
        likewise(&f32_store).args(["--precision", "bf16", "query", RAFAH]),
        5,
    );
    assert!(msg.contains("precision f32, not bf16"), "{msg}");
}

#[test]
fn a_truncated_or_damaged_store_gives_a_clear_error() {
    let dir = indexed_seeds();
    let store = dir.path().join("store");
    let segment = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "lkw"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    for cut in [0, 7, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&segment, &bytes[..cut]).unwrap();
        let msg = common::stderr_with_code(likewise(&store).args(["query", RAFAH]), 5);
        assert!(
            msg.contains("damaged") && msg.contains(".lkw"),
            "cut {cut}: {msg}"
        );
    }
    std::fs::write(&segment, &bytes).unwrap();
    likewise(&store).args(["query", RAFAH]).assert().success();

    // `verify` reads every byte: intact here, and a flipped byte in the vectors is named.
    let out = likewise(&store)
        .args(["verify", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["segments"], 1, "{v}");
    assert!(
        v["bytes_checked"].as_u64().unwrap() >= bytes.len() as u64,
        "{v}"
    );
    let mut flipped = bytes.clone();
    let at = bytes.len() - 4096;
    flipped[at] ^= 0x40;
    std::fs::write(&segment, &flipped).unwrap();
    let msg = common::stderr_with_code(likewise(&store).args(["verify"]), 5);
    assert!(
        msg.contains("damaged") && msg.contains(".lkw") && msg.contains("vectors"),
        "{msg}"
    );
    std::fs::write(&segment, &bytes).unwrap();

    let manifest = store.join("MANIFEST");
    let m = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &m[..m.len() / 2]).unwrap();
    let out = likewise(&store)
        .args(["info"])
        .assert()
        .code(5)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("MANIFEST"));
}

#[test]
fn a_model_folder_with_missing_or_damaged_files_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::copy_model_config(&dir.path().join("model"));
    let real = common::model_dir();
    // Weights cut short, tokenizer absent.
    let weights = std::fs::read(real.join("model.safetensors")).unwrap();
    std::fs::write(model.join("model.safetensors"), &weights[..1 << 20]).unwrap();
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("store"))
            .env("LIKEWISE_MODEL", &model)
            .args(["query", RAFAH]),
        4,
    );
    assert!(msg.contains("tokenizer.json is missing"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn embed_prints_one_vector_per_line_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let golden: Vec<Value> = std::fs::read_to_string(
        common::root().join("tests/fixtures/golden-all-MiniLM-L6-v2.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let pick: Vec<&Value> = golden
        .iter()
        .filter(|g| !g["text"].as_str().unwrap().contains(['\n', '\r']))
        .take(4)
        .collect();
    let mut input: Vec<String> = pick
        .iter()
        .map(|g| g["text"].as_str().unwrap().to_string())
        .collect();
    input.insert(1, String::new()); // an empty line is the empty text
    let lines: Vec<Value> = common::jsonl_of(
        likewise(&dir.path().join("store"))
            .arg("embed")
            .write_stdin(input.join("\n") + "\n"),
    );
    assert_eq!(lines.len(), input.len());
    // The same lines saved by a Windows tool as "Unicode" (UTF-16 with its mark, CRLF): the same
    // vectors, not the garbage of its bytes cut at each 0x0A.
    let wide: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            (input.join("\r\n") + "\r\n")
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        )
        .collect();
    let wide_lines: Vec<Value> = common::jsonl_of(
        likewise(&dir.path().join("store"))
            .arg("embed")
            .write_stdin(wide),
    );
    assert_eq!(wide_lines, lines);
    let vec_of = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let empty = golden.iter().find(|g| g["text"] == "").unwrap();
    assert!(
        common::cosine(
            &vec_of(&lines[1]["embedding"]),
            &vec_of(&empty["embedding"])
        ) >= 0.99999
    );
    for (line, g) in lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .zip(&pick)
    {
        assert!(
            common::cosine(&vec_of(&line["embedding"]), &vec_of(&g["embedding"])) >= 0.99999,
            "{}",
            g["id"]
        );
    }
}

#[test]
fn a_paragraph_longer_than_the_window_is_split_without_losing_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.txt");
    let sentence =
        "The minister said the talks on the border crossing would resume next week after a pause. ";
    let long = sentence.repeat(40); // about 700 word pieces
    std::fs::write(
        &input,
        format!("A long article\n{long}\nA short closing paragraph.\n"),
    )
    .unwrap();
    let store = dir.path().join("store");
    likewise(&store).arg("index").arg(&input).assert().success();
    let s = Store::open(&store).unwrap();
    let (loc, rec) = s.live_articles().next().unwrap();
    assert_eq!(rec.paragraphs, 2);
    assert!(rec.chunk_count >= 4, "{} chunks", rec.chunk_count);
    let seg = &s.segments[loc.segment];
    let first_paragraph: Vec<String> = (0..rec.chunk_count as usize - 1)
        .map(|c| seg.chunk_text(c).into_owned())
        .collect();
    assert_eq!(first_paragraph.join(" "), long.trim());
    let enc = common::encoder();
    for t in &first_paragraph {
        assert!(likewise::model::Embedder::count_tokens(enc, &[t]).unwrap() <= 256);
    }
}

#[test]
fn errors_are_one_line_with_a_documented_code() {
    let dir = tempfile::tempdir().unwrap();
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("missing")).args(["query", RAFAH]),
        5,
    );
    assert!(msg.starts_with("likewise: error: no store at"), "{msg}");
    likewise(&dir.path().join("missing"))
        .args(["query", "--bogus"])
        .assert()
        .code(2);
    // A PDF given as the passage, or to `embed`, is refused, not embedded as noise.
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, b"%PDF-1.7\n\x00\x01\x02\x03 binary stream\x00").unwrap();
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("missing"))
            .args(["query", "--file"])
            .arg(&pdf),
        1,
    );
    assert!(msg.contains("report.pdf: looks binary, not text"), "{msg}");
    let msg = common::stderr_with_code(
        likewise(&dir.path().join("missing")).arg("embed").arg(&pdf),
        1,
    );
    assert!(msg.contains("report.pdf: looks binary, not text"), "{msg}");
}

#[test]
fn a_folder_with_nothing_to_index_is_a_warning_and_leaves_an_empty_store() {
    // Before: "no store at … (build one with `likewise index PATH...`)", exit 5, from `index`
    // itself, and every later command said the same.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("notes");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("page.html"), "<p>not a kind it reads</p>").unwrap();
    let store = dir.path().join("store");
    let msg = common::stderr_with_code(likewise(&store).arg("index").arg(&empty), 3);
    assert!(
        msg.contains("no file to index in this folder") && msg.contains(".txt, .md"),
        "{msg}"
    );
    assert!(msg.contains("holds 0 articles"), "{msg}");
    let info = json_out(likewise(&store).args(["info", "--format", "json"]));
    assert_eq!(info["articles"], 0, "{info}");
    let hits = json_out(likewise(&store).args(["query", RAFAH, "--format", "json"]));
    assert_eq!(hits["hits"].as_array().unwrap().len(), 0);
    // Named directly, markup is refused rather than embedded with its tags.
    let msg = common::stderr_with_code(
        likewise(&store).arg("index").arg(empty.join("page.html")),
        3,
    );
    assert!(msg.contains("markup (HTML or XML) is not read"), "{msg}");
    // For scripts: the report, what was skipped and why, and the store's counts on stdout.
    let out = likewise(&store)
        .args(["index", "--format", "json"])
        .arg(&empty)
        .arg(empty.join("page.html"))
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    let doc: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["report"]["skipped_inputs"], 2, "{doc}");
    let skipped = doc["skipped"].as_array().unwrap();
    assert!(
        skipped[0].as_str().unwrap().contains("no file to index"),
        "{doc}"
    );
    assert!(
        skipped[1].as_str().unwrap().contains("page.html: markup"),
        "{doc}"
    );
    assert_eq!(doc["store"]["articles"], 0, "{doc}");
}

#[test]
fn embed_keeps_input_order_across_groups() {
    // More lines than one embedding group (1,024): groups are embedded and written in turn, and the
    // output must still follow the input line by line.
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "Rafah crossing reopens for aid trucks",
        "",
        "Central bank holds interest rates at 5.25 percent as inflation slows to 3.2 percent in March",
    ];
    let input: Vec<&str> = (0..1100).map(|i| texts[(i * 7 + i / 3) % 3]).collect();
    let lines: Vec<Value> = common::jsonl_of(
        likewise(&dir.path().join("store"))
            .arg("embed")
            .write_stdin(input.join("\n") + "\n"),
    );
    assert_eq!(lines.len(), input.len());
    let first_of = |t: &str| input.iter().position(|x| *x == t).unwrap();
    for (i, line) in lines.iter().enumerate() {
        let want = &lines[first_of(input[i])]["embedding"];
        assert_eq!(&line["embedding"], want, "line {} ({:?})", i + 1, input[i]);
    }
    assert_ne!(lines[first_of(texts[0])], lines[first_of(texts[2])]);
}

#[test]
fn one_line_texts_are_paragraphs_too_and_their_headline_counts_once() {
    // A one-line text file and JSONL records whose text is one line: the line is the headline
    // and, having no story under it, the one paragraph, so paragraph search, the paragraph tier
    // of dupes and compare see it. Its article vector is the line's own vector (headline once).
    let dir = tempfile::tempdir().unwrap();
    let doha = "Gaza truce extended by two days after talks in Doha";
    let qatar = "Israel and Hamas agreed to extend the truce in Gaza by two days, Qatar said.";
    let rewrite =
        "Qatar said Israel and Hamas had agreed to extend the Gaza truce by two more days.";
    std::fs::write(dir.path().join("one.txt"), format!("{doha}\n")).unwrap();
    std::fs::write(
        dir.path().join("s.jsonl"),
        [
            serde_json::json!({"id": "a", "text": qatar}),
            serde_json::json!({"id": "b", "text": "The central bank raised interest rates by a quarter point."}),
            serde_json::json!({"id": "c", "title": "Truce", "text": rewrite}),
        ]
        .iter()
        .map(|r| format!("{r}\n"))
        .collect::<String>(),
    )
    .unwrap();
    let store = dir.path().join("store");
    likewise(&store)
        .arg("index")
        .arg(dir.path().join("one.txt"))
        .arg(dir.path().join("s.jsonl"))
        .assert()
        .success();
    assert_eq!(info(&store)["paragraphs"], 4, "{}", info(&store));
    let query = |level: &str| {
        json_out(likewise(&store).args([
            "query",
            "truce extended in Gaza",
            // The vectors are the subject here: the model's cosine alone.
            "--mode",
            "semantic",
            "--level",
            level,
            "--format",
            "json",
        ]))
    };
    let paragraphs = query("paragraph");
    let texts: Vec<&str> = paragraphs["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 4, "{paragraphs}");
    assert_eq!(texts[..2], [doha, qatar], "{paragraphs}");
    // The one-line articles' vectors are their lines' vectors: same score at both levels.
    let articles = query("article");
    for hit in articles["hits"].as_array().unwrap() {
        if hit["title"] == "Truce" {
            continue;
        }
        let article = hit["score"].as_f64().unwrap();
        let paragraph = hit["paragraph_score"].as_f64().unwrap();
        assert!((article - paragraph).abs() < 1e-5, "{hit}");
    }
    let dupes = json_out(likewise(&store).args(["dupes", "--format", "json"]));
    let paragraph_pair = dupes["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["level"] == "paragraph")
        .unwrap_or_else(|| panic!("no paragraph pair: {dupes}"));
    let mut keys = [
        paragraph_pair["a"]["key"].as_str().unwrap(),
        paragraph_pair["b"]["key"].as_str().unwrap(),
    ];
    keys.sort();
    assert_eq!(keys, ["a", "c"], "{dupes}");
    // The human table names a JSONL record by its id and file.
    let table = common::stdout_of(likewise(&store).arg("dupes"));
    let jsonl = dir.path().join("s.jsonl");
    for id in ["a", "c"] {
        let place = format!("{id} ({})", jsonl.display());
        assert!(table.contains(&place), "{place} not in {table}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_same_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = common::stdout_of(likewise(&store).args(["completions", shell]));
        // Every subcommand and the query flags added with hybrid search are offered.
        for word in ["query", "index", "serve", "mode", "lexical"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    likewise(&store)
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
    let man = common::stdout_of(likewise(&store).arg("man"));
    assert!(man.contains(".TH likewise 1") && man.contains("query"));
}
