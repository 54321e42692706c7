//! Credentials: password hashing, access tokens (JWT), opaque random tokens, sealed secrets,
//! and the checks
//! that turn a presented credential into a [`Principal`].

pub mod api_key;
pub mod credentials;
pub mod jwt;
pub mod password;
pub mod password_policy;
pub mod principal;
pub mod sealed;
pub mod tokens;
pub mod widget;

pub use credentials::{CredentialError, Credentials};
pub use principal::{Principal, Via};
