//! likewise's own JSON API, `/api/…`: each handler parses its request, runs the engine's
//! operation off the async threads, and returns the engine's document. The same documents as
//! `likewise … --format json` (one serializer: `engine::docs`).

use super::shared::{blocking, parse_json, ApiError, ApiResult, ErrorBody, Shared};
use crate::engine::docs::*;
use crate::index::{CollectWarnings, IndexOptions};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

/// What `GET /api/health` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the server answers.
    status: &'static str,
    /// likewise's version.
    version: &'static str,
}

/// The server is up (needs no token).
#[utoipa::path(get, path = "/api/health", tag = "store",
    responses((status = 200, description = "The server answers", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Articles (or paragraphs) like a passage, names or quotations, or like stored articles: what
/// `likewise query --format json` prints for the same request.
#[utoipa::path(post, path = "/api/query", tag = "search",
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The hits, best first", body = QueryResult),
        (status = 400, description = "A bad request: malformed JSON, an unknown field, an empty passage or phrase, a bad date, k over the cap", body = ErrorBody),
        (status = 404, description = "A `like` article the store does not hold", body = ErrorBody),
        (status = 503, description = "The store or the model cannot be used", body = ErrorBody),
    ))]
pub async fn query(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<QueryResult> {
    let req: QueryRequest = parse_json(&body?)?;
    if req.k > app.args.max_k {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("k is {}; at most {} are served", req.k, app.args.max_k),
        ));
    }
    if req.texts.len() + req.like.0.len() > 100 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "at most 100 queries (texts or like) per request",
        ));
    }
    let app = app.clone();
    Ok(Json(blocking(move || app.engine.query(&req)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ArticleParams {
    /// A passage to score each paragraph against.
    #[serde(default)]
    text: Option<String>,
    /// How many nearest articles to list (10 by default; capped by --max-k).
    #[serde(default)]
    nearest: Option<usize>,
}

/// One article: its metadata, its paragraphs (scored against `text` when given), its nearest
/// articles and the duplicate pairs it is in.
#[utoipa::path(get, path = "/api/articles/{key}", tag = "articles",
    params(("key" = String, Path, description = "The article's key (every result carries it), its file name, the start of it (`003`), or the end of its path"), ArticleParams),
    responses(
        (status = 200, description = "The article", body = ArticleDoc),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 404, description = "No such article", body = ErrorBody),
    ))]
pub async fn article(
    State(app): State<Shared>,
    Path(key): Path<String>,
    params: Result<Query<ArticleParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ArticleDoc> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let nearest = params.nearest.unwrap_or(10).min(app.args.max_k);
    let app = app.clone();
    Ok(Json(
        blocking(move || app.engine.article(&key, params.text.as_deref(), nearest)).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CompareParams {
    /// The first article (key, file name or its start).
    a: String,
    /// The second article.
    b: String,
}

/// Two articles paragraph by paragraph: shared, paraphrased, only in A, only in B
/// (`likewise compare A B`).
#[utoipa::path(get, path = "/api/compare", tag = "articles", params(CompareParams),
    responses(
        (status = 200, description = "The alignment", body = CompareResult),
        (status = 400, description = "A missing or unknown parameter", body = ErrorBody),
        (status = 404, description = "No such article", body = ErrorBody),
    ))]
pub async fn compare(
    State(app): State<Shared>,
    params: Result<Query<CompareParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<CompareResult> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(
        blocking(move || app.engine.compare(&p.a, &p.b)).await?,
    ))
}

/// Topics or stories of the whole store, labelled, with their outliers (`likewise cluster`).
#[utoipa::path(get, path = "/api/clusters", tag = "research", params(ClusterRequest),
    responses(
        (status = 200, description = "The clusters", body = ClustersResult),
        (status = 400, description = "A bad parameter", body = ErrorBody),
    ))]
pub async fn clusters(
    State(app): State<Shared>,
    params: Result<Query<ClusterRequest>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ClustersResult> {
    let Query(req) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(blocking(move || app.engine.clusters(&req)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DupesParams {
    /// `article`, `paragraph` or `both` (the default).
    #[serde(default)]
    #[param(value_type = Option<DupeLevel>)]
    level: DupeLevel,
    /// Comma-separated tiers: `exact`, `near-copy`, `rewrite` (all by default).
    #[serde(default)]
    tier: Option<String>,
}

/// Duplicate pairs in three tiers, of articles and paragraphs (`likewise dupes`).
#[utoipa::path(get, path = "/api/dupes", tag = "research", params(DupesParams),
    responses(
        (status = 200, description = "The pairs", body = DupesResult),
        (status = 400, description = "A bad level or tier", body = ErrorBody),
    ))]
pub async fn dupes(
    State(app): State<Shared>,
    params: Result<Query<DupesParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<DupesResult> {
    let Query(p) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut tier = Vec::new();
    for t in p
        .tier
        .iter()
        .flat_map(|t| t.split(','))
        .filter(|t| !t.is_empty())
    {
        tier.push(
            serde_json::from_value::<TierName>(serde_json::Value::String(t.trim().into()))
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("tier {t:?} is none of exact, near-copy, rewrite"),
                    )
                })?,
        );
    }
    let req = DupesRequest {
        level: p.level,
        tier,
    };
    Ok(Json(blocking(move || app.engine.dupes(&req)).await?))
}

/// The store, the model, the precision, counts, sizes, the last commit (`likewise info`).
#[utoipa::path(get, path = "/api/info", tag = "store",
    responses(
        (status = 200, description = "What the store holds", body = InfoResult),
        (status = 503, description = "The store cannot be used", body = ErrorBody),
    ))]
pub async fn info(State(app): State<Shared>) -> ApiResult<InfoResult> {
    Ok(Json(blocking(move || app.engine.info()).await?))
}

/// Every article's place on the 2-D map and its topic, and the topics (computed once per
/// generation of the store).
#[utoipa::path(get, path = "/api/map", tag = "research",
    responses((status = 200, description = "The map", body = MapResult)))]
pub async fn map(State(app): State<Shared>) -> Result<Response, ApiError> {
    let result = blocking(move || app.engine.map()).await?;
    Ok(Json(result.as_ref().clone()).into_response())
}

/// What `POST /api/articles` did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ArticlesAdded {
    /// The indexing run's report, as `likewise index --format json` gives it.
    report: crate::index::IndexReport,
    /// Each article that was skipped, and why.
    skipped: Vec<String>,
}

/// Indexes and commits new articles, sent as JSON lines (or one JSON array) with the fields of a
/// `.jsonl` input: `text`; `id`, `title`, `date`, `source`, `url`. Only on a server started with
/// `--allow-index`.
#[utoipa::path(post, path = "/api/articles", tag = "articles",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One JSON object per line (or one JSON array of them)"),
    responses(
        (status = 200, description = "Indexed and committed", body = ArticlesAdded),
        (status = 400, description = "No articles, or not UTF-8", body = ErrorBody),
        (status = 403, description = "This server does not accept articles", body = ErrorBody),
        (status = 409, description = "Another process is writing the store", body = ErrorBody),
        (status = 413, description = "The body is over --max-body", body = ErrorBody),
    ))]
pub async fn add_articles(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ArticlesAdded>, ApiError> {
    if !app.args.allow_index {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this server does not accept articles; start it with --allow-index",
        ));
    }
    let body = body?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body holds no articles (one JSON object per line, with a `text` field)",
        ));
    }
    let text = json_lines_of(text)?;
    let app2 = app.clone();
    let (report, warnings) = blocking(move || {
        let _one = app2.writing.lock().unwrap_or_else(|p| p.into_inner());
        let progress = CollectWarnings::default();
        let report =
            app2.engine
                .index_json_lines("request", &text, &IndexOptions::default(), &progress)?;
        Ok((report, progress.into_warnings()))
    })
    .await?;
    Ok(Json(ArticlesAdded {
        report,
        skipped: warnings,
    }))
}

/// The body as JSON lines: as it came, or one line per element when it is one JSON array of
/// articles (what most HTTP clients send), so an element's line number is its place in the array.
fn json_lines_of(body: String) -> Result<String, ApiError> {
    if !body.trim_start().starts_with('[') {
        return Ok(body);
    }
    let items: Vec<serde_json::Value> = serde_json::from_str(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not a JSON array of articles: {e}"),
        )
    })?;
    Ok(items.iter().map(|item| format!("{item}\n")).collect())
}

pub async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not served at {} (the `allow` header names what is)",
            uri.path()
        ),
    )
}
