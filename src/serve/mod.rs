//! `likewise serve`: the web page and the JSON API over HTTP, a thin adapter over the engine.
//!
//! The stack is axum on tokio, with hyper-util's connection builder so that headers must arrive
//! within a time limit and a stop (Ctrl-C, SIGTERM) lets requests in flight finish. Engine calls
//! are CPU-bound and run on tokio's blocking threads; the engine gathers concurrent passages into
//! one batch for the model.
//!
//! Who may get in: the server binds loopback unless told otherwise; another address needs a
//! bearer token (`--token`) or an explicit `--no-auth`. The token is taken from an
//! `Authorization: Bearer …` header, or from a cookie the page sets when opened with `?token=…`
//! (the address printed at start). CORS is off unless `--cors ORIGIN`. Bodies are capped
//! (`--max-body`), every request has a time limit (`--timeout`), `k` and `nearest` are capped,
//! and articles are named by key only: no path from a request is ever opened.
//!
//! Errors are `{"error": "…", "code": N}` with the HTTP status N: 400 bad input, 401 no or
//! wrong token, 404 unknown article, 409 store being written, 413 body too large, 503 store
//! or model unusable (the server stays up, and recovers when the store is mended).

mod openapi;

use crate::engine::docs::*;
use crate::engine::{Engine, EngineError};
use crate::index::{IndexOptions, Progress, Warning};
use crate::store::StoreError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The page, compiled into the binary: it works offline, with nothing else installed.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/style.css");

const TOKEN_COOKIE: &str = "likewise_token";

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token or --no-auth.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub addr: SocketAddr,
    /// Bearer token every API call and the page must present.
    #[arg(long, env = "LIKEWISE_TOKEN")]
    pub token: Option<String>,
    /// Serve a non-loopback address without a token (anyone who reaches it gets in).
    #[arg(long, conflicts_with = "token")]
    pub no_auth: bool,
    /// Allow cross-origin calls from this origin (e.g. https://newsroom.example).
    #[arg(long)]
    pub cors: Option<String>,
    /// Accept new articles: `POST /api/articles` (JSON lines) indexes and commits them.
    #[arg(long)]
    pub allow_index: bool,
    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Seconds a request may take, headers and body included.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Most results one query may ask for.
    #[arg(long, default_value_t = 1000)]
    pub max_k: usize,
}

/// What every handler shares.
struct App {
    engine: Engine,
    args: ServeArgs,
    /// One `POST /api/articles` at a time inside this server (the store's lock keeps other
    /// processes out).
    writing: Mutex<()>,
}

type Shared = Arc<App>;

/// An error as the API returns it.
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// The body of every error: `{"error": "…", "code": N}`, N being the HTTP status.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What is wrong, for a person to read.
    pub error: String,
    /// The HTTP status, repeated for clients that only keep the body.
    pub code: u16,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::Invalid(_) | EngineError::Input(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Store(s) => match s.as_ref() {
                StoreError::Locked { .. } => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            EngineError::Model(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is over the server's limit (--max-body)".to_string()
        } else {
            format!("the request body could not be read: {}", r.body_text())
        };
        ApiError::new(status, message)
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs `work` on a blocking thread (engine calls use the CPU for milliseconds to seconds); a
/// panic inside becomes a 500 with a message, never a dead server.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

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
async fn health() -> Json<Health> {
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
async fn query(
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
struct ArticleParams {
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
async fn article(
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
struct CompareParams {
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
async fn compare(
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
async fn clusters(
    State(app): State<Shared>,
    params: Result<Query<ClusterRequest>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<ClustersResult> {
    let Query(req) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(blocking(move || app.engine.clusters(&req)).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DupesParams {
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
async fn dupes(
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
async fn info(State(app): State<Shared>) -> ApiResult<InfoResult> {
    Ok(Json(blocking(move || app.engine.info()).await?))
}

/// Every article's place on the 2-D map and its topic, and the topics (computed once per
/// generation of the store).
#[utoipa::path(get, path = "/api/map", tag = "research",
    responses((status = 200, description = "The map", body = MapResult)))]
async fn map(State(app): State<Shared>) -> Result<Response, ApiError> {
    let result = blocking(move || app.engine.map()).await?;
    Ok(Json(result.as_ref().clone()).into_response())
}

/// Collects what indexing says, for the response.
#[derive(Default)]
struct Collected {
    warnings: Mutex<Vec<String>>,
}

impl Progress for Collected {
    fn start(&self, _: usize) {}
    fn advance(&self, _: usize) {}
    fn warn(&self, w: &Warning) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w.to_string());
    }
    fn finish(&self) {}
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
async fn add_articles(
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
        let progress = Collected::default();
        let report =
            app2.engine
                .index_json_lines("request", &text, &IndexOptions::default(), &progress)?;
        Ok((report, progress.warnings.into_inner().unwrap_or_default()))
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

/// Constant-time equality, so the token cannot be guessed a byte at a time from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = v.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Lets a request through when the server needs no token or it presents the right one; the
/// page opened as `/?token=…` gets the token as a cookie and is sent on to `/`.
async fn authorize(State(app): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = app.args.token.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    if path == "/api/health" {
        return next.run(req).await;
    }
    if path == "/" {
        if let Some(q) = req.uri().query() {
            let given = url_param(q, "token");
            if given
                .as_deref()
                .is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes()))
            {
                let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
                let mut r = Response::new(axum::body::Body::empty());
                *r.status_mut() = StatusCode::SEE_OTHER;
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                return r;
            }
        }
    }
    let ok =
        presented_token(req.headers()).is_some_and(|t| same_secret(t.as_bytes(), token.as_bytes()));
    if ok {
        return next.run(req).await;
    }
    if path.starts_with("/api/") {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this server needs its token: send `Authorization: Bearer TOKEN`",
        )
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"likewise\""),
        );
        return r;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "likewise: this server needs its token. Open the address it printed at start (…/?token=TOKEN).\n",
    )
        .into_response()
}

/// The value of `name` in a URL query string, percent-decoded.
fn url_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (escaped, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headers every answer carries: the page runs only its own script and styles, and is never
/// framed by another site.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not served at {} (the `allow` header names what is)",
            uri.path()
        ),
    )
}

/// The router: the page, the API, and the layers that guard them.
fn router(app: Shared) -> Router {
    let mut api = Router::new()
        .route("/api/health", get(health))
        .route("/api/query", post(query))
        .route("/api/articles", post(add_articles))
        .route("/api/articles/{*key}", get(article))
        .route("/api/compare", get(compare))
        .route("/api/clusters", get(clusters))
        .route("/api/dupes", get(dupes))
        .route("/api/info", get(info))
        .route("/api/map", get(map))
        .route("/api/openapi.json", get(openapi::document))
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", PAGE_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", PAGE_CSS) }),
        )
        // After every route: it applies to the routes already added.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(app.clone(), authorize))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(app.args.max_body))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(app.args.timeout),
        ));
    // `run` refused an origin that is not a header value, so none is dropped here.
    if let Some(origin) = app.args.cors.as_deref().and_then(cors_origin) {
        api = api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    api.with_state(app)
}

/// Why `likewise serve` could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<ServeError> for EngineError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::Engine(e) => e,
            other => EngineError::Input(other.to_string()),
        }
    }
}

/// `--cors`'s origin as the header value browsers compare against: `*`, or a scheme, a host and
/// an optional port with nothing after them (a browser's `Origin` never has a path, so an origin
/// with one, or with spaces, would silently match no call).
fn cors_origin(origin: &str) -> Option<HeaderValue> {
    let well_formed = origin == "*"
        || ["http://", "https://"].iter().any(|scheme| {
            origin.strip_prefix(scheme).is_some_and(|host| {
                !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            })
        });
    well_formed
        .then(|| HeaderValue::from_str(origin).ok())
        .flatten()
}

/// Refuses limits that would make every request fail.
fn check_limits(args: &ServeArgs) -> Result<(), ServeError> {
    if let Some(origin) = &args.cors {
        if cors_origin(origin).is_none() {
            return Err(ServeError::Refused(format!(
                "--cors {origin:?} is not an origin: give `*` or a scheme, a host and an optional port, such as https://newsroom.example or http://localhost:8080"
            )));
        }
    }
    for (name, value) in [
        ("--timeout", args.timeout as usize),
        ("--max-body", args.max_body),
        ("--max-k", args.max_k),
    ] {
        if value == 0 {
            return Err(ServeError::Refused(format!(
                "{name} 0 would refuse every request: give at least 1"
            )));
        }
    }
    Ok(())
}

/// Starts the server and runs it until Ctrl-C or SIGTERM; then lets requests in flight finish.
pub fn run(engine: Engine, args: &ServeArgs) -> Result<(), ServeError> {
    check_limits(args)?;
    if !args.addr.ip().is_loopback() && args.token.is_none() && !args.no_auth {
        return Err(ServeError::Refused(format!(
            "{} is not a loopback address: anyone who reaches it could use this server. Give --token TOKEN (or LIKEWISE_TOKEN), or --no-auth to serve it open",
            args.addr
        )));
    }
    if args.token.as_deref().is_some_and(|t| t.len() < 8) {
        return Err(ServeError::Refused(
            "--token must have at least 8 characters".into(),
        ));
    }
    // Fail now, not at the first request: the store must open and the model load.
    let mut engine = engine.with_batching();
    engine.like_by_file = false;
    let store = engine.store()?;
    engine.encoder()?;
    eprintln!(
        "likewise: serving {} ({} articles, {} paragraphs)",
        engine.dir().display(),
        store.article_count(),
        store.paragraph_count()
    );
    drop(store);
    let app = Arc::new(App {
        engine,
        args: args.clone(),
        writing: Mutex::new(()),
    });
    // Engine calls run on a few long-lived blocking threads: the model and the scans already use
    // every core, more threads would only queue inside them, and each thread that comes and goes
    // leaves its allocator's pages behind (resident memory then creeps up under load).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(Duration::from_secs(600))
        .enable_all()
        .build()
        .map_err(|e| ServeError::Refused(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(app, args.clone()))
}

async fn serve(app: Shared, args: ServeArgs) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.addr,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.addr);
    match (&args.token, args.no_auth) {
        (Some(t), _) => {
            eprintln!("likewise: every API call needs `Authorization: Bearer TOKEN`; the page opens with the token in its address");
            println!("http://{addr}/?token={t}");
        }
        (None, true) => {
            eprintln!("likewise: warning: no token (--no-auth): anyone who reaches {addr} can use this server");
            println!("http://{addr}/");
        }
        (None, false) => println!("http://{addr}/"),
    }
    if args.allow_index {
        eprintln!("likewise: POST /api/articles indexes articles into the store (--allow-index)");
    }
    if let Some(origin) = &args.cors {
        eprintln!("likewise: cross-origin calls allowed from {origin}");
    }
    // Warm the map and the duplicate pairs, so the first visit to those views is quick.
    {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            let _ = app.engine.map();
        });
    }
    let service = hyper_util::service::TowerToHyperService::new(router(app));
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(args.timeout.clamp(1, 10)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections at once: past this, new ones wait in the listen queue.
    let slots = Arc::new(tokio::sync::Semaphore::new(512));
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore open"),
            _ = stop.as_mut() => break,
        };
        let (stream, _) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("likewise: warning: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.as_mut() => break,
        };
        // Answers go out at once, not held back to be merged with later writes (Nagle).
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    eprintln!("likewise: stopping: no new connections; finishing the requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => eprintln!("likewise: stopped"),
        _ = tokio::time::sleep(Duration::from_secs(args.timeout.saturating_add(5))) => {
            eprintln!("likewise: stopped; some connections were still open after the request time limit")
        }
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_decoded() {
        assert_eq!(
            url_param("a=1&token=ab%2Fc+d", "token").as_deref(),
            Some("ab/c d")
        );
        assert_eq!(url_param("token=x%", "token").as_deref(), Some("x%"));
        assert_eq!(url_param("token=%zz", "token").as_deref(), Some("%zz"));
        assert_eq!(url_param("a=1", "token"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdefgh", b"abcdefgh"));
        assert!(!same_secret(b"abcdefgh", b"abcdefgX"));
        assert!(!same_secret(b"abc", b"abcdefgh"));
    }
}
