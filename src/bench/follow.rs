//! Following the news, measured: incremental stories against `cluster --by story`, and the
//! cost of matching saved searches against a commit of new articles.

use super::cpu_name;
use crate::articles::ArticleTable;
use crate::engine::EngineError;
use crate::hybrid::Halves;
use crate::lexical::{self, Analysis, LexicalQuery, Unit};
use crate::model::Embedder;
use crate::percolate::{percolate, Percolation};
use crate::store::{ArticleLoc, Store};
use crate::stories::{pairwise_f1, StoryBook, DEFAULT_WINDOW_DAYS};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::json;
use std::time::Instant;

/// Places the table's rows in a fresh book in `order`, saving and reloading the book every
/// `restart_every` articles (as a watcher that is stopped and started again); returns each
/// row's story id, and the ids as they were when each article was placed.
fn replay(
    store: &Store,
    table: &ArticleTable,
    order: &[usize],
    threshold: f32,
    restart_every: usize,
) -> (Vec<u64>, Vec<u64>) {
    let mut book = StoryBook::new(threshold, DEFAULT_WINDOW_DAYS);
    let mut at_placement = vec![0u64; table.len()];
    for (n, batch) in order.chunks(restart_every.max(1)).enumerate() {
        if n > 0 {
            let json = serde_json::to_vec(&book).expect("the book serialises");
            book = serde_json::from_slice(&json).expect("and reads back");
            book.attach(store);
        }
        let locs: Vec<ArticleLoc> = batch.iter().map(|&r| table.locs[r]).collect();
        let changes = book.place(store, &locs, 0);
        for ((_, id), &r) in changes.placed.iter().zip(batch) {
            at_placement[r] = *id;
        }
    }
    let end = (0..table.len())
        .map(|r| book.assigned[&table.record(r).key])
        .collect();
    // An id given at placement must still name the article's story (through merges).
    let resolved = at_placement
        .iter()
        .map(|&id| book.resolve(id).unwrap_or(0))
        .collect();
    (end, resolved)
}

/// `likewise bench stories`: stories made article by article (in date order, then in random
/// orders) against `cluster --by story` on the same articles (pairwise precision, recall, F1),
/// and whether any id changed meaning.
pub fn stories(store: &Store, threshold: f32, random_orders: usize) -> Result<(), EngineError> {
    let table = ArticleTable::new(store);
    if table.len() < 2 {
        return Err(EngineError::Invalid(
            "bench stories needs a store of at least two articles".into(),
        ));
    }
    let started = Instant::now();
    let reference = crate::cluster::stories(&table, threshold).assignment;
    let reference_seconds = started.elapsed().as_secs_f64();
    let mut date_order: Vec<usize> = (0..table.len()).collect();
    date_order.sort_by(|&a, &b| {
        table
            .record(a)
            .meta
            .date
            .cmp(&table.record(b).meta.date)
            .then(a.cmp(&b))
    });
    let mut orders = vec![("date order (then storage order)".to_string(), date_order)];
    for seed in 0..random_orders as u64 {
        let mut o: Vec<usize> = (0..table.len()).collect();
        o.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed + 1));
        orders.push((format!("random order, seed {}", seed + 1), o));
    }
    let mut runs = Vec::new();
    for (name, order) in &orders {
        let started = Instant::now();
        let (end, resolved) = replay(store, &table, order, threshold, usize::MAX);
        let seconds = started.elapsed().as_secs_f64();
        // The same arrivals with a restart every 100 articles must give the same ids.
        let (restarted, _) = replay(store, &table, order, threshold, 100);
        let found: Vec<Option<u64>> = {
            let mut sizes = std::collections::HashMap::new();
            for id in &end {
                *sizes.entry(*id).or_insert(0usize) += 1;
            }
            end.iter()
                .map(|id| (sizes[id] > 1).then_some(*id))
                .collect()
        };
        let (p, r, f1) = pairwise_f1(&reference, &found);
        let ids_changed = resolved.iter().zip(&end).filter(|(a, b)| a != b).count();
        runs.push(json!({
            "order": name,
            "precision": round3(p), "recall": round3(r), "f1": round3(f1),
            "stories_of_two_or_more": found.iter().flatten().collect::<std::collections::HashSet<_>>().len(),
            "ids_that_changed_meaning": ids_changed,
            "same_ids_with_a_restart_every_100_articles": restarted == end,
            "seconds": seconds,
            "ms_per_article": seconds * 1000.0 / table.len() as f64,
        }));
    }
    let reference_stories = reference
        .iter()
        .flatten()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let doc = json!({
        "cpu": cpu_name(), "articles": table.len(), "threshold": threshold,
        "reference": {"command": "cluster --by story", "stories": reference_stories, "seconds": reference_seconds},
        "runs": runs,
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `likewise bench alerts`: `searches` saved searches (headlines of the store's articles, in
/// hybrid mode, and surnames in lexical mode, half each) matched against `new` articles of the
/// store, as one commit's follow step matches them; the median of `runs`.
pub fn alerts(
    store: &Store,
    embedder: &dyn Embedder,
    searches: usize,
    new: usize,
    runs: usize,
) -> Result<(), EngineError> {
    let table = ArticleTable::new(store);
    if table.len() < new.max(1) {
        return Err(EngineError::Invalid(format!(
            "bench alerts needs a store of at least {new} articles"
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rows: Vec<usize> = (0..table.len()).collect();
    rows.shuffle(&mut rng);
    // Texts: headlines (passages) and the capitalised words of headlines (names).
    let mut texts = Vec::with_capacity(searches);
    for i in 0..searches {
        let title = &table.record(rows[i % rows.len()]).title;
        if i % 2 == 0 {
            texts.push(title.clone());
        } else {
            let name = title
                .split_whitespace()
                .skip(1)
                .find(|w| w.chars().next().is_some_and(char::is_uppercase) && w.len() > 3)
                .unwrap_or_else(|| title.split_whitespace().next().unwrap_or("news"));
            texts.push(
                name.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_string(),
            );
        }
    }
    let passages: Vec<&str> = texts.iter().step_by(2).map(String::as_str).collect();
    let vectors = embedder
        .embed_queries(&passages)
        .map_err(EngineError::Model)?;
    let queries: Vec<LexicalQuery> = texts
        .iter()
        .map(|t| {
            let syntax = lexical::parse_query(t).expect("plain text parses");
            LexicalQuery::new(&syntax, Analysis::CHOSEN)
        })
        .collect();
    let percolations: Vec<Percolation> = (0..searches)
        .map(|i| Percolation {
            vector: (i % 2 == 0).then(|| vectors[i / 2].as_slice()),
            lexical: Some(&queries[i]),
            halves: if i % 2 == 0 {
                Halves::Both
            } else {
                Halves::LexicalOnly
            },
            unit: Unit::Article,
            min_score: if i % 2 == 0 { 0.65 } else { f32::MIN_POSITIVE },
            best_lexical: 0.0,
            filter: None,
        })
        .collect();
    let mut times = Vec::with_capacity(runs);
    let mut matched = 0;
    for run in 0..runs.max(1) {
        let start = (run * new) % (table.len() - new + 1);
        let fresh: Vec<ArticleLoc> = rows[start..start + new]
            .iter()
            .map(|&r| table.locs[r])
            .collect();
        let started = Instant::now();
        let (found, _) = percolate(store, &fresh, &percolations)
            .map_err(|e| EngineError::Input(e.to_string()))?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        matched += found.iter().map(Vec::len).sum::<usize>();
    }
    times.sort_by(f64::total_cmp);
    let doc = json!({
        "cpu": cpu_name(), "store_articles": table.len(), "saved_searches": searches,
        "new_articles": new, "runs": times.len(),
        "median_ms": times[times.len() / 2], "max_ms": times[times.len() - 1],
        "matches_per_commit": matched as f64 / times.len() as f64,
        "threads": rayon::current_num_threads(),
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}

/// `likewise bench arrival DIR`: how long a file takes from landing in a watched folder to
/// being searchable. A store is made in a temporary folder from the first `base` files of
/// `dir`; a watcher runs on a folder of its own; the next `count` files are copied in one at
/// a time, and each is timed from its copy to the moment a reader opening the store finds
/// it (and the watcher has placed it in a story).
pub fn arrival(
    engine_dir: &std::path::Path,
    dir: &std::path::Path,
    base: usize,
    count: usize,
) -> Result<(), EngineError> {
    use crate::engine::Engine;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let mut files: Vec<std::path::PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    if files.len() < base + count {
        return Err(EngineError::Invalid(format!(
            "{} holds {} .txt files; bench arrival needs {}",
            dir.display(),
            files.len(),
            base + count
        )));
    }
    let work = super::empty_folder(engine_dir)?;
    let watched = work.join("news");
    std::fs::create_dir_all(&watched)?;
    for (i, f) in files[..base].iter().enumerate() {
        std::fs::copy(f, watched.join(format!("{i:05}.txt")))?;
    }
    let store_dir = work.join("store");
    let engine = Engine::new(&store_dir, crate::engine::ModelSpec::default());
    engine.index_paths(
        std::slice::from_ref(&watched),
        &Default::default(),
        &crate::index::Silent,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = crate::watch::SourceArgs {
        feed_interval: 300,
        rescan: 3600,
        max_feed_mib: 16,
        feed_timeout: 20,
        ..Default::default()
    }
    .options(vec![watched.clone()], stop.clone())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let watcher = {
        let stop = stop.clone();
        let store_dir = store_dir.clone();
        std::thread::spawn(move || {
            let engine = Engine::new(&store_dir, crate::engine::ModelSpec::default());
            let ready = std::sync::Mutex::new(ready_tx);
            let emit = move |e: crate::watch::WatchEvent| {
                if matches!(e, crate::watch::WatchEvent::Ready { .. }) {
                    let _ = ready.lock().unwrap_or_else(|p| p.into_inner()).send(());
                }
            };
            let result = crate::watch::watch(&engine, &opts, &emit);
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        })
    };
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(600))
        .map_err(|_| EngineError::Input("the watcher did not start".into()))?;
    let mut times = Vec::with_capacity(count);
    for (n, f) in files[base..base + count].iter().enumerate() {
        let name = format!("{:05}.txt", base + n);
        let started = Instant::now();
        std::fs::copy(f, watched.join(&name))?;
        let key =
            crate::store::file_key(&watched.join(&name), &crate::store::store_base(&store_dir));
        loop {
            if let Ok(store) = Store::open(&store_dir) {
                let placed = crate::engine::follow::FollowState::load(&store)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.stories.assigned.contains_key(&key));
                if placed {
                    break;
                }
            }
            if started.elapsed() > std::time::Duration::from_secs(60) {
                return Err(EngineError::Input(format!(
                    "{name} not searchable after 60 s"
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.join();
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let doc = json!({
        "cpu": cpu_name(), "store_articles": base, "arrivals": count,
        "median_ms": sorted[sorted.len() / 2], "max_ms": sorted[sorted.len() - 1],
        "ms": times,
        "measured": "file copied into the watched folder → a reader opening the store finds the article, placed in a story and matched against the saved searches",
    });
    println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
    Ok(())
}
