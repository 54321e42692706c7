//! Backups of the embedded SQLite database, through the real binary: taken while a server
//! writes, restored into a new server, and refused where they would destroy something.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::Client;
use serde_json::{json, Value};

use crate::helpers::{tempdir, PK};
use crate::process::{command, start_with};

fn cli(db_url: &str, args: &[&str]) -> Output {
    command(db_url, &[]).args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The ids of every organization in the database at `db_url`.
fn org_ids(db_url: &str) -> BTreeSet<String> {
    let out = cli(db_url, &["org", "list", "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["next_after"], Value::Null, "one page holds them all");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_backup_taken_under_load_restores_every_write_acknowledged_before_it_began() {
    let dir = tempdir::Dir::new();
    let live = format!("sqlite://{}/live.db", dir.0.display());
    let server = start_with(&live, &dir, &[]).await;
    let client = Client::new();
    let session: Value = client
        .post(format!("{}/auth/v1/signup", server.base))
        .header("apikey", PK)
        .json(&json!({"email": "owner@example.com", "password": "a long enough password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["access_token"].as_str().unwrap().to_string();

    // Two writers create organizations without pause; each acknowledged id is noted.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (client, base, token) = (client.clone(), server.base.clone(), token.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let res = client
                    .post(format!("{base}/v1/orgs"))
                    .bearer_auth(&token)
                    .json(&json!({"name": format!("w{w}-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 201);
                let body: Value = res.json().await.unwrap();
                acked
                    .lock()
                    .unwrap()
                    .push(body["data"]["id"].as_str().unwrap().to_string());
            }
        }));
    }
    let count = |acked: &Arc<Mutex<Vec<String>>>| acked.lock().unwrap().len();
    crate::helpers::eventually(
        std::time::Duration::from_secs(30),
        "20 writes acknowledged",
        || async { count(&acked) >= 20 },
    )
    .await;

    // The backup, while the writers go on.
    let backup = dir.0.join("backup.db");
    let before: Vec<String> = acked.lock().unwrap().clone();
    let (url, to) = (live.clone(), backup.display().to_string());
    let out = tokio::task::spawn_blocking(move || cli(&url, &["backup", "--to", &to]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("backed up") && printed.contains("1 users"),
        "{printed}"
    );
    let after_backup = count(&acked);
    crate::helpers::eventually(
        std::time::Duration::from_secs(30),
        "writes go on after the backup",
        || async { count(&acked) >= after_backup + 10 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    // A second backup never overwrites a file, and the live database cannot be restored over
    // while its server runs, even with --force.
    let out = cli(&live, &["backup", "--to", &backup.display().to_string()]);
    assert!(
        !out.status.success() && stderr(&out).contains("already exists"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &live,
        &[
            "restore",
            "--from",
            &backup.display().to_string(),
            "--force",
        ],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("in use by a running gatehouse serve"),
        "{}",
        stderr(&out)
    );

    // Restored into a new place, a new server has every write acknowledged before the backup.
    let restored = format!("sqlite://{}/restored.db", dir.0.display());
    let out = cli(
        &restored,
        &["restore", "--from", &backup.display().to_string()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again = start_with(&restored, &dir, &[]).await;
    let ids = org_ids(&restored);
    let missing: Vec<_> = before.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged before the backup, lost: {missing:?}"
    );
    assert!(
        ids.len() < count(&acked),
        "the backup is a point in time, not the end"
    );
    // The restored server serves them: the owner's token (same signing keys) lists them.
    let res = client
        .get(format!("{}/v1/orgs/{}", again.base, before[0]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(again);
    drop(server);

    // Over an existing database only with --force, which keeps the old one beside it.
    let out = cli(
        &restored,
        &["restore", "--from", &backup.display().to_string()],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    let out = cli(
        &restored,
        &[
            "restore",
            "--from",
            &backup.display().to_string(),
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let kept = printed
        .lines()
        .find_map(|l| l.strip_prefix("the database it replaced is kept at "))
        .unwrap_or_else(|| panic!("{printed}"));
    let kept_url = format!("sqlite://{kept}");
    assert_eq!(org_ids(&kept_url), org_ids(&restored));
    // A file that is not a Gatehouse database is refused before anything is touched.
    let junk = dir.0.join("junk.db");
    std::fs::write(&junk, "not a database").unwrap();
    let out = cli(
        &restored,
        &["restore", "--from", &junk.display().to_string(), "--force"],
    );
    assert!(!out.status.success(), "{}", stderr(&out));
    assert_eq!(org_ids(&restored).len(), ids.len());
}
