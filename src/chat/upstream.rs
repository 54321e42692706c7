//! The model server behind the chat gateway: any OpenAI-compatible `/chat/completions`
//! endpoint, or the built-in echo upstream when none is configured.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

/// One message of the conversation sent upstream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Tokens the upstream reports having used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
}

/// A piece of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// More text.
    Text(String),
    /// Token counts, when the upstream reports them (at the end).
    Usage(Tokens),
}

/// Why the upstream gave no answer. Never carries the upstream's body or secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    /// No answer in time.
    #[error("the model server did not answer in time")]
    Timeout,
    /// A refused connection, an error status or an unreadable answer.
    #[error("the model server failed ({0})")]
    Failed(String),
}

/// The pieces of an answer as they come.
pub type Pieces = Pin<Box<dyn Stream<Item = Result<Piece, UpstreamError>> + Send>>;

/// The configured model server.
#[derive(Clone)]
pub enum Upstream {
    /// Answers with the user's message, saying plainly that it is the echo upstream.
    Echo,
    /// An OpenAI-compatible server.
    OpenAi {
        /// Client with the connect timeout set.
        client: reqwest::Client,
        /// `…/chat/completions`.
        url: String,
        /// Sent as `Authorization: Bearer`; never logged.
        api_key: Option<crate::config::SecretString>,
        /// Longest wait for the first byte of the answer, and between two pieces.
        timeout: Duration,
    },
}

impl Upstream {
    /// The upstream of a configuration: `url` is the server's base (`…/v1`) or the full
    /// `…/chat/completions` URL.
    pub fn new(
        url: Option<&str>,
        api_key: Option<crate::config::SecretString>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let Some(url) = url else {
            return Ok(Upstream::Echo);
        };
        let url = url.trim_end_matches('/');
        let url = if url.ends_with("/chat/completions") {
            url.to_string()
        } else {
            format!("{url}/chat/completions")
        };
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()?;
        Ok(Upstream::OpenAi {
            client,
            url,
            api_key,
            timeout,
        })
    }

    /// `echo` or `openai`.
    pub fn name(&self) -> &'static str {
        match self {
            Upstream::Echo => "echo",
            Upstream::OpenAi { .. } => "openai",
        }
    }

    /// Asks `model` for an answer to `history` (oldest first, the new message last), of at
    /// most `max_tokens` when given. `context` and `user` are passed along unchanged.
    pub async fn answer(
        &self,
        history: &[Turn],
        context: Option<&Value>,
        user: Option<&str>,
        model: &str,
        max_tokens: Option<u32>,
    ) -> Result<Pieces, UpstreamError> {
        match self {
            Upstream::Echo => Ok(Box::pin(futures_util::stream::iter(echo(
                history, max_tokens,
            )))),
            Upstream::OpenAi {
                client,
                url,
                api_key,
                timeout,
            } => {
                let mut body = json!({
                    "model": model,
                    "messages": history,
                    "stream": true,
                    "stream_options": { "include_usage": true },
                });
                if let Some(n) = max_tokens {
                    body["max_tokens"] = json!(n);
                }
                if let Some(c) = context {
                    body["context"] = c.clone();
                }
                if let Some(u) = user {
                    body["user"] = json!(u);
                }
                // Until the answer's headers; the model server continues the request's trace.
                let span = tracing::debug_span!("upstream", otel.name = "POST chat/completions", otel.kind = "client", model = %model);
                let mut req = client
                    .post(url)
                    .json(&body)
                    .headers(span.in_scope(crate::telemetry::outgoing));
                if let Some(k) = api_key {
                    req = req.bearer_auth(k.expose_secret());
                }
                let res = tokio::time::timeout(*timeout, req.send())
                    .instrument(span.clone())
                    .await
                    .map_err(|_| UpstreamError::Timeout)?
                    .map_err(|e| {
                        if e.is_timeout() {
                            UpstreamError::Timeout
                        } else if e.is_connect() {
                            UpstreamError::Failed("connection refused".into())
                        } else {
                            UpstreamError::Failed("request failed".into())
                        }
                    })?;
                let status = res.status();
                crate::telemetry::attribute(
                    &span,
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                );
                if !status.is_success() {
                    // The body may echo secrets or prompts: only the status is kept.
                    return Err(UpstreamError::Failed(format!("status {}", status.as_u16())));
                }
                let sse = res
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/event-stream"));
                if !sse {
                    // A server that ignored `stream: true` answers one JSON document.
                    let doc: Value = tokio::time::timeout(*timeout, res.json())
                        .await
                        .map_err(|_| UpstreamError::Timeout)?
                        .map_err(|_| UpstreamError::Failed("unreadable answer".into()))?;
                    let text = doc["choices"][0]["message"]["content"]
                        .as_str()
                        .ok_or_else(|| UpstreamError::Failed("unreadable answer".into()))?
                        .to_string();
                    let mut pieces = vec![Ok(Piece::Text(text))];
                    if let Some(t) = tokens(&doc) {
                        pieces.push(Ok(Piece::Usage(t)));
                    }
                    return Ok(Box::pin(futures_util::stream::iter(pieces)));
                }
                Ok(Box::pin(sse_pieces(res, *timeout)))
            }
        }
    }
}

/// Bytes per token in the echo upstream's counts: a rough rule for English text, enough for
/// `serve --dev` to show spend (docs/spend.md).
const ECHO_BYTES_PER_TOKEN: usize = 4;

/// The echo upstream's answer, word by word, cut at `max_tokens`, then its token counts:
/// a quarter of the bytes sent and answered, rounded up.
fn echo(history: &[Turn], max_tokens: Option<u32>) -> Vec<Result<Piece, UpstreamError>> {
    let last = history.last().map(|t| t.content.as_str()).unwrap_or("");
    let mut text = format!(
        "Echo upstream (no model server is configured; set GATEHOUSE_UPSTREAM_URL): {last}"
    );
    if let Some(m) = max_tokens {
        let most = (m as usize).saturating_mul(ECHO_BYTES_PER_TOKEN);
        if text.len() > most {
            let mut end = most;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
    }
    let tokens = |bytes: usize| bytes.div_ceil(ECHO_BYTES_PER_TOKEN) as u64;
    let prompt: usize = history.iter().map(|t| t.content.len()).sum();
    let usage = Tokens {
        prompt: tokens(prompt),
        completion: tokens(text.len()),
    };
    let mut pieces: Vec<Result<Piece, UpstreamError>> = text
        .split_inclusive(' ')
        .map(|w| Ok(Piece::Text(w.to_string())))
        .collect();
    pieces.push(Ok(Piece::Usage(usage)));
    pieces
}

fn tokens(doc: &Value) -> Option<Tokens> {
    let u = doc.get("usage")?;
    Some(Tokens {
        prompt: u["prompt_tokens"].as_u64().unwrap_or(0),
        completion: u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// Reads `data: {…}` events until `data: [DONE]`. Each wait is bounded by `timeout`.
fn sse_pieces(
    res: reqwest::Response,
    timeout: Duration,
) -> impl Stream<Item = Result<Piece, UpstreamError>> + Send {
    use eventsource_stream::Eventsource;
    let events = res.bytes_stream().eventsource();
    futures_util::stream::unfold(
        (Box::pin(events), Vec::<Piece>::new(), false),
        move |(mut events, mut pending, done)| async move {
            loop {
                if let Some(p) = pending.pop() {
                    return Some((Ok(p), (events, pending, done)));
                }
                if done {
                    return None;
                }
                let next = match tokio::time::timeout(timeout, events.next()).await {
                    Err(_) => return Some((Err(UpstreamError::Timeout), (events, pending, true))),
                    Ok(None) => return None,
                    Ok(Some(Err(_))) => {
                        let e = UpstreamError::Failed("broken stream".into());
                        return Some((Err(e), (events, pending, true)));
                    }
                    Ok(Some(Ok(ev))) => ev,
                };
                if next.data.trim() == "[DONE]" {
                    return None;
                }
                let Ok(doc) = serde_json::from_str::<Value>(&next.data) else {
                    continue;
                };
                // Pieces are popped from the end: push usage first so text comes out first.
                if let Some(t) = tokens(&doc).filter(|_| !doc["usage"].is_null()) {
                    pending.push(Piece::Usage(t));
                }
                if let Some(text) = doc["choices"][0]["delta"]["content"].as_str() {
                    if !text.is_empty() {
                        pending.push(Piece::Text(text.to_string()));
                    }
                }
            }
        },
    )
}
