//! Organizations, their members and roles: who may do what in an organization
//! ([`Access`]), and the changes to it ([`Orgs`]). The service writes the audit entries
//! (in the store's transactions) and forgets the caches a change makes stale, here and on
//! the other instances.
//!
//! Checks that need only an [`Access`] (a permission, owner or admin, a person) are the
//! caller's; checks that depend on stored state (the member acted on, the role granted)
//! are made here.

mod access;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use access::{oauth_actor, Access, Actor, By, Denied, NOT_A_MEMBER};

use crate::clock::Clock;
use crate::domain::permissions;
use crate::fanout::{Bus, Invalidation, EVERYONE};
use crate::ids::OrgId;
use crate::ratelimit::Rates;
use crate::store::{Audit, Member, Org, Role, Store, StoreError};

/// Why an organization use case failed.
#[derive(Debug, thiserror::Error)]
pub enum OrgError {
    /// The actor may not do this.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No such object (`Organization`, `Member`, `Role`).
    #[error("{0} not found.")]
    NotFound(&'static str),
    /// A value is not acceptable.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The change conflicts with the current state (the message says how).
    #[error("{0}")]
    Conflict(String),
    /// Storage failed or refused (a store conflict keeps its own message).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A value that is not acceptable: the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The field as the request names it.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Invalid {
    /// `field` has `problem`.
    pub fn new(field: &str, problem: impl Into<String>) -> Self {
        Invalid {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// Validates a display name ([`crate::domain::Name`]), answering a field error for `field`.
pub fn check_name(field: &str, raw: &str, max: usize) -> Result<String, Invalid> {
    crate::domain::Name::parse(raw, max)
        .map(crate::domain::Name::into_string)
        .map_err(|e| Invalid::new(field, e.to_string()))
}

/// One of a person's organizations as `/v1/me` lists it (fields in the order they are sent).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Membership {
    /// The organization.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The role's permissions.
    pub permissions: Vec<String>,
    /// The person's role.
    pub role: String,
}

/// An organization as `GET /v1/orgs` lists it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ListedOrg {
    /// Unix ms.
    pub created_at: i64,
    /// The organization.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The person's role (absent for an API key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A member's new role.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MemberRole {
    /// The role now held.
    pub role: String,
    /// The member.
    pub user_id: String,
}

/// Changes to an organization, already validated; absent fields stay as they are.
#[derive(Default)]
pub struct OrgChanges {
    /// A new name (see [`check_name`]).
    pub name: Option<String>,
    /// New rate limits across all the organization's keys; `Some(None)` restores the default.
    pub rate_limits: Option<Option<Rates>>,
    /// Whether members must be at `aal2`.
    pub require_mfa: Option<bool>,
}

/// The organizations service: cheap to clone.
#[derive(Clone)]
pub struct Orgs {
    store: Store,
    clock: Clock,
    bus: Bus,
    /// Organizations' own rate limits (`None`: the configured default), by id.
    limits: moka::sync::Cache<String, Option<Rates>>,
    /// Organizations' chat limits, by id; forgotten with the rate limits.
    chat_limits: moka::sync::Cache<String, Arc<crate::domain::ChatLimits>>,
    /// A person's organizations with role and permissions, as `/v1/me` lists them, by user
    /// id. Changes here forget them at once; other instances' changes arrive over the bus,
    /// or within the cache's lifetime without it. Access checks never use this list.
    memberships: moka::future::Cache<String, Arc<Vec<Membership>>>,
    /// Bumped by every membership invalidation: a list read from storage while one arrived
    /// may be older than the change, so it is answered but not cached.
    epoch: Arc<AtomicU64>,
}

impl Orgs {
    /// The service; limits are cached for `limits_ttl`, membership lists for
    /// `memberships_ttl` (the bound on another instance's change reaching this one).
    pub fn new(
        store: Store,
        clock: Clock,
        bus: Bus,
        limits_ttl: Duration,
        memberships_ttl: Duration,
    ) -> Self {
        Orgs {
            store,
            clock,
            bus,
            limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(limits_ttl)
                .build(),
            chat_limits: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(limits_ttl)
                .build(),
            memberships: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(memberships_ttl)
                .build(),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    fn audit(&self, by: &By) -> Audit {
        Audit {
            actor: by.actor.clone(),
            ip: by.ip.clone(),
            now: self.clock.now_ms(),
        }
    }

    /// What `actor` may do in `org`; [`Denied::NotAMember`] when nothing.
    pub async fn access(&self, actor: &Actor, org: &OrgId) -> Result<Access, OrgError> {
        match actor {
            Actor::User { user_id, aal2 } => {
                let role = self
                    .store
                    .membership(org, user_id)
                    .await?
                    .ok_or(Denied::NotAMember)?;
                // Members only learn that the organization requires MFA (non-members get
                // NotAMember above); an aal2 credential skips the read.
                if !aal2 && self.store.org_requires_mfa(org).await? {
                    return Err(Denied::MfaRequired.into());
                }
                let perms = self.role_permissions(org, &role).await?.unwrap_or_default();
                Ok(Access {
                    org_id: org.clone(),
                    actor: format!("user:{user_id}"),
                    user_id: Some(user_id.clone()),
                    role: Some(role),
                    permissions: perms,
                })
            }
            Actor::Key {
                org_id,
                key_id,
                scopes,
            } => {
                if org_id != org {
                    return Err(Denied::NotAMember.into());
                }
                Ok(Access {
                    org_id: org.clone(),
                    actor: format!("api_key:{key_id}"),
                    user_id: None,
                    role: None,
                    permissions: scopes.clone(),
                })
            }
            Actor::OAuth {
                user_id,
                client_id,
                org_id,
                scopes,
                aal2,
            } => {
                if org_id != org {
                    return Err(Denied::NotAMember.into());
                }
                // What the person holds in the organization now, never more than the token's
                // scopes; no role, so owner- and admin-only changes stay the person's own.
                let role = self
                    .store
                    .membership(org, user_id)
                    .await?
                    .ok_or(Denied::NotAMember)?;
                // An organization that requires MFA takes a client only under a consent given
                // from an aal2 session, as it takes a person only at aal2.
                if !aal2 && self.store.org_requires_mfa(org).await? {
                    return Err(Denied::MfaRequired.into());
                }
                let held = self.role_permissions(org, &role).await?.unwrap_or_default();
                Ok(Access {
                    org_id: org.clone(),
                    actor: oauth_actor(client_id, user_id),
                    user_id: None,
                    role: None,
                    permissions: held.into_iter().filter(|p| scopes.contains(p)).collect(),
                })
            }
        }
    }

    /// The permissions of `role` in `org_id` (built-in or custom); `None` if no such role.
    pub async fn role_permissions(
        &self,
        org_id: &str,
        role: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if let Some(p) = permissions::builtin(role) {
            return Ok(Some(p));
        }
        Ok(self
            .store
            .custom_role(org_id, role)
            .await?
            .map(|r| r.permissions))
    }

    /// Creates an organization owned by `owner_id` (a user id).
    pub async fn create(&self, name: &str, owner_id: &str, by: &By) -> Result<Org, OrgError> {
        let name = check_name("name", name, 100)?;
        let id = OrgId::new();
        let org = self
            .store
            .create_org(id.as_str(), &name, owner_id, &self.audit(by))
            .await?;
        self.forget_memberships(owner_id).await;
        Ok(org)
    }

    /// The organizations `actor` sees: a person's, with their role in each; a key's own.
    pub async fn list(&self, actor: &Actor) -> Result<Vec<ListedOrg>, OrgError> {
        match actor {
            Actor::User { user_id, .. } => Ok(self
                .store
                .orgs_of_user(user_id)
                .await?
                .into_iter()
                .map(|(o, role)| ListedOrg {
                    created_at: o.created_at,
                    id: o.id,
                    name: o.name,
                    role: Some(role),
                })
                .collect()),
            Actor::Key { org_id, .. } | Actor::OAuth { org_id, .. } => {
                let o = self.get(org_id).await?;
                Ok(vec![ListedOrg {
                    created_at: o.created_at,
                    id: o.id,
                    name: o.name,
                    role: None,
                }])
            }
        }
    }

    /// Every organization of the deployment, a page at a time, in the order they were
    /// created (the operator's listing): up to `limit` after the organization `after`.
    pub async fn list_all(
        &self,
        after: Option<&OrgId>,
        limit: i64,
    ) -> Result<Vec<crate::store::OrgSummary>, OrgError> {
        if let Some(after) = after {
            self.get(after).await?;
        }
        Ok(self
            .store
            .orgs_page(after.map(|a| a.as_str()), limit)
            .await?)
    }

    /// One organization.
    pub async fn get(&self, org: &OrgId) -> Result<Org, OrgError> {
        self.store
            .org(org)
            .await?
            .ok_or(OrgError::NotFound("Organization"))
    }

    /// Renames an organization and/or sets its rate limits (the caller checked the actor is
    /// an owner or admin).
    pub async fn update(&self, a: &Access, by: &By, changes: OrgChanges) -> Result<Org, OrgError> {
        let changed_limits = changes.rate_limits.is_some();
        let renamed = changes.name.is_some();
        let org = self
            .store
            .update_org(
                &a.org_id,
                changes.name.as_deref(),
                changes.rate_limits.as_ref().map(Option::as_ref),
                changes.require_mfa,
                &self.audit(by),
            )
            .await?;
        if changed_limits {
            self.bus
                .invalidate(Invalidation::Org(a.org_id.to_string()))
                .await;
        }
        if renamed {
            self.forget_memberships(EVERYONE).await;
        }
        Ok(org)
    }

    /// Deletes an organization and everything it owns (the caller checked the actor is an
    /// owner); its keys stop working at once, here and on the other instances.
    pub async fn delete(&self, org: &OrgId) -> Result<(), OrgError> {
        for hash in self.store.delete_org(org).await? {
            self.bus.invalidate(Invalidation::Key(hash)).await;
        }
        self.forget_memberships(EVERYONE).await;
        Ok(())
    }

    /// The members.
    pub async fn members(&self, org: &OrgId) -> Result<Vec<Member>, OrgError> {
        Ok(self.store.members(org).await?)
    }

    /// Checks that `a` may hand out `role`: it exists, only owners grant `owner`, and nobody
    /// grants a permission they do not hold (so a custom role cannot escalate).
    pub async fn grantable(&self, a: &Access, role: &str) -> Result<(), OrgError> {
        let perms = self
            .role_permissions(&a.org_id, role)
            .await?
            .ok_or_else(|| Invalid::new("role", "no such role in this organization"))?;
        if role == "owner" {
            a.require_owner()?;
        }
        a.require_all(&perms)?;
        Ok(())
    }

    /// The role of `user` in `a`'s organization, once `a` may act on them: only owners act
    /// on owners, and the actor holds every permission of that role.
    async fn actable(&self, a: &Access, user: &str) -> Result<String, OrgError> {
        let current = self
            .store
            .membership(&a.org_id, user)
            .await?
            .ok_or(OrgError::NotFound("Member"))?;
        if current == "owner" {
            a.require_owner()?;
        }
        let perms = self
            .role_permissions(&a.org_id, &current)
            .await?
            .unwrap_or_default();
        a.require_covers(&perms)?;
        Ok(current)
    }

    /// Gives a member another role (the caller checked `members:write`). The last owner
    /// cannot be demoted: the store decides that under the organization's lock.
    pub async fn change_role(
        &self,
        a: &Access,
        by: &By,
        user: &str,
        role: &str,
    ) -> Result<MemberRole, OrgError> {
        self.actable(a, user).await?;
        self.grantable(a, role).await?;
        self.store
            .set_member_role(&a.org_id, user, role, &self.audit(by))
            .await
            .map_err(member_error)?;
        self.forget_memberships(user).await;
        Ok(MemberRole {
            role: role.to_string(),
            user_id: user.to_string(),
        })
    }

    /// Removes a member (the caller checked `members:write`). The last owner cannot be
    /// removed; of two owners removing each other at once, the second gets a conflict.
    pub async fn remove_member(&self, a: &Access, by: &By, user: &str) -> Result<(), OrgError> {
        self.actable(a, user).await?;
        self.store
            .remove_member(&a.org_id, user, &self.audit(by))
            .await
            .map_err(member_error)?;
        self.forget_memberships(user).await;
        Ok(())
    }

    /// Built-in and custom roles.
    pub async fn roles(&self, org: &OrgId) -> Result<Vec<Role>, OrgError> {
        let mut roles: Vec<Role> = permissions::BUILTIN_ROLES
            .iter()
            .map(|r| Role {
                name: r.to_string(),
                permissions: permissions::builtin(r).unwrap_or_default(),
                builtin: true,
            })
            .collect();
        roles.extend(self.store.custom_roles(org).await?);
        Ok(roles)
    }

    /// Defines a custom role (the caller checked `members:write`); every permission in it
    /// must be one the actor holds.
    pub async fn create_role(
        &self,
        a: &Access,
        by: &By,
        name: &str,
        perms: &[String],
    ) -> Result<Role, OrgError> {
        permissions::check_role_name(name).map_err(|m| Invalid::new("name", m))?;
        let perms = permissions::parse_list(perms)
            .map_err(|p| Invalid::new("permissions", format!("unknown permission {p:?}")))?;
        a.require_all(&perms)?;
        self.store
            .create_role(&a.org_id, name, &perms, &self.audit(by))
            .await?;
        Ok(Role {
            name: name.to_string(),
            permissions: perms,
            builtin: false,
        })
    }

    /// Deletes a custom role no member holds (the caller checked `members:write`).
    pub async fn delete_role(&self, a: &Access, by: &By, name: &str) -> Result<(), OrgError> {
        if permissions::BUILTIN_ROLES.contains(&name) {
            return Err(OrgError::Conflict(
                "Built-in roles cannot be deleted.".into(),
            ));
        }
        self.store
            .delete_role(&a.org_id, name, &self.audit(by))
            .await
            .map_err(|e| match e {
                StoreError::NotFound => OrgError::NotFound("Role"),
                other => other.into(),
            })
    }

    /// An organization's chat limits (models, token windows, concurrency), cached like its
    /// rate limits; an organization that is gone has none.
    pub async fn chat_limits(
        &self,
        org_id: &str,
    ) -> Result<Arc<crate::domain::ChatLimits>, StoreError> {
        if let Some(c) = self.chat_limits.get(org_id) {
            return Ok(c);
        }
        let limits = match self.store.org_chat_limits(org_id).await {
            Ok(l) => Arc::new(l),
            Err(StoreError::NotFound) => Arc::default(),
            Err(e) => return Err(e),
        };
        self.chat_limits.insert(org_id.to_string(), limits.clone());
        Ok(limits)
    }

    /// Changes an organization's chat limits (the caller checked the actor is an owner or
    /// admin); applies at once here and on every instance.
    pub async fn update_chat_limits(
        &self,
        a: &Access,
        by: &By,
        change: crate::domain::ChatLimitsChange,
    ) -> Result<crate::domain::ChatLimits, OrgError> {
        let limits = self
            .store
            .update_org_chat_limits(&a.org_id, &change, &self.audit(by))
            .await?;
        self.bus
            .invalidate(Invalidation::Org(a.org_id.to_string()))
            .await;
        Ok(limits)
    }

    /// An organization's own rate limits (`None`: the default), cached like keys are.
    pub async fn rates(&self, org_id: &str) -> Result<Option<Rates>, StoreError> {
        if let Some(r) = self.limits.get(org_id) {
            return Ok(r);
        }
        let rates = self.store.org_rate_limits(org_id).await?;
        self.limits.insert(org_id.to_string(), rates.clone());
        Ok(rates)
    }

    /// A person's organizations, each with their role and its permissions; no storage on a
    /// warm cache.
    pub async fn memberships(&self, user_id: &str) -> Result<Arc<Vec<Membership>>, StoreError> {
        if let Some(list) = self.memberships.get(user_id).await {
            return Ok(list);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let orgs = self.store.orgs_of_user(user_id).await?;
        let mut list = Vec::with_capacity(orgs.len());
        for (o, role) in orgs {
            // Built-in roles resolve without storage; a custom role is one read.
            let permissions = self
                .role_permissions(&o.id, &role)
                .await?
                .unwrap_or_default();
            list.push(Membership {
                id: o.id,
                name: o.name,
                permissions,
                role,
            });
        }
        let list = Arc::new(list);
        if self.epoch.load(Ordering::Acquire) == epoch {
            self.memberships
                .insert(user_id.to_string(), list.clone())
                .await;
        }
        Ok(list)
    }

    /// Forgets `user_id`'s membership list ([`EVERYONE`]: every list), here and on the
    /// other instances.
    pub async fn forget_memberships(&self, user_id: &str) {
        self.bus
            .invalidate(Invalidation::Memberships(user_id.to_string()))
            .await;
    }

    /// Forgets what `inv` names from this service's caches, on this instance.
    pub async fn forget(&self, inv: &Invalidation) {
        match inv {
            Invalidation::Org(id) => {
                self.limits.invalidate(id);
                self.chat_limits.invalidate(id);
            }
            Invalidation::Memberships(id) => {
                self.epoch.fetch_add(1, Ordering::AcqRel);
                if id == EVERYONE {
                    self.memberships.invalidate_all();
                } else {
                    self.memberships.invalidate(id).await;
                }
            }
            _ => {}
        }
    }

    /// Empties this service's caches (after invalidations may have been missed).
    pub fn forget_everything(&self) {
        self.limits.invalidate_all();
        self.chat_limits.invalidate_all();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.memberships.invalidate_all();
    }
}

/// A member change's store error: a vanished member (or organization) is "Member not found".
fn member_error(e: StoreError) -> OrgError {
    match e {
        StoreError::NotFound => OrgError::NotFound("Member"),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(check_name("name", "  Acme ", 100), Ok("Acme".to_string()));
        assert_eq!(
            check_name("name", " ", 100),
            Err(Invalid::new("name", "is required"))
        );
        assert_eq!(
            check_name("name", "abcd", 3).map_err(|e| e.to_string()),
            Err("name: must be at most 3 characters".to_string())
        );
        assert!(check_name("name", "a\u{7}b", 100).is_err());
    }
}
