//! `/v1/chat` (and `/api/chat`), `/v1/threads`, and an organization's usage and export.

use std::convert::Infallible;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::chat::upstream::{Piece, Tokens, UpstreamError};
use crate::chat::{Caller, ChatError, MAX_CONTEXT_BYTES, MAX_MESSAGE_BYTES};
use crate::domain::permissions::Permission;
use crate::error::Reason;
use crate::error::{ApiError, Code};
use crate::http::envelope::{errors, ok, Envelope, ErrorEnvelope, Success};
use crate::http::extract::{bearer, key_principal, ApiJson, Ids, Principal};
use crate::ids::ThreadId;
use crate::limits::admission::{estimate_tokens, AdmissionError, Asker};
use crate::spend::{Ask, Guard, SpendError};
use crate::store::{ApiKeyRecord, Message, Thread, ThreadScope, WidgetRecord};

/// Routes of this file.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(chat))
        .routes(routes!(list_threads))
        .routes(routes!(get_thread, delete_thread))
}

/// `POST /api/chat`: the same chat, where seed 000's clients call it.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(api_chat))
}

/// A caller of the chat and thread routes.
pub enum ChatPrincipal {
    /// A signed-in person on their own (threads only).
    Person(String),
    /// An organization's key, maybe acting for a signed-in person (`Authorization: Bearer
    /// <access token>` next to `X-API-Key`).
    Key {
        /// The key.
        key: std::sync::Arc<crate::store::ApiKeyRecord>,
        /// The person, when their token came along.
        user_id: Option<String>,
    },
    /// An OAuth client acting for a person in its grant's organization.
    OAuth {
        /// The person.
        user_id: String,
        /// The grant's organization.
        org_id: String,
        /// The client.
        client_id: String,
        /// The scopes in effect now (the token's, as far as the person still holds them).
        scopes: Vec<String>,
    },
}

impl FromRequestParts<AppState> for ChatPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(v) = parts.headers.get("x-api-key") {
            let presented = v
                .to_str()
                .map_err(|_| {
                    ApiError::unauthorized(Reason::Malformed, "The API key is malformed.")
                })?
                .trim()
                .to_string();
            let ip = crate::http::extract::client_ip(parts, state);
            let Principal::ApiKey { key } = key_principal(state, &presented, &ip).await? else {
                return Err(ApiError::internal("a key principal that is not a key"));
            };
            let user_id = match bearer(parts) {
                Some(token) if !token.is_empty() && !state.keys.looks_like_key(token) => {
                    match state.credentials.principal_from_jwt(token).await? {
                        Principal::User { user_id, .. } => Some(user_id),
                        Principal::ApiKey { .. } | Principal::OAuthClient { .. } => None,
                    }
                }
                _ => None,
            };
            return Ok(ChatPrincipal::Key { key, user_id });
        }
        match Principal::from_request_parts(parts, state).await? {
            Principal::ApiKey { key } => Ok(ChatPrincipal::Key { key, user_id: None }),
            Principal::User { user_id, .. } => Ok(ChatPrincipal::Person(user_id)),
            p @ Principal::OAuthClient { .. } => {
                let scopes = crate::http::orgs::oauth_scopes_in_effect(state, &p, true).await?;
                let Principal::OAuthClient {
                    user_id,
                    org_id,
                    client_id,
                    ..
                } = p
                else {
                    return Err(ApiError::internal("an OAuth principal that is not one"));
                };
                Ok(ChatPrincipal::OAuth {
                    user_id,
                    org_id,
                    client_id,
                    scopes,
                })
            }
        }
    }
}

/// Refused unless an OAuth client's scopes in effect hold `scope`.
fn oauth_needs_scope(scopes: &[String], scope: Permission) -> Result<(), ApiError> {
    if scopes.iter().any(|s| s == scope.as_str()) {
        Ok(())
    } else {
        Err(ApiError::msg(
            Code::Forbidden,
            format!("The app's access lacks {scope} (its token's scopes, as far as the person holds them)."),
        )
        .details(json!({ "required": scope.as_str() })))
    }
}

fn needs_scope(key: &crate::store::ApiKeyRecord, scope: Permission) -> Result<(), ApiError> {
    if key.scopes.iter().any(|s| s == scope.as_str()) {
        Ok(())
    } else {
        Err(
            ApiError::msg(Code::Forbidden, format!("The API key lacks {scope}."))
                .details(json!({ "required": scope.as_str() })),
        )
    }
}

/// A chat message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// The user's message: 1 byte to 32 KiB, not only white space.
    #[schema(min_length = 1, max_length = 32768, pattern = "\\S")]
    pub message: String,
    /// Continue this thread; a new one is started when absent.
    #[schema(value_type = Option<ThreadId>)]
    pub thread_id: Option<String>,
    /// Passed to the model server unchanged (a JSON object of at most 8 KiB).
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
    /// The model to ask (default: the deployment's `upstream_model`; a widget's chat uses the
    /// widget's model).
    #[schema(min_length = 1, max_length = 200)]
    pub model: Option<String>,
    /// The most tokens the answer may use (1-1000000), sent upstream as `max_tokens`.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_tokens: Option<u32>,
}

/// One Server-Sent Event of a streamed answer (`stream: true`), as `/openapi.json` describes
/// it: `delta` events, then one `done` or `error` event.
#[derive(ToSchema)]
pub struct ChatEvent {
    /// What the event carries.
    pub event: ChatEventKind,
    /// JSON text: `{"content": …}` (`delta`), `{"thread_id", "message_id"}` (`done`),
    /// `{"code", "message"}` (`error`).
    pub data: String,
}

/// The kinds of [`ChatEvent`].
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ChatEventKind {
    /// A piece of the answer's text.
    Delta,
    /// The answer is complete and stored.
    Done,
    /// The model server failed; nothing more follows.
    Error,
}

/// The answer.
#[derive(serde::Serialize, ToSchema)]
pub struct ChatAnswer {
    /// The model's answer.
    pub response: String,
    /// The thread (new or continued).
    pub thread_id: String,
    /// The answer's message id.
    pub message_id: String,
}

fn chat_error(e: ChatError) -> ApiError {
    match e {
        ChatError::ThreadNotFound => ApiError::not_found("Thread"),
        ChatError::Store(s) => s.into(),
        ChatError::Upstream(UpstreamError::Timeout) => ApiError::new(Code::UpstreamTimeout),
        ChatError::Upstream(UpstreamError::Failed(why)) => {
            tracing::warn!(why = %why, "model server failed");
            ApiError::msg(
                Code::UpstreamError,
                format!("The model server failed ({why})."),
            )
        }
    }
}

/// Sends a message to the assistant (an API key with `chat:write`, optionally with the
/// user's access token in `Authorization`). With `stream: true` the answer is
/// `text/event-stream`: `delta` events (`{"content": …}`), then one `done` event
/// (`{"thread_id", "message_id"}`) or one `error` event (`{"code", "message"}`).
#[utoipa::path(post, path = "/v1/chat", tag = "chat", request_body = ChatBody,
    security(("api_key" = []), ("bearer" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The answer: JSON, or Server-Sent Events when the body asks for `stream`",
            content((Envelope<ChatAnswer> = "application/json"), (ChatEvent = "text/event-stream"))),
        (status = 402, description = "`budget_exhausted`: a spend budget of the key, the organization, the end user or the OAuth client is exhausted (`details.budget`: `scope`, `id`, `period`, `amount`, `spent`, `resets_at`)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the key lacks `chat:write` (`details.required`); `model_not_allowed`: the key's or the organization's `allowed_models` does not match the model (`details.model`, `details.allowed`); `model_unpriced`: a budget applies and the model has no price (`details.model`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: the thread is not the caller's", body = ErrorEnvelope),
        (status = 502, description = "`upstream_error`: the model server failed", body = ErrorEnvelope),
        (status = 504, description = "`upstream_timeout`: the model server did not answer in time", body = ErrorEnvelope),
        errors::ChatAuth, errors::Body))]
pub async fn chat(
    State(state): State<AppState>,
    principal: ChatPrincipal,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    let (caller, key) = match principal {
        ChatPrincipal::Key { key, user_id } => {
            needs_scope(&key, Permission::ChatWrite)?;
            let caller = Caller {
                org_id: key.org_id.clone(),
                key_id: Some(key.id.clone()),
                user_id,
                visitor: None,
                widget_id: None,
                key_budgets: key.budgets.clone(),
                client_id: None,
            };
            (caller, key)
        }
        ChatPrincipal::OAuth {
            user_id,
            org_id,
            client_id,
            scopes,
        } => {
            // The organization's, the client's and the person's windows and budgets apply
            // (no key's).
            oauth_needs_scope(&scopes, Permission::ChatWrite)?;
            check_chat_body(&body)?;
            let caller = Caller {
                org_id,
                key_id: None,
                user_id: Some(user_id),
                visitor: None,
                widget_id: None,
                key_budgets: None,
                client_id: Some(client_id),
            };
            return answer(&state, caller, body, None, None, None).await;
        }
        ChatPrincipal::Person(_) => {
            return Err(ApiError::unauthorized(
                Reason::Missing,
                "Chat needs an API key (X-API-Key), optionally with the user's access token in Authorization.",
            ))
        }
    };
    check_chat_body(&body)?;
    answer(&state, caller, body, None, Some(&key), None).await
}

/// The chat of `POST /v1/chat`, at the path seed 000's clients call.
#[utoipa::path(post, path = "/api/chat", tag = "chat", request_body = ChatBody,
    security(("api_key" = []), ("bearer" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The answer: JSON, or Server-Sent Events when the body asks for `stream`",
            content((Envelope<ChatAnswer> = "application/json"), (ChatEvent = "text/event-stream"))),
        (status = 402, description = "`budget_exhausted`: a spend budget of the key, the organization, the end user or the OAuth client is exhausted (`details.budget`: `scope`, `id`, `period`, `amount`, `spent`, `resets_at`)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the key lacks `chat:write` (`details.required`); `model_not_allowed`: the key's or the organization's `allowed_models` does not match the model (`details.model`, `details.allowed`); `model_unpriced`: a budget applies and the model has no price (`details.model`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: the thread is not the caller's", body = ErrorEnvelope),
        (status = 502, description = "`upstream_error`: the model server failed", body = ErrorEnvelope),
        (status = 504, description = "`upstream_timeout`: the model server did not answer in time", body = ErrorEnvelope),
        errors::ChatAuth, errors::Body))]
pub async fn api_chat(
    state: State<AppState>,
    principal: ChatPrincipal,
    body: ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    chat(state, principal, body).await
}

/// Checks a chat body's sizes and shapes.
pub fn check_chat_body(body: &ChatBody) -> Result<(), ApiError> {
    if body.message.trim().is_empty() || body.message.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::field(
            "message",
            "must be 1 byte to 32 KiB of text",
        ));
    }
    match &body.context {
        None | Some(Value::Null) => {}
        Some(Value::Object(_))
            if body
                .context
                .as_ref()
                .is_some_and(|c| c.to_string().len() <= MAX_CONTEXT_BYTES) => {}
        Some(_) => {
            return Err(ApiError::field(
                "context",
                "must be a JSON object of at most 8 KiB",
            ))
        }
    }
    if let Some(id) = &body.thread_id {
        ThreadId::parse(id)?;
    }
    // Any name of the schema's length: one no list matches is refused by the allow-lists,
    // and an unknown one by the model server.
    if body
        .model
        .as_ref()
        .is_some_and(|m| m.is_empty() || m.chars().count() > 200)
    {
        return Err(ApiError::field("model", "must be 1-200 characters"));
    }
    if body
        .max_tokens
        .is_some_and(|n| !(1..=1_000_000).contains(&n))
    {
        return Err(ApiError::field(
            "max_tokens",
            "must be between 1 and 1000000",
        ));
    }
    Ok(())
}

/// The envelope of a refused reservation.
pub fn spend_error(e: SpendError) -> ApiError {
    match e {
        SpendError::Exhausted(x) => {
            let message = format!(
                "The {} budget ({} per {}) is exhausted.",
                x.scope,
                x.amount,
                x.period.as_str()
            );
            ApiError::msg(Code::BudgetExhausted, message).details(json!({ "budget": *x }))
        }
        SpendError::Unpriced(model) => ApiError::msg(
            Code::ModelUnpriced,
            format!("The model {model:?} has no price, and a spend budget applies."),
        )
        .details(json!({ "model": model })),
        SpendError::Invalid { field, problem } => ApiError::field(field, &problem),
        SpendError::Unavailable => {
            ApiError::unavailable(1, "The spend budgets are unavailable; retry shortly.")
        }
        SpendError::Store(s) => s.into(),
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::ModelNotAllowed { model, allowed } => ApiError::msg(
                Code::ModelNotAllowed,
                format!("The model {model} is not allowed for this key or organization."),
            )
            .details(json!({ "model": model, "allowed": allowed })),
            AdmissionError::Concurrency {
                scope,
                max_parallel,
            } => {
                let mut e = ApiError::msg(
                    Code::ConcurrencyLimited,
                    format!(
                        "The {} already has {max_parallel} answer{} under way; retry when one ends.",
                        if scope == "key" { "key" } else { "organization" },
                        if max_parallel == 1 { "" } else { "s" }
                    ),
                )
                .details(json!({ "scope": scope, "max_parallel": max_parallel }));
                e.retry_after = Some(1);
                e
            }
            AdmissionError::Tokens(d) => crate::http::limits::refused(&d),
            AdmissionError::Unavailable => crate::http::limits::unavailable(),
            AdmissionError::LeasesUnavailable => {
                ApiError::unavailable(1, "Concurrency limits are unavailable; retry shortly.")
            }
            AdmissionError::Store(e) => e.into(),
        }
    }
}

/// Tokens of an upstream's count, prompt and answer together.
fn used(t: Option<Tokens>) -> Option<u64> {
    t.map(|t| t.prompt.saturating_add(t.completion))
}

/// Asks the model for `caller` (with `key`, or as a visitor of `widget`) and answers as JSON
/// or as Server-Sent Events: in the body's thread, else in `otherwise` (already read; `None`
/// starts a thread). Before the model server is asked: the model must be allowed, a
/// `max_parallel` lease is taken and tokens are reserved; all are settled however it ends.
pub async fn answer(
    state: &AppState,
    caller: Caller,
    body: ChatBody,
    otherwise: Option<Thread>,
    key: Option<&ApiKeyRecord>,
    widget: Option<&WidgetRecord>,
) -> Result<Response, ApiError> {
    let org_id = caller.org_id.clone();
    let visitor = caller.visitor.clone().unwrap_or_default();
    let who = Asker {
        org_id: &org_id,
        key,
        widget: widget.map(|w| (w, visitor.as_str())),
    };
    let model = state.limits.model_for(body.model.as_deref(), widget)?;
    state.limits.check_model(who, &model).await?;
    let context = body.context.filter(|c| !c.is_null());
    let prepared = match body.thread_id.as_deref() {
        Some(id) => state.chat.prepare(caller, body.message, Some(id)).await,
        None => state.chat.prepare_in(caller, body.message, otherwise).await,
    }
    .map_err(chat_error)?;
    let prompt = estimate_tokens(prepared.history.iter().map(|t| t.content.as_str()));
    let reserve = body
        .max_tokens
        .unwrap_or(state.config.chat_reserve_tokens)
        .into();
    // The design's order: a lease, then the budgets, then the token windows; each refusal
    // gives back what the steps before it took (the lease drops; the guard settles nothing).
    let lease = state.limits.lease(who).await?;
    // Reserve the worst case against every budget that applies; the guard settles the real
    // cost however the chat ends (answered, failed, or the client gone).
    let (prompt_bytes, messages) = crate::chat::Chat::prompt_size(&prepared);
    let end_user = prepared.caller.end_user();
    let reservation = state
        .spend
        .reserve(&Ask {
            org_id: &prepared.caller.org_id,
            key_id: prepared.caller.key_id.as_deref(),
            key_line: key.map(ApiKeyRecord::line),
            key_budgets: prepared.caller.key_budgets.as_deref(),
            end_user: end_user.as_deref(),
            client_id: prepared.caller.client_id.as_deref(),
            model: &model,
            prompt_bytes,
            messages,
            max_tokens: body.max_tokens,
        })
        .await
        .map_err(spend_error)?;
    let mut guard = Guard::new(state.spend.clone(), reservation);
    let mut admission = state
        .limits
        .reserve_tokens(who, prompt, reserve, lease)
        .await?;
    let pieces = match state
        .chat
        .ask(&prepared, context.as_ref(), &model, guard.max_tokens())
        .await
    {
        Ok(p) => p,
        Err(e) => {
            // Refused before answering: nothing was spent.
            admission.settle(Some(0)).await;
            return Err(chat_error(e));
        }
    };
    if !body.stream {
        let mut pieces = pieces;
        let (mut text, mut tokens) = (String::new(), None);
        while let Some(p) = pieces.next().await {
            match p {
                Ok(Piece::Text(t)) => {
                    guard.text(&t).await;
                    admission.saw(&t);
                    text.push_str(&t);
                }
                Ok(Piece::Usage(t)) => {
                    guard.usage(t.prompt, t.completion);
                    tokens = Some(t);
                }
                Err(e) => {
                    admission.settle(used(tokens)).await;
                    return Err(chat_error(e.into()));
                }
            }
        }
        admission.settle(used(tokens)).await;
        let row = guard.row();
        let answer = state
            .chat
            .finish(
                &prepared,
                text.clone(),
                tokens.unwrap_or_default(),
                row.clone(),
            )
            .await
            .map_err(chat_error)?;
        if let Some(row) = row {
            guard.finish(&row).await;
        }
        return Ok(ok(ChatAnswer {
            response: text,
            thread_id: prepared.thread.id.clone(),
            message_id: answer.id,
        })
        .into_response());
    }
    // Streaming: when the client goes away the response body, and with it this stream and
    // the upstream request, is dropped, which cancels the model server's work.
    // The admission moves into the stream: dropped with it when the client goes away, it
    // releases the lease and settles what was seen.
    let chat = state.chat.clone();
    let events = async_stream::stream! {
        let mut admission = admission;
        let mut pieces = pieces;
        let mut guard = guard;
        let (mut text, mut tokens) = (String::new(), None);
        while let Some(p) = pieces.next().await {
            match p {
                Ok(Piece::Text(t)) => {
                    guard.text(&t).await;
                    admission.saw(&t);
                    yield Ok::<_, Infallible>(delta_event(&t));
                    text.push_str(&t);
                }
                Ok(Piece::Usage(t)) => {
                    guard.usage(t.prompt, t.completion);
                    tokens = Some(t);
                }
                Err(e) => {
                    admission.settle(used(tokens)).await;
                    let e = chat_error(e.into());
                    yield Ok(Event::default().event("error").json_data(json!({ "code": e.code.as_str(), "message": e.message })).unwrap_or_default());
                    return;
                }
            }
        }
        admission.settle(used(tokens)).await;
        let row = guard.row();
        match chat.finish(&prepared, text, tokens.unwrap_or_default(), row.clone()).await {
            Ok(answer) => {
                if let Some(row) = row {
                    guard.finish(&row).await;
                }
                yield Ok(Event::default().event("done").json_data(json!({
                "thread_id": prepared.thread.id, "message_id": answer.id
            })).unwrap_or_default())
            }
            Err(e) => {
                let e = chat_error(e);
                yield Ok(Event::default().event("error").json_data(json!({ "code": e.code.as_str(), "message": e.message })).unwrap_or_default());
            }
        }
    };
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The `data` of a `delta` event.
#[derive(serde::Serialize)]
struct Delta<'a> {
    content: &'a str,
}

/// A `delta` event, serialised straight from the text (once per token of every stream: no
/// `serde_json::Value` map in between).
fn delta_event(text: &str) -> Event {
    Event::default()
        .event("delta")
        .json_data(Delta { content: text })
        .unwrap_or_default()
}

fn scope_for(p: &ChatPrincipal, scope: Permission) -> Result<ThreadScope, ApiError> {
    Ok(match p {
        ChatPrincipal::Person(user) => ThreadScope::User(user.clone()),
        ChatPrincipal::Key { key, user_id } => {
            needs_scope(key, scope)?;
            match user_id {
                Some(u) => ThreadScope::UserInOrg(u.clone(), key.org_id.clone()),
                None => ThreadScope::Org(key.org_id.clone()),
            }
        }
        ChatPrincipal::OAuth {
            user_id,
            org_id,
            scopes,
            ..
        } => {
            oauth_needs_scope(scopes, scope)?;
            ThreadScope::UserInOrg(user_id.clone(), org_id.clone())
        }
    })
}

/// Threads the caller may see, most recent first (at most 100): a person's own; an API key
/// with `threads:read` its organization's (with a user's token: that user's there).
#[utoipa::path(get, path = "/v1/threads", tag = "chat",
    security(("bearer" = []), ("api_key" = []), ("cookie" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The threads", body = Envelope<Vec<Thread>>),
        (status = 403, description = "`forbidden`: the key lacks `threads:read` (`details.required`)", body = ErrorEnvelope),
        errors::Auth))]
pub async fn list_threads(
    State(state): State<AppState>,
    principal: ChatPrincipal,
) -> Result<Success<Vec<Thread>>, ApiError> {
    let scope = scope_for(&principal, Permission::ThreadsRead)?;
    Ok(ok(state.chat.threads(&scope).await.map_err(chat_error)?))
}

/// A thread with its messages.
#[derive(serde::Serialize, ToSchema)]
pub struct ThreadWithMessages {
    /// The thread.
    #[serde(flatten)]
    pub thread: Thread,
    /// Its messages, oldest first (the last 1,000).
    pub messages: Vec<Message>,
}

/// One thread and its messages.
#[utoipa::path(get, path = "/v1/threads/{id}", tag = "chat",
    params(("id" = ThreadId, Path, description = "The thread")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The thread and its messages", body = Envelope<ThreadWithMessages>),
        (status = 400, description = "`invalid_request`: a malformed thread id (`details.reason`: `malformed_id`)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the key lacks `threads:read` (`details.required`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such thread the caller may see", body = ErrorEnvelope), errors::Auth))]
pub async fn get_thread(
    State(state): State<AppState>,
    principal: ChatPrincipal,
    Ids(id): Ids<ThreadId>,
) -> Result<Success<ThreadWithMessages>, ApiError> {
    let scope = scope_for(&principal, Permission::ThreadsRead)?;
    let (thread, messages) = state.chat.thread(&id, &scope).await.map_err(chat_error)?;
    Ok(ok(ThreadWithMessages { thread, messages }))
}

/// Deletes a thread and its messages (a person their own; a key needs `chat:write`).
#[utoipa::path(delete, path = "/v1/threads/{id}", tag = "chat",
    params(("id" = ThreadId, Path, description = "The thread")),
    security(("bearer" = []), ("api_key" = []), ("cookie" = []), ("api_key" = [], "bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_request`: a malformed thread id (`details.reason`: `malformed_id`)", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: the key lacks `chat:write` (`details.required`)", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such thread the caller may see", body = ErrorEnvelope), errors::Auth))]
pub async fn delete_thread(
    State(state): State<AppState>,
    principal: ChatPrincipal,
    Ids(id): Ids<ThreadId>,
) -> Result<StatusCode, ApiError> {
    let scope = scope_for(&principal, Permission::ChatWrite)?;
    state
        .chat
        .delete_thread(&id, &scope)
        .await
        .map_err(chat_error)?;
    Ok(StatusCode::NO_CONTENT)
}
