//! Permissions and the built-in roles.

/// Every permission Gatehouse knows.
pub const ALL: [&str; 14] = [
    "keys:read",
    "keys:write",
    "members:read",
    "members:write",
    "widgets:read",
    "widgets:write",
    "chat:write",
    "threads:read",
    "analytics:read",
    "audit:read",
    "webhooks:read",
    "webhooks:write",
    "export:read",
    "keys:verify",
];

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
