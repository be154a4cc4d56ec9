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

mod api;
mod embeddings;
mod follow;
mod openapi;
mod shared;

pub use shared::ServeArgs;

use crate::engine::{Engine, EngineError};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use shared::{ApiError, App, Shared};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The page, compiled into the binary: it works offline, with nothing else installed.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/app.js");
const PAGE_CSS: &str = include_str!("page/style.css");

const TOKEN_COOKIE: &str = "likewise_token";

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
    // The page's own files answer in text; every API (likewise's, OpenAI's, TEI's, MCP's) in JSON.
    if !matches!(path.as_str(), "/" | "/app.js" | "/style.css") {
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

/// The MCP tools of `likewise mcp` over MCP's streamable HTTP transport, stateless (each
/// request stands alone, so nothing is held open across a stop). On loopback, `Host` must be a
/// loopback name (rmcp's guard against DNS rebinding); elsewhere the token guards it, as it
/// guards the rest.
fn mcp_service(
    app: &Shared,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    crate::mcp::Tools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let mut config = StreamableHttpServerConfig::default();
    config.legacy_session_mode = false;
    config.json_response = true;
    config.sse_keep_alive = None;
    config.max_request_body_bytes = app.args.max_body;
    if !app.args.addr.ip().is_loopback() {
        config = config.disable_allowed_hosts();
    }
    let engine = app.engine.clone();
    let allow_index = app.args.allow_index;
    StreamableHttpService::new(
        move || Ok(crate::mcp::Tools::new(engine.clone(), allow_index)),
        Default::default(),
        config,
    )
}

/// The router: the page, the API, and the layers that guard them.
fn router(app: Shared) -> Router {
    let mut api = Router::new()
        .route("/api/health", get(api::health))
        .route("/api/query", post(api::query))
        .route("/api/articles", post(api::add_articles))
        .route("/api/articles/{*key}", get(api::article))
        .route("/api/compare", get(api::compare))
        .route("/api/clusters", get(api::clusters))
        .route("/api/dupes", get(api::dupes))
        .route("/api/info", get(api::info))
        .route("/api/map", get(api::map))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/alerts", get(follow::list).post(follow::add))
        .route("/api/alerts/log", get(follow::log))
        .route("/api/alerts/stream", get(follow::stream))
        .route("/api/alerts/{name}", axum::routing::delete(follow::remove))
        .route("/api/stories", get(follow::stories))
        .route("/api/stories/{id}", get(follow::story))
        .route("/v1/embeddings", post(embeddings::openai_embeddings))
        .route("/v1/models", get(embeddings::openai_models))
        .route("/embed", post(embeddings::tei_embed))
        .route("/similarity", post(embeddings::tei_similarity))
        .route_service("/mcp", mcp_service(&app))
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
        .method_not_allowed_fallback(api::method_not_allowed)
        .fallback(api::not_found)
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
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
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
    let (events, _) = tokio::sync::broadcast::channel(1024);
    let app = Arc::new(App {
        engine: Arc::new(engine),
        args: args.clone(),
        writing: Mutex::new(()),
        events,
    });
    let stop_watching = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = follow::start_watcher(&app, stop_watching.clone())?;
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
    let served = runtime.block_on(serve(app, args.clone()));
    stop_watching.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(w) = watcher {
        // The watcher commits the batch in progress, then returns.
        let _ = w.join();
    }
    served
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
    tokio::spawn(follow::tail_alert_log(app.clone()));
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
