//! Permissions and the built-in roles.

/// What a role or an API key may do in an organization. The wire form (`keys:read`, …) is
/// in [`Permission::ALL_ROWS`], the one table of names; storage keeps the wire form.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub enum Permission {
    /// See an organization's API keys.
    #[serde(rename = "keys:read")]
    KeysRead,
    /// Create, change, roll and revoke API keys.
    #[serde(rename = "keys:write")]
    KeysWrite,
    /// See members, roles and invitations.
    #[serde(rename = "members:read")]
    MembersRead,
    /// Invite, change and remove members; manage roles.
    #[serde(rename = "members:write")]
    MembersWrite,
    /// See widgets.
    #[serde(rename = "widgets:read")]
    WidgetsRead,
    /// Create, change and delete widgets, rotate their secrets, mint widget tokens.
    #[serde(rename = "widgets:write")]
    WidgetsWrite,
    /// Chat through the gateway.
    #[serde(rename = "chat:write")]
    ChatWrite,
    /// Read chat threads.
    #[serde(rename = "threads:read")]
    ThreadsRead,
    /// Read usage.
    #[serde(rename = "analytics:read")]
    AnalyticsRead,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// See webhook endpoints and deliveries.
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Manage webhook endpoints, send tests, retry deliveries.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Export usage as CSV.
    #[serde(rename = "export:read")]
    ExportRead,
    /// Verify other API keys (`POST /v1/keys/verify`).
    #[serde(rename = "keys:verify")]
    KeysVerify,
}

impl Permission {
    /// Every permission with its wire form, in the order lists show them.
    pub const ALL_ROWS: [(Permission, &'static str); 14] = [
        (Permission::KeysRead, "keys:read"),
        (Permission::KeysWrite, "keys:write"),
        (Permission::MembersRead, "members:read"),
        (Permission::MembersWrite, "members:write"),
        (Permission::WidgetsRead, "widgets:read"),
        (Permission::WidgetsWrite, "widgets:write"),
        (Permission::ChatWrite, "chat:write"),
        (Permission::ThreadsRead, "threads:read"),
        (Permission::AnalyticsRead, "analytics:read"),
        (Permission::AuditRead, "audit:read"),
        (Permission::WebhooksRead, "webhooks:read"),
        (Permission::WebhooksWrite, "webhooks:write"),
        (Permission::ExportRead, "export:read"),
        (Permission::KeysVerify, "keys:verify"),
    ];

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        // The table is in declaration order, so the discriminant is the row.
        Self::ALL_ROWS[self as usize].1
    }

    /// The permission with wire form `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL_ROWS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(p, _)| *p)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every permission's wire form.
pub const ALL: [&str; 14] = {
    let mut out = [""; 14];
    let mut i = 0;
    while i < 14 {
        out[i] = Permission::ALL_ROWS[i].1;
        i += 1;
    }
    out
};

/// Permissions an API key may never carry: keys cannot manage keys or members.
pub const NEVER_ON_KEYS: [&str; 2] = ["keys:write", "members:write"];

/// The roles every organization has.
pub const BUILTIN_ROLES: [&str; 3] = ["owner", "admin", "member"];

/// Whether `p` is a known permission.
pub fn is_permission(p: &str) -> bool {
    ALL.contains(&p)
}

/// The permissions of a built-in role: `owner` all; `admin` all but `keys:write` (only owners
/// generate keys); `member` the read permissions and `chat:write`.
pub fn builtin(role: &str) -> Option<Vec<String>> {
    let pick =
        |f: &dyn Fn(&str) -> bool| ALL.iter().filter(|p| f(p)).map(|p| p.to_string()).collect();
    match role {
        "owner" => Some(pick(&|_| true)),
        "admin" => Some(pick(&|p| p != "keys:write")),
        "member" => Some(pick(&|p| p.ends_with(":read") || p == "chat:write")),
        _ => None,
    }
}

/// Checks a custom role name: 1-32 of `a-z 0-9 _ -`, starting with a letter, not built in.
pub fn check_role_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok {
        return Err("must be 1-32 characters of a-z, 0-9, _ or -, starting with a letter");
    }
    if BUILTIN_ROLES.contains(&name) {
        return Err("is a built-in role");
    }
    Ok(())
}

/// Checks a list of permissions and removes duplicates; the error names the first unknown one.
pub fn parse_list(list: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for p in list {
        if !is_permission(p) {
            return Err(p.clone());
        }
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table_matches_the_wire_form() {
        for (i, (p, name)) in Permission::ALL_ROWS.iter().enumerate() {
            assert_eq!(*p as usize, i);
            assert_eq!(p.as_str(), *name);
            assert_eq!(Permission::parse(name), Some(*p));
            assert_eq!(serde_json::to_value(p).ok(), Some(serde_json::json!(name)));
        }
        assert_eq!(Permission::parse("keys:admin"), None);
    }

    #[test]
    fn builtin_roles_follow_the_rules() {
        assert_eq!(builtin("owner").map(|p| p.len()), Some(ALL.len()));
        let admin = builtin("admin").unwrap();
        assert!(
            !admin.contains(&"keys:write".to_string())
                && admin.contains(&"members:write".to_string())
        );
        let member = builtin("member").unwrap();
        assert!(
            member.contains(&"chat:write".to_string()) && member.contains(&"keys:read".to_string())
        );
        assert!(!member
            .iter()
            .any(|p| p.ends_with(":write") && p != "chat:write"));
        assert!(builtin("coach").is_none());
    }

    #[test]
    fn role_names_and_permission_lists_are_checked() {
        assert!(check_role_name("coach").is_ok());
        assert!(check_role_name("owner").is_err());
        assert!(check_role_name("Coach").is_err());
        assert!(check_role_name(&"a".repeat(33)).is_err());
        assert_eq!(
            parse_list(&["chat:write".into(), "chat:write".into()]),
            Ok(vec!["chat:write".to_string()])
        );
        assert_eq!(parse_list(&["root".into()]), Err("root".to_string()));
    }
}
