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

/// One streamed chunk of an OpenAI-compatible answer, as far as the gateway reads it: the
/// first choice's text and the usage. Borrowed from the event's text, so a usual chunk costs
/// no allocation beyond the text it carries (a `serde_json::Value` of the whole chunk was
/// about twenty, once per token of every stream).
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<ChunkDelta<'a>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// The pieces of one `data:` chunk, pushed in reverse (they are popped from the end): usage
/// first so the text comes out first. A chunk that is not JSON yields nothing.
fn chunk_pieces(data: &str, pending: &mut Vec<Piece>) {
    match serde_json::from_str::<Chunk<'_>>(data) {
        Ok(c) => {
            if let Some(u) = c.usage {
                pending.push(Piece::Usage(Tokens {
                    prompt: u.prompt_tokens.unwrap_or(0),
                    completion: u.completion_tokens.unwrap_or(0),
                }));
            }
            let text = c
                .choices
                .and_then(|mut v| (!v.is_empty()).then(|| v.swap_remove(0)))
                .and_then(|c| c.delta)
                .and_then(|d| d.content);
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                pending.push(Piece::Text(text.into_owned()));
            }
        }
        // A chunk of an unusual shape (a count that is not an integer, content that is not
        // text): read leniently, field by field, as before the typed fast path.
        Err(_) => {
            let Ok(doc) = serde_json::from_str::<Value>(data) else {
                return;
            };
            if let Some(t) = tokens(&doc).filter(|_| !doc["usage"].is_null()) {
                pending.push(Piece::Usage(t));
            }
            if let Some(text) = doc["choices"][0]["delta"]["content"].as_str() {
                if !text.is_empty() {
                    pending.push(Piece::Text(text.to_string()));
                }
            }
        }
    }
}

/// What [`sse_pieces`] carries from one piece to the next.
struct SseState<S> {
    events: Pin<Box<S>>,
    pending: Vec<Piece>,
    done: bool,
    /// Fires at or before `deadline`. Moved only when it fires early, rather than armed anew
    /// for every piece: one timer per stream instead of one per token (each arming and
    /// disarming takes the runtime's timer lock).
    timer: Pin<Box<tokio::time::Sleep>>,
    deadline: tokio::time::Instant,
}

/// Reads `data: {…}` events until `data: [DONE]`. Each wait is bounded by `timeout`.
fn sse_pieces(
    res: reqwest::Response,
    timeout: Duration,
) -> impl Stream<Item = Result<Piece, UpstreamError>> + Send {
    use eventsource_stream::Eventsource;
    let events = res.bytes_stream().eventsource();
    let deadline = tokio::time::Instant::now() + timeout;
    let state = SseState {
        events: Box::pin(events),
        pending: Vec::new(),
        done: false,
        timer: Box::pin(tokio::time::sleep_until(deadline)),
        deadline,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(p) = st.pending.pop() {
                return Some((Ok(p), st));
            }
            if st.done {
                return None;
            }
            st.deadline = tokio::time::Instant::now() + timeout;
            let next = loop {
                tokio::select! {
                    biased;
                    ev = st.events.next() => break Some(ev),
                    () = st.timer.as_mut() => {
                        if tokio::time::Instant::now() >= st.deadline {
                            break None;
                        }
                        let at = st.deadline;
                        st.timer.as_mut().reset(at);
                    }
                }
            };
            let next = match next {
                None => {
                    st.done = true;
                    return Some((Err(UpstreamError::Timeout), st));
                }
                Some(None) => return None,
                Some(Some(Err(_))) => {
                    st.done = true;
                    let e = UpstreamError::Failed("broken stream".into());
                    return Some((Err(e), st));
                }
                Some(Some(Ok(ev))) => ev,
            };
            if next.data.trim() == "[DONE]" {
                return None;
            }
            chunk_pieces(&next.data, &mut st.pending);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(data: &str) -> Vec<Piece> {
        let mut pending = Vec::new();
        chunk_pieces(data, &mut pending);
        pending.reverse();
        pending
    }

    #[test]
    fn a_token_chunk_gives_its_text() {
        let c = r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}"#;
        assert_eq!(pieces(c), vec![Piece::Text("word ".into())]);
    }

    #[test]
    fn escaped_text_is_unescaped() {
        let c = r#"{"choices":[{"delta":{"content":"a \"b\"\n\u00e9"}}]}"#;
        assert_eq!(pieces(c), vec![Piece::Text("a \"b\"\né".into())]);
    }

    #[test]
    fn the_usage_chunk_gives_the_counts_after_any_text() {
        let c = r#"{"choices":[{"delta":{"content":"end"}}],"usage":{"prompt_tokens":10,"completion_tokens":200,"total_tokens":210}}"#;
        assert_eq!(
            pieces(c),
            vec![
                Piece::Text("end".into()),
                Piece::Usage(Tokens {
                    prompt: 10,
                    completion: 200
                })
            ]
        );
        let c = r#"{"choices":[],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(
            pieces(c),
            vec![Piece::Usage(Tokens {
                prompt: 3,
                completion: 0
            })]
        );
    }

    #[test]
    fn empty_null_and_missing_parts_give_nothing() {
        for c in [
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":null}}],"usage":null}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":null}"#,
            r#"{}"#,
            "not json",
        ] {
            assert_eq!(pieces(c), vec![], "{c}");
        }
    }

    #[test]
    fn an_unusual_shape_is_read_leniently() {
        // A float count and a non-text content: the usage is kept, as the lenient reading did.
        let c = r#"{"choices":[{"delta":{"content":[1]}}],"usage":{"prompt_tokens":1.5,"completion_tokens":7}}"#;
        assert_eq!(
            pieces(c),
            vec![Piece::Usage(Tokens {
                prompt: 0,
                completion: 7
            })]
        );
    }
}
