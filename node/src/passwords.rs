//! Password hashing, bounded. Each Argon2id hash or check takes about 19 MiB and tens of
//! milliseconds of one core: run without a bound, a flood of logins or signups starts hundreds at
//! once and takes gigabytes. Here at most `workers` jobs run at a time (one per core by default)
//! and at most `queue` more wait for one; a request that finds the queue full is refused at once
//! (503 with `Retry-After`) instead of waiting without limit.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Why a password job was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Every worker is busy and the queue in front of them is full.
    #[error("the node is busy checking passwords")]
    Busy,
    /// The job failed (a broken hash, a worker that panicked).
    #[error("password hashing failed")]
    Failed,
}

/// The bounded pool of password jobs.
pub struct Passwords {
    /// One permit per job allowed to run now.
    workers: Arc<Semaphore>,
    /// One permit per job allowed in the node at all (running or waiting).
    admitted: Arc<Semaphore>,
}

impl Passwords {
    /// At most `workers` jobs at once (0: one per core), and `queue` more waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = if workers == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { workers };
        Self { workers: Arc::new(Semaphore::new(workers)), admitted: Arc::new(Semaphore::new(workers + queue)) }
    }

    /// Hashes a new password with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_password(&password).map_err(|_| PasswordError::Failed)).await?
    }

    /// Checks a password against a stored hash; with none (unknown e-mail) against a dummy one,
    /// so unknown accounts take as long as wrong passwords.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, PasswordError> {
        self.run(move || verify_password(&password, stored.as_deref())).await
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            metrics::counter!("bazaar_rate_limited_total", "limit" => "password_queue").increment(1);
            return Err(PasswordError::Busy);
        };
        // A caller that goes away while waiting gives its place back; once running, the job
        // keeps its worker until it is done, so the bound holds for abandoned jobs too.
        let worker = self.workers.clone().acquire_owned().await.map_err(|_| PasswordError::Failed)?;
        let done = tokio::task::spawn_blocking(move || {
            let _worker = worker;
            job()
        })
        .await;
        drop(admitted);
        done.map_err(|_| PasswordError::Failed)
    }
}

/// Hashes a password with Argon2id and a fresh salt (slow on purpose: run it through [`Passwords`]).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored hash, or against a dummy one when there is none.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("dummy password for timing").unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(dummy)) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && stored.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong horse", Some(&hash)));
        assert!(!verify_password("correct horse", None));
        assert!(hash.starts_with("$argon2id$"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_jobs_run_than_workers_and_no_more_wait_than_the_queue() {
        let pool = Arc::new(Passwords::new(2, 3));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        // Jobs hold their worker until the gate opens, so the burst is the same however slowly
        // this machine schedules the tasks.
        let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (pool, running, most, refused, gate) =
                (pool.clone(), running.clone(), most.clone(), refused.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = pool
                    .run(move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        while !gate.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .await;
                if outcome == Err(PasswordError::Busy) {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            }));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while refused.load(Ordering::SeqCst) < 15 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gate.store(true, Ordering::SeqCst);
        let done = futures_util::future::join_all(tasks).await;
        assert_eq!(done.iter().filter(|d| matches!(d, Ok(Ok(())))).count(), 5, "two running and three waiting");
        assert_eq!(refused.load(Ordering::SeqCst), 15);
        assert!(most.load(Ordering::SeqCst) <= 2, "at most two jobs at once");
        // Once the burst is over, the pool takes jobs again.
        assert_eq!(pool.verify("x".into(), None).await, Ok(false));
    }
}
