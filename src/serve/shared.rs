//! What every part of the server shares: its arguments, the state handlers see, the API's
//! error and its JSON body, and running engine calls off the async threads.

use crate::engine::{Engine, EngineError};
use crate::store::StoreError;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
    /// Keep the store up to date with this folder while serving, as `likewise watch` does
    /// (repeatable); the page shows what arrives, live.
    #[arg(long = "watch")]
    pub watch: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub sources: crate::watch::SourceArgs,
}

/// What every handler shares.
pub struct App {
    /// Shared with the MCP tools served at `/mcp`.
    pub engine: Arc<Engine>,
    pub args: ServeArgs,
    /// One `POST /api/articles` at a time inside this server (the store's lock keeps other
    /// processes out).
    pub writing: Mutex<()>,
    /// What arrives, for `/api/alerts/stream`: (event name, JSON).
    pub events: tokio::sync::broadcast::Sender<(String, String)>,
}

pub type Shared = Arc<App>;

/// An error as the API returns it.
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

pub type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs `work` on a blocking thread (engine calls use the CPU for milliseconds to seconds); a
/// panic inside becomes a 500 with a message, never a dead server.
pub async fn blocking<T: Send + 'static>(
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

pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}
