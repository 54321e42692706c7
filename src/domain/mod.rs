//! Values parsed once at the edge; nothing here knows about HTTP or SQL.

mod audit;
pub mod budget;
pub mod chat_limits;
pub mod credits;
mod email;
mod name;
mod password;
pub mod permissions;

pub use audit::{AuditAction, AuditActor, ACTOR_PATTERN, AUDIT_ACTIONS};
pub use chat_limits::{ChatLimits, ChatLimitsChange, TokenLimits, WidgetTokenLimits};
pub use email::Email;
pub use name::{Name, NameError};
pub use password::Password;
