//! The mail queue's promises with two instances on one database: one killed (`kill -9`)
//! in the middle of a send, each address still gets exactly one mail, and sent mails keep
//! no body; a mail that cannot be sent is given up once its code has expired
//! (`otp_expiry_seconds`, driven by the injected clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::clock::Clock;
use reqwest::Method;
use serde_json::json;
use sqlx::Row;

use crate::helpers::{eventually, parts, sql, tempdir, Db, TestApp, TestDb, PK};
use crate::smtp_sink::SmtpSink;
use crate::story;

fn fresh(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// An SMTP server that accepts connections and never says a word: a client that reaches
/// it is stuck in the middle of a send. Counts the connections.
async fn black_hole() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let n = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (port, count)
}

/// A clock that follows the system clock plus an offset the test moves forward, so an
/// instance's leases and retries can be jumped past without waiting.
struct DrivenClock {
    offset: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl DrivenClock {
    fn start() -> (Clock, DrivenClock) {
        let now = Arc::new(AtomicI64::new(Clock::System.now_ms()));
        let offset = Arc::new(AtomicI64::new(0));
        let (n, o) = (now.clone(), offset.clone());
        let task = tokio::spawn(async move {
            loop {
                n.store(
                    Clock::System.now_ms() + o.load(Ordering::SeqCst),
                    Ordering::SeqCst,
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        (Clock::Manual(now), DrivenClock { offset, task })
    }

    fn jump(&self, ms: i64) {
        self.offset.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Drop for DrivenClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn otp(c: &reqwest::Client, base: &str, email: &str) {
    let (status, body) = parts(
        c.post(format!("{base}/auth/v1/otp"))
            .header("apikey", PK)
            .json(&json!({"email": email}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

async fn one_mail_per_address_when_an_instance_dies_mid_send(db: Db) {
    let test_db = TestDb::new(db).await;
    let dir = tempdir::Dir::new();
    let (hole, connections) = black_hole().await;
    let sink = SmtpSink::start().await;
    let c = reqwest::Client::new();
    // Instance A: a real process whose mail server never answers.
    let smtp_a = format!("smtp://127.0.0.1:{hole}");
    let env = [
        ("GATEHOUSE_SMTP_URL", smtp_a.as_str()),
        ("GATEHOUSE_AUTOCONFIRM", "false"),
        ("GATEHOUSE_RATE_LIMIT_MAGIC_LINK", "100000/60s"),
    ];
    let mut a = crate::process::start_with(&test_db.url, &dir, &env).await;
    let victim = fresh("victim");
    otp(&c, &a.base, &victim).await;
    eventually(
        Duration::from_secs(15),
        "A leases the mail and connects to send it",
        || async { connections.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    // Instance B, on the same queue, with a clock the test drives and a working mail server.
    let (clock, driven) = DrivenClock::start();
    let smtp_b = sink.url(None);
    let b = TestApp::spawn_on_with_clock(test_db, clock, move |cfg| {
        cfg.autoconfirm = false;
        cfg.smtp_url = Some(gatehouse::config::SecretString::from(smtp_b));
    })
    .await;
    // Mails asked of both instances while A is stuck in its send.
    let others: Vec<String> = (0..6).map(|i| fresh(&format!("other{i}"))).collect();
    for (i, email) in others.iter().enumerate() {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        otp(&c, base, email).await;
    }
    for email in &others {
        sink.wait_for(email, 1, 20).await;
    }
    assert!(
        sink.to(&victim).is_empty(),
        "the victim's mail is leased by A: B leaves it alone"
    );
    a.child.kill().unwrap(); // SIGKILL in the middle of the SMTP dialogue
    a.child.wait().unwrap();
    // A's lease lasts 30 s: B takes the mail over once it has run out.
    driven.jump(31_000);
    let mail = sink.wait_for(&victim, 1, 20).await.remove(0);
    let (status, s) = parts(
        b.auth(Method::POST, "/verify")
            .json(&json!({"email": victim, "token": mail.code(), "type": "email"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "the mail B sent carries a good code: {s}");
    // A later mail is the sign that the queue moved past every earlier one.
    let last = fresh("last");
    otp(&c, &b.base, &last).await;
    sink.wait_for(&last, 1, 20).await;
    for email in others.iter().chain([&victim, &last]) {
        assert_eq!(sink.to(email).len(), 1, "exactly one mail to {email}");
    }
    assert_eq!(sink.mails.lock().unwrap().len(), others.len() + 2);
    let pool = sql(&b.db.url).await;
    let outbox = || async {
        sqlx::query(
            "SELECT recipient, text_body, html_body, sent_at FROM mail_outbox ORDER BY created_at",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // The sink has the last mail a moment before B records it as sent.
    eventually(
        Duration::from_secs(10),
        "B records every mail as sent",
        || async {
            outbox()
                .await
                .iter()
                .all(|r| r.get::<Option<i64>, _>("sent_at").is_some())
        },
    )
    .await;
    let rows = outbox().await;
    assert_eq!(rows.len(), others.len() + 2, "one queued mail per request");
    for row in rows {
        let to: String = row.get("recipient");
        let (text, html): (String, String) = (row.get("text_body"), row.get("html_body"));
        let sent_at: Option<i64> = row.get("sent_at");
        assert!(sent_at.is_some(), "{to}: sent");
        assert!(
            text.is_empty() && html.is_empty(),
            "{to}: a sent mail keeps no body"
        );
    }
    pool.close().await;
    drop(driven);
    b.stop().await;
    sink.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_mid_send_send_one_mail_per_address_on_sqlite() {
    one_mail_per_address_when_an_instance_dies_mid_send(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_mid_send_send_one_mail_per_address_on_postgres() {
    one_mail_per_address_when_an_instance_dies_mid_send(Db::Postgres).await;
}

/// (attempts, given up, body kept) of the mail to `to`.
async fn mail_state(app: &TestApp, to: &str) -> (i64, bool, bool) {
    let pool = sql(&app.db.url).await;
    let row = sqlx::query(
        "SELECT attempts, failed_at, text_body, html_body FROM mail_outbox WHERE recipient = $1",
    )
    .bind(to)
    .fetch_optional(&pool)
    .await
    .unwrap();
    pool.close().await;
    let Some(row) = row else {
        return (0, false, true);
    };
    let failed_at: Option<i64> = row.get("failed_at");
    let (text, html): (String, String) = (row.get("text_body"), row.get("html_body"));
    (
        row.get("attempts"),
        failed_at.is_some(),
        !text.is_empty() && !html.is_empty(),
    )
}

async fn attempts_reach(app: &TestApp, to: &str, n: i64) {
    eventually(
        Duration::from_secs(15),
        &format!("attempt {n} of the mail to {to}"),
        || async { mail_state(app, to).await.0 >= n },
    )
    .await;
}

story!(
    a_mail_that_cannot_be_sent_is_given_up_once_its_code_has_expired,
    setup: |db| async move {
        // A port nobody listens on (yet): every attempt is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let app = TestApp::spawn_with_clock(db, Clock::manual(Clock::System.now_ms()), |c| {
            c.autoconfirm = false;
            c.smtp_url = Some(gatehouse::config::SecretString::from(format!(
                "smtp://127.0.0.1:{port}"
            )));
            c.otp_expiry_seconds = 600;
            c.mail_min_interval_seconds = 0;
        })
        .await;
        (app, port)
    },
    |(app, port): (TestApp, u16)| async move {
        let c = reqwest::Client::new();
        let email = fresh("unsendable");
        otp(&c, &app.base, &email).await;
        attempts_reach(&app, &email, 1).await;
        // Ten seconds before the code expires it is still tried, and kept.
        app.state.edge.clock.advance_ms(590_000);
        attempts_reach(&app, &email, 2).await;
        assert_eq!(
            mail_state(&app, &email).await,
            (2, false, true),
            "(attempts, given up, body kept) before the expiry"
        );
        assert_eq!(app.state.runtime.store.pending_mail_count().await.unwrap(), 1);
        // At the expiry the next failure gives it up and forgets its body.
        app.state.edge.clock.advance_ms(10_000);
        eventually(
            Duration::from_secs(15),
            "the mail is given up at its code's expiry",
            || async { mail_state(&app, &email).await.1 },
        )
        .await;
        assert_eq!(
            mail_state(&app, &email).await,
            (3, true, false),
            "(attempts, given up, body kept) after the expiry"
        );
        assert_eq!(app.state.runtime.store.pending_mail_count().await.unwrap(), 0);
        // The mail server comes up: a new mail goes out, the given-up one never does.
        let sink = SmtpSink::start_on(port).await;
        let later = fresh("later");
        otp(&c, &app.base, &later).await;
        sink.wait_for(&later, 1, 15).await;
        app.state.edge.clock.advance_ms(600_000);
        let after = fresh("after");
        otp(&c, &app.base, &after).await;
        sink.wait_for(&after, 1, 15).await;
        assert!(sink.to(&email).is_empty(), "a given-up mail is never sent");
        sink.stop();
        app
    }
);
