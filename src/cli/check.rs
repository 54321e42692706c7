//! `gatehouse config check`: the configuration as `serve` would load it, printed with every
//! secret masked, and, when asked, a connection to each server it names.

use std::time::Duration;

use crate::config::Config;

/// How long each connection check may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Prints the effective settings (the configuration already loaded and validated), then with
/// `connect` reports PostgreSQL (or the SQLite file), Redis and SMTP, one line each. Fails
/// when a connection fails.
pub async fn run(config: &Config, connect: bool) -> anyhow::Result<()> {
    for line in crate::config::masked_settings(config) {
        println!("{line}");
    }
    crate::mail::check_serve(config)?;
    eprintln!("configuration ok");
    if !connect {
        return Ok(());
    }
    let mut failed = 0;
    let mut report = |what: &str, result: Result<String, String>| match result {
        Ok(fine) => eprintln!("{what}: ok ({fine})"),
        Err(e) => {
            failed += 1;
            eprintln!("{what}: FAILED: {e}");
        }
    };
    report("database", within(database(config)).await);
    match crate::ratelimit::RedisLink::from_config(&config.redis_settings()) {
        Ok(Some(link)) => report(
            "redis",
            within(async { link.ping().await.map_err(|e| format!("{e:#}")) }).await,
        ),
        Ok(None) => {}
        Err(e) => report("redis", Err(format!("{e:#}"))),
    }
    if let Some(url) = &config.smtp_url {
        report("smtp", within(smtp(config, url)).await);
    }
    if failed > 0 {
        anyhow::bail!("{failed} connection check(s) failed");
    }
    Ok(())
}

async fn within(
    check: impl std::future::Future<Output = Result<String, String>>,
) -> Result<String, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))
}

/// Opens the database and runs one query. A SQLite file that does not exist yet is no
/// failure (`serve` creates it) and is not created here.
async fn database(config: &Config) -> Result<String, String> {
    let url = &config.database_url;
    let described = crate::store::describe(url);
    if let Some(file) = crate::store::sqlite_file(url) {
        if !file.exists() {
            return Ok(format!("{described} does not exist yet; serve creates it"));
        }
    }
    let store = crate::store::Store::connect(url)
        .await
        .map_err(|e| format!("{described}: {e:#}"))?;
    let pinged = store.ping().await.map_err(|e| format!("{described}: {e}"));
    store.close().await;
    pinged.map(|()| described)
}

async fn smtp(config: &Config, url: &crate::config::SecretString) -> Result<String, String> {
    let smtp = crate::mail::smtp::Smtp::new(url, config.smtp_ca_file.as_deref())
        .map_err(|e| e.to_string())?;
    smtp.check().await.map(|()| "connected and greeted".into())
}
