//! Who acts, and what they may do in one organization.

use crate::domain::permissions::Permission;
use crate::ids::{KeyId, OrgId};

/// The message every non-member gets, whatever the organization id.
pub const NOT_A_MEMBER: &str = "Not a member of the selected organization";

/// Who asks: a signed-in person, an organization's API key, or an OAuth client for a person.
#[derive(Clone, Debug)]
pub enum Actor {
    /// A person, by user id.
    User {
        /// User UUID.
        user_id: String,
        /// Whether the person's credential is at `aal2` (a second factor was verified).
        aal2: bool,
    },
    /// An API key: it acts in its own organization only, with its scopes.
    Key {
        /// The key's organization.
        org_id: OrgId,
        /// The key's id.
        key_id: KeyId,
        /// The key's scopes (its permissions).
        scopes: Vec<String>,
    },
    /// An OAuth client acting for a person in the one organization of its grant: it holds
    /// the token's scopes that the person holds there now (a role change applies at once).
    OAuth {
        /// The person.
        user_id: String,
        /// The client.
        client_id: String,
        /// The grant's organization.
        org_id: OrgId,
        /// The token's scopes.
        scopes: Vec<String>,
        /// Whether the grant's consent was given at aal2 (and the token says so).
        aal2: bool,
    },
}

/// The audit actor of an OAuth client acting for a person:
/// `oauth_client:{client id}/user:{user id}`.
pub fn oauth_actor(client_id: &str, user_id: &str) -> String {
    format!("oauth_client:{client_id}/user:{user_id}")
}

/// Who makes a change and from where, as the audit log records it.
#[derive(Clone, Debug)]
pub struct By {
    /// `user:{id}`, `api_key:{id}`, `oauth_client:{client id}/user:{id}` or `cli`.
    pub actor: String,
    /// The client address, when over HTTP.
    pub ip: Option<String>,
}

impl By {
    /// A person acting for themselves.
    pub fn user(user_id: &str, ip: Option<String>) -> Self {
        By {
            actor: format!("user:{user_id}"),
            ip,
        }
    }

    /// The operator, through the command line.
    pub fn cli() -> Self {
        By {
            actor: "cli".into(),
            ip: None,
        }
    }
}

/// Why an actor may not do something. Each names what it lacks (`required`), except
/// [`Denied::NotAMember`], which says nothing about the organization.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Not a member (or a key of another organization).
    #[error("{NOT_A_MEMBER}")]
    NotAMember,
    /// Lacks a permission.
    #[error("This needs the {0} permission.")]
    Lacks(Permission),
    /// Would hand out (to a role, a member or a key) a permission they do not hold.
    #[error("You cannot grant {0}, which you do not hold.")]
    CannotGrant(String),
    /// Would act on a member who holds a permission they do not hold.
    #[error("You cannot act on a member who holds {0}, which you do not hold.")]
    Outranked(String),
    /// Only an owner may do this.
    #[error("Only an owner can do this.")]
    NotOwner,
    /// Only owners and admins may do this.
    #[error("Only owners and admins can change the organization.")]
    NotAdmin,
    /// API keys (and OAuth clients) may not do this.
    #[error("API keys and OAuth clients cannot do this; sign in as a person.")]
    NotAPerson,
    /// The organization requires a second factor (`aal2`) and the credential is `aal1`.
    #[error("This organization requires multi-factor authentication: verify a second factor (aal2) and use the new token.")]
    MfaRequired,
    /// An anonymous sign-in (no address) may not create an organization: nobody could be
    /// told about it, invite its owner back or recover it.
    #[error(
        "An anonymous user cannot create an organization; add and confirm an email address first."
    )]
    Anonymous,
}

impl Denied {
    /// What the actor lacks (`details.required`): a permission, `owner`, `admin` or `user`.
    pub fn required(&self) -> Option<&str> {
        match self {
            Denied::NotAMember => None,
            Denied::Lacks(p) => Some(p.as_str()),
            Denied::CannotGrant(p) | Denied::Outranked(p) => Some(p),
            Denied::NotOwner => Some("owner"),
            Denied::NotAdmin => Some("admin"),
            Denied::NotAPerson => Some("user"),
            Denied::MfaRequired => Some("aal2"),
            Denied::Anonymous => Some("email"),
        }
    }
}

/// An actor's standing in one organization.
#[derive(Clone, Debug)]
pub struct Access {
    /// The organization.
    pub org_id: OrgId,
    /// `user:{id}`, `api_key:{id}` or `oauth_client:{client id}/user:{id}`, for the audit log.
    pub actor: String,
    /// The user, when the actor is a person (not an OAuth client acting for one).
    pub user_id: Option<String>,
    /// The member's role (people only).
    pub role: Option<String>,
    /// Effective permissions: the role's, or the key's scopes.
    pub permissions: Vec<String>,
}

impl Access {
    /// Whether the actor holds `p`.
    pub fn has(&self, p: Permission) -> bool {
        self.holds(p.as_str())
    }

    /// Whether the actor holds the permission named `p` (as stored or sent).
    fn holds(&self, p: &str) -> bool {
        self.permissions.iter().any(|x| x == p)
    }

    /// Refused unless the actor holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), Denied> {
        if self.has(p) {
            Ok(())
        } else {
            Err(Denied::Lacks(p))
        }
    }

    /// Refused naming the first of `perms` the actor lacks: nobody hands out (to a role, a
    /// member or a key) a permission they do not hold.
    pub fn require_all<'a>(
        &self,
        perms: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), Denied> {
        match perms.into_iter().find(|p| !self.holds(p)) {
            None => Ok(()),
            Some(missing) => Err(Denied::CannotGrant(missing.clone())),
        }
    }

    /// Refused naming the first of `perms` (a member's current role) the actor lacks: nobody
    /// changes or removes a member who holds a permission they do not hold themselves.
    pub fn require_covers<'a>(
        &self,
        perms: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), Denied> {
        match perms.into_iter().find(|p| !self.holds(p)) {
            None => Ok(()),
            Some(missing) => Err(Denied::Outranked(missing.clone())),
        }
    }

    /// Refused unless the actor is a person with role `owner`.
    pub fn require_owner(&self) -> Result<(), Denied> {
        if self.role.as_deref() == Some("owner") {
            Ok(())
        } else {
            Err(Denied::NotOwner)
        }
    }

    /// Refused unless the actor is a person with role `owner` or `admin`.
    pub fn require_admin(&self) -> Result<(), Denied> {
        if matches!(self.role.as_deref(), Some("owner" | "admin")) {
            Ok(())
        } else {
            Err(Denied::NotAdmin)
        }
    }

    /// The person's user id; refused for API keys (they cannot manage the organization).
    pub fn require_user(&self) -> Result<&str, Denied> {
        self.user_id.as_deref().ok_or(Denied::NotAPerson)
    }

    /// The audit context of a change made with this access from `ip`.
    pub fn by(&self, ip: Option<String>) -> By {
        By {
            actor: self.actor.clone(),
            ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(perms: &[&str]) -> Access {
        Access {
            org_id: OrgId::new(),
            actor: "user:u1".into(),
            user_id: Some("u1".into()),
            role: Some("custom".into()),
            permissions: perms.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let a = member(&["members:read"]);
        assert_eq!(a.require(Permission::MembersRead), Ok(()));
        let no = a.require(Permission::MembersWrite);
        assert_eq!(no, Err(Denied::Lacks(Permission::MembersWrite)));
        assert_eq!(
            no.err()
                .map(|d| (d.to_string(), d.required().map(str::to_string))),
            Some((
                "This needs the members:write permission.".to_string(),
                Some("members:write".to_string())
            ))
        );
        let wanted = vec!["members:read".to_string(), "keys:write".to_string()];
        assert_eq!(
            a.require_all(&wanted),
            Err(Denied::CannotGrant("keys:write".into()))
        );
        assert_eq!(
            a.require_covers(&wanted),
            Err(Denied::Outranked("keys:write".into()))
        );
        assert_eq!(a.require_owner(), Err(Denied::NotOwner));
        assert_eq!(a.require_admin(), Err(Denied::NotAdmin));
        assert_eq!(a.require_user(), Ok("u1"));
        assert_eq!(Denied::NotAMember.required(), None);
        assert_eq!(Denied::NotAMember.to_string(), NOT_A_MEMBER);
    }
}
