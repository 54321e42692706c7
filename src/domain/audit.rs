//! The audit log's filters: an action among those the store records, an actor as the store
//! writes it (`user:{id}`, `api_key:{id}`, `cli`, `system`).

use crate::ids::KeyId;

/// Every action the store records, as docs/audit-log.md lists them (a test in
/// tests/api/docs_lists.rs keeps the three in step).
pub const AUDIT_ACTIONS: &[&str] = &[
    "organization.created",
    "organization.renamed",
    "organization.rate_limits_changed",
    "organization.chat_limits_changed",
    "member.added",
    "member.role_changed",
    "member.removed",
    "role.created",
    "role.deleted",
    "invitation.created",
    "invitation.accepted",
    "invitation.declined",
    "invitation.revoked",
    "api_key.created",
    "api_key.updated",
    "api_key.revoked",
    "api_key.rolled",
    "credits.low",
    "credits.exhausted",
    "widget.created",
    "widget.updated",
    "widget.secret_rotated",
    "widget.deleted",
    "webhook_endpoint.created",
    "webhook_endpoint.updated",
    "webhook_endpoint.secret_rotated",
    "webhook_endpoint.deleted",
    "webhook_endpoint.disabled",
    "organization.budgets_changed",
    "model_price.set",
    "model_price.deleted",
    "budget.threshold",
];

/// The shape of an actor filter, as `/openapi.json` states it: a user's hyphenated UUID, a
/// key's id, the command line or the delivery worker.
pub const ACTOR_PATTERN: &str = "^(user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|api_key:key_[0-9a-f]{32}|cli|system)$";

/// An action the audit log may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditAction(&'static str);

impl AuditAction {
    /// One of [`AUDIT_ACTIONS`], exactly; the error is the problem as a field error states it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        AUDIT_ACTIONS
            .iter()
            .find(|a| **a == raw)
            .map(|a| AuditAction(a))
            .ok_or("is not an action the audit log records (see docs/audit-log.md)")
    }

    /// The action as stored.
    pub fn as_str(&self) -> &str {
        self.0
    }
}

/// Who an audit entry names as having acted, in the stored form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditActor(String);

impl AuditActor {
    /// `user:{uuid}` (lower-case, hyphenated, as user ids are stored), `api_key:key_…`, `cli`
    /// or `system`; the error is the problem as a field error states it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let ok = match raw.split_once(':') {
            // uuid's parser also takes other spellings; only the stored one can match.
            Some(("user", id)) => {
                uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
            }
            Some(("api_key", id)) => KeyId::parse(id).is_ok(),
            Some(_) => false,
            None => raw == "cli" || raw == "system",
        };
        if ok {
            Ok(AuditActor(raw.to_string()))
        } else {
            Err("must be user:{user id}, api_key:{key id}, cli or system")
        }
    }

    /// The actor as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recorded_actions_parse() {
        assert_eq!(
            AuditAction::parse("api_key.revoked").map(|a| a.as_str().to_string()),
            Ok("api_key.revoked".to_string())
        );
        for bad in [
            "",
            "api_key",
            "API_KEY.REVOKED",
            "api_key.revoked ",
            "api_key.*",
        ] {
            assert!(AuditAction::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn actors_parse_in_their_stored_form_only() {
        let user = "user:0190a0b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";
        let key = format!("api_key:{}", KeyId::new());
        for good in [user, key.as_str(), "cli", "system"] {
            assert_eq!(AuditActor::parse(good).map(|a| a.0), Ok(good.to_string()));
        }
        for bad in [
            "",
            "user:",
            "user:0190A0B2-7C4D-7E8F-9A0B-1C2D3E4F5A6B",
            "user:0190a0b27c4d7e8f9a0b1c2d3e4f5a6b",
            "api_key:wgt_0190a0b27c4d7e8f9a0b1c2d3e4f5a6b",
            "api_key:",
            "key:cli",
            "CLI",
            "cli:",
        ] {
            assert!(AuditActor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
