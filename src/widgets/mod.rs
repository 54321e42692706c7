//! The widget service: an organization's widgets (see [`manage`]) and the public flow a
//! visitor's page runs: the widget and its allowed origins (cached), widget tokens,
//! identified visitors, stateless session tokens, request signatures and the per-session
//! replay cache. Nothing in the public flow touches storage on a warm cache.

pub mod manage;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use crate::auth::widget::{self as w, AllowedOrigin, SessionClaims, SignatureError};
use crate::clock::Clock;
use crate::error::Reason;
use crate::fanout::Bus;
use crate::ids::{VisitorId, WidgetId};
use crate::metrics::Metrics;
use crate::ratelimit::RedisLink;
use crate::store::{Message, Store, StoreError, Thread, ThreadScope, WidgetRecord};

pub use manage::{Actor, NewWidget, WidgetEdit, WithSecret};
pub use settings::WidgetSettings;

/// Why a widget use case failed.
#[derive(Debug, thiserror::Error)]
pub enum WidgetError {
    /// No such widget in the organization.
    #[error("Widget not found.")]
    NotFound,
    /// An input value is invalid: `field` and what is wrong with it.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as the caller named it (`settings.title`, `allowed_origins[2]`).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Storage failed or refused the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a public widget request was refused; `reason()` is `details.reason` on the wire and
/// the label of `gatehouse_widget_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No such widget.
    NotFound,
    /// `Origin` missing or not on the widget's allowlist (or not the session's origin).
    OriginNotAllowed,
    /// The widget token is missing, malformed, for another widget, or signed with an old secret.
    BadToken,
    /// `user_hash` does not match `user_id`.
    BadUserHash,
    /// No session token.
    MissingSession,
    /// A session token this deployment did not issue for this widget.
    BadSession,
    /// The session is past its expiry, or the widget's secret was rotated since.
    SessionExpired,
    /// Signature headers missing or malformed, or the signature does not match.
    BadSignature,
    /// The timestamp is more than five minutes away from the server's clock.
    StaleTimestamp,
    /// This nonce was already used in this session.
    Replayed,
    /// Storage is unreachable and the widget is not cached.
    Unavailable,
}

impl Rejection {
    /// The wire reason.
    pub fn reason(self) -> Reason {
        match self {
            Rejection::NotFound => Reason::NotFound,
            Rejection::OriginNotAllowed => Reason::OriginNotAllowed,
            Rejection::BadToken => Reason::BadToken,
            Rejection::BadUserHash => Reason::BadUserHash,
            Rejection::MissingSession => Reason::Missing,
            Rejection::BadSession => Reason::BadSession,
            Rejection::SessionExpired => Reason::SessionExpired,
            Rejection::BadSignature => Reason::BadSignature,
            Rejection::StaleTimestamp => Reason::StaleTimestamp,
            Rejection::Replayed => Reason::Replayed,
            Rejection::Unavailable => Reason::Unavailable,
        }
    }

    /// Whether the refusal is a failed credential (a forged or stale token, session or
    /// signature), which spends the client's failure budget (`rate_limit_auth_failures`).
    pub fn is_failed_credential(self) -> bool {
        matches!(
            self,
            Rejection::BadToken
                | Rejection::BadUserHash
                | Rejection::BadSession
                | Rejection::SessionExpired
                | Rejection::BadSignature
                | Rejection::StaleTimestamp
                | Rejection::Replayed
        )
    }
}

/// A session as handed to the page.
#[derive(Clone, Debug)]
pub struct Opened {
    /// `gws_…`: `Authorization: Bearer` on signed calls.
    pub session_token: String,
    /// `gss_…`: the HMAC key for request signatures (its UTF-8 bytes).
    pub signing_secret: String,
    /// Unix ms.
    pub expires_at: i64,
    /// The anonymous visitor id to send next time (`vis_…`).
    pub visitor_id: String,
}

/// What a page sends to open a session.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenRequest<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The widget token from `data-key`.
    pub token: Option<&'a str>,
    /// The visitor id the page kept from an earlier session.
    pub visitor_id: Option<&'a str>,
    /// An identified visitor: `(user_id, user_hash)`.
    pub user: Option<(&'a str, &'a str)>,
}

/// The parts of a signed request.
#[derive(Clone, Copy, Debug)]
pub struct SignedParts<'a> {
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The bearer session token.
    pub session_token: Option<&'a str>,
    /// `X-Gatehouse-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `X-Gatehouse-Nonce`.
    pub nonce: Option<&'a str>,
    /// `X-Gatehouse-Signature`.
    pub signature: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The raw body.
    pub body: &'a [u8],
}

/// A verified widget session.
#[derive(Clone, Debug)]
pub struct Session {
    /// What the token says.
    pub claims: SessionClaims,
    /// The widget.
    pub widget: Arc<WidgetRecord>,
}

/// The widget service; cheap to clone.
#[derive(Clone)]
pub struct Widgets {
    store: Store,
    clock: Clock,
    metrics: Arc<Metrics>,
    bus: Bus,
    key: Arc<[u8]>,
    session_ms: i64,
    cache: moka::future::Cache<String, Option<Arc<WidgetRecord>>>,
    nonces: Nonces,
}

/// How long a widget (or its absence) is trusted from memory; a change on this instance
/// applies at once, on others through Redis fan-out or within this time.
const WIDGET_TTL: Duration = Duration::from_secs(60);
/// How long a used nonce is remembered: a request's timestamp may be up to five minutes
/// either side of the clock, so after ten minutes (plus slack) it is refused as stale anyway.
const NONCE_TTL: Duration = Duration::from_secs(2 * w::TIMESTAMP_TOLERANCE_SECS as u64 + 60);

/// The widget visitor's anonymous id: `vis_` + 32 hex.
pub fn valid_visitor_id(v: &str) -> bool {
    v.strip_prefix("vis_").is_some_and(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// An identified visitor's id from the customer's system: 1-128 visible characters.
pub fn valid_user_id(u: &str) -> bool {
    !u.is_empty() && u.len() <= 128 && u.chars().all(|c| !c.is_control())
}

/// Checks the shapes of what a page sends to open a session: a visitor id from an earlier
/// session, and an identified visitor's `user_id` with its `user_hash` (both or neither).
/// Returns the identified visitor as `(user_id, user_hash)`.
pub fn check_identity<'a>(
    visitor_id: Option<&str>,
    user_id: Option<&'a str>,
    user_hash: Option<&'a str>,
) -> Result<Option<(&'a str, &'a str)>, WidgetError> {
    if visitor_id.is_some_and(|v| !valid_visitor_id(v)) {
        return Err(WidgetError::Invalid {
            field: "visitor_id".into(),
            problem: "must be a visitor id from an earlier session (vis_ and 32 hex digits)".into(),
        });
    }
    match (user_id, user_hash) {
        (Some(u), Some(h)) if valid_user_id(u) => Ok(Some((u, h))),
        (Some(_), Some(_)) => Err(WidgetError::Invalid {
            field: "user_id".into(),
            problem: "must be 1-128 characters without control characters".into(),
        }),
        (None, None) => Ok(None),
        _ => Err(WidgetError::Invalid {
            field: "user_hash".into(),
            problem: "user_id and user_hash go together".into(),
        }),
    }
}

impl Widgets {
    /// The service over `store`; `key` signs session tokens and derives their secrets;
    /// `redis`, when present, shares the replay cache between instances; `bus` carries
    /// changes to the other instances' caches.
    pub fn new(
        store: Store,
        clock: Clock,
        metrics: Arc<Metrics>,
        bus: Bus,
        key: Vec<u8>,
        session_seconds: u64,
        redis: Option<RedisLink>,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            bus,
            key: key.into(),
            session_ms: i64::try_from(session_seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WIDGET_TTL)
                .build(),
            nonces: Nonces {
                memory: moka::sync::Cache::builder()
                    .max_capacity(2_000_000)
                    .time_to_live(NONCE_TTL)
                    .build(),
                redis,
            },
        }
    }

    fn reject(&self, r: Rejection) -> Rejection {
        self.metrics.widget_rejection(r.reason().as_str());
        r
    }

    /// The widget, from memory when possible.
    pub async fn widget(&self, id: &WidgetId) -> Result<Arc<WidgetRecord>, Rejection> {
        let store = self.store.clone();
        let key = id.as_str().to_string();
        let found = self
            .cache
            .try_get_with(key.clone(), async move {
                store.widget_by_id(&key).await.map(|w| w.map(Arc::new))
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "widget lookup could not reach storage");
                Rejection::Unavailable
            })?;
        found.ok_or(Rejection::NotFound)
    }

    /// Forgets a cached widget (changed, rotated or deleted).
    pub async fn forget(&self, id: &str) {
        self.cache.invalidate(id).await;
    }

    /// Forgets every cached widget.
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// The normalised `Origin` if the widget allows it.
    pub fn allowed_origin(widget: &WidgetRecord, origin: Option<&str>) -> Option<String> {
        let origin = w::normalize_origin(origin?)?;
        widget
            .allowed_origins
            .iter()
            .filter_map(|o| AllowedOrigin::parse(o).ok())
            .any(|o| o.allows(&origin))
            .then_some(origin)
    }

    /// The widget, if the request's origin may use it.
    pub async fn for_origin(
        &self,
        id: &WidgetId,
        origin: Option<&str>,
    ) -> Result<(Arc<WidgetRecord>, String), Rejection> {
        let widget = self.widget(id).await.map_err(|r| self.reject(r))?;
        match Self::allowed_origin(&widget, origin) {
            Some(o) => Ok((widget, o)),
            None => Err(self.reject(Rejection::OriginNotAllowed)),
        }
    }

    /// Opens a session: origin, widget token (when required or given) and identity checked.
    /// Input shapes (visitor id, user id) are the caller's to validate first.
    pub async fn open(&self, id: &WidgetId, req: OpenRequest<'_>) -> Result<Opened, Rejection> {
        let (widget, origin) = self.for_origin(id, req.origin).await?;
        match req.token {
            Some(t) if w::verify_token(&widget.secret, &widget.org_id, &widget.id, t) => {}
            None if !widget.require_token => {}
            _ => return Err(self.reject(Rejection::BadToken)),
        }
        let visitor_id = req
            .visitor_id
            .map(str::to_string)
            .unwrap_or_else(|| VisitorId::new().into_string());
        let vis = match req.user {
            Some((user_id, hash)) => {
                if !w::verify_user_hash(&widget.secret, user_id, hash) {
                    return Err(self.reject(Rejection::BadUserHash));
                }
                format!("u:{user_id}")
            }
            None => format!("v:{visitor_id}"),
        };
        Ok(self.issue(&widget, vis, visitor_id, origin))
    }

    fn issue(&self, widget: &WidgetRecord, vis: String, vid: String, origin: String) -> Opened {
        // A secret handle (the signing secret derives from it): random, not time-ordered.
        let sid = crate::auth::tokens::random_token(16);
        let claims = SessionClaims {
            sid,
            org: widget.org_id.clone(),
            wid: widget.id.clone(),
            vis,
            vid,
            origin,
            exp: self.clock.now_ms().saturating_add(self.session_ms),
            gen: w::secret_fingerprint(&widget.secret),
        };
        Opened {
            session_token: w::encode_session(&self.key, &claims),
            signing_secret: w::session_secret(&self.key, &claims.sid),
            expires_at: claims.exp,
            visitor_id: claims.vid,
        }
    }

    /// A fresh session for the same visitor and origin.
    pub fn renew(&self, s: &Session) -> Opened {
        self.issue(
            &s.widget,
            s.claims.vis.clone(),
            s.claims.vid.clone(),
            s.claims.origin.clone(),
        )
    }

    /// Checks a signed request: widget, origin, session, signature, timestamp, then the
    /// nonce (last, so a forged request cannot burn a legitimate client's nonce).
    pub async fn verify(&self, id: &WidgetId, p: SignedParts<'_>) -> Result<Session, Rejection> {
        let (widget, origin) = self.for_origin(id, p.origin).await?;
        let token = p
            .session_token
            .ok_or_else(|| self.reject(Rejection::MissingSession))?;
        let claims = w::decode_session(&self.key, token)
            .filter(|c| c.wid == widget.id && c.org == widget.org_id)
            .ok_or_else(|| self.reject(Rejection::BadSession))?;
        if claims.origin != origin {
            return Err(self.reject(Rejection::OriginNotAllowed));
        }
        if claims.exp <= self.clock.now_ms() || claims.gen != w::secret_fingerprint(&widget.secret)
        {
            return Err(self.reject(Rejection::SessionExpired));
        }
        let (Some(ts), Some(nonce), Some(sig)) = (p.timestamp, p.nonce, p.signature) else {
            return Err(self.reject(Rejection::BadSignature));
        };
        let secret = w::session_secret(&self.key, &claims.sid);
        w::verify_request(
            &secret,
            ts,
            nonce,
            sig,
            p.method,
            p.path,
            p.body,
            self.clock.now_secs(),
        )
        .map_err(|e| {
            self.reject(match e {
                SignatureError::Bad => Rejection::BadSignature,
                SignatureError::Stale => Rejection::StaleTimestamp,
            })
        })?;
        if !self.nonces.first_use(&claims.sid, nonce).await {
            return Err(self.reject(Rejection::Replayed));
        }
        Ok(Session { claims, widget })
    }
}

impl Widgets {
    /// The session's visitor's latest conversation, if any.
    pub async fn latest_thread(&self, s: &Session) -> Result<Option<Thread>, WidgetError> {
        let scope = ThreadScope::Visitor(s.claims.org.clone(), s.claims.vis.clone());
        Ok(self.store.threads(&scope, 1).await?.into_iter().next())
    }

    /// The session's visitor's latest conversation and its last `n` messages, oldest first.
    pub async fn history(
        &self,
        s: &Session,
        n: i64,
    ) -> Result<(Option<Thread>, Vec<Message>), WidgetError> {
        let thread = self.latest_thread(s).await?;
        let messages = match &thread {
            Some(t) => self.store.recent_messages(&t.id, n).await?,
            None => Vec::new(),
        };
        Ok((thread, messages))
    }
}

/// Nonces already used, per session: in Redis when configured (so a replay to another
/// instance is caught too), in memory otherwise or while Redis does not answer.
#[derive(Clone)]
struct Nonces {
    memory: moka::sync::Cache<String, ()>,
    redis: Option<RedisLink>,
}

impl Nonces {
    /// Records the nonce; `false` if it was seen before.
    async fn first_use(&self, sid: &str, nonce: &str) -> bool {
        let key = format!("{sid}:{nonce}");
        // Seen here (perhaps while Redis was down): a replay whatever Redis says.
        if self.memory.contains_key(&key) {
            return false;
        }
        if let Some(link) = &self.redis {
            if let Some(mut conn) = link.connection() {
                let cmd = redis::cmd("SET")
                    .arg(link.key(&format!("nonce:{key}")))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(NONCE_TTL.as_millis() as u64)
                    .to_owned();
                let reply: Result<Result<Option<String>, _>, _> =
                    tokio::time::timeout(link.timeout, cmd.query_async(&mut conn))
                        .instrument(tracing::debug_span!(
                            "redis",
                            otel.name = "SET nonce",
                            otel.kind = "client",
                            db.system.name = "redis"
                        ))
                        .await;
                match reply {
                    Ok(Ok(set)) => {
                        // Remembered here too, so a Redis outage later still catches it.
                        self.memory.insert(key, ());
                        return set.is_some();
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "replay cache: Redis failed; checking nonces in memory")
                    }
                    Err(_) => {
                        tracing::warn!("replay cache: Redis timed out; checking nonces in memory")
                    }
                }
            }
        }
        self.memory.entry(key).or_insert(()).is_fresh()
    }
}
