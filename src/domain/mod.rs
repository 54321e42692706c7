//! Values parsed once at the edge; nothing here knows about HTTP or SQL.

mod email;
mod name;
mod password;
pub mod permissions;

pub use email::Email;
pub use name::{Name, NameError};
pub use password::Password;
