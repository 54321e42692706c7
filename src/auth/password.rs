use std::sync::{mpsc, Arc, Mutex};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

use crate::domain::Password;

/// Errors of the hasher.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Hashing failed (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The hashing thread panicked or is gone.
    #[error("password hashing task failed")]
    Join,
}

/// argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane), computed on a
/// few threads of its own at a lower scheduling priority, so that a sign-in flood neither
/// blocks the async runtime nor takes its CPU: key and token checks go first, and sign-ins get
/// what is left (all of it when nothing else runs).
#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
    params: Params,
    /// A hash of a random password, verified against for unknown users so they take as long.
    dummy: Arc<String>,
}

type Job = Box<dyn FnOnce() + Send>;

/// How much lower the hashing threads run than the runtime's (nice +10): under contention the
/// scheduler gives a nice-10 thread about a tenth of what a nice-0 one gets.
const HASH_NICE: i32 = 10;

/// Starts `n` hashing threads that take jobs from one queue, first come first served, and
/// end when the last `Sender` is dropped. Written here rather than taken from a thread-pool
/// crate: a shared queue and a priority set when each thread starts are all it needs.
fn start_threads(n: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| HashError::Hash(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(tx)
}

/// Lowers the calling thread's scheduling priority by `HASH_NICE` (on Linux the nice value is
/// per thread). Best effort: where it is refused the thread keeps the process's priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: nice(2) takes no pointers and changes only the calling thread here.
    unsafe {
        libc::nice(HASH_NICE);
    }
}

impl Hasher {
    /// A hasher allowing `concurrency` computations at once (0 = number of CPUs).
    pub fn new(concurrency: usize) -> Result<Self, HashError> {
        let params =
            Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError::Hash(e.to_string()))?;
        let n = if concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            concurrency
        };
        let dummy = hash_blocking(&params, &uuid::Uuid::new_v4().to_string())?;
        Ok(Self {
            jobs: start_threads(n)?,
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let pw = password.expose().to_string();
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, &pw)).await?
    }

    /// Verifies a password against a stored PHC string, or against the dummy hash when the
    /// user does not exist (always false then), so both cases cost the same.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let pw = password.expose().to_string();
        let known = stored.is_some();
        let phc = stored
            .map(str::to_string)
            .unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = self.run(move || verify_blocking(&pw, &phc)).await?;
        Ok(ok && known)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            // The caller went away while the job waited (a client that gave up, its request
            // dropped): nobody reads the result, so the hash is not computed. Queued hashes
            // of abandoned sign-ins would otherwise keep the threads busy long after their
            // clients left, and every later sign-in would wait behind them.
            if tx.is_closed() {
                return;
            }
            // A panic loses this job, not the thread: `tx` is dropped and the caller sees Join.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| span.in_scope(f)));
            if let Ok(out) = out {
                let _ = tx.send(out);
            }
        });
        self.jobs.send(job).map_err(|_| HashError::Join)?;
        rx.await.map_err(|_| HashError::Join)
    }
}

/// Whether `stored` is a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`), as GoTrue stores them:
/// users imported from Supabase keep theirs until they next sign in.
pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// Whether `stored` is a hash this server verifies: a bcrypt hash (cost 4 to 31, 22 salt and
/// 31 hash characters of bcrypt's alphabet) or an argon2 PHC string (the admin API's
/// `password_hash`, which GoTrue accepts in both forms).
pub fn is_supported_hash(stored: &str) -> bool {
    if is_bcrypt(stored) {
        let bytes = stored.as_bytes();
        let cost = stored.get(4..6).and_then(|c| c.parse::<u32>().ok());
        return bytes.len() == 60
            && bytes[6] == b'$'
            && cost.is_some_and(|c| (4..=31).contains(&c))
            && bytes[7..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/');
    }
    PasswordHash::new(stored).is_ok_and(|h| {
        matches!(h.algorithm.as_str(), "argon2id" | "argon2i" | "argon2d") && h.hash.is_some()
    })
}

/// Whether a stored hash that just verified should be replaced by an argon2id hash of the
/// same password (every hash that is not argon2id: bcrypt hashes imported from Supabase).
pub fn needs_rehash(stored: &str) -> bool {
    !stored.starts_with("$argon2id$")
}

/// Checks a password against an argon2 PHC string or a bcrypt hash (on a hashing thread).
fn verify_blocking(password: &str, stored: &str) -> bool {
    if is_bcrypt(stored) {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let h = Hasher::new(1).unwrap();
        let stored = h
            .hash(&Password::presented("correct horse".into()))
            .await
            .unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h
            .verify(&Password::presented("correct horse".into()), Some(&stored))
            .await
            .unwrap());
        assert!(!h
            .verify(&Password::presented("wrong".into()), Some(&stored))
            .await
            .unwrap());
        assert!(!h
            .verify(&Password::presented("correct horse".into()), None)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_bcrypt_hash_from_gotrue_verifies_and_asks_to_be_replaced() {
        let h = Hasher::new(1).unwrap();
        // Made by Python's bcrypt (PyPI), with GoTrue's cost and `$2a$` prefix.
        let stored = "$2a$10$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS";
        let pw = |p: &str| Password::presented(p.into());
        assert!(h
            .verify(&pw("supabase password one"), Some(stored))
            .await
            .unwrap());
        assert!(!h
            .verify(&pw("supabase password two"), Some(stored))
            .await
            .unwrap());
        assert!(is_bcrypt(stored) && needs_rehash(stored));
        let fresh = h.hash(&pw("supabase password one")).await.unwrap();
        assert!(!is_bcrypt(&fresh) && !needs_rehash(&fresh));
        assert!(!h.verify(&pw("x"), Some("$2a$10$not-a-hash")).await.unwrap());
        assert!(is_supported_hash(stored) && is_supported_hash(&fresh));
        for bad in [
            "$2a$10$not-a-hash",
            "$2a$99$p/lb/n2ikDG1bcpy4xFQFO0d6OLqGxZOc.2WFnR9gXNMDP.ZP0dDS",
            "plain",
            "",
            "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA",
        ] {
            assert!(!is_supported_hash(bad), "{bad}");
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_below_the_runtime_s_priority() {
        let h = Hasher::new(2).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: getpriority takes no pointers; `who = 0` is the calling thread.
        let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let here = nice();
        let there = h.run(nice).await.unwrap();
        assert_eq!(there, (here + HASH_NICE).min(19));
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_is_not_computed() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;
        let h = Hasher::new(1).unwrap();
        // The only thread is busy until `release`.
        let (started_tx, started) = oneshot::channel::<()>();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = tokio::spawn({
            let h = h.clone();
            async move {
                h.run(move || {
                    let _ = started_tx.send(());
                    let _ = wait.recv();
                })
                .await
            }
        });
        tokio::time::timeout(Duration::from_secs(60), started)
            .await
            .unwrap()
            .unwrap();
        // A job queued behind it whose caller gives up before its turn.
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(20),
            h.run(move || flag.store(true, Ordering::SeqCst)),
        )
        .await;
        assert!(gave_up.is_err());
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // The queue moved past it (first come, first served) without running it.
        assert_eq!(h.run(|| 7).await.unwrap(), 7);
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let h = Hasher::new(1).unwrap();
        let r = h.run(|| -> u8 { panic!("boom") }).await;
        assert!(matches!(r, Err(HashError::Join)));
        assert_eq!(h.run(|| 7).await.unwrap(), 7);
    }
}
