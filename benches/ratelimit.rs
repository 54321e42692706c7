//! Cost of a rate-limit decision, each beside a baseline measured in the same run:
//!
//! - in memory ([`MemoryLimiter::check`], criterion): decisions per second beside a bare
//!   `moka::sync::Cache::get` of a counter-shaped key with the same key spread, printed as a
//!   table with the ratio to that baseline;
//! - through Redis ([`RedisLimiter::check`]): p50/p99 latency beside a bare `PING` over the
//!   same `ConnectionManager`, printed as a table with the ratios to `PING`. Skipped, with a
//!   notice, when no Redis answers at `GATEHOUSE_BENCH_REDIS_URL` (default
//!   `redis://127.0.0.1:6379`).
//!
//! `cargo bench --bench ratelimit` runs both; see bench/README.md for the knobs and how to
//! read the tables. Under `cargo test` (criterion's test mode) every case runs once and the
//! Redis part takes a few samples, as a smoke test; no table is printed.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, Throughput};
use gatehouse::ratelimit::{MemoryLimiter, Rate, Rates, RedisLimiter, RedisLink, Request};

/// Distinct subjects of the spread cases: 100k IPs, or 100k API keys.
const SPREAD: usize = 100_000;
/// The 100k API keys belong to this many organizations (100 keys each).
const ORGS: usize = 1_000;
/// `rate_limit_memory_capacity`'s default: every counter of the spread cases fits.
const CAPACITY: u64 = 1_000_000;
/// The clock moves this much between two decisions: the longest emission interval of the
/// shapes below (10,000/1d = 8.64 s), so every decision is admitted and writes its counters.
const STEP_MS: i64 = 8_640;
const START_MS: i64 = 1_700_000_000_000;
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
const DEFAULT_REDIS_SAMPLES: usize = 20_000;
/// Samples of each Redis operation under `cargo test`.
const SMOKE_REDIS_SAMPLES: usize = 50;

/// The per-IP sign-in shape: one window, `sign_in` 20/60s, tagged by the IP.
fn sign_in(ip: &str) -> Request {
    let mut req = Request {
        tag: format!("ip:{ip}"),
        windows: Vec::new(),
        fail_closed: false,
    };
    req.add("sign_in", ip, &Rates::one(Rate::new(20, 60)));
    req
}

/// The API-key shape with its organization: four windows under the organization's tag.
fn key_and_org(key_id: &str, org_id: &str) -> Request {
    let mut req = Request {
        tag: format!("org:{org_id}"),
        windows: Vec::new(),
        fail_closed: false,
    };
    let key_rates = Rates(vec![
        Rate::new(60, 60),
        Rate::new(1000, 3600),
        Rate::new(10_000, 86_400),
    ]);
    req.add("api_key", key_id, &key_rates);
    req.add("org", org_id, &Rates::one(Rate::new(120, 60)));
    req
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `n` API keys spread over `orgs` organizations.
fn keys_in_orgs(n: usize, orgs: usize) -> Vec<Request> {
    let org_ids: Vec<String> = (0..orgs).map(|_| uuid()).collect();
    (0..n)
        .map(|i| key_and_org(&uuid(), &org_ids[i % orgs]))
        .collect()
}

/// What criterion was asked to do, read from the arguments as criterion reads them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `cargo bench`: measure and print the tables.
    Measure,
    /// `cargo test --benches`, `cargo bench -- --test`: run everything once, print no table.
    Test,
    /// `--list`, `--profile-time`: criterion's business only.
    Other,
}

fn mode() -> Mode {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if has("--list") || has("--profile-time") {
        Mode::Other
    } else if has("--bench") && !has("--test") {
        Mode::Measure
    } else {
        Mode::Test
    }
}

// ---------------------------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------------------------

/// One row of the in-memory table: criterion's samples, in nanoseconds per operation.
struct Row {
    name: &'static str,
    /// Index of the row whose throughput is this row's 1.00.
    baseline: usize,
    per_op_ns: RefCell<Vec<f64>>,
    /// Decisions that were denied, or baseline lookups that missed (both should be 0).
    misses: RefCell<u64>,
}

impl Row {
    fn new(name: &'static str, baseline: usize) -> Self {
        Self {
            name,
            baseline,
            per_op_ns: RefCell::new(Vec::new()),
            misses: RefCell::new(0),
        }
    }

    /// The median over criterion's samples (its warm-up calls included, a handful among
    /// about a hundred) of the time per operation.
    fn median_ns(&self) -> Option<f64> {
        let mut v = self.per_op_ns.borrow().clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }
}

/// Times `iters` lookups cycling over `keys`, as the baseline of a decision.
fn lookups(
    cache: &moka::sync::Cache<String, Arc<AtomicI64>>,
    keys: &[String],
    iters: u64,
    row: &Row,
) -> Duration {
    let mut i = 0;
    let mut misses = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        match cache.get(black_box(&keys[i])) {
            Some(cell) => {
                black_box(cell.load(Ordering::Acquire));
            }
            None => misses += 1,
        }
        i += 1;
        if i == keys.len() {
            i = 0;
        }
    }
    let elapsed = start.elapsed();
    row.per_op_ns
        .borrow_mut()
        .push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
    *row.misses.borrow_mut() += misses;
    elapsed
}

/// Times `iters` decisions cycling over `reqs`, the clock moving [`STEP_MS`] each time.
fn decisions(
    limiter: &MemoryLimiter,
    reqs: &[Request],
    now_ms: &mut i64,
    iters: u64,
    row: &Row,
) -> Duration {
    let mut i = 0;
    let mut denied = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        let d = limiter.check(black_box(&reqs[i]), *now_ms);
        denied += u64::from(!d.allowed);
        black_box(d);
        *now_ms += STEP_MS;
        i += 1;
        if i == reqs.len() {
            i = 0;
        }
    }
    let elapsed = start.elapsed();
    row.per_op_ns
        .borrow_mut()
        .push(elapsed.as_nanos() as f64 / iters.max(1) as f64);
    *row.misses.borrow_mut() += denied;
    elapsed
}

fn baseline_cache(keys: &[String]) -> moka::sync::Cache<String, Arc<AtomicI64>> {
    let cache = moka::sync::Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_idle(Duration::from_secs(60))
        .build();
    for k in keys {
        cache.insert(k.clone(), Arc::new(AtomicI64::new(0)));
    }
    cache.run_pending_tasks();
    cache
}

/// A fresh limiter that has already decided every request once, so every counter exists.
fn warm_limiter(reqs: &[Request], now_ms: &mut i64) -> MemoryLimiter {
    let limiter = MemoryLimiter::new(CAPACITY);
    for r in reqs {
        limiter.check(r, *now_ms);
        *now_ms += STEP_MS;
    }
    limiter
}

fn memory(c: &mut Criterion, measuring: bool) {
    let rows = [
        Row::new("baseline: moka get, 1 hot key", 0),
        Row::new("baseline: moka get, 100k keys", 1),
        Row::new("1 window (sign_in 20/60s), 1 hot IP", 0),
        Row::new("1 window (sign_in 20/60s), 100k IPs", 1),
        Row::new(
            "4 windows (key 60/60s,1000/1h,10000/1d + org 120/60s), 1 hot key",
            0,
        ),
        Row::new(
            "4 windows (key 60/60s,1000/1h,10000/1d + org 120/60s), 100k keys in 1k orgs",
            1,
        ),
    ];
    let ips: Vec<Request> = (0..SPREAD).map(|i| sign_in(&ip(i))).collect();
    // The baseline's keys are the counter names the sign-in decisions use.
    let cell_names: Vec<String> = ips
        .iter()
        .map(|r| format!("{{{}}}{}", r.tag, r.windows[0].cell()))
        .collect();

    let mut g = c.benchmark_group("ratelimit_memory");
    g.throughput(Throughput::Elements(1));

    {
        let hot = &cell_names[..1];
        let cache = baseline_cache(hot);
        g.bench_function("baseline: moka get, hot key", |b| {
            b.iter_custom(|iters| lookups(&cache, hot, iters, &rows[0]))
        });
        let cache = baseline_cache(&cell_names);
        g.bench_function("baseline: moka get, 100k keys", |b| {
            b.iter_custom(|iters| lookups(&cache, &cell_names, iters, &rows[1]))
        });
    }
    {
        let mut now = START_MS;
        let hot = &ips[..1];
        let limiter = warm_limiter(hot, &mut now);
        g.bench_function("1 window, hot IP", |b| {
            b.iter_custom(|iters| decisions(&limiter, hot, &mut now, iters, &rows[2]))
        });
    }
    {
        let mut now = START_MS;
        let limiter = warm_limiter(&ips, &mut now);
        g.bench_function("1 window, 100k IPs", |b| {
            b.iter_custom(|iters| decisions(&limiter, &ips, &mut now, iters, &rows[3]))
        });
    }
    {
        let mut now = START_MS;
        let hot = vec![key_and_org(&uuid(), &uuid())];
        let limiter = warm_limiter(&hot, &mut now);
        g.bench_function("4 windows, hot key", |b| {
            b.iter_custom(|iters| decisions(&limiter, &hot, &mut now, iters, &rows[4]))
        });
    }
    {
        let mut now = START_MS;
        let keys = keys_in_orgs(SPREAD, ORGS);
        let limiter = warm_limiter(&keys, &mut now);
        g.bench_function("4 windows, 100k keys in 1k orgs", |b| {
            b.iter_custom(|iters| decisions(&limiter, &keys, &mut now, iters, &rows[5]))
        });
    }
    g.finish();

    if measuring {
        print_memory_table(&rows);
    }
}

fn print_memory_table(rows: &[Row]) {
    let medians: Vec<Option<f64>> = rows.iter().map(Row::median_ns).collect();
    if medians.iter().all(Option::is_none) {
        return; // every case was filtered out
    }
    println!();
    println!(
        "In-memory rate-limit decisions (MemoryLimiter::check, one thread, the clock moving \
         {STEP_MS} ms per decision so all are admitted), beside a bare moka::sync::Cache::get \
         of a counter name; median of criterion's samples; {} core(s) available to the bench",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| case | ns/op | ops/s | ratio to baseline |");
    println!("|---|---:|---:|---:|");
    for (row, median) in rows.iter().zip(&medians) {
        let Some(ns) = median else { continue };
        let ratio = match medians[row.baseline] {
            // ops/s of the row ÷ ops/s of its baseline
            Some(base) if *ns > 0.0 => format!("{:.3}", base / ns),
            _ => "n/a".into(),
        };
        println!(
            "| {} | {:.0} | {} | {} |",
            row.name,
            ns,
            thousands(1e9 / ns),
            ratio
        );
    }
    for row in rows {
        let m = *row.misses.borrow();
        if m > 0 {
            println!(
                "- {}: {m} operations were denied or missed; its numbers are not the admitted path",
                row.name
            );
        }
    }
    println!();
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Through Redis
// ---------------------------------------------------------------------------------------------

fn redis(measuring: bool) {
    let samples = match std::env::var("GATEHOUSE_BENCH_REDIS_SAMPLES") {
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("GATEHOUSE_BENCH_REDIS_SAMPLES must be a number (got {s:?})");
                std::process::exit(2);
            }
        },
        Err(_) if measuring => DEFAULT_REDIS_SAMPLES,
        Err(_) => SMOKE_REDIS_SAMPLES,
    };
    if samples == 0 {
        println!("Redis latency: skipped (GATEHOUSE_BENCH_REDIS_SAMPLES=0)");
        return;
    }
    let url = std::env::var("GATEHOUSE_BENCH_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("Redis latency: failed: no tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(redis_latency(&url, samples, measuring)) {
        println!("Redis latency: failed: {e:#}");
        std::process::exit(1);
    }
}

async fn redis_latency(url: &str, samples: usize, measuring: bool) -> anyhow::Result<()> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("gatehouse-bench:{}-{started}", std::process::id());
    // A bad URL is an error; an unreachable Redis leaves the link without a connection.
    let link = match RedisLink::open_url(url, &prefix, Duration::from_secs(1)).await {
        Ok(link) => link,
        Err(e) => {
            println!("Redis latency: skipped ({e:#}; set GATEHOUSE_BENCH_REDIS_URL)");
            return Ok(());
        }
    };
    let addr = link.describe();
    let Some(mut conn) = link.connection() else {
        println!(
            "Redis latency: skipped (no Redis answers at {addr}; set GATEHOUSE_BENCH_REDIS_URL)"
        );
        return Ok(());
    };

    // Each subject is decided once in the warm-up and at most 10 times measured: below every
    // limit, so every decision is admitted and updates counters that already exist.
    let subjects = samples.div_ceil(10);
    let one: Vec<Request> = (0..subjects).map(|i| sign_in(&ip(i))).collect();
    let four: Vec<Request> = keys_in_orgs(subjects, subjects);
    let limiter = RedisLimiter::new(link.clone());

    let run = measure(&mut conn, &limiter, &one, &four, samples).await;
    let deleted = delete_keys(&mut conn, &prefix).await;
    let mut lat = run?;
    let deleted = deleted?;

    if !measuring {
        println!(
            "Redis latency (test mode): {samples} samples of PING and of each decision at {addr}, \
             ok; {deleted} keys removed"
        );
        return Ok(());
    }
    println!();
    println!(
        "Redis-backed rate-limit decisions (RedisLimiter::check, Redis TIME as the clock) beside \
         a bare PING, at {addr}: one ConnectionManager, current-thread runtime, {samples} \
         sequential samples of each (interleaved) after {subjects} of each as warm-up; {} \
         core(s) available to the bench",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| operation | p50 | p99 | p50 ratio to PING | p99 ratio to PING | p50 minus PING's |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for l in &mut lat.rows {
        l.1.sort_unstable();
    }
    let ping = (pct(&lat.rows[0].1, 0.50), pct(&lat.rows[0].1, 0.99));
    for (name, v) in &lat.rows {
        let (p50, p99) = (pct(v, 0.50), pct(v, 0.99));
        let extra = p50.as_nanos() as f64 / 1000.0 - ping.0.as_nanos() as f64 / 1000.0;
        println!(
            "| {name} | {} | {} | {:.2} | {:.2} | {extra:+.1} µs |",
            micros(p50),
            micros(p99),
            ratio(p50, ping.0),
            ratio(p99, ping.1)
        );
    }
    if lat.denied > 0 {
        println!(
            "- {} decisions were denied; the decision rows are not the admitted path",
            lat.denied
        );
    }
    println!("- keys under {prefix}: the {deleted} not yet expired were removed after the run");
    println!();
    Ok(())
}

struct Latencies {
    rows: Vec<(&'static str, Vec<Duration>)>,
    denied: usize,
}

async fn measure(
    conn: &mut gatehouse::ratelimit::RedisConn,
    limiter: &RedisLimiter,
    one: &[Request],
    four: &[Request],
    samples: usize,
) -> anyhow::Result<Latencies> {
    // Warm-up: the connection, the script cache (EVALSHA), one counter set per subject.
    for (a, b) in one.iter().zip(four) {
        let _: String = redis::cmd("PING").query_async(conn).await?;
        limiter.check(a, None).await?;
        limiter.check(b, None).await?;
    }
    let mut ping = Vec::with_capacity(samples);
    let mut one_window = Vec::with_capacity(samples);
    let mut four_windows = Vec::with_capacity(samples);
    let mut denied = 0;
    for s in 0..samples {
        let i = s % one.len();
        let t = Instant::now();
        let _: String = redis::cmd("PING").query_async(conn).await?;
        ping.push(t.elapsed());

        let t = Instant::now();
        let d = limiter.check(&one[i], None).await?;
        one_window.push(t.elapsed());
        denied += usize::from(!d.allowed);

        let t = Instant::now();
        let d = limiter.check(&four[i], None).await?;
        four_windows.push(t.elapsed());
        denied += usize::from(!d.allowed);
    }
    Ok(Latencies {
        rows: vec![
            ("PING (baseline)", ping),
            ("decision, 1 window (sign_in 20/60s)", one_window),
            (
                "decision, 4 windows (key 60/60s,1000/1h,10000/1d + org 120/60s)",
                four_windows,
            ),
        ],
        denied,
    })
}

/// Removes every key of this run (they would expire on their own within a day).
async fn delete_keys(
    conn: &mut gatehouse::ratelimit::RedisConn,
    prefix: &str,
) -> anyhow::Result<usize> {
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        return f64::NAN;
    }
    a.as_secs_f64() / b.as_secs_f64()
}

fn main() {
    let mode = mode();
    let mut c = Criterion::default().configure_from_args();
    memory(&mut c, mode == Mode::Measure);
    c.final_summary();
    if mode != Mode::Other {
        redis(mode == Mode::Measure);
    }
}
