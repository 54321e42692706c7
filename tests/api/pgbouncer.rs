//! PostgreSQL through PgBouncer in transaction mode (Debian's 1.18, which keeps no prepared
//! statements across transactions): a PgBouncer of the test's own with two server connections
//! in front of the shared PostgreSQL, and many people at once, so that every server connection
//! serves many clients' transactions in turn. Migrations go over `migrate_database_url`.
//!
//! The whole story suite runs through a PgBouncer too, when `scripts/test` runs the PostgreSQL
//! tests a second time with `GATEHOUSE_TEST_PGBOUNCER_URL` (see helpers.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse::config::DatabasePooler;
use reqwest::Method;

use crate::helpers::{Db, TestApp, TestDb};
use crate::own_postgres::OwnPgBouncer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_people_at_once_sign_up_and_use_keys_through_a_transaction_pooler_on_postgres() {
    let db = TestDb::new(Db::Postgres).await;
    let Some(bouncer) = OwnPgBouncer::start(&db.url, 2) else {
        db.cleanup().await;
        return; // skipped with a notice (pgbouncer is missing, outside CI)
    };
    let pooled = bouncer.in_front_of(&db.url);
    let direct = db.url.clone();
    let app = TestApp::spawn_on(db, move |c| {
        c.database_url = pooled;
        c.database_pooler = DatabasePooler::Transaction;
        c.migrate_database_url = Some(direct);
    })
    .await;
    let app = std::sync::Arc::new(app);
    let stories = (0..16).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let owner = app.person().await;
            let org = app.org(&owner, &format!("Pooled {i}")).await;
            let (key, _) = app.key(&owner, &org, &["chat:write"]).await;
            let (status, body) = app.call(Method::GET, "/me", &key, None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["org_id"], org.as_str(), "{body}");
            let (status, body) = app.call(Method::GET, "/me", &owner.token, None).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                body["data"]["organizations"][0]["id"],
                org.as_str(),
                "{body}"
            );
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/orgs/{org}/members"),
                    &owner.token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
        })
    });
    for story in futures_util::future::join_all(stories).await {
        story.unwrap();
    }
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let app = std::sync::Arc::into_inner(app).unwrap();
    app.stop().await;
    drop(bouncer);
}
