//! Values parsed once at the edge; nothing here knows about HTTP or SQL.

mod email;
mod password;
pub mod permissions;

pub use email::Email;
pub use password::Password;
