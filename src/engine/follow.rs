//! Following the news: saved searches that alert, stories that keep their name, and the state
//! both keep in the store.
//!
//! - **Saved searches** live in `searches.json` in the store's folder, beside the articles but
//!   outside the writer's lock, so they can be added and removed while `likewise watch` (or a
//!   server that follows feeds) holds the store: the writer reads the file again before each
//!   step. Changes to the file are serialised by a lock of their own (`searches.lock`).
//! - **Follow state** (the story book, each feed's validators and failures, each saved search's
//!   reference BM25 and recent alerts) is one JSON file committed with the store's generation
//!   ([`crate::store::Writer::commit_follow`]), and the **alert log** grows in the same commit:
//!   a kill at any moment loses no alert and records none twice.
//! - **A follow step** ([`follow_step`]) takes the live articles no story holds yet (the new
//!   ones, in the order they were stored), places them in stories, matches them against every
//!   saved search ([`crate::percolate`]), and commits. Any writer runs it after its commits;
//!   articles stored by a writer that did not (an older likewise, a crash) are simply taken by
//!   the next step. The first step on a store places the articles it already holds, without
//!   alerts: they were there before anyone followed it.

use super::docs::{Level, QueryRequest, SearchMode};
use super::{filters, EngineError};
use crate::hybrid::Halves;
use crate::ingest::feeds::FeedState;
use crate::lexical::{self, Analysis, LexicalQuery, Unit};
use crate::percolate::{self, Percolation};
use crate::store::{read_follow, ArticleLoc, Store, StoreError, Writer};
use crate::stories::StoryBook;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

/// The saved searches' file in the store's folder.
pub const SEARCHES_FILE: &str = "searches.json";
const SEARCHES_LOCK: &str = "searches.lock";
/// Saved searches a store keeps at most (each costs a little on every commit).
pub const MAX_SAVED_SEARCHES: usize = 10_000;
/// Recent alerted articles remembered per saved search, to tell a late copy from news.
const REMEMBERED_ALERTS: usize = 200;

/// A saved search: a query (or a story) followed as articles arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SavedSearch {
    /// Its name: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The query: `text` (passage, names, `"phrases"`, `-words`), `mode`, `level`,
    /// `min_score` and the filters, as `query` takes them.
    pub query: QueryRequest,
    /// Follow a story instead of (or as well as) a text: every new article of this story (or of
    /// a story merged into it) alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<u64>,
    /// Seconds since the epoch (set when saved).
    #[serde(default)]
    pub created: u64,
    /// The passage's vector (made once, when saved), and the model's weights it was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub vector: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub model_sha256: Option<String>,
}

/// The score from which a saved search alerts, when it does not say (`min_score`): in hybrid
/// mode a full word match with a loosely related text (0.6 + 0.4 × 0.25), or a close text; in
/// semantic mode a cosine at which a passage and an article are about the same thing.
pub fn default_min_score(mode: SearchMode) -> f32 {
    match mode {
        SearchMode::Hybrid => 0.65,
        SearchMode::Semantic => 0.55,
        // Any article the words (and phrases) match.
        SearchMode::Lexical => f32::MIN_POSITIVE,
    }
}

/// One alert: a new article a saved search matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertRecord {
    /// Unique in the store (`<generation>-<n>`): a receiver drops a repeat by it.
    pub id: String,
    pub search: String,
    /// When it was recorded (UTC, RFC 3339).
    pub time: String,
    pub key: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<f32>,
    /// The paragraph that matched best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraph: Option<String>,
    /// The article's story.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub story: Option<u64>,
    /// Copies of the article (the same wire story) that arrived with it or after: they do not
    /// alert again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<String>,
}

/// Per saved search: what the stream needs to remember.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchProgress {
    /// The best BM25 the search has reached over the store (the lexical half's reference).
    #[serde(default)]
    pub best_lexical: f32,
    /// Recently alerted article keys, newest last.
    #[serde(default)]
    pub alerted: Vec<String>,
}

/// What a followed store keeps beside its articles, committed with its generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FollowState {
    pub stories: StoryBook,
    /// By feed URL.
    #[serde(default)]
    pub feeds: BTreeMap<String, FeedState>,
    #[serde(default)]
    pub searches: BTreeMap<String, SearchProgress>,
    /// Alerts recorded, all commits together.
    #[serde(default)]
    pub alerts: u64,
}

impl FollowState {
    /// The state committed with `store`'s generation, its stories attached to the store; `None`
    /// when the store was never followed.
    pub fn load(store: &Store) -> Result<Option<FollowState>, StoreError> {
        let Some(bytes) = read_follow(&store.dir, &store.manifest)? else {
            return Ok(None);
        };
        let mut state: FollowState =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: store.dir.join(
                    store
                        .manifest
                        .follow
                        .as_ref()
                        .map_or("follow", |f| f.file.as_str()),
                ),
                reason: format!("not a follow state: {e}"),
            })?;
        state.stories.attach(store);
        Ok(Some(state))
    }
}

/// What one follow step did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    /// The store's generation after the step.
    pub generation: u64,
    /// Articles placed in stories.
    pub articles: usize,
    /// Stories opened, and merges (merged, into).
    pub stories_opened: Vec<u64>,
    pub stories_merged: Vec<(u64, u64)>,
    /// Article key → story, for each article placed.
    pub placed: Vec<(String, u64)>,
    pub alerts: Vec<AlertRecord>,
    pub seconds: f64,
}

/// Seconds since the epoch.
pub fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` since the epoch as UTC RFC 3339 (`2024-03-05T10:00:00Z`).
pub fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Reads the saved searches of the store in `dir` (none when the file is absent).
pub fn read_searches(dir: &Path) -> Result<Vec<SavedSearch>, EngineError> {
    let path = dir.join(SEARCHES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::Store(Box::new(StoreError::Corrupt {
                path,
                reason: format!("not a list of saved searches: {e}"),
            }))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(EngineError::Store(Box::new(StoreError::Io {
            path,
            source: e,
        }))),
    }
}

/// Changes the saved searches under their own lock (waiting for another change to finish),
/// and writes them back atomically.
pub fn change_searches<T>(
    dir: &Path,
    change: impl FnOnce(&mut Vec<SavedSearch>) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    if crate::store::read_manifest(dir)?.is_none() {
        return Err(StoreError::NotFound {
            dir: dir.to_path_buf(),
        }
        .into());
    }
    let lock_path = dir.join(SEARCHES_LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StoreError::Io {
            path: lock_path.clone(),
            source,
        })?;
    lock.lock().map_err(|source| StoreError::Io {
        path: lock_path.clone(),
        source,
    })?;
    let mut searches = read_searches(dir)?;
    let out = change(&mut searches)?;
    let json = serde_json::to_vec_pretty(&searches).expect("saved searches serialise");
    crate::store::atomic_write(dir, SEARCHES_FILE, &json)?;
    Ok(out)
}

/// Checks a saved search's name and query before it is saved.
pub fn check_saved(search: &SavedSearch) -> Result<(), EngineError> {
    let name = &search.name;
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(EngineError::Invalid(format!(
            "{name:?} is not a saved search's name: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    let q = &search.query;
    if !q.texts.is_empty() || !q.like.is_empty() {
        return Err(EngineError::Invalid(
            "a saved search follows one text (or a story); texts and like are for query".into(),
        ));
    }
    let text = q.text.as_deref().map(str::trim).unwrap_or("");
    if text.is_empty() && search.story.is_none() {
        return Err(EngineError::Invalid(
            "give the saved search a text to follow, or a story (--story ID)".into(),
        ));
    }
    if q.min_score.is_some_and(|s| !s.is_finite()) {
        return Err(EngineError::Invalid("min_score must be a number".into()));
    }
    filters(q)?;
    if !text.is_empty() {
        let syntax = lexical::parse_query(text).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let words = LexicalQuery::new(&syntax, Analysis::CHOSEN);
        if q.mode == SearchMode::Lexical && !words.has_words() {
            return Err(EngineError::Invalid(format!(
                "the text {text:?} has no word to search for (only stop words or punctuation); use mode semantic or hybrid"
            )));
        }
    }
    Ok(())
}

/// A saved search's filters as a predicate on articles.
type ArticlePredicate = dyn Fn(&Store, ArticleLoc) -> bool + Sync;

/// A saved search compiled for a step.
struct Compiled {
    lexical: Option<LexicalQuery>,
    halves: Halves,
    filters: crate::search::Filters,
}

/// Places the store's unplaced articles in stories, matches them against the saved searches,
/// and commits the result with the alert log (one generation). `embed` makes the vector of a
/// saved search that has none, or one of another model. Returns `None` when there was nothing
/// to do (no new article, and the store already followed).
pub fn follow_step(
    writer: &mut Writer,
    embed: &dyn Fn(&str) -> Result<Vec<f32>, EngineError>,
    update_feeds: &dyn Fn(&mut BTreeMap<String, FeedState>),
    story_threshold: f32,
) -> Result<Option<FollowReport>, EngineError> {
    let started = std::time::Instant::now();
    let store = writer.snapshot()?;
    let existing = FollowState::load(&store)?;
    let first = existing.is_none();
    let mut state = existing.unwrap_or_else(|| FollowState {
        stories: StoryBook::new(story_threshold, crate::stories::DEFAULT_WINDOW_DAYS),
        ..Default::default()
    });
    // New: live and in no story, in the order they were stored (a first step: by date).
    let mut new: Vec<ArticleLoc> = store
        .live_articles()
        .filter(|(_, rec)| !state.stories.assigned.contains_key(&rec.key))
        .map(|(loc, _)| loc)
        .collect();
    if first {
        new.sort_by(|a, b| {
            let date = |l: &ArticleLoc| store.article(*l).meta.date.clone();
            date(a)
                .cmp(&date(b))
                .then((a.segment, a.article).cmp(&(b.segment, b.article)))
        });
    }
    let feeds_before = state.feeds.clone();
    update_feeds(&mut state.feeds);
    if new.is_empty() && !first && state.feeds == feeds_before {
        return Ok(None);
    }
    let now = now_seconds();
    let changes = state.stories.place(&store, &new, now);

    let mut alerts = Vec::new();
    if !first && !new.is_empty() {
        alerts = match_searches(writer, &store, &mut state, &new, embed, now)?;
    }
    state.alerts += alerts.len() as u64;
    let mut lines = Vec::new();
    for a in &alerts {
        serde_json::to_writer(&mut lines, a).expect("alerts serialise");
        lines.push(b'\n');
    }
    let json = serde_json::to_vec(&state).expect("follow state serialises");
    writer.commit_follow(&json, &lines)?;
    Ok(Some(FollowReport {
        generation: writer.manifest().generation,
        articles: new.len(),
        stories_opened: changes.opened,
        stories_merged: changes.merged,
        placed: changes.placed,
        alerts,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// The alerts of `new` articles, copies collapsed under the first of them.
fn match_searches(
    writer: &Writer,
    store: &Store,
    state: &mut FollowState,
    new: &[ArticleLoc],
    embed: &dyn Fn(&str) -> Result<Vec<f32>, EngineError>,
    now: u64,
) -> Result<Vec<AlertRecord>, EngineError> {
    let searches = read_searches(writer.dir())?;
    let model_sha = &store.manifest.model.weights_sha256;
    let mut vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(searches.len());
    let mut compiled = Vec::with_capacity(searches.len());
    for s in &searches {
        let text = s.query.text.as_deref().map(str::trim).unwrap_or("");
        let syntax = lexical::parse_query(text).ok();
        let words = syntax
            .as_ref()
            .map(|syn| LexicalQuery::new(syn, Analysis::CHOSEN))
            .filter(|w| w.has_words() || w.has_conditions());
        let needs_vector = !text.is_empty() && s.query.mode != SearchMode::Lexical;
        let vector = match (&s.vector, &s.model_sha256) {
            (Some(v), Some(sha)) if sha == model_sha && v.len() == store.manifest.model.dim => {
                Some(v.clone())
            }
            _ if needs_vector => {
                let passage = syntax
                    .as_ref()
                    .filter(|syn| syn.has_conditions())
                    .map_or(text.to_string(), |syn| syn.passage.clone());
                Some(embed(&passage)?)
            }
            _ => None,
        };
        let halves = match (s.query.mode, &words) {
            (SearchMode::Lexical, _) => Halves::LexicalOnly,
            (SearchMode::Semantic, _) => Halves::SemanticOnly,
            (SearchMode::Hybrid, Some(w)) if w.has_words() => Halves::Both,
            (SearchMode::Hybrid, _) => Halves::SemanticOnly,
        };
        compiled.push(Compiled {
            lexical: words,
            halves,
            filters: filters(&s.query).unwrap_or_default(),
        });
        vectors.push(vector);
    }
    // Text searches are percolated; a search that follows only a story takes its new articles.
    let filter_fns: Vec<Box<ArticlePredicate>> = compiled
        .iter()
        .map(|c| {
            let f = c.filters.clone();
            Box::new(move |st: &Store, loc: ArticleLoc| f.is_empty() || f.matches(st, loc))
                as Box<ArticlePredicate>
        })
        .collect();
    let percolations: Vec<Percolation> = searches
        .iter()
        .enumerate()
        .map(|(i, s)| Percolation {
            vector: vectors[i].as_deref(),
            lexical: compiled[i].lexical.as_ref(),
            halves: compiled[i].halves,
            unit: match s.query.level {
                Level::Article => Unit::Article,
                Level::Paragraph => Unit::Paragraph,
            },
            min_score: s
                .query
                .min_score
                .unwrap_or_else(|| default_min_score(s.query.mode)),
            best_lexical: state.searches.get(&s.name).map_or(0.0, |p| p.best_lexical),
            filter: Some(&*filter_fns[i]),
        })
        .collect();
    let (matches, best_seen) = percolate::percolate(store, new, &percolations)
        .map_err(|e| EngineError::Input(e.to_string()))?;
    let generation = writer.manifest().generation + 1;
    let time = utc_time(now);
    let copy_tier = crate::dupes::Thresholds::default();
    let mut out = Vec::new();
    for (i, s) in searches.iter().enumerate() {
        let progress = state.searches.entry(s.name.clone()).or_default();
        progress.best_lexical = progress.best_lexical.max(best_seen[i]);
        let text_follow = s
            .query
            .text
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty());
        let mut hits: Vec<percolate::Match> = if text_follow {
            matches[i].clone()
        } else {
            Vec::new()
        };
        if let Some(story) = s.story {
            let target = state.stories.resolve(story);
            let in_story = |loc: &ArticleLoc| {
                let key = &store.article(*loc).key;
                target.is_some() && state.stories.assigned.get(key).copied() == target
            };
            if text_follow {
                hits.retain(|h| in_story(&h.loc));
            } else {
                hits = new
                    .iter()
                    .filter(|l| in_story(l) && filter_fns[i](store, **l))
                    .map(|&loc| percolate::Match {
                        loc,
                        chunk: None,
                        score: 1.0,
                        semantic: None,
                        lexical: None,
                    })
                    .collect();
            }
        }
        // Copies: a hit that copies one alerted before (in this commit or recently) does not
        // alert; it is named under the alert it copies.
        let mut records: Vec<(ArticleLoc, AlertRecord)> = Vec::new();
        let remembered: Vec<ArticleLoc> = progress
            .alerted
            .iter()
            .filter_map(|k| store.find_key(k))
            .collect();
        for h in hits {
            let copy_of = |other: ArticleLoc| is_copy(store, h.loc, other, &copy_tier);
            if let Some(r) = records.iter_mut().find(|(l, _)| copy_of(*l)) {
                r.1.copies.push(store.article(h.loc).key.clone());
                continue;
            }
            if remembered.iter().any(|&l| copy_of(l)) {
                continue;
            }
            let rec = store.article(h.loc);
            let n = out.len() + records.len() + 1;
            records.push((
                h.loc,
                AlertRecord {
                    id: format!("{generation}-{n}"),
                    search: s.name.clone(),
                    time: time.clone(),
                    key: rec.key.clone(),
                    title: rec.title.clone(),
                    date: rec.meta.date.clone(),
                    source: rec.meta.source.clone(),
                    url: rec.meta.url.clone(),
                    score: h.score,
                    semantic: h.semantic,
                    lexical: h.lexical,
                    paragraph: h.chunk.map(|c| {
                        crate::articles::paragraphs(store, h.loc)
                            .into_iter()
                            .find(|p| p.number == store.segments[h.loc.segment].chunk(c).paragraph)
                            .map(|p| p.text)
                            .unwrap_or_default()
                    }),
                    story: state.stories.assigned.get(&rec.key).copied(),
                    copies: Vec::new(),
                },
            ));
        }
        for (_, r) in &records {
            progress.alerted.push(r.key.clone());
        }
        let excess = progress.alerted.len().saturating_sub(REMEMBERED_ALERTS);
        progress.alerted.drain(..excess);
        out.extend(records.into_iter().map(|(_, r)| r));
    }
    // Searches removed since: their progress goes.
    let names: HashSet<&str> = searches.iter().map(|s| s.name.as_str()).collect();
    state.searches.retain(|n, _| names.contains(n.as_str()));
    Ok(out)
}

/// Whether two articles are the same wire story (the duplicate tiers: exact, near-copy or
/// rewrite).
fn is_copy(store: &Store, a: ArticleLoc, b: ArticleLoc, t: &crate::dupes::Thresholds) -> bool {
    let score = percolate::article_cosine(store, a, b);
    if score < t.article_copy_cosine.min(t.article_rewrite_cosine) {
        return false;
    }
    let body = |l: ArticleLoc| -> (String, Vec<String>) {
        (
            store.article(l).title.clone(),
            crate::articles::paragraphs(store, l)
                .into_iter()
                .map(|p| p.text)
                .collect(),
        )
    };
    let (ta, pa) = body(a);
    let (tb, pb) = body(b);
    crate::dupes::article_tier((&ta, &pa), (&tb, &pb), score, t).is_some()
}

/// The committed alerts of the store in `dir`, oldest first.
pub fn read_alerts(store: &Store) -> Result<Vec<AlertRecord>, EngineError> {
    read_alerts_from(store, 0)
}

/// The committed alerts from byte `from` of the log on (a line boundary: where an earlier read
/// ended), oldest first.
pub fn read_alerts_from(store: &Store, from: u64) -> Result<Vec<AlertRecord>, EngineError> {
    let bytes = crate::store::read_alert_log_from(&store.dir, &store.manifest, from)?;
    let mut out = Vec::new();
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record = serde_json::from_slice(line).map_err(|e| {
            EngineError::Store(Box::new(StoreError::Corrupt {
                path: store.dir.join(crate::store::ALERT_LOG),
                reason: if from == 0 {
                    format!("line {} is not an alert: {e}", n + 1)
                } else {
                    format!("line {} after byte {from} is not an alert: {e}", n + 1)
                },
            }))
        })?;
        out.push(record);
    }
    Ok(out)
}

/// Writes `records` as JSON lines to `out` (for `watch --format jsonl`).
pub fn write_jsonl<T: Serialize>(out: &mut dyn Write, records: &[T]) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A story as `likewise stories` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StorySummary {
    pub id: u64,
    /// The most central article's headline.
    pub label: String,
    pub keywords: Vec<String>,
    pub size: usize,
    /// The first and the latest article (by date, else by arrival).
    pub first: StoryArticle,
    pub last: StoryArticle,
    /// Articles per day (`YYYY-MM-DD`; undated articles are not counted here).
    pub per_day: BTreeMap<String, usize>,
    /// Articles per source (`(no source)` for those without one).
    pub per_source: BTreeMap<String, usize>,
    /// Stories merged into this one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<u64>,
}

/// An article of a story.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoryArticle {
    pub key: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Stories of a followed store.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoriesList {
    pub stories: Vec<StorySummary>,
    /// Articles in stories of one article (listed with `--min-size 1`).
    pub articles_alone: usize,
}

/// One entry of a story's timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    #[serde(flatten)]
    pub article: StoryArticle,
    /// Copies of this article (the duplicate tiers) that came after it, collapsed under it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<StoryArticle>,
    /// What it adds to the articles before it: its paragraphs that match none of theirs (the
    /// "only in B" of `compare`). The first report adds everything and lists nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adds: Vec<String>,
}

/// A story's timeline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StoryTimeline {
    /// The id asked for, and the story it resolves to (after merges).
    pub asked: u64,
    pub story: StorySummary,
    pub timeline: Vec<TimelineEntry>,
}

fn story_article(store: &Store, loc: ArticleLoc) -> StoryArticle {
    let rec = store.article(loc);
    StoryArticle {
        key: rec.key.clone(),
        title: rec.title.clone(),
        date: rec.meta.date.clone(),
        source: rec.meta.source.clone().or_else(|| rec.meta.credit.clone()),
    }
}

/// Members of a story in time order: by date (undated last), then by arrival.
fn in_time_order(store: &Store, members: &[String]) -> Vec<ArticleLoc> {
    let mut locs: Vec<(usize, ArticleLoc)> = members
        .iter()
        .enumerate()
        .filter_map(|(i, k)| store.find_key(k).map(|l| (i, l)))
        .collect();
    locs.sort_by(|a, b| {
        let date = |l: ArticleLoc| store.article(l).meta.date.clone();
        match (date(a.1), date(b.1)) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.0.cmp(&b.0)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.0.cmp(&b.0),
        }
    });
    locs.into_iter().map(|(_, l)| l).collect()
}

/// Summaries of the book's live stories of at least `min_size` articles, labelled as
/// `cluster --by story` labels its groups; largest first, then by id.
pub fn summarise(store: &Store, book: &StoryBook, min_size: usize) -> Vec<StorySummary> {
    let table = crate::articles::ArticleTable::new(store);
    let listed: Vec<&crate::stories::Story> = book.live(min_size).collect();
    let index_of: std::collections::HashMap<u64, usize> =
        listed.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let assignment: Vec<Option<usize>> = table
        .locs
        .iter()
        .map(|&l| {
            book.assigned
                .get(&store.article(l).key)
                .and_then(|id| index_of.get(id).copied())
        })
        .collect();
    let grouping = crate::cluster::Grouping {
        assignment,
        k: listed.len(),
        how: String::new(),
        silhouettes: vec![],
    };
    let labelled = crate::cluster::label(&table, &grouping, 5);
    let mut out: Vec<StorySummary> = labelled
        .into_iter()
        .filter_map(|c| {
            let first_row = c.members.first()?.0;
            let id = *book.assigned.get(&table.record(first_row).key)?;
            let story = book.stories.get(&id)?;
            let locs = in_time_order(store, &story.members);
            let mut per_day = BTreeMap::new();
            let mut per_source = BTreeMap::new();
            for &l in &locs {
                let rec = store.article(l);
                if let Some(d) = rec.meta.date.as_deref() {
                    *per_day.entry(d[..d.len().min(10)].to_string()).or_insert(0) += 1;
                }
                let source = rec
                    .meta
                    .source
                    .clone()
                    .or_else(|| rec.meta.credit.clone())
                    .unwrap_or_else(|| "(no source)".into());
                *per_source.entry(source).or_insert(0) += 1;
            }
            Some(StorySummary {
                id,
                label: c.label,
                keywords: c.keywords,
                size: locs.len(),
                first: story_article(store, *locs.first()?),
                last: story_article(store, *locs.last()?),
                per_day,
                per_source,
                merged: book
                    .stories
                    .values()
                    .filter(|s| s.merged_into == Some(id))
                    .map(|s| s.id)
                    .collect(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.size.cmp(&a.size).then(a.id.cmp(&b.id)));
    out
}

/// The timeline of story `id` (resolved through merges).
pub fn timeline(store: &Store, book: &StoryBook, asked: u64) -> Result<StoryTimeline, EngineError> {
    let id = book.resolve(asked).ok_or_else(|| {
        EngineError::NotFound(format!(
            "no story {asked} in this store (`likewise stories` lists them)"
        ))
    })?;
    let story = summarise(store, book, 1)
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| EngineError::NotFound(format!("story {asked} has no article left")))?;
    let members = &book.stories[&id].members;
    let locs = in_time_order(store, members);
    let copy_tier = crate::dupes::Thresholds::default();
    let dim = store.manifest.model.dim;
    let mut entries: Vec<(ArticleLoc, TimelineEntry)> = Vec::new();
    let mut before: Vec<crate::articles::Paragraph> = Vec::new();
    for loc in locs {
        if let Some(e) = entries
            .iter_mut()
            .find(|(l, _)| is_copy(store, *l, loc, &copy_tier))
        {
            e.1.copies.push(story_article(store, loc));
            continue;
        }
        let paragraphs = crate::articles::paragraphs(store, loc);
        let adds = if before.is_empty() {
            Vec::new()
        } else {
            let al = crate::compare::align(before.clone(), paragraphs.clone(), dim);
            al.only_b
                .iter()
                .filter_map(|&n| al.b.iter().find(|p| p.number == n).map(|p| p.text.clone()))
                .collect()
        };
        before.extend(paragraphs);
        entries.push((
            loc,
            TimelineEntry {
                article: story_article(store, loc),
                copies: Vec::new(),
                adds,
            },
        ));
    }
    Ok(StoryTimeline {
        asked,
        story,
        timeline: entries.into_iter().map(|(_, e)| e).collect(),
    })
}

impl super::Engine {
    /// Saves a search (its passage embedded once, now); refused when the name is taken.
    pub fn alerts_add(&self, mut search: SavedSearch) -> Result<SavedSearch, EngineError> {
        check_saved(&search)?;
        let store = self.store()?;
        if let Some(story) = search.story {
            let followed = FollowState::load(&store)?;
            if followed
                .as_ref()
                .and_then(|f| f.stories.resolve(story))
                .is_none()
            {
                return Err(EngineError::NotFound(format!(
                    "no story {story} in this store (`likewise stories` lists them)"
                )));
            }
        }
        let text = search.query.text.clone().unwrap_or_default();
        if !text.trim().is_empty() && search.query.mode != SearchMode::Lexical {
            let syntax =
                lexical::parse_query(&text).map_err(|e| EngineError::Invalid(e.to_string()))?;
            let passage = if syntax.has_conditions() {
                syntax.passage.clone()
            } else {
                text.clone()
            };
            let encoder = self.encoder()?;
            store.check_model(encoder.identity(), encoder.precision().as_str())?;
            search.vector = self.embed_passages(&[passage])?.pop();
            search.model_sha256 = Some(store.manifest.model.weights_sha256.clone());
        }
        search.created = now_seconds();
        let saved = search.clone();
        change_searches(&self.dir, move |all| {
            if all.iter().any(|s| s.name == search.name) {
                return Err(EngineError::Invalid(format!(
                    "a saved search is already named {:?}; remove it first (`likewise alerts remove {}`)",
                    search.name, search.name
                )));
            }
            if all.len() >= MAX_SAVED_SEARCHES {
                return Err(EngineError::Invalid(format!(
                    "this store already keeps {MAX_SAVED_SEARCHES} saved searches, the most it keeps"
                )));
            }
            all.push(search);
            Ok(())
        })?;
        Ok(without_vector(saved))
    }

    /// The saved searches, oldest first.
    pub fn alerts_list(&self) -> Result<Vec<SavedSearch>, EngineError> {
        self.store()?;
        Ok(read_searches(&self.dir)?
            .into_iter()
            .map(without_vector)
            .collect())
    }

    /// Removes a saved search; its alerts stay in the log.
    pub fn alerts_remove(&self, name: &str) -> Result<SavedSearch, EngineError> {
        change_searches(&self.dir, |all| {
            let i = all.iter().position(|s| s.name == name).ok_or_else(|| {
                EngineError::NotFound(format!(
                    "no saved search named {name:?} (`likewise alerts list` lists them)"
                ))
            })?;
            Ok(without_vector(all.remove(i)))
        })
    }

    /// Recorded alerts, oldest first: of one saved search, or all; since a day or a time.
    pub fn alerts_show(
        &self,
        name: Option<&str>,
        since: Option<&str>,
    ) -> Result<Vec<AlertRecord>, EngineError> {
        let since = match since {
            None => None,
            Some(s) => {
                let req = QueryRequest {
                    since: Some(s.to_string()),
                    ..Default::default()
                };
                filters(&req)?.since
            }
        };
        let store = self.store()?;
        if let Some(n) = name {
            if !read_searches(&self.dir)?.iter().any(|s| s.name == n)
                && !read_alerts(&store)?.iter().any(|a| a.search == n)
            {
                return Err(EngineError::NotFound(format!(
                    "no saved search named {n:?} (`likewise alerts list` lists them)"
                )));
            }
        }
        Ok(read_alerts(&store)?
            .into_iter()
            .filter(|a| name.is_none_or(|n| a.search == n))
            .filter(|a| since.as_deref().is_none_or(|s| a.time.as_str() >= s))
            .collect())
    }

    /// The stories of a followed store; `since` / `active_days` keep those with an article on
    /// or after that day.
    pub fn stories_list(
        &self,
        since: Option<&str>,
        active_days: Option<u32>,
        min_size: usize,
    ) -> Result<StoriesList, EngineError> {
        let store = self.store()?;
        let book = followed_book(&store)?;
        let since = match (since, active_days) {
            (Some(s), _) => {
                filters(&QueryRequest {
                    since: Some(s.to_string()),
                    ..Default::default()
                })?
                .since
            }
            (None, Some(days)) => {
                let today = (now_seconds() / 86_400) as i64;
                Some(utc_time(((today - days as i64).max(0) * 86_400) as u64)[..10].to_string())
            }
            (None, None) => None,
        };
        let mut stories = summarise(&store, &book, min_size.max(1));
        if let Some(s) = since {
            stories.retain(|st| st.last.date.as_deref().is_some_and(|d| d >= s.as_str()));
        }
        Ok(StoriesList {
            articles_alone: book.live(1).filter(|s| s.members.len() == 1).count(),
            stories,
        })
    }

    /// The timeline of a story.
    pub fn story_timeline(&self, id: u64) -> Result<StoryTimeline, EngineError> {
        let store = self.store()?;
        let book = followed_book(&store)?;
        timeline(&store, &book, id)
    }

    /// The timeline of the story that holds an article (its key, or a stored name as
    /// [`Engine::find_article`] takes).
    pub fn story_timeline_of(&self, article: &str) -> Result<StoryTimeline, EngineError> {
        let store = self.store()?;
        let loc = self.find_article(&store, article)?;
        let key = &store.article(loc).key;
        let book = followed_book(&store)?;
        let id = book.assigned.get(key).copied().ok_or_else(|| {
            EngineError::NotFound(format!(
                "{key} is in no story yet: the next `likewise index` or watcher places it"
            ))
        })?;
        timeline(&store, &book, id)
    }
}

fn followed_book(store: &Store) -> Result<StoryBook, EngineError> {
    FollowState::load(store)?
        .map(|s| s.stories)
        .ok_or_else(|| {
            EngineError::Invalid(
                "this store has no stories yet: `likewise index` or `likewise watch` places its articles in stories (a store made by an older likewise gets them at its next `index`)"
                    .into(),
            )
        })
}

fn without_vector(mut s: SavedSearch) -> SavedSearch {
    s.vector = None;
    s.model_sha256 = None;
    s
}
