//! `gatehouse org list`, `key list` and `user list`: what the deployment holds, a page at a
//! time, as a table for people or as JSON (`--json`) for scripts.

use std::io::Write;

use clap::Args;
use serde::Serialize;

use crate::app::AppState;
use crate::store::{ApiKeyRecord, OrgSummary, User};

/// The paging and format options every listing takes.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// The most rows to print (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub limit: i64,
    /// Start after this id: the `next_after` of the previous page.
    #[arg(long)]
    pub after: Option<String>,
    /// Print JSON (`{"data": [...], "next_after": id or null}`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One page: the rows and, when there are more, the id to pass to `--after` next.
#[derive(Serialize)]
struct Page<T> {
    data: Vec<T>,
    next_after: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were read with `limit + 1`: the extra row only says that another page exists.
    fn new(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> Self {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        let next_after = more
            .then(|| rows.last().map(|r| id(r).to_string()))
            .flatten();
        Page {
            data: rows,
            next_after,
        }
    }
}

/// A user as the listing shows it: never the password hash.
#[derive(Serialize)]
struct UserRow {
    id: String,
    email: String,
    email_confirmed_at: Option<i64>,
    last_sign_in_at: Option<i64>,
    created_at: i64,
}

/// A key as the listing shows it: never the key or its hash.
#[derive(Serialize)]
struct KeyRow {
    id: String,
    name: String,
    start: String,
    status: &'static str,
    scopes: Vec<String>,
    environment: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// `gatehouse user list`.
pub async fn users(state: &AppState, args: ListArgs) -> anyhow::Result<()> {
    let rows = state
        .accounts
        .list_users(args.after.as_deref(), args.limit + 1)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| anyhow::anyhow!("--after: no user {:?}", args.after))?;
    let rows = rows.into_iter().map(|u: User| UserRow {
        id: u.id,
        email: u.email,
        email_confirmed_at: u.email_confirmed_at,
        last_sign_in_at: u.last_sign_in_at,
        created_at: u.created_at,
    });
    let page = Page::new(rows.collect(), args.limit, |u| &u.id);
    print(
        &page,
        args.json,
        &["ID", "EMAIL", "CONFIRMED", "LAST SIGN-IN", "CREATED"],
        |u| {
            vec![
                u.id.clone(),
                u.email.clone(),
                when(u.email_confirmed_at, "no"),
                when(u.last_sign_in_at, "never"),
                when(Some(u.created_at), ""),
            ]
        },
    )
}

/// `gatehouse org list`.
pub async fn orgs(state: &AppState, args: ListArgs) -> anyhow::Result<()> {
    let after = args
        .after
        .as_deref()
        .map(crate::ids::OrgId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--after: {e}"))?;
    let rows = state
        .orgs
        .list_all(after.as_ref(), args.limit + 1)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let page = Page::new(rows, args.limit, |o: &OrgSummary| &o.org.id);
    print(
        &page,
        args.json,
        &["ID", "NAME", "MEMBERS", "KEYS", "CREATED"],
        |o| {
            vec![
                o.org.id.clone(),
                o.org.name.clone(),
                o.members.to_string(),
                o.keys.to_string(),
                when(Some(o.org.created_at), ""),
            ]
        },
    )
}

/// `gatehouse key list --org ORG`.
pub async fn keys(state: &AppState, org: &str, args: ListArgs) -> anyhow::Result<()> {
    let org = crate::ids::OrgId::parse(org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    state
        .orgs
        .get(&org)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let after = args
        .after
        .as_deref()
        .map(crate::ids::KeyId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--after: {e}"))?;
    let rows = state
        .keys
        .page(&org, after.as_ref(), args.limit + 1)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = state.edge.clock.now_ms();
    let rows = rows.into_iter().map(|k: ApiKeyRecord| KeyRow {
        status: k.status(now),
        id: k.id,
        name: k.name,
        start: k.start,
        scopes: k.scopes,
        environment: k.environment,
        created_at: k.created_at,
        expires_at: k.expires_at,
        last_used_at: k.last_used_at,
        revoked_at: k.revoked_at,
    });
    let page = Page::new(rows.collect(), args.limit, |k| &k.id);
    let header = [
        "ID",
        "NAME",
        "START",
        "STATUS",
        "ENV",
        "SCOPES",
        "EXPIRES",
        "LAST USED",
    ];
    print(&page, args.json, &header, |k| {
        vec![
            k.id.clone(),
            k.name.clone(),
            format!("{}••••", k.start),
            k.status.to_string(),
            k.environment.clone(),
            if k.scopes.is_empty() {
                "-".into()
            } else {
                k.scopes.join(",")
            },
            when(k.expires_at, "never"),
            when(k.last_used_at, "never"),
        ]
    })
}

/// A time as `YYYY-MM-DD HH:MM` (UTC), or `none` when absent.
fn when(ms: Option<i64>, none: &str) -> String {
    match ms {
        Some(ms) => {
            let t = crate::clock::rfc3339(ms);
            t.get(..16).unwrap_or(&t).replacen('T', " ", 1)
        }
        None => none.to_string(),
    }
}

/// Prints a page as JSON, or as aligned columns with a hint for the next page on stderr
/// (so that a script reading the table reads rows only).
fn print<T: Serialize>(
    page: &Page<T>,
    json: bool,
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, page)?;
        writeln!(out)?;
        return Ok(());
    }
    if page.data.is_empty() {
        eprintln!("(none)");
        return Ok(());
    }
    // tabwriter aligns columns by their display width (the key's `••••` included).
    let mut table = tabwriter::TabWriter::new(&mut out).padding(2);
    writeln!(table, "{}", header.join("\t"))?;
    for row in &page.data {
        // A tab or newline inside a value (a name) would break the columns.
        let row: Vec<String> = cells(row)
            .into_iter()
            .map(|c| c.replace(['\t', '\n', '\r'], " "))
            .collect();
        writeln!(table, "{}", row.join("\t"))?;
    }
    table.flush()?;
    if let Some(next) = &page.next_after {
        eprintln!("more: add --after {next}");
    }
    Ok(())
}
