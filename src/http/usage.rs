//! `/v1/orgs/{org}/usage` and `/v1/orgs/{org}/export`.

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::envelope::{errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{Ids, Principal};
use crate::http::orgs::org_access;
use crate::ids::{KeyId, OrgId};
use crate::store::UsageRow;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(usage))
        .routes(routes!(export))
}

/// A time given as unix milliseconds or RFC 3339.
fn parse_time(field: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::field(field, "must be unix milliseconds or an RFC 3339 time"))
}

/// The report's range and shape.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start (inclusive): unix ms or RFC 3339; default `to` minus 30 days.
    #[param(
        pattern = "^([+-]?[0-9]{1,18}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub from: Option<String>,
    /// End (exclusive): unix ms or RFC 3339; default now.
    #[param(
        pattern = "^([+-]?[0-9]{1,18}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub to: Option<String>,
    /// `hour` or `day` (UTC, default).
    #[param(value_type = Option<Granularity>, inline)]
    pub granularity: Option<String>,
    /// Only this key.
    #[param(value_type = Option<crate::ids::KeyId>)]
    pub key_id: Option<String>,
}

/// A report's range, checked: whole buckets from `from` (the start of its hour) to `to`.
pub struct ReportRange {
    /// Start (inclusive), unix ms, at the start of an hour.
    pub from: i64,
    /// End (exclusive), unix ms.
    pub to: i64,
    /// The bucket's length in ms (an hour or a day).
    pub bucket_ms: i64,
    /// Only this key.
    pub key: Option<KeyId>,
}

impl UsageQuery {
    /// The range this query asks for, as every report over the usage counters or the spend
    /// ledger reads it: 422 for a bad time, granularity or range.
    pub fn range(&self, state: &AppState) -> Result<ReportRange, ApiError> {
        let bucket_ms = match self.granularity.as_deref().unwrap_or("day") {
            "hour" => HOUR_MS,
            "day" => DAY_MS,
            _ => return Err(ApiError::field("granularity", "must be hour or day")),
        };
        let to = match &self.to {
            Some(v) => parse_time("to", v)?,
            None => state.edge.clock.now_ms().saturating_add(1),
        };
        let from = match &self.from {
            Some(v) => parse_time("from", v)?,
            None => to.saturating_sub(30 * DAY_MS),
        };
        if from >= to {
            return Err(ApiError::field("from", "must be before to"));
        }
        let longest = if bucket_ms == HOUR_MS {
            31 * DAY_MS
        } else {
            400 * DAY_MS
        };
        if to.saturating_sub(from) > longest {
            return Err(ApiError::field(
                "from",
                "the range is too long (at most 31 days by hour, 400 days by day)",
            ));
        }
        let key = self.key_id.as_deref().map(KeyId::parse).transpose()?;
        // Whole buckets: a row's hour is inside the range when its bucket starts in it.
        let from = from.div_euclid(HOUR_MS) * HOUR_MS;
        Ok(ReportRange {
            from,
            to,
            bucket_ms,
            key,
        })
    }
}

/// A usage report's bucket (in `/openapi.json`; the handler reads the text and answers 422
/// for anything else).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Granularity {
    /// An hour.
    Hour,
    /// A UTC day.
    Day,
}

/// An export's format (in `/openapi.json`; the handler reads the text and answers 422 for
/// anything else).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Newline-delimited JSON, ending with `{"type":"end","count":N}`.
    Ndjson,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Requests and tokens per key and hour or day (`analytics:read`). Counted in memory and
/// written every 30 s, so the last half minute may be missing.
#[utoipa::path(get, path = "/v1/orgs/{org}/usage", tag = "usage",
    params(("org" = OrgId, Path, description = "The organization"), UsageQuery),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One row per key and bucket", body = Envelope<Vec<UsageRow>>),
        (status = 422, description = "`validation_failed`: a time, the granularity or the range is invalid (`details.fields`)", body = ErrorEnvelope),
        errors::Auth, errors::Org))]
pub async fn usage(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<UsageRow>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    let range = q.range(&state)?;
    Ok(ok(state
        .chat
        .usage
        .report(
            &org,
            range.from,
            range.to,
            range.bucket_ms,
            range.key.as_ref(),
        )
        .await?))
}

/// What to export.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `ndjson` (default) or `csv`.
    #[param(value_type = Option<ExportFormat>, inline)]
    pub format: Option<String>,
    /// Messages from this time on: unix ms or RFC 3339.
    #[param(
        pattern = "^([+-]?[0-9]{1,18}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
}

/// Streams the organization's messages with their threads, oldest first (`export:read`).
/// NDJSON ends with `{"type":"end","count":N}`, so a cut-off export is recognisable.
#[utoipa::path(get, path = "/v1/orgs/{org}/export", tag = "usage",
    params(("org" = OrgId, Path, description = "The organization"), ExportQuery),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The messages, streamed as an attachment: NDJSON (default) or CSV (`format=csv`)",
            headers(("Content-Disposition" = String, description = "`attachment; filename=\"{org}-export.{ndjson|csv}\"`")),
            content((String = "application/x-ndjson"), (String = "text/csv; charset=utf-8"))),
        (status = 422, description = "`validation_failed`: `since` or `format` is invalid (`details.fields`)", body = ErrorEnvelope),
        errors::Auth, errors::Org))]
pub async fn export(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::ExportRead)?;
    let since = match &q.since {
        Some(v) => parse_time("since", v)?,
        None => 0,
    };
    let csv = match q.format.as_deref().unwrap_or("ndjson") {
        "ndjson" => false,
        "csv" => true,
        _ => return Err(ApiError::field("format", "must be ndjson or csv")),
    };
    let rows = state.chat.usage.export(&org, since);
    let body = async_stream::stream! {
        let mut rows = Box::pin(rows);
        let mut count: u64 = 0;
        if csv {
            yield Ok::<Bytes, std::io::Error>(Bytes::from_static(
                b"thread_id,thread_title,user_id,key_id,message_id,role,content,created_at\r\n",
            ));
        }
        while let Some(row) = rows.next().await {
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    // The status is already sent: break the body so the client sees a failure.
                    tracing::error!(error = %e, "export failed mid-stream");
                    yield Err(std::io::Error::other("export failed"));
                    return;
                }
            };
            count += 1;
            let line = if csv {
                csv_line(&row)
            } else {
                let mut v = serde_json::to_value(&row).unwrap_or_default();
                v["type"] = serde_json::json!("message");
                format!("{v}\n")
            };
            yield Ok(Bytes::from(line));
        }
        if !csv {
            yield Ok(Bytes::from(format!("{{\"type\":\"end\",\"count\":{count}}}\n")));
        }
    };
    let (ctype, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    Ok((
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{org}-export.{ext}\""),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// One CSV record per RFC 4180, with cells that a spreadsheet would run as formulas
/// neutralised.
fn csv_line(r: &crate::store::ExportRow) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let cell = |s: &str| -> String {
        if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{s}")
        } else {
            s.to_string()
        }
    };
    let _ = w.write_record([
        r.thread_id.clone(),
        cell(&r.thread_title),
        r.user_id.clone().unwrap_or_default(),
        r.key_id.clone().unwrap_or_default(),
        r.message_id.clone(),
        r.role.clone(),
        cell(&r.content),
        r.created_at.to_string(),
    ]);
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
