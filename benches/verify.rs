//! Per-verification cost of an API key on a warm cache, piece by piece, beside a bare
//! constant-time header compare (the baseline a hand-written check would pay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gatehouse::auth::api_key::{self, Environment};
use gatehouse::auth::tokens::{ct_eq, sha256_hex};
use gatehouse::clock::Clock;
use gatehouse::keys::{Keys, NewKey};
use gatehouse::store::{Audit, Store};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("gatehouse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/bench.db", dir.display());
    let (keys, key) = rt.block_on(async {
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let hasher = gatehouse::auth::password::Hasher::new(1).unwrap();
        let hash = hasher
            .hash(&gatehouse::domain::Password::presented(
                "bench password".into(),
            ))
            .await
            .unwrap();
        let user = store
            .create_user(gatehouse::store::NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                email: "bench@example.com".into(),
                password_hash: hash,
                confirmed: true,
                user_metadata: serde_json::json!({}),
                now: 0,
            })
            .await
            .unwrap();
        let audit = Audit {
            actor: "bench".into(),
            ip: None,
            now: 0,
        };
        let org_id = gatehouse::ids::OrgId::new();
        let org = store
            .create_org(&org_id, "Bench", &user.id, &audit)
            .await
            .unwrap();
        let keys = Keys::new(store.clone(), Clock::System, "gk");
        let (key, record) = keys.mint(NewKey {
            org_id: org.id,
            name: "bench".into(),
            scopes: vec!["chat:write".into()],
            environment: Environment::Live,
            lifetime_ms: None,
            metadata: serde_json::json!({}),
            created_by: "bench".into(),
            rate_limits: None,
            credits: None,
            budgets: None,
            chat_limits: Default::default(),
        });
        store.create_api_key(&record, &audit).await.unwrap();
        keys.verify(&key).await.unwrap(); // warm the cache
        (keys, key)
    });
    let expected = key.clone();

    let mut g = c.benchmark_group("api_key_verification");
    g.bench_function("baseline: constant-time compare", |b| {
        b.iter(|| ct_eq(black_box(&key), black_box(&expected)))
    });
    g.bench_function("parse + checksum", |b| {
        b.iter(|| api_key::parse("gk", black_box(&key)))
    });
    g.bench_function("sha256", |b| b.iter(|| sha256_hex(black_box(&key))));
    g.bench_function("full verify (warm cache)", |b| {
        b.iter(|| rt.block_on(keys.verify(black_box(&key))).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
