use serde_json::Value;

/// Every error code Gatehouse answers with on `/v1`, with its HTTP status.
/// A code never changes once shipped; `tests::the_code_table_is_stable` pins them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 400: the request is malformed.
    InvalidRequest,
    /// 401: no valid credential.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: no such object (or not visible to the caller).
    NotFound,
    /// 409: the change conflicts with existing state.
    Conflict,
    /// 413: the body exceeds the limit.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: well-formed but invalid values.
    ValidationFailed,
    /// 429: a rate limit refused the request.
    RateLimited,
    /// 402: the API key's credits are spent.
    CreditsExhausted,
    /// 500: a bug or an unexpected failure; details are only in the log.
    InternalError,
    /// 503: a dependency is unavailable or overloaded; retry later.
    ServiceUnavailable,
    /// 502: the model server failed.
    UpstreamError,
    /// 504: the model server did not answer in time.
    UpstreamTimeout,
    /// 402: a spend budget that applies is exhausted for its period.
    BudgetExhausted,
    /// 403: a budget applies and the model has no price.
    ModelUnpriced,
    /// 403: the model asked for is not on the key's or the organization's allow-list.
    ModelNotAllowed,
    /// 429: the key or organization already has `max_parallel` answers under way.
    ConcurrencyLimited,
    /// 403: the organization requires a second factor and the person's token is `aal1`.
    MfaRequired,
}

impl Code {
    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        self.row().1
    }

    /// The generic message used when none is given.
    pub fn default_message(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> (&'static str, u16, &'static str) {
        match self {
            Code::InvalidRequest => ("invalid_request", 400, "The request is invalid."),
            Code::Unauthorized => ("unauthorized", 401, "Authentication required."),
            Code::Forbidden => ("forbidden", 403, "You are not allowed to do this."),
            Code::NotFound => ("not_found", 404, "Not found."),
            Code::Conflict => (
                "conflict",
                409,
                "The request conflicts with the current state.",
            ),
            Code::PayloadTooLarge => ("payload_too_large", 413, "The request body is too large."),
            Code::UnsupportedMediaType => (
                "unsupported_media_type",
                415,
                "The request body must be JSON (Content-Type: application/json).",
            ),
            Code::ValidationFailed => ("validation_failed", 422, "Some fields are invalid."),
            Code::RateLimited => ("rate_limited", 429, "Rate limit exceeded."),
            Code::CreditsExhausted => {
                ("credits_exhausted", 402, "The API key has no credits left.")
            }
            Code::InternalError => (
                "internal_error",
                500,
                "Internal error. Quote the request id when reporting it.",
            ),
            Code::UpstreamError => ("upstream_error", 502, "The model server failed."),
            Code::UpstreamTimeout => (
                "upstream_timeout",
                504,
                "The model server did not answer in time.",
            ),
            Code::ServiceUnavailable => (
                "service_unavailable",
                503,
                "The service is temporarily unavailable.",
            ),
            Code::BudgetExhausted => ("budget_exhausted", 402, "A spend budget is exhausted."),
            Code::ModelUnpriced => (
                "model_unpriced",
                403,
                "The model has no price and a budget applies.",
            ),
            Code::ModelNotAllowed => (
                "model_not_allowed",
                403,
                "This model is not allowed for this key or organization.",
            ),
            Code::ConcurrencyLimited => (
                "concurrency_limited",
                429,
                "Too many answers are under way at once.",
            ),
            Code::MfaRequired => (
                "mfa_required",
                403,
                "This organization requires multi-factor authentication.",
            ),
        }
    }
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $wire:literal, )*) => {
        /// Every `details.reason` Gatehouse answers with, with its wire form: the one table of
        /// them, pinned by `tests::the_reason_table_is_stable` like the codes are.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
        pub enum Reason {
            $( $(#[$doc])* #[serde(rename = $wire)] $variant, )*
        }

        impl Reason {
            /// Every reason, in table order.
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),*];

            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Reason::$variant => $wire, )*
                }
            }

            /// The reason with wire form `s`.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $wire => Some(Reason::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// No credential was sent.
    Missing = "missing",
    /// The credential, or an id, is not in the expected format.
    Malformed = "malformed",
    /// The credential does not exist (or a public widget does not).
    NotFound = "not_found",
    /// The credential or session passed its time limit.
    Expired = "expired",
    /// The credential was revoked or its session ended.
    Revoked = "revoked",
    /// Storage or the limiter could not be reached to decide.
    Unavailable = "unavailable",
    /// A path id is not `{prefix}_` and 32 hex digits.
    MalformedId = "malformed_id",
    /// A cookie request came from another origin.
    Csrf = "csrf",
    /// The caller is not a member of the organization.
    NotAMember = "not_a_member",
    /// Email or password is wrong.
    InvalidCredentials = "invalid_credentials",
    /// The address has not been confirmed.
    EmailNotConfirmed = "email_not_confirmed",
    /// An invitation token is unknown or was used up.
    InvalidToken = "invalid_token",
    /// The invitation is for another address.
    WrongEmail = "wrong_email",
    /// The account existed before the invitation and must accept it signed in.
    AccountPredatesInvitation = "account_predates_invitation",
    /// A mail to this address was sent too recently.
    AddressInterval = "address_interval",
    /// The invitation was accepted already.
    Accepted = "accepted",
    /// The invitation was declined.
    Declined = "declined",
    /// The invitation no longer exists.
    Gone = "gone",
    /// A proxied path holds `.` or `..`.
    DotSegment = "dot_segment",
    /// A proxied path holds an encoded slash or a backslash.
    EncodedSeparator = "encoded_separator",
    /// A proxied path would leave `proxy_target`'s origin or base path once parsed.
    OutsideBase = "outside_base",
    /// The page's origin is not on the widget's allowlist.
    OriginNotAllowed = "origin_not_allowed",
    /// The widget token is invalid or expired.
    BadToken = "bad_token",
    /// An identified visitor's `user_hash` does not match.
    BadUserHash = "bad_user_hash",
    /// The widget session token is invalid.
    BadSession = "bad_session",
    /// The widget session expired.
    SessionExpired = "session_expired",
    /// A widget request's signature does not match.
    BadSignature = "bad_signature",
    /// A widget request's timestamp is too far from now.
    StaleTimestamp = "stale_timestamp",
    /// A widget request's nonce was seen before.
    Replayed = "replayed",
    /// An OAuth access token was issued for another resource (its `aud`).
    WrongAudience = "wrong_audience",
}

impl Code {
    /// Every code, in table order.
    pub const ALL: [Code; 19] = [
        Code::InvalidRequest,
        Code::Unauthorized,
        Code::Forbidden,
        Code::NotFound,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::ValidationFailed,
        Code::RateLimited,
        Code::InternalError,
        Code::ServiceUnavailable,
        Code::UpstreamError,
        Code::UpstreamTimeout,
        Code::CreditsExhausted,
        Code::BudgetExhausted,
        Code::ModelUnpriced,
        Code::ModelNotAllowed,
        Code::ConcurrencyLimited,
        Code::MfaRequired,
    ];
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Code::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

/// An error answered in the `/v1` envelope.
#[derive(Debug)]
pub struct ApiError {
    /// The code (and so the status).
    pub code: Code,
    /// A message for the developer reading the response.
    pub message: String,
    /// Structured details (`reason`, `required`, `fields`…).
    pub details: Option<Value>,
    /// Seconds for `Retry-After`, when it applies.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the code's default message.
    pub fn new(code: Code) -> Self {
        Self {
            code,
            message: code.default_message().to_string(),
            details: None,
            retry_after: None,
        }
    }
    /// An error with a specific message.
    pub fn msg(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    /// Adds details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
    /// 401 with `details.reason`.
    pub fn unauthorized(reason: Reason, message: &str) -> Self {
        Self::msg(Code::Unauthorized, message).reason(reason)
    }
    /// Sets `details.reason` (keeping other details).
    pub fn reason(mut self, reason: Reason) -> Self {
        match &mut self.details {
            Some(Value::Object(map)) => {
                map.insert("reason".into(), Value::from(reason.as_str()));
            }
            _ => self.details = Some(serde_json::json!({ "reason": reason.as_str() })),
        }
        self
    }
    /// 503 with `Retry-After: retry_after` seconds: a dependency (storage, the limiter, the
    /// mail queue) cannot answer now; the message says which.
    pub fn unavailable(retry_after: u64, message: impl Into<String>) -> Self {
        let mut e = Self::msg(Code::ServiceUnavailable, message);
        e.retry_after = Some(retry_after.max(1));
        e
    }
    /// 400 `invalid_request` with reason `malformed_id`, naming the expected prefix.
    pub fn malformed_id(e: &crate::ids::Malformed) -> Self {
        Self::msg(Code::InvalidRequest, e.to_string()).reason(Reason::MalformedId)
    }
    /// 403 `forbidden` with reason `csrf`: a cookie request from another origin. The
    /// message and `details` name the origin the server expects (`public_url`'s) and the
    /// one that arrived, so an operator who opened the page under another host name sees
    /// why at once.
    pub fn csrf(expected: &str, arrived: Option<&str>) -> Self {
        // The arrived origin is the client's own header, echoed back to it; capped so a
        // long header does not make a long answer.
        let arrived: Option<String> = arrived.map(|a| a.chars().take(200).collect());
        let got = match &arrived {
            Some(a) => format!("this request came from {a}"),
            None => "this request carried neither Origin nor Referer".to_string(),
        };
        Self::msg(
            Code::Forbidden,
            format!(
                "Cross-site request refused (CSRF check failed): this server accepts changes \
                 from {expected} (its public_url), but {got}. Open the page at {expected}, or \
                 set public_url to the address you use."
            ),
        )
        .details(serde_json::json!({ "expected_origin": expected, "origin": arrived }))
        .reason(Reason::Csrf)
    }
    /// 422 naming one field.
    pub fn field(field: &str, problem: &str) -> Self {
        Self::msg(Code::ValidationFailed, format!("{field}: {problem}"))
            .details(serde_json::json!({ "fields": { field: problem } }))
    }
    /// 404 for a kind of object.
    pub fn not_found(what: &str) -> Self {
        Self::msg(Code::NotFound, format!("{what} not found."))
    }
    /// 500 whose cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Code::InternalError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_table_is_stable() {
        let table: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            table,
            [
                "missing",
                "malformed",
                "not_found",
                "expired",
                "revoked",
                "unavailable",
                "malformed_id",
                "csrf",
                "not_a_member",
                "invalid_credentials",
                "email_not_confirmed",
                "invalid_token",
                "wrong_email",
                "account_predates_invitation",
                "address_interval",
                "accepted",
                "declined",
                "gone",
                "dot_segment",
                "encoded_separator",
                "outside_base",
                "origin_not_allowed",
                "bad_token",
                "bad_user_hash",
                "bad_session",
                "session_expired",
                "bad_signature",
                "stale_timestamp",
                "replayed",
                "wrong_audience",
            ]
        );
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
    }

    #[test]
    fn the_code_table_is_stable() {
        let table: Vec<(&str, u16)> = Code::ALL.iter().map(|c| (c.as_str(), c.status())).collect();
        assert_eq!(
            table,
            vec![
                ("invalid_request", 400),
                ("unauthorized", 401),
                ("forbidden", 403),
                ("not_found", 404),
                ("conflict", 409),
                ("payload_too_large", 413),
                ("unsupported_media_type", 415),
                ("validation_failed", 422),
                ("rate_limited", 429),
                ("internal_error", 500),
                ("service_unavailable", 503),
                ("upstream_error", 502),
                ("upstream_timeout", 504),
                ("credits_exhausted", 402),
                ("budget_exhausted", 402),
                ("model_unpriced", 403),
                ("model_not_allowed", 403),
                ("concurrency_limited", 429),
                ("mfa_required", 403),
            ]
        );
    }
}
