//! Redis Cluster, on a cluster of the test's own (`redis-server --cluster-enabled yes` on
//! free ports, joined by `redis-cli --cluster create`): two instances on one PostgreSQL
//! database admit exactly a limit and exactly the credits together, a key revoked on one is
//! refused by the other within the fan-out bound (their subscribers on different nodes), and
//! a master killed mid-load fails over to its replica without a 5xx, after which limits are
//! shared exactly again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{parts, redis_prefix, tempdir, Db, TestApp, TestDb, FANOUT_WITHIN};

/// The failover detection time the test's cluster runs with (`cluster-node-timeout`, ms);
/// production's default is 15 000.
const NODE_TIMEOUT_MS: u64 = 1000;

/// A Redis Cluster of `masters` masters with `replicas` replicas each, all on 127.0.0.1.
/// Every node the test started is killed on drop (by its own child handle), and the folder
/// with their cluster files removed.
struct OwnRedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Option<Child>>,
    _dir: tempdir::Dir,
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is needed for this test");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl OwnRedisCluster {
    fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempdir::Dir::new();
        let n = masters * (1 + replicas);
        let mut cluster = OwnRedisCluster {
            ports: Vec::new(),
            nodes: Vec::new(),
            _dir: dir,
        };
        for _ in 0..n {
            let (port, child) = start_node(&cluster._dir.0);
            cluster.ports.push(port);
            cluster.nodes.push(Some(child));
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_until_ok(&cluster.ports.clone());
        cluster
    }

    /// Waits until every node of `ports` says `cluster_state:ok` and knows every live node.
    fn wait_until_ok(&self, ports: &[u16]) {
        for _ in 0..300 {
            // Every replica has made its first sync: one that never did may not take over.
            let ok = ports.iter().all(|p| {
                let info = cli(*p, &["cluster", "info"]);
                let replication = cli(*p, &["info", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.ports.len()))
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the cluster did not become ok: {}",
            cli(ports[0], &["cluster", "nodes"])
        );
    }

    /// Seed URLs, starting at node `first`.
    fn urls(&self, first: usize) -> String {
        let n = self.ports.len();
        (0..n)
            .map(|i| format!("redis://127.0.0.1:{}", self.ports[(first + i) % n]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master holding `key`'s slot.
    fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = cli(self.ports[0], &["cluster", "keyslot", key])
            .trim()
            .parse()
            .unwrap();
        for line in cli(self.ports[0], &["cluster", "nodes"]).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if !f.get(2).is_some_and(|flags| flags.contains("master")) {
                continue;
            }
            for range in &f[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if (lo.parse().unwrap()..=hi.parse().unwrap()).contains(&slot) {
                    let port = f[1].split([':', '@']).nth(1).unwrap();
                    return port.parse().unwrap();
                }
            }
        }
        panic!("no master holds slot {slot}");
    }

    /// Kills node `port` at once (SIGKILL).
    fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the cluster replaced the dead master `dead`: a live node reports
    /// `cluster_state:ok` and lists `dead` as failed (`fail`, not only suspected) with no
    /// slots left to it.
    fn failed_over(&self, dead: u16) -> bool {
        let Some(alive) = self.ports.iter().find(|p| **p != dead) else {
            return false;
        };
        if !cli(*alive, &["cluster", "info"]).contains("cluster_state:ok") {
            return false;
        }
        cli(*alive, &["cluster", "nodes"]).lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() <= 8
                && f.get(1)
                    .is_some_and(|a| a.starts_with(&format!("127.0.0.1:{dead}@")))
                && f.get(2)
                    .is_some_and(|flags| flags.split(',').any(|x| x == "fail"))
        })
    }
}

fn start_node(dir: &Path) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_cluster_port();
        // A folder per node: a replica's first sync writes its RDB file there.
        let dir = dir.join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this test");
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if cli(port, &["ping"]).trim() == "PONG" {
                return (port, child);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("a cluster node did not start on any of five free ports");
}

impl Drop for OwnRedisCluster {
    fn drop(&mut self) {
        for c in self.nodes.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two instances on one fresh PostgreSQL database and the cluster; A's seeds start at node
/// 0, B's at node 1, so their subscribers listen on different nodes.
async fn two_instances(cluster: &OwnRedisCluster) -> (TestApp, TestApp, String) {
    let prefix = redis_prefix();
    let db = TestDb::new(Db::Postgres).await;
    let alias = db.alias();
    let tweak = |first: usize| {
        let urls = cluster.urls(first);
        let prefix = prefix.clone();
        move |c: &mut gatehouse::config::Config| {
            c.redis_cluster_urls = Some(gatehouse::config::SecretString::from(urls));
            c.redis_prefix = prefix;
            // A loaded test machine can stall past the default: a decision that times out
            // is made in memory and counts would no longer be exact.
            c.redis_timeout_ms = 1000;
        }
    };
    let a = TestApp::spawn_on(db, tweak(0)).await;
    let b = TestApp::spawn_on(alias, tweak(1)).await;
    let channel = format!("{prefix}:invalidate");
    for port in [cluster.ports[0], cluster.ports[1]] {
        let mut subscribed = false;
        for _ in 0..200 {
            let out = cli(port, &["pubsub", "numsub", &channel]);
            if out.lines().nth(1).is_some_and(|n| n.trim() == "1") {
                subscribed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(subscribed, "no instance subscribed on node {port}");
    }
    (a, b, prefix)
}

/// A key of a new organization limited to `limit` per hour; returns (owner, org, key).
async fn limited_key(app: &TestApp, limit: u32) -> (crate::helpers::Person, String, String) {
    let owner = app.person().await;
    let org = app.org(&owner, "Cluster").await;
    let key = key_in(app, &owner, &org, limit).await;
    (owner, org, key)
}

async fn key_in(app: &TestApp, owner: &crate::helpers::Person, org: &str, limit: u32) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/orgs/{org}/api-keys"),
            &owner.token,
            Some(json!({"name": "k", "scopes": [],
                "rate_limits": [{"limit": limit, "window_seconds": 3600}]})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["data"]["key"].as_str().unwrap().to_string()
}

/// `total` requests with `key` at once, alternating between the instances: (status, count).
async fn burst(bases: &[String; 2], key: &str, total: usize) -> Vec<(u16, usize)> {
    let c = reqwest::Client::new();
    let statuses: Vec<u16> = stream::iter(0..total)
        .map(|i| {
            let req = c.get(format!("{}/v1/me", bases[i % 2])).bearer_auth(key);
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(total)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

async fn fallbacks(base: &str) -> u64 {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_ratelimit_redis_fallbacks_total "))
        .map(|v| v.parse::<f64>().unwrap() as u64)
        .expect("/metrics counts Redis fallbacks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_shares_limits_credits_and_revocations_between_instances_on_postgres() {
    let cluster = OwnRedisCluster::start(3, 0);
    let (a, b, prefix) = two_instances(&cluster).await;
    let bases = [a.base.clone(), b.base.clone()];

    // An exact limit across both instances.
    let (owner, org, key) = limited_key(&a, 20).await;
    let counts = burst(&bases, &key, 60).await;
    assert_eq!(counts, vec![(200, 20), (429, 40)], "(status, count)");
    assert_eq!((fallbacks(&a.base).await, fallbacks(&b.base).await), (0, 0));
    // The counters are on the cluster, spread by hash tag over its masters.
    let on_masters: usize = cluster
        .ports
        .iter()
        .map(|p| {
            cli(*p, &["--scan", "--pattern", &format!("{prefix}:*")])
                .lines()
                .count()
        })
        .sum();
    assert!(on_masters > 0, "no counter on any node");

    // Credits exact across both.
    let (_, verifier, metered, id) =
        crate::credits::setup(&a, &owner, json!({"remaining": 30})).await;
    assert_eq!(a.state.keys.meter_name(), "redis");
    let admitted = crate::credits::concurrent_verifications(&bases, &verifier, &metered, 80).await;
    assert_eq!(admitted, 30);
    assert_eq!(crate::credits::stored(&a.db.url, &id).await, (0, 30));

    // A key revoked on A is refused by B within the fan-out bound.
    let (revoked, revoked_id) = a.key(&owner, &org, &[]).await;
    let me_on_b = || async {
        parts(
            b.client
                .get(b.url("/v1/me"))
                .bearer_auth(&revoked)
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    assert_eq!(me_on_b().await.0, 200, "B caches it");
    let (status, body) = a
        .call(
            Method::DELETE,
            &format!("/orgs/{org}/api-keys/{revoked_id}"),
            &owner.token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let revoked_at = Instant::now();
    loop {
        let (status, body) = me_on_b().await;
        if status == 401 {
            assert_eq!(body["error"]["details"]["reason"], "revoked", "{body}");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            revoked_at.elapsed() < FANOUT_WITHIN,
            "B still admits the key {FANOUT_WITHIN:?} after it was revoked on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    a.stop().await;
}

/// Requests with `key` alternating between the instances until `stop`: each one's status,
/// or the error of one that did not answer within 5 s.
fn load(
    bases: [String; 2],
    key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Result<u16, String>>> {
    tokio::spawn(async move {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut seen = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let r = c
                .get(format!("{}/v1/me", bases[i % 2]))
                .bearer_auth(&key)
                .send()
                .await;
            seen.push(r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
            i += 1;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_killed_mid_load_fails_over_without_a_5xx_on_postgres() {
    let mut cluster = OwnRedisCluster::start(3, 1);
    let (a, b, prefix) = two_instances(&cluster).await;
    let bases = [a.base.clone(), b.base.clone()];
    let (owner, org, busy) = limited_key(&a, 100_000).await;
    assert_eq!(burst(&bases, &busy, 2).await, vec![(200, 2)]);
    // The master holding the busy key's counters is the one to fail.
    let counter = cluster
        .ports
        .iter()
        .find_map(|p| {
            cli(*p, &["--scan", "--pattern", &format!("{prefix}:rl:*")])
                .lines()
                .next()
                .map(str::to_string)
        })
        .expect("the busy key's counter is on the cluster");
    let victim = cluster.master_of(&counter);

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| load(bases.clone(), busy.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.kill(victim);
    let killed_at = Instant::now();
    while !cluster.failed_over(victim) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the replica did not take over within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failover = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await; // serving after the failover
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for w in workers {
        outcomes.extend(w.await.unwrap());
    }
    assert!(outcomes.len() > 40, "the load ran: {}", outcomes.len());
    for r in &outcomes {
        assert!(
            matches!(r, Ok(200 | 429)),
            "a request answered {r:?} (failover took {failover:?})"
        );
    }

    // After the failover, decisions are shared through the cluster again: exact.
    let mut shared = false;
    for _ in 0..100 {
        let before = (fallbacks(&a.base).await, fallbacks(&b.base).await);
        let probe = burst(&bases, &busy, 2).await;
        let after = (fallbacks(&a.base).await, fallbacks(&b.base).await);
        if probe == vec![(200, 2)] && before == after {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shared, "the instances did not decide in the cluster again");
    let fresh = key_in(&a, &owner, &org, 15).await;
    let counts = burst(&bases, &fresh, 45).await;
    assert_eq!(counts, vec![(200, 15), (429, 30)], "(status, count)");
    b.stop().await;
    a.stop().await;
}
