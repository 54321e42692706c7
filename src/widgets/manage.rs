//! An organization's widgets: create, list, read, change, delete, rotate the secret and mint
//! widget tokens. Every change writes its audit entry with the row and forgets the cached
//! widget on every instance.

use crate::auth::widget as w;
use crate::fanout::Invalidation;
use crate::ids::{OrgId, WidgetId};
use crate::store::{Audit, StoreError, WidgetChange, WidgetRecord};

use crate::domain::chat_limits::{check_widget_tokens, valid_model};
use crate::domain::WidgetTokenLimits;

use super::settings::{check_name, check_origins, default_settings, merge_settings};
use super::{WidgetError, WidgetSettings, Widgets};

/// Who makes a change, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `user:{id}`, `api_key:{id}` or `cli`.
    pub actor: String,
    /// The client address, when over HTTP.
    pub ip: Option<String>,
}

/// A widget to create, as the caller sent it.
#[derive(Clone, Debug, Default)]
pub struct NewWidget {
    /// 1-100 characters once trimmed.
    pub name: String,
    /// Origins to allow, at most [`super::settings::MAX_ORIGINS`].
    pub allowed_origins: Vec<String>,
    /// The look; defaults fill what is absent.
    pub settings: Option<WidgetSettings>,
    /// Whether opening a session needs a widget token (default true).
    pub require_token: Option<bool>,
    /// The model its chat asks for (absent: the deployment's `upstream_model`); the caller
    /// checked it against the organization's allow-list.
    pub model: Option<String>,
    /// Its daily token budgets (absent: the configured defaults).
    pub token_limits: Option<WidgetTokenLimits>,
}

/// Changes to a widget; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct WidgetEdit {
    /// A new name.
    pub name: Option<String>,
    /// A new allowlist (replaces the old one).
    pub allowed_origins: Option<Vec<String>>,
    /// Settings laid over the stored ones.
    pub settings: Option<WidgetSettings>,
    /// A new token requirement.
    pub require_token: Option<bool>,
    /// A new model (`Some(None)`: the deployment's default); checked like at creation.
    pub model: Option<Option<String>>,
    /// New token budgets (`Some(None)`: the defaults).
    pub token_limits: Option<Option<WidgetTokenLimits>>,
}

/// A widget and its signing secret, as answered at creation and rotation.
#[derive(Clone, Debug)]
pub struct WithSecret {
    /// The widget.
    pub widget: WidgetRecord,
    /// `wsec_…`: shown this once.
    pub secret: String,
}

fn check_model(model: String) -> Result<String, WidgetError> {
    if valid_model(&model) {
        Ok(model)
    } else {
        Err(WidgetError::Invalid {
            field: "model".into(),
            problem: "must be 1-200 printable characters without spaces".into(),
        })
    }
}

fn check_tokens(t: WidgetTokenLimits) -> Result<WidgetTokenLimits, WidgetError> {
    check_widget_tokens("token_limits", t).map_err(|e| WidgetError::Invalid {
        field: e.field.into(),
        problem: e.problem,
    })
}

/// A missing row is this service's `NotFound`.
fn missing(e: StoreError) -> WidgetError {
    match e {
        StoreError::NotFound => WidgetError::NotFound,
        other => WidgetError::Store(other),
    }
}

impl Widgets {
    fn audit(&self, by: &Actor) -> Audit {
        Audit {
            actor: by.actor.clone(),
            ip: by.ip.clone(),
            now: self.clock.now_ms(),
        }
    }

    /// Creates a widget with a fresh secret.
    pub async fn create(
        &self,
        org: &OrgId,
        by: &Actor,
        new: NewWidget,
    ) -> Result<WithSecret, WidgetError> {
        let name = check_name("name", &new.name, 100)?;
        let allowed_origins = check_origins(&new.allowed_origins)?;
        let settings = merge_settings(&default_settings(), new.settings.unwrap_or_default())?;
        let audit = self.audit(by);
        let widget = WidgetRecord {
            id: WidgetId::new().into_string(),
            org_id: org.as_str().to_string(),
            name,
            allowed_origins,
            settings,
            require_token: new.require_token.unwrap_or(true),
            secret: w::new_secret(),
            secret_rotated_at: audit.now,
            created_by: by.actor.clone(),
            created_at: audit.now,
            updated_at: audit.now,
            model: new.model.map(check_model).transpose()?,
            token_limits: new.token_limits.map(check_tokens).transpose()?,
        };
        self.store.create_widget(&widget, &audit).await?;
        Ok(WithSecret {
            secret: widget.secret.clone(),
            widget,
        })
    }

    /// The organization's widgets.
    pub async fn list(&self, org: &OrgId) -> Result<Vec<WidgetRecord>, WidgetError> {
        Ok(self.store.widgets(org).await?)
    }

    /// One of the organization's widgets.
    pub async fn get(&self, org: &OrgId, id: &WidgetId) -> Result<WidgetRecord, WidgetError> {
        self.store
            .widget(org, id)
            .await?
            .ok_or(WidgetError::NotFound)
    }

    /// Changes a widget; applies at once here and on every instance.
    pub async fn update(
        &self,
        org: &OrgId,
        id: &WidgetId,
        by: &Actor,
        edit: WidgetEdit,
    ) -> Result<WidgetRecord, WidgetError> {
        let current = self.get(org, id).await?;
        let change = WidgetChange {
            name: edit.name.map(|n| check_name("name", &n, 100)).transpose()?,
            allowed_origins: edit
                .allowed_origins
                .map(|o| check_origins(&o))
                .transpose()?,
            settings: edit
                .settings
                .map(|s| merge_settings(&current.settings, s))
                .transpose()?,
            require_token: edit.require_token,
            model: edit
                .model
                .map(|m| m.map(check_model).transpose())
                .transpose()?,
            token_limits: edit
                .token_limits
                .map(|t| t.map(check_tokens).transpose())
                .transpose()?,
        };
        let widget = self
            .store
            .update_widget(org, id, &change, &self.audit(by))
            .await
            .map_err(missing)?;
        self.changed(id).await;
        Ok(widget)
    }

    /// Deletes a widget: its sessions end at once; its visitors' threads stay with the
    /// organization.
    pub async fn delete(
        &self,
        org: &OrgId,
        id: &WidgetId,
        by: &Actor,
    ) -> Result<WidgetRecord, WidgetError> {
        let widget = self
            .store
            .delete_widget(org, id, &self.audit(by))
            .await
            .map_err(missing)?;
        self.changed(id).await;
        Ok(widget)
    }

    /// Issues a new signing secret: every widget token and session of the widget stops
    /// working at once.
    pub async fn rotate_secret(
        &self,
        org: &OrgId,
        id: &WidgetId,
        by: &Actor,
    ) -> Result<WithSecret, WidgetError> {
        let secret = w::new_secret();
        let widget = self
            .store
            .rotate_widget_secret(org, id, &secret, &self.audit(by))
            .await
            .map_err(missing)?;
        self.changed(id).await;
        Ok(WithSecret { widget, secret })
    }

    /// A widget token for `data-key`, and the widget it opens. Tokens are not stored: any
    /// number may be minted, and rotating the secret revokes them all.
    pub async fn mint_token(
        &self,
        org: &OrgId,
        id: &WidgetId,
    ) -> Result<(String, WidgetRecord), WidgetError> {
        let widget = self.get(org, id).await?;
        let token = w::mint_token(&widget.secret, &widget.org_id, &widget.id);
        Ok((token, widget))
    }

    /// Forgets the widget here and on the other instances.
    async fn changed(&self, id: &WidgetId) {
        self.bus
            .invalidate(Invalidation::Widget(id.as_str().to_string()))
            .await;
    }
}
