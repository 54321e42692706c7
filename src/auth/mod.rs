//! Credentials: password hashing, access tokens (JWT) and opaque random tokens.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod password_policy;
pub mod tokens;
pub mod widget;
