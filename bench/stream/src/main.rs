//! Streaming load for `bench/streams`: thousands of long Server-Sent-Event answers at once.
//!
//! ```text
//! gatehouse-bench-stream mock --listen 127.0.0.1:PORT [--interval-ms 50] [--tokens 200]
//! gatehouse-bench-stream keys --url BASE --jwt JWT --org ORG --count N --out FILE
//! gatehouse-bench-stream warm --url BASE --keys FILE
//! gatehouse-bench-stream load --url URL --target gatehouse|mock --streams S --arrival-s SECS
//!                             [--keys FILE] [--deadline-s SECS] [--watch-pid PID]
//! ```
//!
//! `mock` is an OpenAI-compatible upstream whose streamed answers are one token every
//! `--interval-ms`, the first at once; each stream is one timer inside its response body (no
//! task or thread of its own). `load` opens `--streams` streams, one connection each, their
//! starts spread evenly over `--arrival-s`, and prints percentiles of the time to the first
//! token and to the end of each stream, then one line `RESULT {json}` for scripts. Everything
//! is bounded: a stream still open at the global deadline is counted as timed out.

mod keys;
mod load;
mod mock;

use std::collections::HashMap;
use std::process::ExitCode;

/// `--name value` options after the subcommand.
pub struct Args(HashMap<String, String>);

impl Args {
    fn parse(rest: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(name) = it.next() {
            let Some(name) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument {name:?}"));
            };
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_string(), value.clone());
        }
        Ok(Self(map))
    }

    /// A required string.
    pub fn str(&self, name: &str) -> Result<String, String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// An optional string.
    pub fn opt(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    /// A number, with a default.
    pub fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a valid number: {v:?}")),
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("usage: gatehouse-bench-stream mock|keys|warm|load --option value ...");
        return ExitCode::from(2);
    };
    let args = match Args::parse(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gatehouse-bench-stream {cmd}: {e}");
            return ExitCode::from(2);
        }
    };
    // Each stream is a connection (and the mock holds one per stream too): the soft limit of
    // open files goes up to the hard one, as bench/streams also does before starting us.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // One thread: the process is pinned to one core, where a multi-thread runtime would only
    // add hand-offs between its workers.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse-bench-stream: no runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // A local set: the load's streams are local tasks sharing counters without atomics.
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async {
        match cmd.as_str() {
            "mock" => mock::run(&args).await,
            "keys" => keys::run(&args).await,
            "warm" => keys::warm(&args).await,
            "load" => load::run(&args).await,
            other => Err(format!(
                "unknown subcommand {other:?} (mock, keys, warm, load)"
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-bench-stream {cmd}: {e}");
            ExitCode::from(1)
        }
    }
}
