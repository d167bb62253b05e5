//! The HTTP API (axum): routes, authentication, errors, the event stream and downloads.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::lab::{ApiError, Lab};
use super::{SubmitRequest, TargetRegistration};

/// Most event streams open at once (each holds a buffer of recent events).
const MAX_STREAMS: usize = 256;

#[derive(Clone)]
struct AppState {
    lab: Arc<Lab>,
    streams: Arc<tokio::sync::Semaphore>,
    /// Ends the event streams when the service stops.
    stop: tokio_util::sync::CancellationToken,
}

pub(crate) fn router(
    lab: Arc<Lab>,
    body_limit: usize,
    stop: tokio_util::sync::CancellationToken,
) -> Router {
    let state = AppState {
        lab,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        stop,
    };
    // Targets register with the enrollment token (or the admin token).
    let enroll = Router::new()
        .route("/api/v1/targets", post(register))
        .route(
            "/api/v1/targets/{target}",
            axum::routing::delete(deregister),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), enroll_auth));
    let admin = Router::new()
        .route("/api/v1/experiments", get(list).post(submit))
        .route("/api/v1/experiments/validate", post(validate))
        .route("/api/v1/experiments/{id}", get(one))
        .route("/api/v1/experiments/{id}/pause", post(pause))
        .route("/api/v1/experiments/{id}/resume", post(resume))
        .route("/api/v1/experiments/{id}/cancel", post(cancel))
        .route("/api/v1/experiments/{id}/retry-bad", post(retry_bad))
        .route("/api/v1/experiments/{id}/results", get(results))
        .route("/api/v1/experiments/{id}/results/{file}", get(download))
        .route("/api/v1/targets", get(targets))
        .route("/api/v1/targets/{target}/drain", post(drain))
        .route("/api/v1/targets/{target}/quarantine", post(quarantine))
        .route("/api/v1/targets/{target}/release", post(release))
        .route("/api/v1/events", get(events))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(enroll)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Bad {
                message,
                line,
                column,
            } => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": message, "line": line, "column": column }),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, serde_json::json!({ "error": m })),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, serde_json::json!({ "error": m })),
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({ "error": m }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

fn unauthorized(what: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "error": format!("{what}: expected the header Authorization: Bearer TOKEN with the service's token")
        })),
    )
        .into_response()
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let rest = v.strip_prefix(b"Bearer ")?;
    Some(rest.trim_ascii())
}

fn same(a: &[u8], b: &str) -> bool {
    // Constant time for equal lengths; tokens have one fixed length.
    a.ct_eq(b.as_bytes()).into()
}

async fn admin_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(t) if same(t, s.lab.token()) => next.run(req).await,
        Some(_) => unauthorized("wrong token"),
        None => unauthorized("no token"),
    }
}

async fn enroll_auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(t) if same(t, s.lab.token()) || same(t, s.lab.enroll_token()) => next.run(req).await,
        Some(_) => unauthorized("wrong token"),
        None => unauthorized("no token"),
    }
}

/// A JSON body, with a 400 that names what was wrong.
struct JsonBody<T>(T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e| {
                    let status = e.status();
                    (
                status,
                Json(serde_json::json!({ "error": format!("request body: {}", e.body_text()) })),
            )
                .into_response()
                })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::Bad {
                message: format!("request body: {e}"),
                line: Some(e.line()),
                column: Some(e.column()),
            }
            .into_response()
        })
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("no experiment {id:?} (ids are numbers)")))
}

async fn dashboard() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        Html(super::dashboard::PAGE),
    )
}

/// A JSON answer built at most every `VIEW_TTL` (lab.rs) per key (many clients polling the same
/// status share one rendering; any state change renders afresh).
fn json_bytes(bytes: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    let bytes = s.lab.cached_json(None, || Ok(s.lab.experiments()))?;
    Ok(json_bytes(bytes))
}

async fn submit(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let done = s.lab.submit(req).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

async fn validate(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<SubmitRequest>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.validate(&req)?))
}

async fn one(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let bytes = s.lab.cached_json(Some(id), || s.lab.experiment(id))?;
    Ok(json_bytes(bytes))
}

async fn pause(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.control(parse_id(&id)?, "pause").await?))
}

async fn resume(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.control(parse_id(&id)?, "resume").await?))
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.control(parse_id(&id)?, "cancel").await?))
}

async fn retry_bad(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.retry_bad(parse_id(&id)?).await?))
}

async fn results(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let files = s.lab.result_files(parse_id(&id)?)?;
    Ok(Json(
        files
            .into_iter()
            .map(|(name, size)| serde_json::json!({ "name": name, "size": size }))
            .collect::<Vec<_>>(),
    ))
}

async fn download(
    State(s): State<AppState>,
    Path((id, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = s.lab.result_file(parse_id(&id)?, &file)?;
    let f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    let len = f.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(f);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    Ok(resp)
}

async fn targets(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.lab.targets())
}

async fn register(
    State(s): State<AppState>,
    JsonBody(reg): JsonBody<TargetRegistration>,
) -> Result<impl IntoResponse, ApiError> {
    Ok((StatusCode::CREATED, Json(s.lab.register(reg).await?)))
}

async fn deregister(
    State(s): State<AppState>,
    Path(target): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    s.lab.deregister(&target).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn drain(
    State(s): State<AppState>,
    Path(target): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.target_action(&target, "drain", None)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

async fn quarantine(
    State(s): State<AppState>,
    Path(target): Path<String>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let reason: Reason = if body.is_empty() {
        Reason::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Bad {
            message: format!("request body: {e}; expected {{\"reason\": \"...\"}}"),
            line: Some(e.line()),
            column: Some(e.column()),
        })?
    };
    Ok(Json(s.lab.target_action(
        &target,
        "quarantine",
        reason.reason.as_deref(),
    )?))
}

async fn release(
    State(s): State<AppState>,
    Path(target): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(s.lab.target_action(&target, "release", None)?))
}

async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = super::metrics::render(&s.lab.experiments(), &s.lab.targets(), &s.lab.lifecycle())
        .map_err(|e| ApiError::Internal(format!("metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// Server-sent events: the current state of every experiment and target first, then each
/// change. A client too slow to keep up misses intermediate states, not the latest one.
async fn events(State(s): State<AppState>) -> Result<Response, ApiError> {
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return Err(ApiError::Conflict(format!(
            "{MAX_STREAMS} event streams are open; close one first"
        )));
    };
    let rx = s.lab.subscribe();
    let first = s.lab.state_frames();
    let initial = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(first))
    });
    let stop = s.stop.clone();
    let lab = s.lab.clone();
    let updates = futures::stream::unfold((rx, permit), move |(mut rx, permit)| {
        let stop = stop.clone();
        let lab = lab.clone();
        async move {
            let keepalive = tokio::time::sleep(std::time::Duration::from_secs(15));
            let frame = tokio::select! {
                _ = stop.cancelled() => return None,
                r = rx.recv() => match r {
                    Ok(frame) => axum::body::Bytes::from(frame.as_bytes().to_vec()),
                    // Too slow to keep up: frames were dropped, so send the whole current
                    // state (the latest of everything) instead.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        axum::body::Bytes::from(lab.state_frames())
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                _ = keepalive => axum::body::Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok(frame), (rx, permit)))
        }
    });
    use futures::StreamExt;
    let body = Body::from_stream(initial.chain(updates));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
