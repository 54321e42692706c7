//! A webhook receiver on a local port, and an independent signature check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Hit {
    pub fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().unwrap().to_string()
    }
}

/// What the receiver answers next: a status, or hang for a while first.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
}

#[derive(Default)]
struct Inner {
    hits: Vec<Hit>,
    script: VecDeque<Reply>,
}

/// A webhook receiver on a local port: records every request, answers from a script, then 200.
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    handle: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let reply = {
        let mut g = inner.lock().unwrap();
        g.hits.push(Hit {
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        g.script.pop_front().unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(s) => (StatusCode::from_u16(s).unwrap(), "answer body").into_response(),
        Reply::RetryAfter(s, secs) => (
            StatusCode::from_u16(s).unwrap(),
            [("retry-after", secs.to_string())],
            "busy",
        )
            .into_response(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    pub async fn start_on(listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            inner,
            handle,
        }
    }

    pub fn script(&self, replies: &[Reply]) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// Waits until `pred` holds of the hits (10 s at most).
    pub async fn until(&self, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let started = Instant::now();
        loop {
            let hits = self.hits();
            if pred(&hits) {
                return hits;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; got {:?}",
                hits.iter().map(|h| h.body.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the first event of `event_type`.
    pub async fn event(&self, event_type: &str) -> Hit {
        let hits = self
            .until(event_type, |h| {
                h.iter().any(|h| h.event_type() == event_type)
            })
            .await;
        hits.into_iter()
            .find(|h| h.event_type() == event_type)
            .unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// An independent check of a Standard Webhooks signature header against one secret.
pub fn verifies(secret: &str, hit: &Hit) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        hit.headers["webhook-id"], hit.headers["webhook-timestamp"], hit.body
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    hit.headers["webhook-signature"]
        .split(' ')
        .any(|s| s == expected)
}
