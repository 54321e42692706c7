//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;

/// `/healthz` and `/readyz`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `/healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    #[schema(value_type = String, pattern = "^ok$")]
    status: &'static str,
}

/// `/readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` (with 503).
    #[schema(value_type = ReadyStatus)]
    status: &'static str,
    /// `ok`, or `unreachable` (with 503).
    #[schema(value_type = StorageStatus)]
    storage: &'static str,
}

/// `status` of `/readyz`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ReadyStatus {
    /// Storage answers.
    Ready,
    /// Storage does not answer.
    Unavailable,
}

/// `storage` of `/readyz`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum StorageStatus {
    /// It answers.
    Ok,
    /// It does not answer.
    Unreachable,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "Up", body = Liveness)))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Storage answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "Ready: `{\"status\": \"ready\", \"storage\": \"ok\"}`", body = Readiness),
              (status = 503, description = "Storage unreachable: `{\"status\": \"unavailable\", \"storage\": \"unreachable\"}`", body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    match state.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                storage: "ok",
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "unavailable",
                    storage: "unreachable",
                }),
            )
        }
    }
}
