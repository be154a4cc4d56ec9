//! `likewise mcp`: the engine as tools for AI assistants, over the Model Context Protocol (the
//! official `rmcp` SDK). The same tools are served over MCP's streamable HTTP transport at
//! `/mcp` by `likewise serve`.
//!
//! A thin adapter, as the CLI and the server are: each tool builds an engine request from its
//! arguments, runs it off the async threads, and returns the engine's document trimmed to what
//! an assistant reads (long texts cut, long lists capped, with the keys to ask for more through
//! `article`). Tools read only; `add_articles` exists only when the operator allows writes
//! (`--allow-index`). A bad argument or a missing article is a tool error carrying the engine's
//! message, so the assistant can correct itself.

use crate::engine::docs::{
    ArticleDoc, By, ClusterRequest, ClustersResult, CompareResult, DupesRequest, DupesResult, Hit,
    QueryRequest, QueryResult,
};
use crate::engine::follow::{StoriesList, StoryTimeline};
use crate::engine::{Engine, EngineError};
use crate::index::{CollectWarnings, IndexOptions};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData as McpError, ServerHandler};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Longest text of a paragraph or hit handed to an assistant, in characters.
const TEXT_CHARS: usize = 400;
/// Most hits, stories or pairs in one answer.
const MOST_ITEMS: usize = 50;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SearchArgs {
    /// What to look for: a passage of an article, names, or a piece of a quotation. A phrase in
    /// straight double quotes must occur; -word leaves out articles that have the word.
    pub text: String,
    /// How to rank: "hybrid" (words and meaning, the default), "semantic" (meaning only: for
    /// paraphrases) or "lexical" (words only: for exact names and quotes).
    #[serde(default)]
    pub mode: Option<String>,
    /// "article" (the default) or "paragraph": rank whole articles or single paragraphs.
    #[serde(default)]
    pub level: Option<String>,
    /// How many results (10 by default, at most 50).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only articles from these sources (publisher or agency credit).
    #[serde(default)]
    pub source: Option<Vec<String>>,
    /// Only articles dated on or after this day (YYYY-MM-DD).
    #[serde(default)]
    pub since: Option<String>,
    /// Only articles dated on or before this day (YYYY-MM-DD).
    #[serde(default)]
    pub until: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ArticleArgs {
    /// The article's key, as search results give it (a file name or its start works too).
    pub key: String,
    /// Optional passage: each paragraph is then scored against it, to see which ones match.
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CompareArgs {
    /// The first article's key.
    pub a: String,
    /// The second article's key.
    pub b: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct StoriesArgs {
    /// Only stories with an article on or after this day (YYYY-MM-DD; the store's stories).
    #[serde(default)]
    pub since: Option<String>,
    /// Only stories with an article in the last this many days (the store's stories).
    #[serde(default)]
    pub active_days: Option<u32>,
    /// Regroup the archive at this threshold instead (mean cosine; the store's stories use
    /// 0.84; higher gives tighter, smaller stories). Ids are then for this answer only.
    #[serde(default)]
    pub threshold: Option<f32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TimelineArgs {
    /// The key of any article of the story.
    #[serde(default)]
    pub key: Option<String>,
    /// Or the story's id (from `stories`, or an alert).
    #[serde(default)]
    pub id: Option<u64>,
    /// Regroup at this threshold instead of the store's stories (with `key`).
    #[serde(default)]
    pub threshold: Option<f32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct DuplicatesArgs {
    /// "article", "paragraph" or "both" (the default).
    #[serde(default)]
    pub level: Option<String>,
    /// Which tiers: any of "exact", "near-copy" (copied with edits), "rewrite" (the same story
    /// reworded); all by default.
    #[serde(default)]
    pub tier: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct NewArticle {
    /// The article's text: headline on the first line, then paragraphs.
    pub text: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// YYYY-MM-DD.
    #[serde(default)]
    pub date: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArticlesArgs {
    /// The articles to index and commit.
    pub articles: Vec<NewArticle>,
}

/// The tools over one engine.
#[derive(Clone)]
pub struct Tools {
    engine: Arc<Engine>,
    allow_index: bool,
    tool_router: ToolRouter<Self>,
}

/// `text` cut to `TEXT_CHARS` characters, with an ellipsis when cut.
fn clip(text: &str) -> String {
    match text.char_indices().nth(TEXT_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

fn hit_brief(hit: &Hit) -> Value {
    let mut v = json!({
        "rank": hit.rank,
        "key": hit.article.key,
        "title": hit.article.title,
        "score": hit.score,
    });
    let o = v.as_object_mut().expect("an object");
    if let Some(d) = &hit.dateline.date {
        o.insert("date".into(), json!(d));
    }
    if let Some(s) = &hit.dateline.source {
        o.insert("source".into(), json!(s));
    }
    if let Some(p) = hit.paragraph {
        o.insert("paragraph".into(), json!(p));
    }
    if let Some(t) = &hit.text {
        o.insert("text".into(), json!(clip(t)));
    }
    if let Some(s) = &hit.semantic {
        o.insert("meaning".into(), json!(s.score));
    }
    if let Some(l) = &hit.lexical {
        o.insert("words".into(), json!(l.score));
    }
    if !hit.matched.is_empty() {
        o.insert("matched".into(), json!(hit.matched));
    }
    v
}

fn search_brief(result: &QueryResult) -> Value {
    match result {
        QueryResult::One {
            hits, mode, level, ..
        } => json!({
            "mode": mode,
            "level": level,
            "hits": hits.iter().map(hit_brief).collect::<Vec<_>>(),
            "more": "the article tool with a hit's key gives its whole text, nearest articles and duplicates",
        }),
        QueryResult::Many { queries, .. } => json!(queries
            .iter()
            .map(|q| q.hits.iter().map(hit_brief).collect::<Vec<_>>())
            .collect::<Vec<_>>()),
    }
}

fn article_brief(doc: &ArticleDoc) -> Value {
    json!({
        "key": doc.article.key,
        "title": doc.article.title,
        "date": doc.dateline.date,
        "source": doc.dateline.source,
        "url": doc.dateline.url,
        "paragraphs": doc.paragraphs.iter().map(|p| {
            let mut v = json!({"paragraph": p.paragraph, "text": p.text});
            if let Some(s) = p.score { v["score"] = json!(s); }
            v
        }).collect::<Vec<_>>(),
        "nearest": doc.nearest.iter().take(5).map(|h| json!({
            "key": h.article.key, "title": h.article.title, "score": h.score,
            "date": h.dateline.date,
        })).collect::<Vec<_>>(),
        "duplicates": doc.duplicates.iter().take(MOST_ITEMS).map(|d| json!({
            "tier": d.tier, "level": d.level, "score": d.score,
            "a": {"key": d.a.article.key, "paragraph": d.a.paragraph},
            "b": {"key": d.b.article.key, "paragraph": d.b.paragraph},
        })).collect::<Vec<_>>(),
    })
}

fn compare_brief(doc: &CompareResult) -> Value {
    let side = |p: &crate::engine::docs::ParagraphRef| json!({"paragraph": p.paragraph, "text": clip(&p.text)});
    json!({
        "a": {"key": doc.a.key, "title": doc.a.title},
        "b": {"key": doc.b.key, "title": doc.b.title},
        "matches": doc.matches.iter().map(|m| json!({
            "relation": m.relation, "score": m.score, "a": side(&m.a), "b": side(&m.b),
        })).collect::<Vec<_>>(),
        "only_a": doc.only_a.iter().map(side).collect::<Vec<_>>(),
        "only_b": doc.only_b.iter().map(side).collect::<Vec<_>>(),
    })
}

/// Whether the store keeps stories (every writer's follow step makes them; a store made by an
/// older likewise has none until its next `index`).
fn has_story_book(engine: &Engine) -> Result<bool, EngineError> {
    let store = engine.store()?;
    Ok(crate::engine::follow::FollowState::load(&store)?.is_some())
}

/// The store's stories, by the ids they keep.
fn kept_stories_brief(list: &StoriesList) -> Value {
    json!({
        "kept_ids": true,
        "stories": list.stories.iter().take(MOST_ITEMS).map(|s| json!({
            "id": s.id, "label": s.label, "keywords": s.keywords, "size": s.size,
            "first": s.first, "last": s.last, "sources": s.per_source,
        })).collect::<Vec<_>>(),
        "stories_in_all": list.stories.len(),
        "articles_alone": list.articles_alone,
    })
}

/// A story's timeline, by the id it keeps: who reported first, who followed, what each added.
fn kept_timeline_brief(doc: &StoryTimeline) -> Value {
    let mut per_day: Vec<(String, usize)> = Vec::new();
    for e in &doc.timeline {
        let day = e
            .article
            .date
            .as_deref()
            .map_or("undated".into(), |d| d.chars().take(10).collect());
        match per_day.last_mut() {
            Some((d, n)) if *d == day => *n += 1 + e.copies.len(),
            _ => per_day.push((day, 1 + e.copies.len())),
        }
    }
    json!({
        "kept_ids": true,
        "story": {"id": doc.story.id, "asked": doc.asked, "label": doc.story.label,
                  "keywords": doc.story.keywords, "size": doc.story.size},
        "articles": doc.timeline.iter().map(|e| json!({
            "date": e.article.date, "key": e.article.key, "title": e.article.title,
            "source": e.article.source,
            "copies": e.copies.iter().map(|c| &c.key).collect::<Vec<_>>(),
            "adds": e.adds.iter().take(3).map(|p| clip(p)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "per_day": per_day.iter().map(|(d, n)| json!({"date": d, "articles": n})).collect::<Vec<_>>(),
    })
}

fn stories_brief(result: &ClustersResult) -> Value {
    json!({
        "kept_ids": false,
        "stories": result.clusters.iter().take(MOST_ITEMS).map(|c| json!({
            "id": c.id,
            "label": c.label,
            "keywords": c.keywords,
            "size": c.size,
            "dates": c.dates,
            "articles": c.members.iter().take(20).map(|m| json!({
                "key": m.article.key, "title": m.article.title, "date": m.date,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "stories_in_all": result.clusters.len(),
        "articles_in_no_story": result.outliers.len(),
    })
}

/// The story that holds article `key`, its articles in date order and their count per day.
fn timeline(result: &ClustersResult, key: &str, found: &str) -> Result<Value, EngineError> {
    let story = result
        .clusters
        .iter()
        .find(|c| c.members.iter().any(|m| m.article.key == found))
        .ok_or_else(|| {
            EngineError::NotFound(format!(
                "{key} is in no story of two or more articles at this threshold (lower it to join looser coverage)"
            ))
        })?;
    let mut members: Vec<_> = story.members.iter().collect();
    // Dated articles in date order, then the undated ones.
    members.sort_by(|a, b| {
        (a.date.is_none(), &a.date, &a.article.key).cmp(&(
            b.date.is_none(),
            &b.date,
            &b.article.key,
        ))
    });
    let mut per_day: Vec<(String, usize)> = Vec::new();
    for m in &members {
        let day = m.date.clone().unwrap_or_else(|| "undated".into());
        match per_day.last_mut() {
            Some((d, n)) if *d == day => *n += 1,
            _ => per_day.push((day, 1)),
        }
    }
    Ok(json!({
        "kept_ids": false,
        "story": {"id": story.id, "label": story.label, "keywords": story.keywords, "size": story.size},
        "articles": members.iter().map(|m| json!({
            "date": m.date, "key": m.article.key, "title": m.article.title,
        })).collect::<Vec<_>>(),
        "per_day": per_day.iter().map(|(d, n)| json!({"date": d, "articles": n})).collect::<Vec<_>>(),
    }))
}

fn dupes_brief(result: &DupesResult) -> Value {
    json!({
        "pairs": result.pairs.iter().take(MOST_ITEMS).map(|d| json!({
            "tier": d.tier, "level": d.level, "score": d.score, "overlap": d.overlap,
            "a": {"key": d.a.article.key, "title": d.a.article.title, "paragraph": d.a.paragraph,
                  "text": d.a.text.as_deref().map(clip)},
            "b": {"key": d.b.article.key, "title": d.b.article.title, "paragraph": d.b.paragraph,
                  "text": d.b.text.as_deref().map(clip)},
        })).collect::<Vec<_>>(),
        "pairs_in_all": result.pairs.len(),
    })
}

#[tool_router]
impl Tools {
    pub fn new(engine: Arc<Engine>, allow_index: bool) -> Self {
        let mut tool_router = Self::tool_router();
        if !allow_index {
            tool_router.remove_route("add_articles");
        }
        Tools {
            engine,
            allow_index,
            tool_router,
        }
    }

    /// Runs `work` on a blocking thread; its value becomes the tool's JSON answer, its error a
    /// tool error with the engine's message.
    async fn answer(
        &self,
        work: impl FnOnce(&Engine) -> Result<Value, EngineError> + Send + 'static,
    ) -> Result<CallToolResult, McpError> {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || work(&engine)).await {
            Ok(Ok(value)) => Ok(CallToolResult::success(vec![ContentBlock::json(value)?])),
            Ok(Err(e)) => Ok(CallToolResult::error(vec![ContentBlock::text(
                e.to_string(),
            )])),
            Err(e) => Err(McpError::internal_error(
                format!("the tool stopped: {e}"),
                None,
            )),
        }
    }

    #[tool(
        description = "Search the news archive for articles (or paragraphs) like a passage, or that name people, places or organisations, or that quote words. Returns the best matches with their key, headline, date, source, score and the paragraph that matched best. Put a phrase in straight double quotes to require it; -word excludes. Use mode \"lexical\" for exact names and quotes, \"semantic\" for paraphrases; the default ranks by both."
    )]
    async fn search(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| {
            let mut request = json!({"text": args.text, "k": args.k.unwrap_or(10).min(MOST_ITEMS)});
            for (name, value) in [
                ("mode", args.mode),
                ("level", args.level),
                ("since", args.since),
                ("until", args.until),
            ] {
                if let Some(v) = value {
                    request[name] = json!(v);
                }
            }
            if let Some(s) = args.source {
                request["source"] = json!(s);
            }
            let request: QueryRequest = serde_json::from_value(request)
                .map_err(|e| EngineError::Invalid(format!("bad search arguments: {e}")))?;
            Ok(search_brief(&engine.query(&request)?))
        })
        .await
    }

    #[tool(
        description = "One article of the archive by its key (from search results): headline, date, source, url, every paragraph's text (scored against `text` when given), its five nearest articles and the duplicate pairs it is in."
    )]
    async fn article(
        &self,
        Parameters(args): Parameters<ArticleArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| {
            Ok(article_brief(&engine.article(
                &args.key,
                args.text.as_deref(),
                5,
            )?))
        })
        .await
    }

    #[tool(
        description = "Compare two articles paragraph by paragraph: which paragraphs they share word for word, which say the same in other words (paraphrased), and what each has that the other lacks. Useful to see what a follow-up or a rewrite added."
    )]
    async fn compare(
        &self,
        Parameters(args): Parameters<CompareArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| Ok(compare_brief(&engine.compare(&args.a, &args.b)?)))
            .await
    }

    #[tool(
        description = "The stories of the archive: groups of articles covering the same event, each with an id it keeps as the story grows (alerts and timelines use it), a label (its most central headline), keywords, size, its first and latest article and its sources (the 50 most recent stories). Filter by `since` or `active_days`; give `threshold` to regroup the archive looser or tighter instead (ids then for this answer only)."
    )]
    async fn stories(
        &self,
        Parameters(args): Parameters<StoriesArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| {
            if args.threshold.is_none() && has_story_book(engine)? {
                let list = engine.stories_list(args.since.as_deref(), args.active_days, 2)?;
                return Ok(kept_stories_brief(&list));
            }
            let request = ClusterRequest {
                by: By::Story,
                threshold: args.threshold,
                ..ClusterRequest::default()
            };
            Ok(stories_brief(&engine.clusters(&request)?))
        })
        .await
    }

    #[tool(
        description = "The timeline of a story, by its id or by the key of any of its articles: the first report, who followed when (copies collapsed under their original), what each article added to those before it, and how many appeared each day."
    )]
    async fn story_timeline(
        &self,
        Parameters(args): Parameters<TimelineArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| {
            if args.threshold.is_none() && has_story_book(engine)? {
                let doc = match (args.id, args.key.as_deref()) {
                    (Some(id), _) => engine.story_timeline(id)?,
                    (None, Some(key)) => engine.story_timeline_of(key)?,
                    (None, None) => {
                        return Err(EngineError::Invalid(
                            "give the story's `id` or the `key` of one of its articles".into(),
                        ))
                    }
                };
                return Ok(kept_timeline_brief(&doc));
            }
            let key = args.key.ok_or_else(|| {
                EngineError::Invalid(
                    "this archive keeps no stories yet (or a threshold was given): give the `key` of an article"
                        .into(),
                )
            })?;
            let store = engine.store()?;
            let found = crate::engine::article_ref(&store, engine.find_article(&store, &key)?).key;
            let request = ClusterRequest {
                by: By::Story,
                threshold: args.threshold,
                ..ClusterRequest::default()
            };
            timeline(&engine.clusters(&request)?, &key, &found)
        })
        .await
    }

    #[tool(
        description = "Duplicate coverage in the archive: pairs of articles or paragraphs that are exact copies, near-copies (copied with edits) or rewrites (the same story reworded), with scores (up to 50 pairs)."
    )]
    async fn duplicates(
        &self,
        Parameters(args): Parameters<DuplicatesArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.answer(move |engine| {
            let mut request = json!({});
            if let Some(l) = args.level {
                request["level"] = json!(l);
            }
            if let Some(t) = args.tier {
                request["tier"] = json!(t);
            }
            let request: DupesRequest = serde_json::from_value(request)
                .map_err(|e| EngineError::Invalid(format!("bad duplicates arguments: {e}")))?;
            Ok(dupes_brief(&engine.dupes(&request)?))
        })
        .await
    }

    #[tool(
        description = "What the archive holds: number of articles and paragraphs, the embedding model, size on disk, last update."
    )]
    async fn info(&self) -> Result<CallToolResult, McpError> {
        self.answer(|engine| Ok(serde_json::to_value(engine.info()?).unwrap_or(Value::Null)))
            .await
    }

    #[tool(
        description = "Add articles to the archive (indexed and committed at once). Each needs its text; id, title, date (YYYY-MM-DD), source and url are optional. Returns how many were new, changed or unchanged, and any article skipped with the reason."
    )]
    async fn add_articles(
        &self,
        Parameters(args): Parameters<AddArticlesArgs>,
    ) -> Result<CallToolResult, McpError> {
        if !self.allow_index {
            return Ok(CallToolResult::error(vec![ContentBlock::text(
                "this server does not accept articles (its operator did not allow writes)",
            )]));
        }
        self.answer(move |engine| {
            let lines: String = args
                .articles
                .iter()
                .map(|a| {
                    json!({"text": a.text, "id": a.id, "title": a.title, "date": a.date,
                           "source": a.source, "url": a.url})
                    .to_string()
                        + "\n"
                })
                .collect();
            let progress = CollectWarnings::default();
            let report =
                engine.index_json_lines("mcp", &lines, &IndexOptions::default(), &progress)?;
            Ok(json!({"report": report, "skipped": progress.into_warnings()}))
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("likewise", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "likewise searches a news archive by words and meaning. Start with `search` (a passage, names or a quotation); open a result with `article` by its key; `compare` two articles; `stories` and `story_timeline` follow coverage of one event; `duplicates` finds copied or rewritten coverage; `info` says what the archive holds.",
            )
    }
}

/// Runs the MCP server on stdin and stdout until the client closes it. Everything else this
/// process says goes to stderr (stdout is the protocol's).
pub fn run_stdio(engine: Engine, allow_index: bool) -> Result<(), EngineError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| EngineError::Input(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        use rmcp::ServiceExt;
        let tools = Tools::new(Arc::new(engine), allow_index);
        let running = tools
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| EngineError::Input(format!("the MCP session could not start: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| EngineError::Input(format!("the MCP session ended badly: {e}")))?;
        Ok(())
    })
}
