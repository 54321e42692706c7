//! The audit log's filters: an action among those the store records, an actor as the store
//! writes it (`user:{id}`, `api_key:{id}`, `cli`, `system`).

use crate::ids::KeyId;

/// Every action the store records, as docs/audit-log.md lists them (a test in
/// tests/api/docs_lists.rs keeps the three in step).
pub const AUDIT_ACTIONS: &[&str] = &[
    "organization.created",
    "organization.renamed",
    "organization.rate_limits_changed",
    "organization.mfa_requirement_changed",
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
    "oauth_client.created",
    "oauth_client.deleted",
    "oauth_grant.created",
    "oauth_grant.revoked",
];

/// The shape of an actor filter, as `/openapi.json` states it: a user's hyphenated UUID, a
/// key's id, an OAuth client acting for a user, the command line or the delivery worker.
pub const ACTOR_PATTERN: &str = "^(user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|api_key:key_[0-9a-f]{32}|oauth_client:[!-~]{1,512}/user:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|cli|system)$";

/// The longest client id an OAuth actor names.
const MAX_CLIENT_ID: usize = 512;

fn stored_uuid(id: &str) -> bool {
    // uuid's parser also takes other spellings; only the stored one can match.
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

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
    /// `user:{uuid}` (lower-case, hyphenated, as user ids are stored), `api_key:key_…`,
    /// `oauth_client:{client id}/user:{uuid}`, `cli` or `system`; the error is the problem
    /// as a field error states it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let ok = match raw.split_once(':') {
            Some(("user", id)) => stored_uuid(id),
            Some(("api_key", id)) => KeyId::parse(id).is_ok(),
            Some(("oauth_client", rest)) => rest.rsplit_once("/user:").is_some_and(|(c, u)| {
                !c.is_empty()
                    && c.len() <= MAX_CLIENT_ID
                    && c.bytes().all(|b| b.is_ascii_graphic())
                    && stored_uuid(u)
            }),
            Some(_) => false,
            None => raw == "cli" || raw == "system",
        };
        if ok {
            Ok(AuditActor(raw.to_string()))
        } else {
            Err("must be user:{user id}, api_key:{key id}, oauth_client:{client id}/user:{user id}, cli or system")
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
        let oauth = "oauth_client:https://app.example/client.json/user:0190a0b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";
        for good in [user, key.as_str(), oauth, "cli", "system"] {
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
            "oauth_client:/user:0190a0b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b",
            "oauth_client:a b/user:0190a0b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b",
            "oauth_client:app/user:0190A0B2-7C4D-7E8F-9A0B-1C2D3E4F5A6B",
            "oauth_client:app",
        ] {
            assert!(AuditActor::parse(bad).is_err(), "{bad:?}");
        }
    }
}
