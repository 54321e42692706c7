//! An organization's money budgets, model prices and spend (docs/spend.md).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::config::ModelPrice;
use crate::domain::budget::Budget;
use crate::domain::permissions::Permission;
use crate::error::{ApiError, Code};
use crate::http::chat::spend_error;
use crate::http::envelope::{errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{ApiJson, ClientIp, Ids, Principal};
use crate::http::orgs::{actor, audit, org_access};
use crate::http::usage::UsageQuery;
use crate::ids::{KeyId, OrgId};
use crate::store::{OrgBudgets, SpendRow, SpendScope};

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_budgets, put_budgets))
        .routes(routes!(list_prices))
        .routes(routes!(get_price, put_price, delete_price))
        .routes(routes!(spend_report))
        .routes(routes!(key_budgets))
}

/// One budget with where it stands in its current period.
#[derive(Serialize, ToSchema)]
pub struct BudgetStatus {
    /// Micro-units of the configured `currency`.
    pub amount: i64,
    /// `day`, `week`, `month` or `total`.
    pub period: crate::domain::budget::Period,
    /// Alert only, never refuse.
    pub soft: bool,
    /// Settled spend in the current period (micro-units), from the ledger.
    pub spent: i64,
    /// `amount - spent`, never below 0.
    pub remaining: i64,
    /// Unix ms of the current period's start.
    pub period_start: i64,
    /// Unix ms at which the period ends; `null` for `total`.
    pub resets_at: Option<i64>,
}

/// An organization's budgets.
#[derive(Serialize, ToSchema)]
pub struct BudgetsView {
    /// The currency of every amount (micro-units of it).
    pub currency: String,
    /// Budgets on the organization's whole spend, with their state; `null`: none.
    pub budgets: Option<Vec<BudgetStatus>>,
    /// Budgets applying to each end user separately; `null`: none.
    pub end_user_budgets: Option<Vec<Budget>>,
    /// Budgets applying to each OAuth client (connected app) separately; `null`: none.
    pub client_budgets: Option<Vec<Budget>>,
}

/// An organization's budgets, as set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetsBody {
    /// Budgets on the organization's whole spend (1-4, at most one per period); absent or
    /// `null`: none.
    #[schema(min_items = 1, max_items = 4)]
    pub budgets: Option<Vec<Budget>>,
    /// Budgets applying to each end user (a widget visitor, or the person whose token came
    /// with the key) separately; absent or `null`: none.
    #[schema(min_items = 1, max_items = 4)]
    pub end_user_budgets: Option<Vec<Budget>>,
    /// Budgets applying to each OAuth client (connected app) acting in the organization
    /// separately, over all the people it acts for; absent or `null`: none.
    #[schema(min_items = 1, max_items = 4)]
    pub client_budgets: Option<Vec<Budget>>,
}

async fn budgets_view(
    state: &AppState,
    org: &OrgId,
    b: OrgBudgets,
) -> Result<BudgetsView, ApiError> {
    let now = state.edge.clock.now_ms();
    let mut statuses = None;
    if let Some(list) = &b.budgets {
        let mut out = Vec::with_capacity(list.len());
        for budget in list {
            let spent = state
                .spend
                .spent(&SpendScope::Org(org.as_str().to_string()), budget.period)
                .await?;
            out.push(status(budget.clone(), spent, now));
        }
        statuses = Some(out);
    }
    Ok(BudgetsView {
        currency: state.config.currency.clone(),
        budgets: statuses,
        end_user_budgets: b.end_user_budgets,
        client_budgets: b.client_budgets,
    })
}

fn status(budget: Budget, spent: i64, now: i64) -> BudgetStatus {
    BudgetStatus {
        remaining: (budget.amount - spent).max(0),
        period_start: budget.period.start(now),
        resets_at: budget.period.resets_at(now),
        spent,
        amount: budget.amount,
        period: budget.period,
        soft: budget.soft,
    }
}

/// The organization's budgets and how much of each is spent (`analytics:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/budgets", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The budgets", body = Envelope<BudgetsView>),
        errors::Auth, errors::Org))]
pub async fn get_budgets(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<BudgetsView>, ApiError> {
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    let b = state.spend.budgets(org.as_str()).await?;
    Ok(ok(budgets_view(&state, &org, b).await?))
}

/// Replaces the organization's budgets (owners and admins); applies at once on every
/// instance.
#[utoipa::path(put, path = "/v1/orgs/{org}/budgets", tag = "spend", request_body = BudgetsBody,
    params(("org" = OrgId, Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The budgets as set", body = Envelope<BudgetsView>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn put_budgets(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids(org): Ids<OrgId>,
    ApiJson(body): ApiJson<BudgetsBody>,
) -> Result<Success<BudgetsView>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require_user()?;
    a.require_admin()?;
    let b = OrgBudgets {
        budgets: body.budgets,
        end_user_budgets: body.end_user_budgets,
        client_budgets: body.client_budgets,
    };
    let b = state
        .spend
        .set_budgets(org.as_str(), b, &audit(&state, &a, &ip))
        .await
        .map_err(spend_error)?;
    Ok(ok(budgets_view(&state, &org, b).await?))
}

/// A key's budgets and how much of each is spent (`analytics:read`); `[]` without budgets.
#[utoipa::path(get, path = "/v1/orgs/{org}/api-keys/{id}/budgets", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization"), ("id" = KeyId, Path, description = "The key")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The key's budgets with their state", body = Envelope<Vec<BudgetStatus>>),
        errors::Auth, errors::Org))]
pub async fn key_budgets(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, id)): Ids<(OrgId, KeyId)>,
) -> Result<Success<Vec<BudgetStatus>>, ApiError> {
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    let k = state.keys.get(&org, &id).await?;
    let now = state.edge.clock.now_ms();
    let mut out = Vec::new();
    let line = SpendScope::Key(k.line().to_string());
    for budget in k.budgets.unwrap_or_default() {
        let spent = state.spend.spent(&line, budget.period).await?;
        out.push(status(budget, spent, now));
    }
    Ok(ok(out))
}

/// A model's price and where it comes from.
#[derive(Serialize, ToSchema)]
pub struct PriceView {
    /// The model.
    pub model: String,
    /// Micro-units per million prompt tokens.
    pub input_per_mtok: i64,
    /// Micro-units per million completion tokens.
    pub output_per_mtok: i64,
    /// `org` (the organization's own) or `config` (the deployment's price table).
    #[schema(value_type = PriceSource)]
    pub source: &'static str,
}

/// Where a price comes from.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PriceSource {
    /// The organization's own, set over the API.
    Org,
    /// The deployment's `[models]` table.
    Config,
}

/// The prices that apply to an organization.
#[derive(Serialize, ToSchema)]
pub struct PricesView {
    /// The currency of every price (micro-units of it).
    pub currency: String,
    /// Every priced model, by name; the organization's own price wins.
    pub prices: Vec<PriceView>,
}

fn view(model: &str, p: ModelPrice, source: &'static str) -> PriceView {
    PriceView {
        model: model.to_string(),
        input_per_mtok: p.input_per_mtok,
        output_per_mtok: p.output_per_mtok,
        source,
    }
}

/// The model prices that apply to the organization (`analytics:read`).
#[utoipa::path(get, path = "/v1/orgs/{org}/prices", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The prices", body = Envelope<PricesView>),
        errors::Auth, errors::Org))]
pub async fn list_prices(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
) -> Result<Success<PricesView>, ApiError> {
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    let own = state.spend.org_prices(org.as_str()).await?;
    let mut prices: std::collections::BTreeMap<String, PriceView> = state
        .spend
        .configured_prices()
        .iter()
        .map(|(m, p)| (m.clone(), view(m, *p, "config")))
        .collect();
    for (m, p) in own {
        prices.insert(m.clone(), view(&m, p, "org"));
    }
    Ok(ok(PricesView {
        currency: state.config.currency.clone(),
        prices: prices.into_values().collect(),
    }))
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.is_empty() || model.chars().count() > 200 || model.chars().any(char::is_control) {
        return Err(ApiError::field(
            "model",
            "must be 1 to 200 characters, none of them control characters",
        ));
    }
    Ok(())
}

/// The price of one model for the organization (`analytics:read`); 404 when it has none.
#[utoipa::path(get, path = "/v1/orgs/{org}/models/{model}/price", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization"),
        ("model" = String, Path, description = "The model (a `/` in it encoded as `%2F`)", min_length = 1, max_length = 200)),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The price", body = Envelope<PriceView>),
        (status = 422, description = "`validation_failed`: the model name is invalid (`details.fields`)", body = ErrorEnvelope),
        errors::Auth, errors::Org))]
pub async fn get_price(
    State(state): State<AppState>,
    principal: Principal,
    Ids((org, model)): Ids<(OrgId, String)>,
) -> Result<Success<PriceView>, ApiError> {
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    check_model(&model)?;
    let own = state.spend.org_prices(org.as_str()).await?;
    if let Some((_, p)) = own.iter().find(|(m, _)| *m == model) {
        return Ok(ok(view(&model, *p, "org")));
    }
    match state.spend.configured_prices().get(&model) {
        Some(p) => Ok(ok(view(&model, *p, "config"))),
        None => Err(ApiError::not_found("Price")),
    }
}

/// Sets the organization's own price of a model (owners and admins), over the configured
/// one.
#[utoipa::path(put, path = "/v1/orgs/{org}/models/{model}/price", tag = "spend", request_body = ModelPrice,
    params(("org" = OrgId, Path, description = "The organization"),
        ("model" = String, Path, description = "The model (a `/` in it encoded as `%2F`)", min_length = 1, max_length = 200)),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 200, description = "The price as set", body = Envelope<PriceView>),
        errors::Auth, errors::Org, errors::Body))]
pub async fn put_price(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, model)): Ids<(OrgId, String)>,
    ApiJson(price): ApiJson<ModelPrice>,
) -> Result<Success<PriceView>, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require_user()?;
    a.require_admin()?;
    check_model(&model)?;
    state
        .spend
        .set_price(org.as_str(), &model, price, &audit(&state, &a, &ip))
        .await
        .map_err(spend_error)?;
    Ok(ok(view(&model, price, "org")))
}

/// Removes the organization's own price of a model (owners and admins): the configured
/// price, if any, applies again. 404 when it had none.
#[utoipa::path(delete, path = "/v1/orgs/{org}/models/{model}/price", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization"),
        ("model" = String, Path, description = "The model (a `/` in it encoded as `%2F`)", min_length = 1, max_length = 200)),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses((status = 204, description = "Removed"),
        (status = 422, description = "`validation_failed`: the model name is invalid (`details.fields`)", body = ErrorEnvelope),
        errors::Auth, errors::Org))]
pub async fn delete_price(
    State(state): State<AppState>,
    principal: Principal,
    ip: ClientIp,
    Ids((org, model)): Ids<(OrgId, String)>,
) -> Result<StatusCode, ApiError> {
    let a = state.orgs.access(&actor(&principal), &org).await?;
    a.require_user()?;
    a.require_admin()?;
    check_model(&model)?;
    state
        .spend
        .delete_price(org.as_str(), &model, &audit(&state, &a, &ip))
        .await
        .map_err(|e| match e {
            crate::spend::SpendError::Store(crate::store::StoreError::NotFound) => {
                ApiError::not_found("Price")
            }
            other => spend_error(other),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Settled spend per bucket, key, OAuth client and model, from the ledger
/// (`analytics:read`): the same numbers budgets are enforced with.
#[utoipa::path(get, path = "/v1/orgs/{org}/spend", tag = "spend",
    params(("org" = OrgId, Path, description = "The organization"), UsageQuery),
    security(("bearer" = []), ("api_key" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "One row per bucket, key, OAuth client and model", body = Envelope<Vec<SpendRow>>),
        (status = 422, description = "`validation_failed`: the granularity or the range is invalid (`details.fields`)", body = ErrorEnvelope),
        errors::Auth, errors::Org))]
pub async fn spend_report(
    State(state): State<AppState>,
    principal: Principal,
    Ids(org): Ids<OrgId>,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Success<Vec<SpendRow>>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::msg(Code::InvalidRequest, format!("Bad query string: {e}")))?;
    org_access(&state, &principal, org.as_str())
        .await?
        .require(Permission::AnalyticsRead)?;
    let range = q.range(&state)?;
    Ok(ok(state
        .spend
        .report(
            org.as_str(),
            range.from,
            range.to,
            range.bucket_ms,
            range.key.as_ref().map(KeyId::as_str),
        )
        .await?))
}
