//! The store through the library, with the deterministic fake embedder: commits, incremental
//! indexing, compaction, the writer lock, and damaged files.

use likewise::compact::Compact;
use likewise::index::{self, IndexOptions, Silent};
use likewise::model::fake::FakeEmbedder;
use likewise::model::Embedder;
use likewise::search::{self, SearchOptions};
use likewise::store::{Store, StoreError, Writer};
use std::path::Path;

fn write_articles(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{i:03}.txt")),
            format!(
                "Headline {i}\nParagraph about topic{} number {i}.\nAnother line on subject{}.\n",
                i % 3,
                i % 5
            ),
        )
        .unwrap();
    }
}

fn run_index(
    store: &Path,
    fake: &FakeEmbedder,
    input: &Path,
    opts: &IndexOptions,
) -> index::IndexReport {
    let mut w = Writer::open(store, fake.identity(), "f32").unwrap();
    index::index(&mut w, fake, &[input.to_path_buf()], opts, &Silent).unwrap()
}

#[test]
fn groups_are_committed_and_compacted_without_losing_articles() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 50);
    let fake = FakeEmbedder::new(32, 50);
    let opts = IndexOptions {
        group_articles: 4,
        ..Default::default()
    };
    let report = run_index(&dir.path().join("s"), &fake, &input, &opts);
    assert_eq!(report.articles_new, 50);
    let store = Store::open(&dir.path().join("s")).unwrap();
    assert_eq!(store.article_count(), 50);
    assert_eq!(store.paragraph_count(), 100);
    assert!(
        store.manifest.segments.len() <= 8,
        "13 groups were compacted"
    );
    // Every article's vector is unit length and searchable.
    let q = store.segments[0].article_vector(0).to_vec();
    let hits = search::search_articles(
        &store,
        &q,
        &SearchOptions {
            k: 3,
            min_score: None,
            exclude: None,
            filter: None,
            compact: None,
        },
    );
    assert!((hits[0].score - 1.0).abs() < 1e-5);
}

#[test]
fn search_is_exact_against_a_naive_scan() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 30);
    let fake = FakeEmbedder::new(48, 50);
    run_index(
        &dir.path().join("s"),
        &fake,
        &input,
        &IndexOptions {
            group_articles: 7,
            ..Default::default()
        },
    );
    let store = Store::open(&dir.path().join("s")).unwrap();
    let q = fake
        .embed(&["topic1 subject2 number"], &|_| {})
        .unwrap()
        .remove(0);
    let hits = search::search_paragraphs(
        &store,
        &q,
        &SearchOptions {
            k: 10,
            min_score: None,
            exclude: None,
            filter: None,
            compact: None,
        },
    );
    let mut naive: Vec<f32> = Vec::new();
    for (loc, rec) in store.live_articles() {
        let seg = &store.segments[loc.segment];
        for c in rec.chunk_start as usize..(rec.chunk_start + rec.chunk_count as u64) as usize {
            naive.push(seg.chunk_vector(c).iter().zip(&q).map(|(a, b)| a * b).sum());
        }
    }
    naive.sort_by(|a, b| b.total_cmp(a));
    let got: Vec<f32> = hits.iter().map(|h| h.score).collect();
    for (g, n) in got.iter().zip(&naive) {
        assert!((g - n).abs() < 1e-5, "{got:?} vs {:?}", &naive[..10]);
    }
}

#[test]
fn a_second_writer_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEmbedder::new(16, 50);
    let first = Writer::open(dir.path(), fake.identity(), "f32").unwrap();
    match Writer::open(dir.path(), fake.identity(), "f32") {
        Err(StoreError::Locked { holder, .. }) => {
            assert!(holder.contains(&std::process::id().to_string()))
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("two writers at once"),
    }
    drop(first);
    Writer::open(dir.path(), fake.identity(), "f32").expect("the lock is released with its writer");
}

#[test]
fn debris_of_an_interrupted_write_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 5);
    let fake = FakeEmbedder::new(16, 50);
    let store = dir.path().join("s");
    run_index(&store, &fake, &input, &IndexOptions::default());
    // A crash between writing a segment and naming it leaves an unnamed segment and a temp file.
    std::fs::write(store.join("seg-99999999-dead.lkw"), b"half a segment").unwrap();
    std::fs::write(store.join("MANIFEST.123.tmp"), b"half a manifest").unwrap();
    assert_eq!(Store::open(&store).unwrap().article_count(), 5);
    drop(Writer::open(&store, fake.identity(), "f32").unwrap());
    assert!(!store.join("seg-99999999-dead.lkw").exists());
    assert!(!store.join("MANIFEST.123.tmp").exists());
    // A saved search being written by another process right now (under its own lock) is not
    // debris: removing its temp file would make that write fail.
    std::fs::write(store.join("searches.json.456.tmp"), b"[]").unwrap();
    std::fs::write(store.join("webhooks.json.456.tmp"), b"{}").unwrap();
    drop(Writer::open(&store, fake.identity(), "f32").unwrap());
    assert!(store.join("searches.json.456.tmp").exists());
    assert!(store.join("webhooks.json.456.tmp").exists());
}

#[test]
fn a_flipped_byte_anywhere_in_a_segment_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 6);
    let fake = FakeEmbedder::new(16, 50);
    let store = dir.path().join("s");
    run_index(&store, &fake, &input, &IndexOptions::default());
    let seg = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "lkw"))
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let mut errors = 0;
    for i in (0..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x5a;
        std::fs::write(&seg, &bad).unwrap();
        match Store::open(&store) {
            Err(StoreError::Corrupt { .. }) | Err(StoreError::Version { .. }) => errors += 1,
            Err(e) => panic!("unexpected error {e}"),
            // Padding bytes between sections carry nothing; the content must then be intact.
            Ok(s) => assert_eq!(s.article_count(), 6),
        }
    }
    assert!(errors > bytes.len() / 7 / 2);
}

#[test]
fn jsonl_articles_with_ids_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.jsonl");
    std::fs::write(
        &file,
        concat!(
            r#"{"id": "a1", "title": "Budget vote", "text": "MPs voted on the budget.\nThe vote passed.", "date": "2024-03-01", "source": "Wire"}"#, "\n",
            r#"{"text": "Untitled story\nWith a body."}"#, "\n",
            "not json\n",
        ),
    )
    .unwrap();
    let fake = FakeEmbedder::new(16, 50);
    let store = dir.path().join("s");
    let mut w = Writer::open(&store, fake.identity(), "f32").unwrap();
    let report = index::index(
        &mut w,
        &fake,
        std::slice::from_ref(&file),
        &IndexOptions::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(report.articles_new, 2);
    assert_eq!(report.skipped_inputs, 1);
    let s = Store::open(&store).unwrap();
    let a1 = s.article(s.find_key("a1").unwrap());
    assert_eq!(a1.title, "Budget vote");
    assert_eq!(a1.paragraphs, 2);
    assert_eq!(a1.meta.date.as_deref(), Some("2024-03-01"));
    assert_eq!(a1.meta.source.as_deref(), Some("Wire"));
}

/// The warnings an indexing run gave, as `path: reason` lines.
struct Collect(std::sync::Mutex<Vec<String>>);

impl index::Progress for Collect {
    fn start(&self, _: usize) {}
    fn advance(&self, _: usize) {}
    fn finish(&self) {}
    fn warn(&self, w: &index::Warning) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}: {}", w.path.display(), w.reason));
    }
}

#[test]
fn tables_and_json_documents_give_an_article_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // A CSV as spreadsheets write it: quoted fields with commas and line breaks, gaps.
    std::fs::write(
        input.join("feed.csv"),
        "id,Headline,text,date,category\n\
         a1,Budget vote,\"MPs voted on the budget, late.\nThe vote passed.\",2024-03-01,politics\n\
         ,Untitled,A story without an id.,,sport\n\
         a1,Again,The same id again.,,\n\
         a2,Short row\n",
    )
    .unwrap();
    // Semicolons (a European spreadsheet's CSV), and a tab-separated file.
    std::fs::write(
        input.join("semi.csv"),
        "title;body\nRates rise;The bank raised rates.\n",
    )
    .unwrap();
    std::fs::write(
        input.join("wire.tsv"),
        "text\tsource\nShares rose on Friday.\tWire\n",
    )
    .unwrap();
    std::fs::write(
        input.join("export.json"),
        r#"[{"id": "j1", "text": "Floods hit the coast."}, {"txt": "no text"}, 7]"#,
    )
    .unwrap();
    std::fs::write(input.join("columns.csv"), "a,b\n1,2\n").unwrap();
    let fake = FakeEmbedder::new(16, 50);
    let store = dir.path().join("s");
    let mut w = Writer::open(&store, fake.identity(), "f32").unwrap();
    let warnings = Collect(Default::default());
    let report = index::index(
        &mut w,
        &fake,
        std::slice::from_ref(&input),
        &IndexOptions::default(),
        &warnings,
    )
    .unwrap();
    drop(w);
    let warnings = warnings.0.into_inner().unwrap();
    let said = |what: &str| warnings.iter().any(|w| w.contains(what));
    assert!(
        said("feed.csv:5: id `a1` repeats an earlier record"),
        "{warnings:?}"
    );
    assert!(
        said("feed.csv:6: 2 fields, and the text is field 3"),
        "{warnings:?}"
    );
    assert!(
        said("export.json:2: not a JSON article with a `text` field"),
        "{warnings:?}"
    );
    assert!(
        said("export.json:3: a JSON number, not an article"),
        "{warnings:?}"
    );
    assert!(said("columns.csv: no text column"), "{warnings:?}");
    assert_eq!(
        (report.articles_new, report.skipped_inputs),
        (5, 5),
        "{warnings:?}"
    );
    let s = Store::open(&store).unwrap();
    let a1 = s.article(s.find_key("a1").unwrap());
    assert_eq!(a1.title, "Budget vote");
    assert_eq!(a1.paragraphs, 2);
    assert_eq!(a1.meta.date.as_deref(), Some("2024-03-01"));
    // A row without an id is keyed by its file and the line it starts on.
    let untitled = s.article(s.find_key("in/feed.csv#4").unwrap());
    assert_eq!(untitled.title, "Untitled");
    let rates = s.article(s.find_key("in/semi.csv#2").unwrap());
    assert_eq!((rates.title.as_str(), rates.paragraphs), ("Rates rise", 1));
    let wire = s.article(s.find_key("in/wire.tsv#2").unwrap());
    assert_eq!(wire.meta.source.as_deref(), Some("Wire"));
    assert_eq!(
        s.article(s.find_key("j1").unwrap()).title,
        "Floods hit the coast."
    );
    // The same files again: nothing changed.
    let again = run_index(&store, &fake, &input, &IndexOptions::default());
    assert_eq!((again.articles_new, again.articles_unchanged), (0, 5));
}

#[test]
fn appending_to_a_large_store_merges_only_the_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 300);
    let fake = FakeEmbedder::new(32, 50);
    let store_dir = dir.path().join("s");
    let one_group = IndexOptions {
        group_articles: 1000,
        ..Default::default()
    };
    run_index(&store_dir, &fake, &input, &one_group);
    let big = Store::open(&store_dir).unwrap().manifest.segments[0].clone();
    // 40 new articles committed two at a time: 20 small segments.
    let more = dir.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    for i in 0..40 {
        std::fs::write(
            more.join(format!("new{i:02}.txt")),
            format!(
                "New headline {i}\nA fresh paragraph number {i} on topic{}.\n",
                i % 4
            ),
        )
        .unwrap();
    }
    let small_groups = IndexOptions {
        group_articles: 2,
        ..Default::default()
    };
    run_index(&store_dir, &fake, &more, &small_groups);
    let store = Store::open(&store_dir).unwrap();
    assert_eq!(store.article_count(), 340);
    assert!(store.manifest.segments.len() <= likewise::store::MAX_SEGMENTS);
    assert_eq!(
        store.manifest.segments[0].file, big.file,
        "the large segment is not rewritten: {:?}",
        store.manifest.segments
    );
    // Every article is still found by its own vector.
    for (loc, rec) in store.live_articles() {
        let q = store.segments[loc.segment]
            .article_vector(loc.article)
            .to_vec();
        let hits = search::search_articles(
            &store,
            &q,
            &SearchOptions {
                k: 1,
                min_score: None,
                exclude: None,
                filter: None,
                compact: None,
            },
        );
        assert!((hits[0].score - 1.0).abs() < 1e-5, "{}", rec.key);
    }
    // No file is left that the manifest does not name.
    let files: Vec<String> = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    let named: usize = store
        .manifest
        .segments
        .iter()
        .map(|s| s.files().len())
        .sum();
    assert_eq!(files.len(), named, "{files:?}");
    // Each segment and its lexical index.
    assert_eq!(named, 2 * store.manifest.segments.len(), "{files:?}");
}

/// Top-10 chunk ids and scores of `query`, scanned exactly or through compact copies.
fn top10(store: &Store, query: &[f32], compact: Option<Compact>) -> Vec<(usize, f32)> {
    search::search_paragraphs(
        store,
        query,
        &SearchOptions {
            k: 10,
            min_score: None,
            exclude: None,
            filter: None,
            compact,
        },
    )
    .iter()
    .map(|h| (h.chunk, h.score))
    .collect()
}

#[test]
fn compact_copies_find_the_exact_top_ten_and_follow_appends_and_merges() {
    use likewise::bench::{synthetic_identity, synthetic_segment, synthetic_vectors};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let dim = 384;
    let mut w = Writer::open(&path, &synthetic_identity(dim), "f32").unwrap();
    w.set_compact(Some(Compact::Binary)).unwrap();
    // 60,000 random unit vectors: no structure, the hardest case for compact scans.
    w.commit(Some(&synthetic_segment(0, 60_000, dim, 42)), &[])
        .unwrap();
    // Small appends, merged among themselves by compaction, each merge with its own copy.
    for i in 0..10 {
        w.commit(
            Some(&synthetic_segment(
                10_000 + i * 100,
                300,
                dim,
                100 + i as u64,
            )),
            &[],
        )
        .unwrap();
    }
    w.compact_if_needed().unwrap();
    std::fs::write(path.join("seg-stray.1.binary.lkc"), b"debris").unwrap();
    drop(w);
    let w = Writer::open(&path, &synthetic_identity(dim), "f32").unwrap();
    assert!(
        !path.join("seg-stray.1.binary.lkc").exists(),
        "debris removed"
    );
    assert!(w.manifest().segments.iter().all(|s| s.compact.is_some()));
    drop(w);
    let store = Store::open(&path).unwrap();
    assert!(store.warnings.is_empty(), "{:?}", store.warnings);
    assert!(store
        .segments
        .iter()
        .all(|s| s.compact_kind() == Some(Compact::Binary)));

    let queries = synthetic_vectors(30, dim, 7);
    for kind in [Compact::Binary, Compact::Int8] {
        let (mut found, mut total) = (0, 0);
        for q in queries.chunks_exact(dim) {
            let exact = top10(&store, q, None);
            let fast = top10(&store, q, Some(kind));
            total += exact.len();
            for (id, score) in &exact {
                if let Some((_, s)) = fast.iter().find(|(f, _)| f == id) {
                    found += 1;
                    assert_eq!(s.to_bits(), score.to_bits(), "scores are the exact ones");
                }
            }
        }
        let recall = found as f64 / total as f64;
        assert!(recall >= 0.99, "{kind}: recall@10 {recall}");
    }

    // Damage: a compact file that is gone is a warning naming it, and the exact scan answers.
    let mut w = Writer::open(&path, &synthetic_identity(dim), "f32").unwrap();
    let first = w.manifest().segments[0].compact.clone().unwrap().file;
    drop(w);
    std::fs::remove_file(path.join(&first)).unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.warnings.len(), 1);
    assert!(store.warnings[0].contains(&first), "{}", store.warnings[0]);
    assert!(store.segments[0].compact_kind().is_none());
    let q = &queries[..dim];
    assert_eq!(
        top10(&store, q, Some(Compact::Binary)),
        top10(&store, q, None)
    );
    drop(store);
    // The writer rebuilds what is missing, and only that.
    w = Writer::open(&path, &synthetic_identity(dim), "f32").unwrap();
    let kept = w.manifest().segments[1].compact.clone();
    assert!(w.set_compact(Some(Compact::Binary)).unwrap());
    assert_eq!(w.manifest().segments[1].compact, kept);
    assert!(w.set_compact(None).unwrap());
    drop(w);
    let leftover = std::fs::read_dir(&path)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lkc"))
        .count();
    assert_eq!(leftover, 0, "no compact files once the store keeps none");
}

/// The vector `index` makes for the article in `file` in the given way, made apart from any store.
fn article_vector_made(
    fake: &FakeEmbedder,
    file: &Path,
    mode: likewise::store::ArticleVectorMode,
) -> Vec<f32> {
    let parsed = likewise::text::parse_article_text(&std::fs::read_to_string(file).unwrap());
    let source = index::SourceArticle {
        key: "k".into(),
        file: None,
        parsed,
        content_hash: String::new(),
        given: None,
    };
    index::embed_group(fake, &[source], mode, &mut |_| {})
        .unwrap()
        .article_vectors
}

fn stored_article_vector(store: &Store, key: &str) -> Vec<f32> {
    let loc = store.find_key(key).unwrap();
    store.segments[loc.segment]
        .article_vector(loc.article)
        .to_vec()
}

/// A new store records how it makes article vectors; a store made before the method was recorded
/// keeps making its new articles the old way, so all its articles stay comparable.
#[test]
fn a_store_keeps_the_article_vector_method_it_was_made_with() {
    use likewise::store::{read_manifest, ArticleVectorMode, MANIFEST};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_articles(&input, 3);
    let fake = FakeEmbedder::new(24, 50);
    let (fresh, legacy) = (dir.path().join("fresh"), dir.path().join("legacy"));
    run_index(&fresh, &fake, &input, &IndexOptions::default());
    run_index(&legacy, &fake, &input, &IndexOptions::default());
    assert_eq!(
        read_manifest(&fresh).unwrap().unwrap().article_vectors,
        ArticleVectorMode::WholeTextAndLede
    );

    // The legacy store's manifest as written before the field existed.
    let path = legacy.join(MANIFEST);
    let bytes = std::fs::read(&path).unwrap();
    let json = likewise::store::format::decode_manifest(&bytes).unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert!(value
        .as_object_mut()
        .unwrap()
        .remove("article_vectors")
        .is_some());
    let old = serde_json::to_vec(&value).unwrap();
    std::fs::write(&path, likewise::store::format::encode_manifest(&old)).unwrap();

    std::fs::write(
        input.join("new.txt"),
        "A new headline\nA first paragraph about topic7.\nA second one, on subject9 and more.\n",
    )
    .unwrap();
    for store in [&fresh, &legacy] {
        let report = run_index(store, &fake, &input, &IndexOptions::default());
        assert_eq!(report.articles_new, 1);
    }
    assert_eq!(
        read_manifest(&legacy).unwrap().unwrap().article_vectors,
        ArticleVectorMode::ParagraphsAndLead
    );
    let file = input.join("new.txt");
    let (whole, old_way) = (
        article_vector_made(&fake, &file, ArticleVectorMode::WholeTextAndLede),
        article_vector_made(&fake, &file, ArticleVectorMode::ParagraphsAndLead),
    );
    assert!(
        whole
            .iter()
            .zip(&old_way)
            .any(|(a, b)| (a - b).abs() > 1e-3),
        "the two ways must differ for this test to mean anything"
    );
    let key = Store::open(&fresh)
        .unwrap()
        .live_articles()
        .find(|(_, r)| r.key.contains("new"))
        .map(|(_, r)| r.key.clone())
        .unwrap();
    assert_eq!(
        stored_article_vector(&Store::open(&fresh).unwrap(), &key),
        whole
    );
    assert_eq!(
        stored_article_vector(&Store::open(&legacy).unwrap(), &key),
        old_way
    );
}

#[test]
fn an_article_stored_without_its_lone_paragraph_is_cut_again() {
    // A one-line text as a build that kept a lone headline out of the paragraphs stored it: the
    // same content hash, no paragraph. Indexing the file again cuts it anew, once.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("flash.txt"),
        "Gaza truce extended by two days after talks in Doha\n",
    )
    .unwrap();
    let fake = FakeEmbedder::new(32, 50);
    let opts = IndexOptions::default();
    let current = dir.path().join("current");
    assert_eq!(run_index(&current, &fake, &input, &opts).articles_new, 1);
    let made = Store::open(&current).unwrap();
    assert_eq!(made.paragraph_count(), 1);
    let (loc, record) = made.live_articles().next().unwrap();
    let mut bare = record.clone();
    bare.paragraphs = 0;
    bare.chunk_start = 0;
    bare.chunk_count = 0;
    let older = dir.path().join("older");
    let mut w = Writer::open(&older, fake.identity(), "f32").unwrap();
    let segment = likewise::store::format::SegmentData {
        dim: 32,
        articles: vec![bare],
        article_vectors: made.segments[loc.segment]
            .article_vector(loc.article)
            .to_vec(),
        ..Default::default()
    };
    w.commit(Some(&segment), &[]).unwrap();
    drop(w);
    assert_eq!(Store::open(&older).unwrap().paragraph_count(), 0);
    let again = run_index(&older, &fake, &input, &opts);
    assert_eq!(
        (again.articles_changed, again.articles_unchanged),
        (1, 0),
        "{again:?}"
    );
    let store = Store::open(&older).unwrap();
    assert_eq!((store.article_count(), store.paragraph_count()), (1, 1));
    let settled = run_index(&older, &fake, &input, &opts);
    assert_eq!(
        (settled.articles_changed, settled.articles_unchanged),
        (0, 1)
    );
}

/// Turns an article's record and chunk texts into what an older text reader would have stored.
type OlderCut = fn(&mut likewise::store::format::ArticleRecord, &mut Vec<String>);

#[test]
fn an_article_an_older_reader_cut_otherwise_is_cut_again() {
    // A Markdown file with front matter, stored as a reader that knew no front matter cut it:
    // the same content hash, but the headline "---" and the heading's marks in a paragraph.
    // Indexing the file again cuts it anew, once; the same file cut the same way is unchanged.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("talks.md"),
        "---\ntitle: Truce talks resume in Cairo\ndate: 2024-03-23\n---\n\nNegotiators met on Saturday.\n\n## Background\n\nThe talks stalled in March.\n",
    )
    .unwrap();
    let fake = FakeEmbedder::new(32, 50);
    let opts = IndexOptions::default();
    let current = dir.path().join("current");
    assert_eq!(run_index(&current, &fake, &input, &opts).articles_new, 1);
    let made = Store::open(&current).unwrap();
    let (loc, record) = made.live_articles().next().unwrap();
    assert_eq!(record.title, "Truce talks resume in Cairo");
    assert_eq!(record.meta.date.as_deref(), Some("2024-03-23"));
    let seg = &made.segments[loc.segment];
    let texts: Vec<String> = seg
        .article_chunks(loc.article)
        .map(|c| seg.chunk_text(c).into_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Negotiators met on Saturday.",
            "Background",
            "The talks stalled in March."
        ]
    );
    // The same store as the older reader left it, in three ways: each is cut again.
    let older_cuts: [(&str, OlderCut); 3] = [
        ("headline", |r, _| r.title = "---".into()),
        ("metadata", |r, _| r.meta = Default::default()),
        ("a paragraph's text", |_, t| t[1] = "## Background".into()),
    ];
    for (n, (what, older_cut)) in older_cuts.into_iter().enumerate() {
        let mut older_record = record.clone();
        let mut older_texts = texts.clone();
        older_cut(&mut older_record, &mut older_texts);
        let mut segment = likewise::store::format::SegmentData {
            dim: 32,
            articles: vec![older_record],
            article_vectors: seg.article_vector(loc.article).to_vec(),
            ..Default::default()
        };
        for (c, text) in seg.article_chunks(loc.article).zip(&older_texts) {
            let mut chunk = seg.chunk(c);
            chunk.text_start = segment.text.len() as u64;
            chunk.text_len = text.len() as u32;
            segment.text.push_str(text);
            segment.chunks.push(chunk);
            segment.chunk_vectors.extend_from_slice(seg.chunk_vector(c));
        }
        let older = dir.path().join(format!("older-{n}"));
        let mut w = Writer::open(&older, fake.identity(), "f32").unwrap();
        w.commit(Some(&segment), &[]).unwrap();
        drop(w);
        let again = run_index(&older, &fake, &input, &opts);
        assert_eq!(
            (again.articles_changed, again.articles_unchanged),
            (1, 0),
            "{what}: {again:?}"
        );
        let store = Store::open(&older).unwrap();
        let (loc, record) = store.live_articles().next().unwrap();
        assert_eq!(record.title, "Truce talks resume in Cairo", "{what}");
        let seg = &store.segments[loc.segment];
        assert_eq!(
            seg.chunk_text(seg.article_chunks(loc.article).start + 1),
            "Background"
        );
        let settled = run_index(&older, &fake, &input, &opts);
        assert_eq!(
            (settled.articles_changed, settled.articles_unchanged),
            (0, 1),
            "{what}"
        );
    }
}

#[test]
fn a_distributed_part_cuts_again_what_the_store_holds_cut_otherwise() {
    // A Spark job's part knows each stored article by its content hash and how it was cut: the
    // same content stored with another headline (front matter once read as text) is changed.
    let dir = tempfile::tempdir().unwrap();
    let line = r#"{"id": "t1", "text": "---\ntitle: Truce talks resume\n---\nNegotiators met on Saturday."}"#;
    let fake = FakeEmbedder::new(16, 50);
    let store = dir.path().join("s");
    let mut w = Writer::open(&store, fake.identity(), "f32").unwrap();
    index::index_json_lines(
        &mut w,
        &fake,
        "feed",
        &format!("{line}\n"),
        &IndexOptions::default(),
        &Silent,
    )
    .unwrap();
    drop(w);
    let s = Store::open(&store).unwrap();
    let (_, record) = s.live_articles().next().unwrap();
    assert_eq!(record.title, "Truce talks resume");
    let mut older = record.clone();
    older.title = "---".into();
    older.paragraphs = 3;
    let target = index::PartTarget {
        dir: &store,
        file_stem: "seg-part-test",
        compact: None,
        generation: 2,
        articles_per_segment: 100,
        article_vectors: s.manifest.article_vectors,
    };
    for (stored, changed) in [(record.clone(), 0), (older, 1)] {
        let known = [(stored.key.clone(), index::known_form(&stored))].into();
        let written = index::write_part(
            &target,
            &fake,
            "part",
            &format!("{line}\n"),
            &known,
            &IndexOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (written.articles_changed, written.articles_unchanged),
            (changed, 1 - changed),
            "stored as {:?}",
            stored.title
        );
    }
}
