//! The load: `--streams` streamed chats, one connection each, started evenly over
//! `--arrival-s`, each timed from just before its connection to its first token (TTFT), its
//! last token and its end (`event: done` from Gatehouse, `data: [DONE]` from the mock).
//! A stream that is refused (not 200), ends early (EOF before its end, an `error` event) or is
//! still open at the global deadline is counted, never timed.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Args;

/// `http://host:port/path` → (`host:port`, `/path`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_string(), path.to_string()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Gatehouse `/v1/chat`: `event: delta` …, `event: done`.
    Gatehouse,
    /// An OpenAI-compatible server: `data: {…delta…}` …, `data: [DONE]`.
    Mock,
}

/// How one stream ended.
enum Outcome {
    Done {
        ttft: Duration,
        last: Duration,
        total: Duration,
        tokens: u64,
    },
    Refused(u16),
    Failed(&'static str),
    TimedOut,
}

/// Samples of the watched process (`--watch-pid`): resident memory against open streams.
struct Watch {
    pid: u32,
    idle_rss_kib: u64,
    cpu_ticks_start: u64,
    peak_open: usize,
    rss_at_peak_kib: u64,
    max_rss_kib: u64,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields are counted after its closing ')'.
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub async fn run(args: &Args) -> Result<(), String> {
    let url = args.str("url")?;
    let target = match args.str("target")?.as_str() {
        "gatehouse" => Target::Gatehouse,
        "mock" => Target::Mock,
        t => return Err(format!("--target gatehouse|mock, not {t:?}")),
    };
    let streams: usize = args.num("streams", 1000)?;
    let arrival = Duration::from_secs_f64(args.num("arrival-s", 5.0f64)?);
    // Default: the arrivals, a 10 s answer and a minute of slack.
    let deadline =
        Duration::from_secs_f64(args.num("deadline-s", arrival.as_secs_f64() + 10.0 + 60.0)?);
    let keys: Vec<String> = match args.opt("keys") {
        Some(f) => std::fs::read_to_string(&f)
            .map_err(|e| format!("{f}: {e}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        None => Vec::new(),
    };
    if target == Target::Gatehouse && keys.is_empty() {
        return Err("--keys FILE (one API key a line) is needed for --target gatehouse".into());
    }
    if streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    let (authority, path) = split_url(&url)?;
    let body = Bytes::from(match target {
        Target::Gatehouse => {
            r#"{"message":"Hello from bench/streams","stream":true}"#.to_string()
        }
        Target::Mock => r#"{"model":"mock","messages":[{"role":"user","content":"Hello from bench/streams"}],"stream":true,"stream_options":{"include_usage":true}}"#.to_string(),
    });

    let watch_pid: Option<u32> = args.opt("watch-pid").and_then(|p| p.parse().ok());
    let watch = Rc::new(RefCell::new(watch_pid.map(|pid| Watch {
        pid,
        idle_rss_kib: rss_kib(pid).unwrap_or(0),
        cpu_ticks_start: cpu_ticks(pid).unwrap_or(0),
        peak_open: 0,
        rss_at_peak_kib: 0,
        max_rss_kib: 0,
    })));
    let open = Rc::new(Cell::new(0usize));
    // Tokens received by every stream, complete or not, and the streams that got one.
    let received = Rc::new(Cell::new(0u64));
    let started = Rc::new(Cell::new(0usize));

    let start = Instant::now();
    let end_by = start + deadline;
    // Sampler: every 200 ms, the watched process's RSS beside the streams open.
    let sampler = {
        let (watch, open) = (watch.clone(), open.clone());
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let mut w = watch.borrow_mut();
                let Some(w) = w.as_mut() else { return };
                let Some(rss) = rss_kib(w.pid) else { continue };
                w.max_rss_kib = w.max_rss_kib.max(rss);
                if open.get() >= w.peak_open {
                    w.peak_open = open.get();
                    w.rss_at_peak_kib = rss;
                }
            }
        })
    };

    let mut handles = Vec::with_capacity(streams);
    let mut max_lag = Duration::ZERO;
    for i in 0..streams {
        let due = start + arrival.mul_f64(i as f64 / streams as f64);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(Instant::now() - due);
        let key = (!keys.is_empty()).then(|| keys[i % keys.len()].clone());
        let (authority, path, body, open) =
            (authority.clone(), path.clone(), body.clone(), open.clone());
        let counts = (received.clone(), started.clone());
        handles.push(tokio::task::spawn_local(async move {
            open.set(open.get() + 1);
            let r = tokio::time::timeout_at(
                end_by,
                one(&authority, &path, body, key.as_deref(), target, counts),
            )
            .await
            .unwrap_or(Outcome::TimedOut);
            open.set(open.get() - 1);
            r
        }));
    }
    let mut outcomes = Vec::with_capacity(streams);
    for h in handles {
        outcomes.push(h.await.unwrap_or(Outcome::Failed("task")));
    }
    let elapsed = start.elapsed();
    sampler.abort();
    report(
        (received.get(), started.get()),
        &outcomes,
        streams,
        arrival,
        elapsed,
        max_lag,
        watch.borrow().as_ref(),
    );
    Ok(())
}

async fn one(
    authority: &str,
    path: &str,
    body: Bytes,
    key: Option<&str>,
    target: Target,
    (received, started): (Rc<Cell<u64>>, Rc<Cell<usize>>),
) -> Outcome {
    let t0 = Instant::now();
    let Ok(tcp) = TcpStream::connect(authority).await else {
        return Outcome::Failed("connect");
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return Outcome::Failed("handshake");
    };
    // The connection's driver ends with the stream (this task drops the sender and body).
    tokio::task::spawn_local(conn);
    let mut req = Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let Ok(req) = req.body(Full::new(body)) else {
        return Outcome::Failed("request");
    };
    let Ok(res) = sender.send_request(req).await else {
        return Outcome::Failed("send");
    };
    if res.status() != 200 {
        return Outcome::Refused(res.status().as_u16());
    }
    let mut body = res.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let (mut ttft, mut last, mut tokens) = (None, Duration::ZERO, 0u64);
    loop {
        let frame = match body.frame().await {
            None => return Outcome::Failed("eof before the end"),
            Some(Err(_)) => return Outcome::Failed("read"),
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        // Complete events end with a blank line.
        while let Some(at) = find_blank_line(&buf) {
            let kind = classify(&buf[..at], target);
            buf.drain(..at + 2);
            match kind {
                Event::Token => {
                    let now = t0.elapsed();
                    if ttft.is_none() {
                        started.set(started.get() + 1);
                    }
                    received.set(received.get() + 1);
                    ttft.get_or_insert(now);
                    last = now;
                    tokens += 1;
                }
                Event::End => {
                    let Some(ttft) = ttft else {
                        return Outcome::Failed("end without a token");
                    };
                    return Outcome::Done {
                        ttft,
                        last,
                        total: t0.elapsed(),
                        tokens,
                    };
                }
                Event::Error => return Outcome::Failed("error event"),
                Event::Other => {}
            }
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

enum Event {
    Token,
    End,
    Error,
    Other,
}

fn classify(block: &[u8], target: Target) -> Event {
    let (mut event, mut data): (&[u8], &[u8]) = (b"", b"");
    for line in block.split(|b| *b == b'\n') {
        if let Some(v) = line.strip_prefix(b"event:") {
            event = v.trim_ascii();
        } else if let Some(v) = line.strip_prefix(b"data:") {
            data = v.trim_ascii();
        }
    }
    match target {
        Target::Gatehouse => match event {
            b"delta" => Event::Token,
            b"done" => Event::End,
            b"error" => Event::Error,
            _ => Event::Other,
        },
        Target::Mock => {
            if data == b"[DONE]" {
                Event::End
            } else if contains(data, b"\"content\":\"") && !contains(data, b"\"content\":\"\"") {
                Event::Token
            } else {
                Event::Other
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn report(
    (received, started): (u64, usize),
    outcomes: &[Outcome],
    streams: usize,
    arrival: Duration,
    elapsed: Duration,
    max_lag: Duration,
    watch: Option<&Watch>,
) {
    let (mut ttft, mut last, mut total) = (Vec::new(), Vec::new(), Vec::new());
    // Per stream: from its last token to its end.
    let mut tail = Vec::new();
    let (mut tokens, mut refused, mut failed, mut timed_out) = (0u64, 0usize, 0usize, 0usize);
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    for o in outcomes {
        match o {
            Outcome::Done {
                ttft: a,
                last: l,
                total: b,
                tokens: n,
            } => {
                ttft.push(a.as_micros() as u64);
                last.push(l.as_micros() as u64);
                total.push(b.as_micros() as u64);
                tail.push(b.saturating_sub(*l).as_micros() as u64);
                tokens += n;
            }
            Outcome::Refused(s) => {
                refused += 1;
                *statuses.entry(format!("http {s}")).or_default() += 1;
            }
            Outcome::Failed(why) => {
                failed += 1;
                *statuses.entry((*why).to_string()).or_default() += 1;
            }
            Outcome::TimedOut => timed_out += 1,
        }
    }
    ttft.sort_unstable();
    last.sort_unstable();
    total.sort_unstable();
    tail.sort_unstable();
    let line = |name: &str, v: &[u64]| {
        println!(
            "{name:<12} p50 {:>10.2} ms  p90 {:>10.2} ms  p99 {:>10.2} ms  max {:>10.2} ms",
            pct(v, 50.0),
            pct(v, 90.0),
            pct(v, 99.0),
            pct(v, 100.0)
        );
    };
    println!(
        "{streams} streams over {:.1} s: {} complete, {refused} refused, {failed} failed, {timed_out} timed out; {started} got a token; {received} tokens received ({tokens} by complete streams) in {:.1} s; start lag max {:.2} ms",
        arrival.as_secs_f64(),
        ttft.len(),
        elapsed.as_secs_f64(),
        max_lag.as_secs_f64() * 1000.0
    );
    for (k, v) in &statuses {
        println!("  {k}: {v}");
    }
    line("TTFT", &ttft);
    line("last token", &last);
    line("total", &total);
    line("end - last", &tail);
    let mut json = serde_json::json!({
        "streams": streams,
        "complete": ttft.len(),
        "refused": refused,
        "failed": failed,
        "timed_out": timed_out,
        "failures": statuses,
        "tokens": tokens,
        "tokens_received": received,
        "streams_with_a_token": started,
        "elapsed_s": elapsed.as_secs_f64(),
        "start_lag_max_ms": max_lag.as_secs_f64() * 1000.0,
        "ttft_ms": {"p50": pct(&ttft, 50.0), "p90": pct(&ttft, 90.0), "p99": pct(&ttft, 99.0), "max": pct(&ttft, 100.0)},
        "last_ms": {"p50": pct(&last, 50.0), "p90": pct(&last, 90.0), "p99": pct(&last, 99.0), "max": pct(&last, 100.0)},
        "total_ms": {"p50": pct(&total, 50.0), "p90": pct(&total, 90.0), "p99": pct(&total, 99.0), "max": pct(&total, 100.0)},
        "tail_ms": {"p50": pct(&tail, 50.0), "p90": pct(&tail, 90.0), "p99": pct(&tail, 99.0), "max": pct(&tail, 100.0)},
    });
    if let Some(w) = watch {
        // USER_HZ: the unit of /proc/PID/stat's times on Linux.
        let hz = 100.0;
        let cpu_s = cpu_ticks(w.pid)
            .map(|t| t.saturating_sub(w.cpu_ticks_start) as f64 / hz)
            .unwrap_or(f64::NAN);
        let per_stream_kib = if w.peak_open > 0 {
            (w.rss_at_peak_kib as f64 - w.idle_rss_kib as f64) / w.peak_open as f64
        } else {
            f64::NAN
        };
        // Over every token received, complete streams or not.
        let per_token_us = if received > 0 {
            cpu_s * 1e6 / received as f64
        } else {
            f64::NAN
        };
        println!(
            "process {}: RSS idle {} KiB, {} KiB with {} streams open (peak sample; max {} KiB): {:.1} KiB per open stream; CPU {:.2} s = {:.1} µs per token",
            w.pid, w.idle_rss_kib, w.rss_at_peak_kib, w.peak_open, w.max_rss_kib, per_stream_kib, cpu_s, per_token_us
        );
        json["watch"] = serde_json::json!({
            "pid": w.pid,
            "idle_rss_kib": w.idle_rss_kib,
            "peak_open": w.peak_open,
            "rss_at_peak_kib": w.rss_at_peak_kib,
            "max_rss_kib": w.max_rss_kib,
            "kib_per_stream": per_stream_kib,
            "cpu_s": cpu_s,
            "cpu_us_per_token": per_token_us,
        });
    }
    // NaN is not JSON: serde_json writes it as null.
    println!("RESULT {json}");
}
