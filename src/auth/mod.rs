//! Cryptography for credentials: password hashing, access tokens (JWT), opaque random
//! tokens, sealed secrets, one-time passwords (TOTP), the API-key format and widget signatures. The checks that turn a
//! presented credential into a `Principal` live one layer up, in `crate::credentials`.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod password_policy;
pub mod pkce;
pub mod sealed;
pub mod tokens;
pub mod totp;
pub mod widget;
