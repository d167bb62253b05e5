//! A client of the service's HTTP API (what `taskdist submit`, `status`, ... use).

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::{ExperimentView, SubmitRequest, Submitted, TargetRegistration, TargetView, Validated};

/// What can go wrong talking to the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server address is not a valid `http://HOST:PORT` URL.
    #[error("server address {0:?}: expected http://HOST:PORT")]
    Address(String),
    /// The service cannot be reached.
    #[error("cannot reach the service at {url}: {message}")]
    Unreachable {
        /// The address.
        url: String,
        /// Why.
        message: String,
    },
    /// The service answered with an error.
    #[error("{status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The service's message (with line and column for a spec error).
        message: String,
    },
    /// A download could not be written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl ClientError {
    /// The HTTP status, for errors the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Longest wait for an answer (and, in a download, for each chunk).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A result file of an experiment.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct ResultFile {
    /// Its name in the experiment's directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A client of one service.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the service at `server` (`http://HOST:PORT`) with `token`.
    pub fn new(server: &str, token: &str) -> Result<Client, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        let ok = reqwest::Url::parse(&base)
            .map(|u| u.scheme() == "http" && u.host().is_some())
            .unwrap_or(false);
        if !ok {
            return Err(ClientError::Address(server.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.clone(),
                message: e.to_string(),
            })?;
        Ok(Client {
            base,
            token: token.trim().to_owned(),
            http,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<reqwest::Response, ClientError> {
        self.send_with(method, path, body, Some(REQUEST_TIMEOUT))
            .await
    }

    /// `timeout` bounds the whole exchange; downloads bound each chunk instead.
    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<std::time::Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut message = v["error"].as_str().unwrap_or(text.trim()).to_owned();
        if let (Some(l), Some(c)) = (v["line"].as_u64(), v["column"].as_u64()) {
            if !message.contains(&format!(":{l}:{c}")) {
                message = format!("line {l}, column {c}: {message}");
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            message = format!("{message} (set TASKDIST_TOKEN to the content of DATA/token)");
        }
        Err(ClientError::Status {
            status: status.as_u16(),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body).await?;
        resp.json().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: format!("unexpected answer: {e}"),
        })
    }

    fn body<T: serde::Serialize>(v: &T) -> Option<serde_json::Value> {
        serde_json::to_value(v).ok()
    }

    /// Submit an experiment.
    pub async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ClientError> {
        self.json(Method::POST, "/api/v1/experiments", Self::body(req))
            .await
    }

    /// Check a request without running it.
    pub async fn validate(&self, req: &SubmitRequest) -> Result<Validated, ClientError> {
        self.json(
            Method::POST,
            "/api/v1/experiments/validate",
            Self::body(req),
        )
        .await
    }

    /// Every experiment.
    pub async fn experiments(&self) -> Result<Vec<ExperimentView>, ClientError> {
        self.json(Method::GET, "/api/v1/experiments", None).await
    }

    /// One experiment.
    pub async fn experiment(&self, id: u64) -> Result<ExperimentView, ClientError> {
        self.json(Method::GET, &format!("/api/v1/experiments/{id}"), None)
            .await
    }

    /// `pause`, `resume`, `cancel` or `retry-bad`.
    pub async fn act(&self, id: u64, action: &str) -> Result<ExperimentView, ClientError> {
        self.json(
            Method::POST,
            &format!("/api/v1/experiments/{id}/{action}"),
            None,
        )
        .await
    }

    /// The pool's targets.
    pub async fn targets(&self) -> Result<Vec<TargetView>, ClientError> {
        self.json(Method::GET, "/api/v1/targets", None).await
    }

    /// Register a target (with the admin or the enrollment token).
    pub async fn register(&self, reg: &TargetRegistration) -> Result<TargetView, ClientError> {
        self.json(Method::POST, "/api/v1/targets", Self::body(reg))
            .await
    }

    /// Deregister a target (`ADDRESS:PORT`).
    pub async fn deregister(&self, target: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/api/v1/targets/{target}"), None)
            .await
            .map(|_| ())
    }

    /// `drain`, `quarantine` (with a reason) or `release` a target.
    pub async fn target_action(
        &self,
        target: &str,
        action: &str,
        reason: Option<&str>,
    ) -> Result<TargetView, ClientError> {
        let body = reason.map(|r| serde_json::json!({ "reason": r }));
        self.json(
            Method::POST,
            &format!("/api/v1/targets/{target}/{action}"),
            body,
        )
        .await
    }

    /// The result files of an experiment.
    pub async fn result_files(&self, id: u64) -> Result<Vec<ResultFile>, ClientError> {
        self.json(
            Method::GET,
            &format!("/api/v1/experiments/{id}/results"),
            None,
        )
        .await
    }

    /// Download every result file of an experiment into `out` (created if needed); returns
    /// the files written. A file is written under a temporary name and renamed when complete.
    pub async fn download_results(
        &self,
        id: u64,
        out: &Path,
    ) -> Result<Vec<ResultFile>, ClientError> {
        use tokio::io::AsyncWriteExt;
        let io = |p: &Path, e: std::io::Error| ClientError::Io {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        let files = self.result_files(id).await?;
        tokio::fs::create_dir_all(out)
            .await
            .map_err(|e| io(out, e))?;
        for f in &files {
            // A plain file name, as the service lists them: nothing that leaves `out`.
            let plain = !f.name.is_empty()
                && !f.name.starts_with('.')
                && f.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !plain {
                return Err(ClientError::Status {
                    status: 502,
                    message: format!("the service listed a result file named {:?}", f.name),
                });
            }
            let mut resp = self
                .send_with(
                    Method::GET,
                    &format!("/api/v1/experiments/{id}/results/{}", f.name),
                    None,
                    None,
                )
                .await?;
            let path = out.join(&f.name);
            let part = out.join(format!(".{}.part", f.name));
            let mut file = tokio::fs::File::create(&part)
                .await
                .map_err(|e| io(&part, e))?;
            loop {
                let next = tokio::time::timeout(REQUEST_TIMEOUT, resp.chunk())
                    .await
                    .map_err(|_| ClientError::Unreachable {
                        url: self.base.clone(),
                        message: format!(
                            "download of {}: nothing received for {} s",
                            f.name,
                            REQUEST_TIMEOUT.as_secs()
                        ),
                    })?;
                let Some(chunk) = next.map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    message: format!("download of {}: {e}", f.name),
                })?
                else {
                    break;
                };
                file.write_all(&chunk).await.map_err(|e| io(&part, e))?;
            }
            file.flush().await.map_err(|e| io(&part, e))?;
            drop(file);
            tokio::fs::rename(&part, &path)
                .await
                .map_err(|e| io(&path, e))?;
        }
        Ok(files)
    }
}
