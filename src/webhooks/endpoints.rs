//! The webhook use cases: endpoints (create, list, get, update, delete, rotate the secret),
//! test events, the delivery log and manual retries. Each change is audited in the
//! transaction that makes it.

use super::{signing, ssrf, Webhooks, ROTATION_GRACE_MS};
use crate::config::SecretString;
use crate::ids::{DeliveryId, EndpointId, OrgId, WebhookMessageId};
use crate::store::{
    Audit, EndpointChange, StoreError, WebhookAttempt, WebhookEndpoint, EVENT_TYPES,
};

/// The longest description, in characters.
pub const MAX_DESCRIPTION: usize = 200;
/// The delivery log's page size when none is asked for.
pub const DEFAULT_ATTEMPTS: i64 = 50;
/// The largest page of the delivery log.
pub const MAX_ATTEMPTS: i64 = 200;

/// Why a webhook use case did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such endpoint in the organization (another organization's is not found either).
    #[error("webhook endpoint not found")]
    EndpointNotFound,
    /// No such delivery in the organization.
    #[error("delivery not found")]
    DeliveryNotFound,
    /// A value is refused: `field` names it, `problem` says why.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field as the client sent it.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The change conflicts with the endpoint's state (it is disabled).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Storage is busy: retry shortly.
    #[error("storage busy")]
    Busy,
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(String),
}

impl WebhookError {
    fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        WebhookError::Invalid {
            field,
            problem: problem.into(),
        }
    }

    /// A storage error where a missing row means `missing`.
    fn from_store(e: StoreError, missing: WebhookError) -> Self {
        match e {
            StoreError::NotFound => missing,
            StoreError::Conflict(what) => WebhookError::Conflict(what),
            StoreError::Busy => WebhookError::Busy,
            StoreError::Other(cause) => WebhookError::Storage(cause),
        }
    }

    fn endpoint(e: StoreError) -> Self {
        Self::from_store(e, WebhookError::EndpointNotFound)
    }
}

/// Who makes a change, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `user:{id}` or `api_key:{id}`.
    pub id: String,
    /// The client address, when over HTTP.
    pub ip: Option<String>,
}

/// An endpoint to create, as the client sent it.
#[derive(Debug, Default)]
pub struct NewEndpoint {
    /// The target URL.
    pub url: String,
    /// Event types to receive; `None`: all.
    pub event_types: Option<Vec<String>>,
    /// Free text.
    pub description: Option<String>,
    /// Whether it receives events (default true).
    pub enabled: Option<bool>,
}

/// Changes to an endpoint, as the client sent them; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct EndpointUpdate {
    /// A new URL.
    pub url: Option<String>,
    /// New event types; `Some(None)`: all.
    pub event_types: Option<Option<Vec<String>>>,
    /// A new description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// An endpoint with its signing secret: the answer to a creation or a rotation, the only
/// times the secret is shown.
#[derive(Debug)]
pub struct WithSecret {
    /// The endpoint.
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`.
    pub secret: String,
}

/// Event types to receive: `None` is all; a list must be non-empty and name known types
/// (repeats are dropped).
fn event_types(types: Option<Vec<String>>) -> Result<Option<Vec<String>>, WebhookError> {
    let Some(types) = types else {
        return Ok(None);
    };
    if types.is_empty() {
        return Err(WebhookError::invalid(
            "event_types",
            "must name at least one event type, or be null for all",
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(WebhookError::invalid(
                "event_types",
                format!(
                    "unknown event type {t:?} (one of {})",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(Some(out))
}

fn description(d: Option<String>) -> Result<Option<String>, WebhookError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(WebhookError::invalid(
            "description",
            "must be at most 200 characters",
        )),
        other => Ok(other),
    }
}

impl Webhooks {
    fn audit(&self, by: &Actor) -> Audit {
        Audit {
            actor: by.id.clone(),
            ip: by.ip.clone(),
            now: self.clock.now_ms(),
        }
    }

    /// A target URL, normalised: http(s), and (unless private targets are allowed) not an
    /// internal address, by literal or by what the name resolves to now. Deliveries check
    /// again when they connect.
    async fn url(&self, url: &str) -> Result<String, WebhookError> {
        let u = ssrf::parse(url.trim()).map_err(|why| WebhookError::invalid("url", why))?;
        ssrf::check(&u, self.allow_private, &self.lookup)
            .await
            .map_err(|why| WebhookError::invalid("url", why))?;
        Ok(u.to_string())
    }

    /// Creates an endpoint of `org` with a fresh signing secret.
    pub async fn create_endpoint(
        &self,
        org: &OrgId,
        new: NewEndpoint,
        by: &Actor,
    ) -> Result<WithSecret, WebhookError> {
        let event_types = event_types(new.event_types)?;
        let description = description(new.description)?.unwrap_or_default();
        let url = self.url(&new.url).await?;
        let audit = self.audit(by);
        let secret = signing::new_secret();
        let endpoint = WebhookEndpoint {
            id: EndpointId::new().into_string(),
            org_id: org.to_string(),
            url,
            description,
            event_types,
            enabled: new.enabled.unwrap_or(true),
            secret: SecretString::from(secret.clone()),
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            disabled_reason: None,
            created_at: audit.now,
            updated_at: audit.now,
        };
        self.store
            .create_webhook_endpoint(&endpoint, &audit)
            .await
            .map_err(WebhookError::endpoint)?;
        Ok(WithSecret { endpoint, secret })
    }

    /// The endpoints of `org`, oldest first.
    pub async fn endpoints(&self, org: &OrgId) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        self.store
            .webhook_endpoints(org)
            .await
            .map_err(WebhookError::endpoint)
    }

    /// One endpoint of `org`.
    pub async fn endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> Result<WebhookEndpoint, WebhookError> {
        self.store
            .webhook_endpoint(org, id)
            .await
            .map_err(WebhookError::endpoint)
    }

    /// Changes an endpoint; a new URL is checked as at creation, and disabling it gives up
    /// its pending deliveries.
    pub async fn update_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        update: EndpointUpdate,
        by: &Actor,
    ) -> Result<WebhookEndpoint, WebhookError> {
        let event_types = update.event_types.map(event_types).transpose()?;
        let description = description(update.description)?;
        let url = match update.url {
            Some(u) => Some(self.url(&u).await?),
            None => None,
        };
        let change = EndpointChange {
            url,
            description,
            event_types,
            enabled: update.enabled,
        };
        self.store
            .update_webhook_endpoint(org, id, &change, &self.audit(by))
            .await
            .map_err(WebhookError::endpoint)
    }

    /// Deletes an endpoint with its deliveries and their log.
    pub async fn delete_endpoint(
        &self,
        org: &OrgId,
        id: &EndpointId,
        by: &Actor,
    ) -> Result<(), WebhookError> {
        self.store
            .delete_webhook_endpoint(org, id, &self.audit(by))
            .await
            .map_err(WebhookError::endpoint)
    }

    /// Issues a new signing secret; the old one keeps signing for [`ROTATION_GRACE_MS`].
    pub async fn rotate_secret(
        &self,
        org: &OrgId,
        id: &EndpointId,
        by: &Actor,
    ) -> Result<WithSecret, WebhookError> {
        let audit = self.audit(by);
        let secret = signing::new_secret();
        let endpoint = self
            .store
            .rotate_webhook_secret(
                org,
                id,
                &SecretString::from(secret.clone()),
                audit.now + ROTATION_GRACE_MS,
                &audit,
            )
            .await
            .map_err(WebhookError::endpoint)?;
        Ok(WithSecret { endpoint, secret })
    }

    /// Queues a `webhook.test` event for one endpoint; a disabled endpoint is a conflict.
    pub async fn send_test(
        &self,
        org: &OrgId,
        id: &EndpointId,
    ) -> Result<WebhookMessageId, WebhookError> {
        let message = self
            .store
            .enqueue_webhook_test(org, id, self.clock.now_ms())
            .await
            .map_err(WebhookError::endpoint)?;
        Ok(WebhookMessageId::from_stored(message))
    }

    /// The latest `limit` attempts (default [`DEFAULT_ATTEMPTS`], at most [`MAX_ATTEMPTS`]) to
    /// deliver to an endpoint, newest first.
    pub async fn attempts(
        &self,
        org: &OrgId,
        id: &EndpointId,
        limit: Option<i64>,
    ) -> Result<Vec<WebhookAttempt>, WebhookError> {
        let limit = limit.unwrap_or(DEFAULT_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS).contains(&limit) {
            return Err(WebhookError::invalid("limit", "must be between 1 and 200"));
        }
        self.store
            .webhook_attempts(org, id, limit)
            .await
            .map_err(WebhookError::endpoint)
    }

    /// Sends a delivery again now, with the same `webhook-id`: a failed one is retried, a
    /// delivered one replayed. A disabled endpoint is a conflict.
    pub async fn retry_delivery(&self, org: &OrgId, id: &DeliveryId) -> Result<(), WebhookError> {
        self.store
            .retry_webhook_delivery(org, id, self.clock.now_ms())
            .await
            .map_err(|e| WebhookError::from_store(e, WebhookError::DeliveryNotFound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_filters_are_known_types_without_repeats() {
        assert_eq!(event_types(None).ok(), Some(None));
        let twice = vec!["api_key.created".to_string(), "api_key.created".to_string()];
        assert_eq!(
            event_types(Some(twice)).ok(),
            Some(Some(vec!["api_key.created".to_string()]))
        );
        for bad in [vec![], vec!["nope".to_string()]] {
            assert!(matches!(
                event_types(Some(bad)),
                Err(WebhookError::Invalid {
                    field: "event_types",
                    ..
                })
            ));
        }
    }

    #[test]
    fn descriptions_are_counted_in_characters() {
        assert!(description(Some("é".repeat(MAX_DESCRIPTION))).is_ok());
        assert!(description(Some("é".repeat(MAX_DESCRIPTION + 1))).is_err());
    }
}
