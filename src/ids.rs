//! Typed identifiers: `org_…`, `key_…`, `wgt_…` and the rest, each a prefix and a UUID v7
//! in 32 lower-case hex digits. An [`Id<K>`] can only be minted here or parsed from text
//! that has the right prefix, so a widget id cannot be passed where a key id is expected,
//! and a path parameter is checked before a handler runs (see `http::extract::Ids`).
//!
//! Storage keeps ids as text; [`Id::as_str`] and [`Id::into_string`] hand them over.

use std::fmt;
use std::marker::PhantomData;

/// A kind of identified record: its prefix and what a message calls it.
pub trait Kind: Send + Sync + 'static {
    /// The prefix before `_`, e.g. `org`.
    const PREFIX: &'static str;
    /// The id's name in `/openapi.json`, e.g. `OrgId`: one schema per kind, each with its
    /// own pattern.
    const NAME: &'static str;
}

/// An identifier of a `K`: `{K::PREFIX}_` and 32 lower-case hex digits.
pub struct Id<K: Kind>(String, PhantomData<fn() -> K>);

/// Why text is not an id of a kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The prefix that was expected.
    pub prefix: &'static str,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Malformed id: expected {}_ followed by 32 hex digits.",
            self.prefix
        )
    }
}

impl std::error::Error for Malformed {}

impl<K: Kind> Id<K> {
    /// A fresh id: time-ordered (UUID v7), so ids sort by creation and index well.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Id(
            format!("{}_{}", K::PREFIX, uuid::Uuid::now_v7().simple()),
            PhantomData,
        )
    }

    /// Parses text that must be this kind's prefix, `_` and 32 lower-case hex digits.
    pub fn parse(s: &str) -> Result<Self, Malformed> {
        let ok = s
            .strip_prefix(K::PREFIX)
            .and_then(|r| r.strip_prefix('_'))
            .is_some_and(|hex| {
                hex.len() == 32
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        if ok {
            Ok(Id(s.to_string(), PhantomData))
        } else {
            Err(Malformed { prefix: K::PREFIX })
        }
    }

    /// Wraps text read back from storage, where only valid ids are ever written.
    pub fn from_stored(s: String) -> Self {
        Id(s, PhantomData)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as owned text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<K: Kind> Clone for Id<K> {
    fn clone(&self) -> Self {
        Id(self.0.clone(), PhantomData)
    }
}

impl<K: Kind> PartialEq for Id<K> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Kind> Eq for Id<K> {}

impl<K: Kind> std::hash::Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl<K: Kind> fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<K: Kind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<K: Kind> AsRef<str> for Id<K> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<K: Kind> std::ops::Deref for Id<K> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<K: Kind> PartialEq<str> for Id<K> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<K: Kind> PartialEq<String> for Id<K> {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl<K: Kind> serde::Serialize for Id<K> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, K: Kind> serde::Deserialize<'de> for Id<K> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Id::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<K: Kind> utoipa::PartialSchema for Id<K> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // The lengths as well as the pattern: a generator reading `$` as a regex engine
        // does may end a value with a newline, which the length rules out.
        let len = K::PREFIX.len() + 33;
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^{}_[0-9a-f]{{32}}$", K::PREFIX)))
            .min_length(Some(len))
            .max_length(Some(len))
            .examples([serde_json::json!(format!(
                "{}_0192f0c5a1b27c3d8e4f5a6b7c8d9e0f",
                K::PREFIX
            ))])
            .into()
    }
}

impl<K: Kind> utoipa::ToSchema for Id<K> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(K::NAME)
    }
}

macro_rules! kinds {
    ($( $(#[$doc:meta])* $kind:ident, $alias:ident = $prefix:literal; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $kind {}
            impl Kind for $kind {
                const PREFIX: &'static str = $prefix;
                const NAME: &'static str = stringify!($alias);
            }
            $(#[$doc])*
            pub type $alias = Id<$kind>;
        )*

        /// Every prefix in use, so a test can check none is used twice.
        pub const PREFIXES: &[&str] = &[$($prefix),*];
    };
}

kinds! {
    /// An organization.
    Org, OrgId = "org";
    /// An API key (the record, never the key itself).
    Key, KeyId = "key";
    /// A chat widget.
    Widget, WidgetId = "wgt";
    /// A webhook endpoint.
    Endpoint, EndpointId = "whk";
    /// A webhook message (one event, delivered to every subscribed endpoint).
    WebhookMessage, WebhookMessageId = "msg";
    /// A webhook delivery (one message to one endpoint).
    Delivery, DeliveryId = "whd";
    /// A delivery attempt.
    Attempt, AttemptId = "wha";
    /// An invitation into an organization.
    Invitation, InvitationId = "inv";
    /// An audit-log entry.
    Audit, AuditId = "aud";
    /// A chat thread.
    Thread, ThreadId = "thr";
    /// A chat message.
    ChatMessage, ChatMessageId = "msg";
    /// An anonymous widget visitor.
    Visitor, VisitorId = "vis";
    /// An OAuth client registered dynamically or by an organization's admin (a client known
    /// by its metadata document is named by that document's URL instead).
    OAuthClient, OAuthClientId = "oac";
    /// An OAuth grant: a person's consent to one client, scope set and organization.
    OAuthGrant, OAuthGrantId = "oag";
    /// A pending OAuth authorization request (the consent page's subject).
    OAuthRequest, OAuthRequestId = "oar";
}

/// A fresh UUID v7 as Supabase-compatible records (users, sessions) carry it: hyphenated.
pub fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_only_their_own_kind() {
        let org = OrgId::new();
        assert!(org.as_str().starts_with("org_") && org.len() == 36);
        assert_eq!(OrgId::parse(org.as_str()), Ok(org.clone()));
        assert!(WidgetId::parse(org.as_str()).is_err());
        for bad in [
            "org_",
            "org_0192F0C5A1B27C3D8E4F5A6B7C8D9E0F",
            "org_0192f0c5a1b27c3d8e4f5a6b7c8d9e0",
            "org-0192f0c5a1b27c3d8e4f5a6b7c8d9e0f",
            "org_0192f0c5a1b27c3d8e4f5a6b7c8d9e0g",
            "xorg_0192f0c5a1b27c3d8e4f5a6b7c8d9e0f",
        ] {
            assert!(OrgId::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            KeyId::parse("x").map_err(|e| e.to_string()),
            Err("Malformed id: expected key_ followed by 32 hex digits.".to_string())
        );
    }

    #[test]
    fn fresh_ids_sort_by_creation_and_prefixes_are_unique() {
        let a = ThreadId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = ThreadId::new();
        assert!(a.as_str() < b.as_str());
        // Chat messages and webhook messages both shipped as `msg_…`; neither is ever
        // taken from a path where one could stand for the other. No other prefix repeats.
        let mut p = PREFIXES.to_vec();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), PREFIXES.len() - 1);
    }

    #[test]
    fn ids_round_trip_through_serde() {
        let id = WidgetId::new();
        let json = serde_json::to_string(&id).unwrap_or_default();
        let back: Result<WidgetId, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(id));
        assert!(
            serde_json::from_str::<WidgetId>("\"org_0192f0c5a1b27c3d8e4f5a6b7c8d9e0f\"").is_err()
        );
    }
}
