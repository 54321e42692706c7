//! The docs list what the code has: docs/audit-log.md every audit action the store writes,
//! docs/webhooks.md every webhook event type, docs/configuration.md every setting.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;

use gatehouse::domain::AUDIT_ACTIONS;
use gatehouse::store::EVENT_TYPES;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The `"word.word"` string literals of `text` (audit actions and event types look so).
fn dotted_literals(text: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            let mut parts = s.split('.');
            let ok = |p: Option<&str>| {
                p.is_some_and(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                })
            };
            ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
        })
        .map(str::to_string)
        .collect()
}

/// The first column of the audit-log page's action table (the organizations' log: the
/// page's part before its "Admin API" section).
fn documented_actions() -> BTreeSet<String> {
    let page = read("docs/audit-log.md");
    let orgs = page
        .split("\n## Admin API")
        .next()
        .unwrap_or("")
        .to_string();
    table_actions(&orgs)
}

/// The first column of the page's "Admin API" table.
fn documented_admin_actions() -> BTreeSet<String> {
    let page = read("docs/audit-log.md");
    table_actions(
        page.split("\n## Admin API")
            .nth(1)
            .expect("an Admin API section"),
    )
}

fn table_actions(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_audit_log_page_lists_every_action_the_store_records() {
    // Every audit entry is written in src/store (`record(…)`), with its action as a literal.
    // The store's other dotted literals are webhook event types that are not audit actions.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
    let mut literals = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        // engine.rs opens the database and records nothing (its literals are file names);
        // admin.rs writes the admin log, checked below.
        if path.extension().is_some_and(|e| e == "rs")
            && !path.ends_with("engine.rs")
            && !path.ends_with("admin.rs")
        {
            literals.extend(dotted_literals(&std::fs::read_to_string(path).unwrap()));
        }
    }
    let documented = documented_actions();
    assert!(documented.len() > 20, "{documented:?}");
    let undocumented: Vec<_> = literals
        .iter()
        .filter(|a| !documented.contains(*a) && !EVENT_TYPES.contains(&a.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "actions recorded in src/store but missing from docs/audit-log.md: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&literals).collect();
    assert!(
        unknown.is_empty(),
        "docs/audit-log.md lists actions src/store never records: {unknown:?}"
    );
}

#[test]
fn the_audit_log_filter_knows_every_documented_action() {
    // `GET …/audit-log?action=` accepts exactly these; the test above ties the page to the store.
    let known: BTreeSet<String> = AUDIT_ACTIONS.iter().map(|a| a.to_string()).collect();
    assert_eq!(known.len(), AUDIT_ACTIONS.len(), "an action listed twice");
    assert_eq!(known, documented_actions());
    // The dashboard's action filter offers the same list.
    let app = read("assets/dashboard/app.js");
    let list = app
        .split_once("const AUDIT_ACTIONS = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .expect("assets/dashboard/app.js has const AUDIT_ACTIONS = [...]")
        .0;
    let offered: BTreeSet<String> = list
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert_eq!(offered, known, "the dashboard's AUDIT_ACTIONS");
}

#[test]
fn the_webhooks_page_lists_every_event_type() {
    let page = read("docs/webhooks.md");
    let events = &page[page.find("**Events**").expect("an **Events** paragraph")..];
    let events = &events[..events.find("\n\n").unwrap_or(events.len())];
    let listed: BTreeSet<&str> = events.split('`').skip(1).step_by(2).collect();
    let known: BTreeSet<&str> = EVENT_TYPES.iter().copied().collect();
    assert_eq!(
        listed, known,
        "docs/webhooks.md's events against EVENT_TYPES"
    );
}

#[test]
fn the_configuration_page_lists_every_setting() {
    // config.example.toml names every setting (a unit test in src/config.rs pins it to
    // `Config`), as `key = …` or, without a default, `# key = …`.
    let example: BTreeSet<String> = read("config.example.toml")
        .lines()
        .map(|l| l.trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once(" ="))
        .map(|(key, _)| key.to_string())
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    assert!(example.len() > 40, "{example:?}");
    // The page's table: | `setting` | `GATEHOUSE_SETTING` | default | meaning |
    let page = read("docs/configuration.md");
    let mut documented = BTreeSet::new();
    for row in page.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let key = cells[0].trim_start_matches("| ").trim_matches('`');
        let var = format!("`GATEHOUSE_{}`", key.to_uppercase());
        assert_eq!(cells.get(1), Some(&var.as_str()), "{key}: its variable");
        documented.insert(key.to_string());
    }
    let missing: Vec<_> = example.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&example).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/configuration.md lacks {missing:?} and has {extra:?}, which config.example.toml has not"
    );
}

#[test]
fn dotted_literals_are_found_and_nothing_else() {
    let src = r#"record(tx, "api_key.created", json!({"a": "b"})); let x = "a.b.c"; "x.Y""#;
    assert_eq!(
        dotted_literals(src).into_iter().collect::<Vec<_>>(),
        ["api_key.created"]
    );
}

#[test]
fn the_audit_log_page_lists_every_admin_action() {
    // The admin log's actions are the dotted literals of src/store/admin.rs (`AdminAction`).
    let code = read("src/store/admin.rs");
    assert_eq!(dotted_literals(&code), documented_admin_actions());
}
