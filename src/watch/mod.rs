//! Keeping a store up to date as news arrives: watched folders and polled feeds.
//!
//! One writer holds the store for the whole run. Folders are watched through the operating
//! system's notifications (`notify`), with a periodic full rescan as the safety net for events
//! a file system does not deliver (network mounts, overflowing queues); files that appear or
//! change are indexed, files removed take their articles with them, as `index --prune` does.
//! Feeds are polled on a thread of their own, each at its interval, politely (validators,
//! backoff) and within caps (see [`crate::ingest::feeds`]); a feed that fails is one warning
//! and a longer wait, never a stop. Every batch is committed at once and followed by a follow
//! step (stories, saved searches, alerts — [`crate::engine::follow`]) so a new article is
//! searchable, placed and matched within a second or two of arriving.
//!
//! Kills are safe at any moment: articles commit by generation, feeds are keyed by guid (an
//! entry read again is not stored twice), and the follow step takes whatever articles no story
//! holds yet, so a restarted watcher finishes what a killed one began.

pub mod webhooks;

use crate::engine::follow::{AlertRecord, FollowReport};
use crate::engine::{Engine, EngineError};
use crate::index::{self, IndexOptions, IndexReport, Progress};
use crate::ingest::feeds::{self, FeedState, FetchLimits, Fetched};
use crate::ingest::{SourceArticle, Warning};
use crate::store::{file_key, store_base, Writer};
use notify::Watcher;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Where news comes from and how it is read: the options `likewise watch` and
/// `likewise serve --watch` share.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SourceArgs {
    /// An RSS or Atom feed to poll (http or https; repeatable).
    #[arg(long = "feed")]
    pub feeds: Vec<String>,
    /// A file of feed URLs, one per line (`#` starts a comment).
    #[arg(long = "feeds")]
    pub feeds_file: Option<PathBuf>,
    /// Seconds between two polls of a feed (doubled after each failure, up to an hour).
    #[arg(long, default_value_t = 300)]
    pub feed_interval: u64,
    /// Seconds between two full rescans of the folders (the safety net for missed events).
    #[arg(long, default_value_t = 300)]
    pub rescan: u64,
    /// For entries that carry only a summary, fetch the linked page and store its article text.
    #[arg(long)]
    pub fetch_pages: bool,
    /// Largest feed or page answer read, in MiB (uncompressed).
    #[arg(long, default_value_t = 16)]
    pub max_feed_mib: usize,
    /// Seconds a feed or page may take to answer, whole.
    #[arg(long, default_value_t = 20)]
    pub feed_timeout: u64,
    /// POST every alert (JSON) to this URL (repeatable): retried with backoff, and sent again
    /// after a restart until accepted; the `Idempotency-Key` header carries the alert's id.
    #[arg(long = "webhook")]
    pub webhooks: Vec<String>,
}

impl SourceArgs {
    /// The feeds named on the command line and in `--feeds FILE`, checked.
    pub fn feed_urls(&self) -> Result<Vec<String>, EngineError> {
        let mut feeds = self.feeds.clone();
        if let Some(file) = &self.feeds_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| EngineError::Input(format!("{}: {e}", file.display())))?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    feeds.push(line.to_string());
                }
            }
        }
        for url in feeds.iter().chain(&self.webhooks) {
            feeds::check_url(url).map_err(EngineError::Invalid)?;
        }
        Ok(feeds)
    }

    /// The options of a watcher of `paths` and these feeds, stopped by `stop`.
    pub fn options(
        &self,
        paths: Vec<PathBuf>,
        stop: Arc<AtomicBool>,
    ) -> Result<WatchOptions, EngineError> {
        Ok(WatchOptions {
            paths,
            feeds: self.feed_urls()?,
            feed_interval: Duration::from_secs(self.feed_interval.max(1)),
            rescan: Duration::from_secs(self.rescan.max(1)),
            fetch_pages: self.fetch_pages,
            limits: FetchLimits {
                max_bytes: self.max_feed_mib.max(1) << 20,
                timeout: Duration::from_secs(self.feed_timeout.max(1)),
                ..Default::default()
            },
            index: IndexOptions::default(),
            settle: Duration::from_millis(150),
            stop,
            webhooks: self.webhooks.clone(),
        })
    }
}

/// What to follow, and how.
#[derive(Clone)]
pub struct WatchOptions {
    pub paths: Vec<PathBuf>,
    pub feeds: Vec<String>,
    /// Between two polls of one feed (doubled after each failure, up to an hour).
    pub feed_interval: Duration,
    /// Between two full rescans of the folders.
    pub rescan: Duration,
    /// Fetch the page of an entry that carries only a summary.
    pub fetch_pages: bool,
    pub limits: FetchLimits,
    pub index: IndexOptions,
    /// How long events are gathered before a batch is indexed (a file is often written in
    /// several steps; a copy of many files arrives as many events).
    pub settle: Duration,
    /// Set to stop: the batch in progress is committed first.
    pub stop: Arc<AtomicBool>,
    /// URLs every alert is POSTed to.
    pub webhooks: Vec<String>,
}

/// What a watcher reports, one JSON line each with `--format jsonl`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum WatchEvent {
    /// The watcher is ready: the store caught up with the folders.
    Ready {
        generation: u64,
        articles: usize,
    },
    /// A batch was committed: articles new, changed, removed; when it became searchable.
    Commit {
        generation: u64,
        origin: String,
        new: usize,
        changed: usize,
        removed: usize,
        keys: Vec<String>,
        seconds: f64,
    },
    /// A follow step placed articles in stories.
    Stories {
        generation: u64,
        placed: Vec<(String, u64)>,
        opened: Vec<u64>,
        merged: Vec<(u64, u64)>,
    },
    Alert(AlertRecord),
    /// A feed answered (or not).
    Feed {
        url: String,
        entries: usize,
        not_modified: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_poll_seconds: Option<u64>,
    },
    Warning {
        message: String,
    },
}

impl WatchEvent {
    /// The event as one line for a person (terminal text cleaned); `None` for what another
    /// line already says.
    pub fn line(&self) -> Option<String> {
        fn shorten(s: &str, max: usize) -> String {
            let clean = crate::text::sanitize_for_terminal(s);
            if clean.chars().count() <= max {
                return clean;
            }
            let mut out: String = clean.chars().take(max.saturating_sub(1)).collect();
            out.push('…');
            out
        }
        use WatchEvent as E;
        Some(match self {
            E::Ready {
                generation,
                articles,
            } => format!("ready: {articles} articles (generation {generation}); watching"),
            E::Commit {
                generation,
                origin,
                new,
                changed,
                removed,
                seconds,
                ..
            } => format!(
                "committed generation {generation} from {}: {new} new, {changed} changed, {removed} removed in {seconds:.2} s",
                shorten(origin, 60)
            ),
            E::Stories {
                placed,
                opened,
                merged,
                ..
            } => format!(
                "stories: {} articles placed, {} stories opened, {} merged",
                placed.len(),
                opened.len(),
                merged.len()
            ),
            E::Alert(a) => format!(
                "alert {} [{}] {:.3} {}  {}",
                a.id,
                shorten(&a.search, 20),
                a.score,
                shorten(&a.key, 28),
                shorten(&a.title, 60)
            ),
            E::Feed {
                url,
                entries,
                not_modified,
                error,
                ..
            } => match (error, not_modified) {
                (Some(_), _) => return None, // said by its warning
                (None, true) => format!("feed {}: not modified", shorten(url, 60)),
                (None, false) => format!("feed {}: {entries} entries", shorten(url, 60)),
            },
            E::Warning { message } => {
                format!("warning: {}", crate::text::sanitize_for_terminal(message))
            }
        })
    }
}

/// What the feed thread sends.
enum FeedNews {
    Polled {
        url: String,
        state: FeedState,
        articles: Vec<SourceArticle>,
        warnings: Vec<Warning>,
        not_modified: bool,
        next: Duration,
    },
}

/// Collects warnings as events.
struct EventProgress<'a> {
    emit: &'a (dyn Fn(WatchEvent) + Sync),
}

impl Progress for EventProgress<'_> {
    fn start(&self, _articles: usize) {}
    fn advance(&self, _articles: usize) {}
    fn finish(&self) {}
    fn warn(&self, w: &Warning) {
        (self.emit)(WatchEvent::Warning {
            message: w.to_string(),
        });
    }
    fn notice(&self, w: &Warning) {
        self.warn(w);
    }
}

/// Runs until `opts.stop` is set. Fails only on what makes going on pointless: the store
/// cannot be written, the model cannot be loaded, no path can be watched.
pub fn watch(
    engine: &Engine,
    opts: &WatchOptions,
    emit: &(dyn Fn(WatchEvent) + Sync),
) -> Result<(), EngineError> {
    for url in &opts.feeds {
        feeds::check_url(url).map_err(EngineError::Invalid)?;
    }
    for p in &opts.paths {
        if !p.exists() {
            return Err(EngineError::Input(format!(
                "{}: no such file or folder to watch",
                p.display()
            )));
        }
    }
    let encoder = engine.encoder()?;
    let mut writer = Writer::open(
        engine.dir(),
        encoder.identity(),
        encoder.precision().as_str(),
    )?;
    // Webhooks deliver from the committed alert log, from where their last run stopped.
    let _hooks =
        webhooks::Webhooks::start(writer.dir(), &opts.webhooks, opts.limits, &|message| {
            emit(WatchEvent::Warning { message })
        })?;
    let progress = EventProgress { emit };
    let base = store_base(writer.dir());

    // Catch up with the folders as they are now (a full, pruning pass), then follow.
    let mut feed_states: BTreeMap<String, FeedState> = {
        let store = writer.snapshot()?;
        crate::engine::follow::FollowState::load(&store)?
            .map(|s| s.feeds)
            .unwrap_or_default()
    };
    if !opts.paths.is_empty() {
        rescan(&mut writer, encoder.as_ref(), opts, &progress, emit)?;
    }
    follow(engine, &mut writer, emit, &feed_states)?;
    emit(WatchEvent::Ready {
        generation: writer.manifest().generation,
        articles: writer.snapshot()?.article_count(),
    });

    // Notifications for the folders.
    let (changed_tx, changed_rx) = mpsc::channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in event.paths {
                let _ = changed_tx.send(p);
            }
        }
    })
    .map_err(|e| EngineError::Input(format!("cannot watch folders: {e}")))?;
    for p in &opts.paths {
        watcher
            .watch(p, notify::RecursiveMode::Recursive)
            .map_err(|e| EngineError::Input(format!("{}: cannot be watched: {e}", p.display())))?;
    }

    // Feeds, on their own thread.
    let (feed_tx, feed_rx) = mpsc::channel::<FeedNews>();
    let poller = (!opts.feeds.is_empty()).then(|| {
        let opts = opts.clone();
        let states = feed_states.clone();
        std::thread::spawn(move || poll_feeds(&opts, states, feed_tx))
    });

    let mut last_rescan = Instant::now();
    let mut pending: HashSet<PathBuf> = HashSet::new();
    let tick = Duration::from_millis(100);
    while !opts.stop.load(Ordering::SeqCst) {
        // Gather file events until they settle.
        match changed_rx.recv_timeout(tick) {
            Ok(p) => {
                pending.insert(p);
                let until = Instant::now() + opts.settle;
                while let Ok(p) =
                    changed_rx.recv_timeout(until.saturating_duration_since(Instant::now()))
                {
                    pending.insert(p);
                    if Instant::now() >= until {
                        break;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(EngineError::Input("the folder watcher stopped".into()))
            }
        }
        let mut feed_batches: Vec<(String, Vec<SourceArticle>)> = Vec::new();
        let mut feeds_changed = false;
        while let Ok(FeedNews::Polled {
            url,
            state,
            articles,
            warnings,
            not_modified,
            next,
        }) = feed_rx.try_recv()
        {
            for w in warnings {
                progress.warn(&w);
            }
            emit(WatchEvent::Feed {
                url: url.clone(),
                entries: articles.len(),
                not_modified,
                error: state.last_error.clone().filter(|_| state.failures > 0),
                next_poll_seconds: Some(next.as_secs()),
            });
            if state.failures > 0 {
                emit(WatchEvent::Warning {
                    message: format!(
                        "feed {url}: {}; next try in {} s",
                        state.last_error.as_deref().unwrap_or("failed"),
                        next.as_secs()
                    ),
                });
            }
            feed_states.insert(url.clone(), state);
            feeds_changed = true;
            if !articles.is_empty() {
                feed_batches.push((url, articles));
            }
        }

        let mut committed = false;
        if !pending.is_empty() {
            let paths: Vec<PathBuf> = pending.drain().collect();
            committed |= index_changed(&mut writer, engine, opts, &paths, &base, &progress, emit)?;
        }
        for (url, articles) in feed_batches {
            let started = Instant::now();
            let keys: Vec<String> = articles.iter().map(|a| a.key.clone()).collect();
            let report = index::index_sources(
                &mut writer,
                encoder.as_ref(),
                Path::new(&url),
                articles,
                &opts.index,
                &progress,
            )?;
            let stored = report.articles_new + report.articles_changed;
            if let Some(s) = feed_states.get_mut(&url) {
                s.entries_stored += stored as u64;
            }
            if stored > 0 {
                report_commit(&writer, emit, &url, &report, keys, started);
                committed = true;
            }
        }
        if last_rescan.elapsed() >= opts.rescan && !opts.paths.is_empty() {
            last_rescan = Instant::now();
            committed |= rescan(&mut writer, encoder.as_ref(), opts, &progress, emit)?;
        }
        if committed || feeds_changed {
            follow(engine, &mut writer, emit, &feed_states)?;
        }
    }
    drop(watcher);
    drop(feed_rx);
    if let Some(p) = poller {
        // The poller notices the closed channel at its next poll; it holds nothing to save.
        drop(p);
    }
    Ok(())
}

/// A full, pruning pass over the watched folders (as `index --prune`); whether it changed
/// anything.
fn rescan(
    writer: &mut Writer,
    embedder: &dyn crate::model::Embedder,
    opts: &WatchOptions,
    progress: &EventProgress,
    emit: &(dyn Fn(WatchEvent) + Sync),
) -> Result<bool, EngineError> {
    let started = Instant::now();
    let report = index::index(
        writer,
        embedder,
        &opts.paths,
        &IndexOptions {
            prune: true,
            ..opts.index.clone()
        },
        progress,
    )?;
    report_commit(writer, emit, "rescan", &report, Vec::new(), started);
    Ok(report.articles_new + report.articles_changed + report.articles_removed > 0)
}

/// Indexes the files among `paths` that exist, and removes the articles of those that are gone.
fn index_changed(
    writer: &mut Writer,
    engine: &Engine,
    opts: &WatchOptions,
    paths: &[PathBuf],
    base: &Path,
    progress: &EventProgress,
    emit: &(dyn Fn(WatchEvent) + Sync),
) -> Result<bool, EngineError> {
    let started = Instant::now();
    let encoder = engine.encoder()?;
    // Under a watched root, and not hidden below it (editors' swap files, `.git`).
    let inside = |p: &Path| {
        opts.paths.iter().any(|root| {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            p.strip_prefix(&root).is_ok_and(|rest| {
                !rest.components().any(|c| {
                    c.as_os_str()
                        .to_str()
                        .is_some_and(|s| s.starts_with('.') && s.len() > 1 && s != "..")
                })
            }) || p == root
        })
    };
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.is_file() && inside(p) && crate::ingest::is_indexable(p))
        .cloned()
        .collect();
    let gone: HashSet<String> = paths
        .iter()
        .filter(|p| !p.exists())
        .map(|p| file_key(p, base))
        .collect();
    let mut report = IndexReport::default();
    let mut keys = Vec::new();
    if !existing.is_empty() {
        report = index::index(writer, encoder.as_ref(), &existing, &opts.index, progress)?;
        let store = writer.snapshot()?;
        for p in &existing {
            let file = file_key(p, base);
            keys.extend(
                store
                    .live_articles()
                    .filter(|(_, r)| r.file.as_deref() == Some(file.as_str()))
                    .map(|(_, r)| r.key.clone()),
            );
        }
    }
    if !gone.is_empty() {
        let store = writer.snapshot()?;
        // A removed folder takes everything below it.
        let under = |file: &str| {
            gone.iter()
                .any(|g| file == g || file.starts_with(&format!("{g}/")))
        };
        let deletions: Vec<(String, u32)> = store
            .live_articles()
            .filter(|(_, r)| r.file.as_deref().is_some_and(under))
            .map(|(loc, _)| (store.segments[loc.segment].file.clone(), loc.article as u32))
            .collect();
        if !deletions.is_empty() {
            report.articles_removed = deletions.len();
            writer.commit(None, &deletions)?;
        }
    }
    let changed = report.articles_new + report.articles_changed + report.articles_removed > 0;
    if changed {
        report_commit(writer, emit, "folders", &report, keys, started);
    }
    Ok(changed)
}

fn report_commit(
    writer: &Writer,
    emit: &(dyn Fn(WatchEvent) + Sync),
    origin: &str,
    report: &IndexReport,
    keys: Vec<String>,
    started: Instant,
) {
    if report.articles_new + report.articles_changed + report.articles_removed == 0 {
        return;
    }
    emit(WatchEvent::Commit {
        generation: writer.manifest().generation,
        origin: origin.to_string(),
        new: report.articles_new,
        changed: report.articles_changed,
        removed: report.articles_removed,
        keys,
        seconds: started.elapsed().as_secs_f64(),
    });
}

fn follow(
    engine: &Engine,
    writer: &mut Writer,
    emit: &(dyn Fn(WatchEvent) + Sync),
    feed_states: &BTreeMap<String, FeedState>,
) -> Result<Option<FollowReport>, EngineError> {
    let report = match engine.follow(writer, &|feeds| {
        for (url, s) in feed_states {
            feeds.insert(url.clone(), s.clone());
        }
    }) {
        Ok(r) => r,
        // The articles are committed; stories and alerts wait for the store to be mended (the
        // next step takes every article no story holds).
        Err(EngineError::Store(e)) => {
            emit(WatchEvent::Warning {
                message: format!(
                    "the articles are stored, but their stories and alerts are not: {e}"
                ),
            });
            None
        }
        Err(e) => return Err(e),
    };
    if let Some(r) = &report {
        if !r.placed.is_empty() {
            emit(WatchEvent::Stories {
                generation: r.generation,
                placed: r.placed.clone(),
                opened: r.stories_opened.clone(),
                merged: r.stories_merged.clone(),
            });
        }
        for a in &r.alerts {
            emit(WatchEvent::Alert(a.clone()));
        }
    }
    Ok(report)
}

/// Polls each feed when it is due, forever (until the receiver is gone).
fn poll_feeds(
    opts: &WatchOptions,
    mut states: BTreeMap<String, FeedState>,
    tx: mpsc::Sender<FeedNews>,
) {
    let mut due: HashMap<String, Instant> = opts
        .feeds
        .iter()
        .map(|u| (u.clone(), Instant::now()))
        .collect();
    // Pages already read, by entry key and the entry's content hash.
    let mut pages: HashMap<(String, String), (String, Vec<String>)> = HashMap::new();
    loop {
        if opts.stop.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let Some(url) = opts
            .feeds
            .iter()
            .filter(|u| due[*u] <= now)
            .min_by_key(|u| due[*u])
            .cloned()
        else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let mut state = states.get(&url).cloned().unwrap_or_default();
        let mut warnings = Vec::new();
        let mut articles = Vec::new();
        let mut not_modified = false;
        let outcome = feeds::fetch(
            &url,
            state.etag.as_deref(),
            state.last_modified.as_deref(),
            &opts.limits,
        )
        .and_then(|f| match f {
            Fetched::NotModified => {
                not_modified = true;
                Ok(None)
            }
            Fetched::Body {
                bytes,
                etag,
                last_modified,
                ..
            } => feeds::parse_feed(&url, &bytes, opts.index.max_article_bytes)
                .map(|parsed| Some((parsed, etag, last_modified))),
        });
        match outcome {
            Ok(parsed) => {
                state.failures = 0;
                state.last_error = None;
                state.last_success = crate::engine::follow::now_seconds();
                if let Some((mut parsed, etag, last_modified)) = parsed {
                    state.etag = etag;
                    state.last_modified = last_modified;
                    state.title = parsed.title.clone().or(state.title);
                    if opts.fetch_pages {
                        fetch_pages(opts, &mut parsed, &mut pages, &mut warnings);
                    }
                    warnings.extend(parsed.skipped);
                    articles = parsed.articles;
                }
            }
            Err(e) => {
                state.failures += 1;
                state.last_error = Some(e);
            }
        }
        let next = state.delay(opts.feed_interval);
        due.insert(url.clone(), Instant::now() + next);
        states.insert(url.clone(), state.clone());
        let news = FeedNews::Polled {
            url,
            state,
            articles,
            warnings,
            not_modified,
            next,
        };
        if tx.send(news).is_err() {
            return;
        }
    }
}

/// Pages read per poll of a feed, at most (a feed of 500 summaries is not 500 requests at once).
const PAGES_PER_POLL: usize = 20;

fn fetch_pages(
    opts: &WatchOptions,
    parsed: &mut feeds::ParsedFeed,
    pages: &mut HashMap<(String, String), (String, Vec<String>)>,
    warnings: &mut Vec<Warning>,
) {
    let mut fetched = 0;
    for (i, link) in parsed.summaries_only.clone() {
        let article = &mut parsed.articles[i];
        let id = (article.key.clone(), article.content_hash.clone());
        if !pages.contains_key(&id) {
            if fetched >= PAGES_PER_POLL || feeds::check_url(&link).is_err() {
                continue;
            }
            fetched += 1;
            match feeds::page_article(&link, &opts.limits) {
                Ok(page) => {
                    pages.insert(id.clone(), page);
                }
                Err(e) => {
                    warnings.push(Warning {
                        path: PathBuf::from(&link),
                        reason: format!("{e}; the entry's summary is stored instead"),
                    });
                    continue;
                }
            }
        }
        let (title, paragraphs) = &pages[&id];
        let mut parsed_page = crate::text::parse_titled(
            if article.parsed.title.is_empty() {
                title
            } else {
                &article.parsed.title
            },
            &paragraphs.join("\n\n"),
        );
        parsed_page.meta = article.parsed.meta.clone();
        // The entry's hash stays: the same entry read again is the same article.
        article.parsed = parsed_page;
    }
}
