//! Credentials: password hashing, access tokens (JWT), opaque random tokens and sealed secrets.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod password_policy;
pub mod sealed;
pub mod tokens;
pub mod widget;
