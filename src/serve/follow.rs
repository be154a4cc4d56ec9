//! Following the news through the server: saved searches (`/api/alerts`), their alerts as a
//! log and as a live stream of Server-Sent Events, the stories with their stable ids, and the
//! watcher `likewise serve --watch/--feed` runs beside the API.
//!
//! The stream tails the store's alert log (whoever writes it: this server's watcher, a
//! `likewise watch` or `likewise index` of another process), and adds what this server's own
//! watcher reports (commits with their keys). Saved searches are written only by a server
//! that accepts writes (`--allow-index`); feeds and webhooks are the operator's, set on the
//! command line, never by a request.

use super::shared::{blocking, parse_json, ApiError, ApiResult, ErrorBody, Shared};
use crate::engine::docs::QueryRequest;
use crate::engine::follow::{AlertRecord, SavedSearch, StoriesList, StoryTimeline};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use serde::Deserialize;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// A saved search as a request gives it.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedSearchRequest {
    /// Letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The query followed: `text`, `mode`, `level`, `min_score`, filters (as `/api/query`).
    #[serde(default)]
    pub query: Option<QueryRequest>,
    /// A story to follow: every new article it gains alerts.
    #[serde(default)]
    pub story: Option<u64>,
}

fn writes_allowed(app: &Shared) -> Result<(), ApiError> {
    if app.args.allow_index {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this server does not change the store; start it with --allow-index",
        ))
    }
}

/// The saved searches.
#[utoipa::path(get, path = "/api/alerts", tag = "follow",
    responses((status = 200, description = "The saved searches, oldest first", body = [SavedSearch])))]
pub async fn list(State(app): State<Shared>) -> ApiResult<Vec<SavedSearch>> {
    let app = app.clone();
    Ok(Json(blocking(move || app.engine.alerts_list()).await?))
}

/// Saves a search: new articles that match it alert.
#[utoipa::path(post, path = "/api/alerts", tag = "follow",
    request_body = SavedSearchRequest,
    responses(
        (status = 200, description = "Saved", body = SavedSearch),
        (status = 400, description = "A bad name or query, or the name is taken", body = ErrorBody),
        (status = 403, description = "This server does not change the store", body = ErrorBody),
        (status = 404, description = "No such story", body = ErrorBody),
    ))]
pub async fn add(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<SavedSearch> {
    writes_allowed(&app)?;
    let req: SavedSearchRequest = parse_json(&body?)?;
    let search = SavedSearch {
        name: req.name,
        query: req.query.unwrap_or_default(),
        story: req.story,
        created: 0,
        vector: None,
        model_sha256: None,
    };
    let app = app.clone();
    Ok(Json(blocking(move || app.engine.alerts_add(search)).await?))
}

/// Removes a saved search (its alerts stay in the log).
#[utoipa::path(delete, path = "/api/alerts/{name}", tag = "follow",
    params(("name" = String, Path, description = "The saved search's name")),
    responses(
        (status = 200, description = "Removed", body = SavedSearch),
        (status = 403, description = "This server does not change the store", body = ErrorBody),
        (status = 404, description = "No saved search of that name", body = ErrorBody),
    ))]
pub async fn remove(State(app): State<Shared>, Path(name): Path<String>) -> ApiResult<SavedSearch> {
    writes_allowed(&app)?;
    let app = app.clone();
    Ok(Json(
        blocking(move || app.engine.alerts_remove(&name)).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Only this saved search's alerts.
    #[serde(default)]
    search: Option<String>,
    /// Only alerts recorded on or after this day.
    #[serde(default)]
    since: Option<String>,
}

/// Recorded alerts, oldest first.
#[utoipa::path(get, path = "/api/alerts/log", tag = "follow", params(LogParams),
    responses(
        (status = 200, description = "The alerts", body = [AlertRecord]),
        (status = 400, description = "A bad date", body = ErrorBody),
        (status = 404, description = "No saved search of that name", body = ErrorBody),
    ))]
pub async fn log(
    State(app): State<Shared>,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<AlertRecord>> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let app = app.clone();
    Ok(Json(
        blocking(move || {
            app.engine
                .alerts_show(p.search.as_deref(), p.since.as_deref())
        })
        .await?,
    ))
}

/// New alerts and arrivals as they happen, as Server-Sent Events: `alert` (an alert record),
/// `generation` (the store changed: `{generation, articles}`), and, from this server's own
/// watcher, `commit` (`{origin, new, changed, removed, keys}`) and `stories`.
#[utoipa::path(get, path = "/api/alerts/stream", tag = "follow",
    responses((status = 200, description = "An event stream (text/event-stream) that stays open", content_type = "text/event-stream", body = String)))]
pub async fn stream(
    State(app): State<Shared>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let rx = app.events.subscribe();
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok((name, json)) => Event::default().event(name).data(json),
            // A slow reader missed some: it is told, and goes on with the newest.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StoriesParams {
    /// Only stories with an article on or after this day.
    #[serde(default)]
    since: Option<String>,
    /// Only stories with an article in the last this many days.
    #[serde(default)]
    active: Option<u32>,
    /// Stories of at least this many articles (2 by default).
    #[serde(default)]
    min_size: Option<usize>,
}

/// The stories, with ids that never change meaning (a merged story's id resolves to the story
/// it joined).
#[utoipa::path(get, path = "/api/stories", tag = "follow", params(StoriesParams),
    responses(
        (status = 200, description = "The stories, largest first", body = StoriesList),
        (status = 400, description = "A bad date, or a store with no stories yet", body = ErrorBody),
    ))]
pub async fn stories(
    State(app): State<Shared>,
    params: Result<Query<StoriesParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<StoriesList> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let app = app.clone();
    Ok(Json(
        blocking(move || {
            app.engine
                .stories_list(p.since.as_deref(), p.active, p.min_size.unwrap_or(2))
        })
        .await?,
    ))
}

/// One story's timeline: the first report, who followed when, copies under their original,
/// and what each article adds.
#[utoipa::path(get, path = "/api/stories/{id}", tag = "follow",
    params(("id" = u64, Path, description = "The story's id")),
    responses(
        (status = 200, description = "The timeline", body = StoryTimeline),
        (status = 400, description = "Not a story id", body = ErrorBody),
        (status = 404, description = "No such story", body = ErrorBody),
    ))]
pub async fn story(State(app): State<Shared>, Path(id): Path<String>) -> ApiResult<StoryTimeline> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a story id (a whole number)"),
        )
    })?;
    let app = app.clone();
    Ok(Json(blocking(move || app.engine.story_timeline(id)).await?))
}

/// Sends the store's new alerts and generations to the stream, as they are committed: the
/// manifest is looked at every quarter of a second, and only the part of the alert log committed
/// since the last look is read.
pub async fn tail_alert_log(app: Shared) {
    // (generation, committed bytes of the log already sent)
    let mut seen: Option<(u64, u64)> = None;
    loop {
        let app2 = app.clone();
        let last = seen;
        let found = tokio::task::spawn_blocking(move || {
            let store = app2.engine.store().ok()?;
            let m = &store.manifest;
            // The first look only notes where the log ends: the stream carries what comes next.
            let alerts = match last {
                Some((_, sent)) if m.alert_log_bytes > sent => {
                    crate::engine::follow::read_alerts_from(&store, sent).ok()
                }
                _ => None,
            };
            Some((
                m.generation,
                m.alert_log_bytes,
                alerts,
                store.article_count(),
            ))
        })
        .await
        .ok()
        .flatten();
        if let Some((generation, bytes, alerts, articles)) = found {
            // A shorter log than was sent: the store was made anew; follow it from its end.
            let mut sent = seen.map_or(bytes, |s| s.1.min(bytes));
            if let Some(alerts) = alerts {
                for a in &alerts {
                    let _ = app.events.send((
                        "alert".into(),
                        serde_json::to_string(a).expect("alerts serialise"),
                    ));
                }
                sent = bytes;
            }
            if seen.is_some_and(|(g, _)| g != generation) {
                let _ = app.events.send((
                    "generation".into(),
                    serde_json::json!({"generation": generation, "articles": articles}).to_string(),
                ));
            }
            seen = Some((generation, sent));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts `likewise watch` inside the server when it was given folders or feeds; its commits
/// and stories go to the stream (its alerts reach it through the log).
pub fn start_watcher(
    app: &Shared,
    stop: Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>, super::ServeError> {
    let opts = app.args.sources.options(app.args.watch.clone(), stop)?;
    if opts.paths.is_empty() && opts.feeds.is_empty() {
        return Ok(None);
    }
    let app = app.clone();
    eprintln!(
        "likewise: watching {} folders and {} feeds; the page shows what arrives",
        opts.paths.len(),
        opts.feeds.len()
    );
    Ok(Some(std::thread::spawn(move || {
        let events = app.events.clone();
        let emit = move |event: crate::watch::WatchEvent| {
            if let Some(line) = event.line() {
                eprintln!("likewise: {line}");
            }
            let name = match &event {
                crate::watch::WatchEvent::Commit { .. } => "commit",
                crate::watch::WatchEvent::Stories { .. } => "stories",
                crate::watch::WatchEvent::Ready { .. } => "ready",
                _ => return,
            };
            let _ = events.send((
                name.into(),
                serde_json::to_string(&event).expect("events serialise"),
            ));
        };
        if let Err(e) = crate::watch::watch(&app.engine, &opts, &emit) {
            eprintln!("likewise: error: the watcher stopped: {e}; the server goes on without it");
        }
    })))
}
