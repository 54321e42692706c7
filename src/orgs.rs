//! What a principal may do in an organization.

use serde_json::json;

use crate::domain::permissions::{self, Permission};
use crate::error::{ApiError, Code};
use crate::http::extract::Principal;
use crate::store::{Store, StoreError};

/// The message every non-member gets, whatever the organization id.
pub const NOT_A_MEMBER: &str = "Not a member of the selected organization";

/// A principal's standing in one organization.
#[derive(Clone, Debug)]
pub struct Access {
    /// The organization.
    pub org_id: String,
    /// `user:{id}` or `api_key:{id}`, for the audit log.
    pub actor: String,
    /// The user, when the principal is a person.
    pub user_id: Option<String>,
    /// The member's role (people only).
    pub role: Option<String>,
    /// Effective permissions: the role's, or the key's scopes.
    pub permissions: Vec<String>,
}

impl Access {
    /// Whether the principal holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.holds(p.as_str())
    }

    /// Whether the principal holds the permission named `p` (as stored or sent).
    fn holds(&self, p: &str) -> bool {
        self.permissions.iter().any(|x| x == p)
    }

    /// 403 `forbidden` with `details.required` unless the principal holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.has(p) {
            Ok(())
        } else {
            Err(
                ApiError::msg(Code::Forbidden, format!("This needs the {p} permission."))
                    .details(json!({ "required": p })),
            )
        }
    }

    /// 403 naming the first of `perms` the principal lacks: nobody hands out (to a role, a
    /// member or a key) a permission they do not hold.
    pub fn require_all<'a>(
        &self,
        perms: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), ApiError> {
        match perms.into_iter().find(|p| !self.holds(p)) {
            None => Ok(()),
            Some(missing) => Err(ApiError::msg(
                Code::Forbidden,
                format!("You cannot grant {missing}, which you do not hold."),
            )
            .details(json!({ "required": missing }))),
        }
    }

    /// 403 naming the first of `perms` (a member's current role) the principal lacks: nobody
    /// changes or removes a member who holds a permission they do not hold themselves.
    pub fn require_covers<'a>(
        &self,
        perms: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), ApiError> {
        match perms.into_iter().find(|p| !self.holds(p)) {
            None => Ok(()),
            Some(missing) => Err(ApiError::msg(
                Code::Forbidden,
                format!("You cannot act on a member who holds {missing}, which you do not hold."),
            )
            .details(json!({ "required": missing }))),
        }
    }

    /// 403 unless the principal is a person with role `owner`.
    pub fn require_owner(&self) -> Result<(), ApiError> {
        if self.role.as_deref() == Some("owner") {
            Ok(())
        } else {
            Err(ApiError::msg(Code::Forbidden, "Only an owner can do this.")
                .details(json!({ "required": "owner" })))
        }
    }

    /// 403 unless the principal is a person (API keys cannot manage the organization).
    pub fn require_user(&self) -> Result<&str, ApiError> {
        self.user_id.as_deref().ok_or_else(|| {
            ApiError::msg(
                Code::Forbidden,
                "API keys cannot do this; sign in as a person.",
            )
            .details(json!({ "required": "user" }))
        })
    }
}

/// The permissions of `role` in `org_id` (built-in or custom); `None` if no such role.
pub async fn role_permissions(
    store: &Store,
    org_id: &str,
    role: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    if let Some(p) = permissions::builtin(role) {
        return Ok(Some(p));
    }
    Ok(store
        .custom_role(org_id, role)
        .await?
        .map(|r| r.permissions))
}

/// Resolves what `principal` may do in `org_id`; 403 "Not a member…" when nothing.
pub async fn access(
    store: &Store,
    principal: &Principal,
    org_id: &str,
) -> Result<Access, ApiError> {
    let not_member = || {
        ApiError::msg(Code::Forbidden, NOT_A_MEMBER).details(json!({ "reason": "not_a_member" }))
    };
    match principal {
        Principal::User { user_id, .. } => {
            let role = store
                .membership(org_id, user_id)
                .await?
                .ok_or_else(not_member)?;
            let perms = role_permissions(store, org_id, &role)
                .await?
                .unwrap_or_default();
            Ok(Access {
                org_id: org_id.to_string(),
                actor: format!("user:{user_id}"),
                user_id: Some(user_id.clone()),
                role: Some(role),
                permissions: perms,
            })
        }
        Principal::ApiKey { key } => {
            if key.org_id != org_id {
                return Err(not_member());
            }
            Ok(Access {
                org_id: org_id.to_string(),
                actor: format!("api_key:{}", key.id),
                user_id: None,
                role: None,
                permissions: key.scopes.clone(),
            })
        }
    }
}

/// Checks an id from a path: the expected prefix and 32 hex digits; else 400.
pub fn check_id(id: &str, prefix: &str) -> Result<(), ApiError> {
    let ok = id
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|hex| {
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::msg(
            Code::InvalidRequest,
            format!("Malformed id: expected {prefix}_ followed by 32 hex digits."),
        )
        .details(json!({ "reason": "malformed_id" })))
    }
}

/// Validates a display name: trimmed, 1 to `max` characters, no control characters.
pub fn check_name(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 {
        return Err(ApiError::field(field, "is required"));
    }
    if n > max {
        return Err(ApiError::field(
            field,
            &format!("must be at most {max} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}
