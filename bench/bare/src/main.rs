//! The "bare baseline" of `bench/run`: the least an HTTP API-key check can cost on this
//! machine with the same stack as Gatehouse (axum + tokio), so Gatehouse's `/v1/me` numbers
//! can be read as a ratio to it.
//!
//! `GET /v1/me` compares the `x-api-key` header against a fixed key in constant time and
//! answers `{"success":true,"data":{"kind":"api_key"}}`, or 401 without a matching key.
//!
//! Environment: `PORT` (default 8090), `BARE_API_KEY` (default below; `bench/run` sets it).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;

const DEFAULT_KEY: &str = "gk_live_benchBareBaselineKey0000000000000000000000000";
const OK_BODY: &str = r#"{"success":true,"data":{"kind":"api_key"}}"#;
const UNAUTHORIZED_BODY: &str =
    r#"{"success":false,"error":{"code":"unauthorized","message":"invalid API key"}}"#;

#[derive(Clone)]
struct State {
    key: &'static [u8],
}

async fn me(axum::extract::State(state): axum::extract::State<State>, headers: HeaderMap) -> impl IntoResponse {
    let presented = headers
        .get("x-api-key")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // `ct_eq` on slices of different lengths is false (the length itself is not secret).
    let ok: bool = presented.ct_eq(state.key).into();
    let (status, body) = if ok {
        (StatusCode::OK, OK_BODY)
    } else {
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY)
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 8090,
    };
    let key = std::env::var("BARE_API_KEY").unwrap_or_else(|_| DEFAULT_KEY.to_string());
    let state = State {
        key: Box::leak(key.into_bytes().into_boxed_slice()),
    };
    let app = Router::new().route("/v1/me", get(me)).with_state(state);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("bare baseline listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
