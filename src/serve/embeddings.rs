//! The embedding APIs other tools already speak, over the server's model: OpenAI's
//! `POST /v1/embeddings` and `GET /v1/models`, and text-embeddings-inference's `POST /embed` and
//! `POST /similarity`. Their vectors are `likewise embed`'s (and so sentence-transformers'): the
//! document prompt, truncated at the model's window, pooled and normalised as the model says;
//! concurrent calls share the server's batches with search passages.
//!
//! Each API answers its errors in its own shape — OpenAI's `{"error": {"message", "type",
//! "param", "code"}}`, TEI's `{"error", "error_type"}` — so its clients raise their own, clear
//! exceptions. Input given as token ids (what LangChain's OpenAI class sends unless told
//! otherwise) is refused, never embedded as numbers: this model reads text.

use super::shared::{parse_json, ApiError, Shared};
use crate::engine::EngineError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Most texts one call may embed (OpenAI's own limit); the body cap and the time limit bound
/// the work further.
pub const MAX_INPUTS: usize = 2048;

// ---- OpenAI ------------------------------------------------------------------------------

/// An error in OpenAI's shape.
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl OpenAiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }
}

/// OpenAI's error body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody {
    error: OpenAiErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: Option<&'static str>,
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let kind = match e.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        OpenAiError {
            status: e.status,
            message: e.message,
            kind,
            param: None,
            code: None,
        }
    }
}

/// `input` as OpenAI defines it: a string, an array of strings, or token ids (refused).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OpenAiInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`, as OpenAI's API takes it.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct OpenAiRequest {
    /// A text or an array of texts (at most 2,048). Token ids are refused.
    input: OpenAiInput,
    /// The server's model: its full name (`sentence-transformers/all-MiniLM-L6-v2`) or its short
    /// name (`all-MiniLM-L6-v2`).
    model: String,
    /// `float` (the default) or `base64` (little-endian float32, what OpenAI's SDKs ask for).
    #[serde(default)]
    encoding_format: Option<String>,
    /// Must be the model's dimension when given: vectors are not shortened.
    #[serde(default)]
    dimensions: Option<usize>,
    /// Accepted and ignored, as OpenAI's API documents it.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Why token ids are refused, and how to send text instead.
fn token_ids_refused(what: String) -> OpenAiError {
    OpenAiError::invalid(
        format!("`input` holds {what}, not text: this server's model reads text through its own tokenizer, and another tokenizer's ids would be embedded as the wrong words. Send the texts as strings (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False; LlamaIndex and the OpenAI SDKs send strings already)"),
        Some("input"),
    )
}

/// One vector: floats, or their bytes in base64.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OpenAiVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiEmbedding {
    object: &'static str,
    index: usize,
    embedding: OpenAiVector,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiUsage {
    /// Word pieces the model read (special tokens included, after truncation).
    prompt_tokens: usize,
    total_tokens: usize,
}

/// The answer of `POST /v1/embeddings`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiResponse {
    object: &'static str,
    data: Vec<OpenAiEmbedding>,
    model: String,
    usage: OpenAiUsage,
}

/// The loaded model's full name, or an error in the caller's shape when it cannot load.
async fn model_name(app: &Shared) -> Result<crate::model::ModelIdentity, ApiError> {
    let app = app.clone();
    super::shared::blocking(move || Ok(app.engine.encoder()?.identity().clone())).await
}

/// Whether `asked` names the model `identity` (full name, or the part after its owner).
fn names_model(asked: &str, identity: &crate::model::ModelIdentity) -> bool {
    let short = identity.name.rsplit('/').next().unwrap_or(&identity.name);
    asked == identity.name || asked.eq_ignore_ascii_case(short)
}

/// Texts embedded as `likewise embed` does, with their word-piece counts.
async fn embed(app: &Shared, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let app = app.clone();
    super::shared::blocking(move || {
        let tokens = app
            .engine
            .measure_texts(&texts)?
            .iter()
            .map(|(pieces, _)| pieces)
            .sum();
        Ok((app.engine.embed_documents(&texts)?, tokens))
    })
    .await
}

/// Embeds texts with the server's model, as OpenAI's embeddings API does: the vectors of
/// `likewise embed`.
#[utoipa::path(post, path = "/v1/embeddings", tag = "embeddings",
    request_body = OpenAiRequest,
    responses(
        (status = 200, description = "One vector per input, in order", body = OpenAiResponse),
        (status = 400, description = "A bad request: token ids, an empty text, too many inputs, another dimension", body = OpenAiErrorBody),
        (status = 404, description = "Another model than the server's", body = OpenAiErrorBody),
    ))]
pub async fn openai_embeddings(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<OpenAiResponse>, OpenAiError> {
    let req: OpenAiRequest = parse_json(&body.map_err(ApiError::from)?)?;
    let identity = model_name(&app).await?;
    if !names_model(&req.model, &identity) {
        return Err(OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{}` does not exist on this server: it serves `{}` (or `{}`)",
                req.model,
                identity.name,
                identity.name.rsplit('/').next().unwrap_or(&identity.name)
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        });
    }
    let texts = match req.input {
        OpenAiInput::One(t) => vec![t],
        OpenAiInput::Many(ts) => ts,
        OpenAiInput::Tokens(ids) => {
            return Err(token_ids_refused(format!("{} token ids", ids.len())))
        }
        OpenAiInput::TokenLists(lists) => {
            return Err(token_ids_refused(format!(
                "{} lists of token ids",
                lists.len()
            )))
        }
    };
    if texts.is_empty() {
        return Err(OpenAiError::invalid(
            "`input` is an empty array",
            Some("input"),
        ));
    }
    if texts.len() > MAX_INPUTS {
        return Err(OpenAiError::invalid(
            format!(
                "`input` has {} texts; at most {MAX_INPUTS} per request",
                texts.len()
            ),
            Some("input"),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(OpenAiError::invalid(
            format!("`input[{i}]` is empty: there is nothing to embed"),
            Some("input"),
        ));
    }
    if let Some(d) = req.dimensions {
        if d != identity.dim {
            return Err(OpenAiError::invalid(
                format!(
                    "`dimensions` is {d}; this model's vectors have {} dimensions and are not shortened (leave `dimensions` out)",
                    identity.dim
                ),
                Some("dimensions"),
            ));
        }
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                format!("`encoding_format` is {other:?}; it is `float` or `base64`"),
                Some("encoding_format"),
            ))
        }
    };
    let (vectors, tokens) = embed(&app, texts).await?;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                OpenAiVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                OpenAiVector::Float(v)
            },
        })
        .collect();
    Ok(Json(OpenAiResponse {
        object: "list",
        data,
        model: identity.name,
        usage: OpenAiUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

/// One model as OpenAI's API lists it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiModel {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiModels {
    object: &'static str,
    data: Vec<OpenAiModel>,
}

/// The server's model, as OpenAI's `GET /v1/models` lists models.
#[utoipa::path(get, path = "/v1/models", tag = "embeddings",
    responses((status = 200, description = "The one model this server embeds with", body = OpenAiModels)))]
pub async fn openai_models(State(app): State<Shared>) -> Result<Json<OpenAiModels>, OpenAiError> {
    let identity = model_name(&app).await?;
    let owner = identity
        .name
        .split_once('/')
        .map(|(o, _)| o.to_string())
        .unwrap_or_else(|| "likewise".into());
    Ok(Json(OpenAiModels {
        object: "list",
        data: vec![OpenAiModel {
            id: identity.name.clone(),
            object: "model",
            created: 0,
            owned_by: owner,
        }],
    }))
}

// ---- text-embeddings-inference -----------------------------------------------------------

/// An error in TEI's shape.
pub struct TeiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TeiErrorBody {
    error: String,
    error_type: &'static str,
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        let body = TeiErrorBody {
            error: self.message,
            error_type: self.kind,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ApiError> for TeiError {
    fn from(e: ApiError) -> Self {
        let kind = match e.status.as_u16() {
            400..=499 => "Validation",
            _ => "Backend",
        };
        TeiError {
            status: e.status,
            message: e.message,
            kind,
        }
    }
}

fn tei_invalid(message: impl Into<String>) -> TeiError {
    TeiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: message.into(),
        kind: "Validation",
    }
}

/// A text or a list of texts.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TeiInputs {
    One(String),
    Many(Vec<String>),
}

/// `POST /embed`, as text-embeddings-inference takes it.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TeiEmbedRequest {
    inputs: TeiInputs,
    /// Unit-length vectors (the default). `false` gives the model's own output, which for a
    /// model ending in a Normalize module (all-MiniLM-L6-v2) is unit length all the same.
    #[serde(default = "yes")]
    normalize: bool,
    /// Cut a text longer than the model's window (`false`, the default, refuses it).
    #[serde(default)]
    truncate: bool,
}

fn yes() -> bool {
    true
}

/// Checks TEI's inputs: not empty, within the count, each within the window unless `truncate`.
async fn tei_texts(app: &Shared, texts: &[String], truncate: bool) -> Result<(), TeiError> {
    if texts.is_empty() {
        return Err(tei_invalid("`inputs` cannot be empty"));
    }
    if texts.len() > MAX_INPUTS {
        return Err(TeiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "batch size {} > maximum allowed batch size {MAX_INPUTS}",
                texts.len()
            ),
            kind: "Validation",
        });
    }
    if let Some(i) = texts.iter().position(|t| t.trim().is_empty()) {
        return Err(tei_invalid(format!("`inputs[{i}]` cannot be empty")));
    }
    if !truncate {
        let measured = {
            let app = app.clone();
            let texts = texts.to_vec();
            super::shared::blocking(move || app.engine.measure_texts(&texts)).await?
        };
        if let Some(i) = measured.iter().position(|(_, cut)| *cut) {
            let window = model_name(app).await?.max_seq_length;
            return Err(tei_invalid(format!(
                "`inputs[{i}]` is longer than the model's window of {window} word pieces; send `\"truncate\": true` to embed its beginning"
            )));
        }
    }
    Ok(())
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Embeds texts as text-embeddings-inference's `/embed` does.
#[utoipa::path(post, path = "/embed", tag = "embeddings",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, description = "One vector per input", body = Vec<Vec<f32>>),
        (status = 413, description = "Too many inputs", body = TeiErrorBody),
        (status = 422, description = "An empty input, or one over the window without truncate", body = TeiErrorBody),
    ))]
pub async fn tei_embed(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<Vec<f32>>>, TeiError> {
    let body = body.map_err(ApiError::from)?;
    let req: TeiEmbedRequest = parse_json(&body).map_err(|e| tei_invalid(e.message))?;
    let texts = match req.inputs {
        TeiInputs::One(t) => vec![t],
        TeiInputs::Many(ts) => ts,
    };
    tei_texts(&app, &texts, req.truncate).await?;
    let (vectors, _) = embed(&app, texts).await?;
    Ok(Json(if req.normalize {
        vectors.into_iter().map(unit).collect()
    } else {
        vectors
    }))
}

/// TEI's `/similarity` inputs: one sentence against others.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TeiSimilarityInputs {
    source_sentence: String,
    sentences: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct TeiSimilarityRequest {
    inputs: TeiSimilarityInputs,
    #[serde(default)]
    truncate: bool,
}

/// The cosine of `source_sentence` with each of `sentences`, as text-embeddings-inference's
/// `/similarity` gives it.
#[utoipa::path(post, path = "/similarity", tag = "embeddings",
    request_body = TeiSimilarityRequest,
    responses(
        (status = 200, description = "One cosine per sentence, in order", body = Vec<f32>),
        (status = 413, description = "Too many sentences", body = TeiErrorBody),
        (status = 422, description = "An empty sentence, or one over the window without truncate", body = TeiErrorBody),
    ))]
pub async fn tei_similarity(
    State(app): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<f32>>, TeiError> {
    let body = body.map_err(ApiError::from)?;
    let req: TeiSimilarityRequest = parse_json(&body).map_err(|e| tei_invalid(e.message))?;
    let mut texts = vec![req.inputs.source_sentence];
    texts.extend(req.inputs.sentences);
    if texts.len() == 1 {
        return Err(tei_invalid("`sentences` cannot be empty"));
    }
    tei_texts(&app, &texts, req.truncate).await?;
    let (vectors, _) = embed(&app, texts).await?;
    let mut vectors = vectors.into_iter().map(unit);
    let source = vectors.next().unwrap_or_default();
    Ok(Json(
        vectors
            .map(|v| v.iter().zip(&source).map(|(a, b)| a * b).sum())
            .collect(),
    ))
}

impl From<EngineError> for TeiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<EngineError> for OpenAiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}
