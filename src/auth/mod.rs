//! Cryptography for credentials: password hashing, access tokens (JWT), opaque random
//! tokens, sealed secrets, the API-key format and widget signatures. The checks that turn a
//! presented credential into a `Principal` live one layer up, in `crate::credentials`.

pub mod api_key;
pub mod jwt;
pub mod password;
pub mod password_policy;
pub mod sealed;
pub mod tokens;
pub mod widget;
