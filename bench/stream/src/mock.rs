//! An OpenAI-compatible upstream: `POST …/chat/completions`. With `"stream": true` it answers
//! Server-Sent Events, one `chat.completion.chunk` per token (the first at once, then one every
//! `--interval-ms`), then at once a chunk with `finish_reason`, a usage chunk and `data: [DONE]`;
//! otherwise one JSON document. A stream costs one timer, kept inside its response body.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

use crate::Args;

/// One token's chunk; every token is the same word, so the chunk is a constant.
const TOKEN_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}]}\n\n";
/// The token's text, for the JSON answer and the usage count.
const TOKEN: &str = "word ";
/// Prompt tokens reported (the mock does not count the request's).
const PROMPT_TOKENS: u32 = 10;

#[derive(Clone, Copy)]
struct Settings {
    interval: Duration,
    tokens: u32,
}

/// Serves until killed.
pub async fn run(args: &Args) -> Result<(), String> {
    let listen = args.str("listen")?;
    let settings = Settings {
        interval: Duration::from_millis(args.num("interval-ms", 50u64)?),
        tokens: args.num("tokens", 200u32)?.max(1),
    };
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("bind {listen}: {e}"))?;
    eprintln!(
        "mock upstream on {listen}: {} tokens, one every {} ms",
        settings.tokens,
        settings.interval.as_millis()
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                eprintln!("mock: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, settings));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

type MockBody = http_body_util::Either<Full<Bytes>, TokenStream>;

async fn handle(req: Request<Incoming>, s: Settings) -> Result<Response<MockBody>, Infallible> {
    if req.method() != Method::POST || !req.uri().path().ends_with("/chat/completions") {
        return Ok(plain(StatusCode::NOT_FOUND, "{\"error\":\"not found\"}"));
    }
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "{\"error\":\"body\"}")),
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "{\"error\":\"json\"}"));
    };
    let tokens = doc["max_tokens"].as_u64().map_or(s.tokens, |m| {
        s.tokens.min(m.clamp(1, u32::MAX.into()) as u32)
    });
    if doc["stream"].as_bool() != Some(true) {
        let answer = serde_json::json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": "mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": TOKEN.repeat(tokens as usize)}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": tokens, "total_tokens": PROMPT_TOKENS + tokens},
        });
        return Ok(plain(StatusCode::OK, &answer.to_string()));
    }
    let mut res = Response::new(MockBody::Right(TokenStream::new(s.interval, tokens)));
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}

fn plain(status: StatusCode, body: &str) -> Response<MockBody> {
    let mut res = Response::new(MockBody::Left(Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// The body of one streamed answer: token `n` (from 0) is due at `start + n × interval`.
pub struct TokenStream {
    start: Instant,
    interval: Duration,
    sent: u32,
    total: u32,
    finished: bool,
    timer: Pin<Box<Sleep>>,
}

impl TokenStream {
    fn new(interval: Duration, total: u32) -> Self {
        let start = Instant::now();
        Self {
            start,
            interval,
            sent: 0,
            total,
            finished: false,
            timer: Box::pin(tokio::time::sleep_until(start)),
        }
    }
}

impl Body for TokenStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if this.sent < this.total {
            if this.sent > 0 && this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sent += 1;
            let due = this.start + this.interval * this.sent;
            this.timer.as_mut().reset(due);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(TOKEN_CHUNK)))));
        }
        // Right after the last token, as a model server ends: the finish, the usage and
        // `[DONE]`, in one write.
        this.finished = true;
        let end = format!(
            "data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n\
             data: {{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{t}}}}}\n\n\
             data: [DONE]\n\n",
            p = PROMPT_TOKENS,
            c = this.total,
            t = PROMPT_TOKENS + this.total
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(end)))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}
