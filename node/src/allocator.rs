//! How the node tunes glibc's allocator so memory freed after a burst goes back to the kernel.
//!
//! glibc keeps freed memory in its arenas for reuse: after a burst (Argon2's 19 MiB blocks, a
//! thousand sockets' buffers, ten thousand orders' futures) a node that is idle again stayed at
//! the burst's peak. Two measures, both measured in benches/RESULTS.md: large blocks always come
//! from and go straight back to the kernel ([`return_large_allocations`]), and a trimmer hands the
//! free pages inside the arenas back every `memory_trim_interval_ms` ([`spawn_trimmer`]).

use std::time::Duration;
use tokio::sync::watch;

/// Makes large allocations (Argon2's 19 MiB blocks among them) always come straight from the
/// kernel and go straight back when freed. glibc otherwise raises its mmap threshold after the
/// first such block is freed, and from then on serves them from per-thread arenas that keep the
/// memory: after a burst of logins the node stayed hundreds of MiB larger (docs/decisions.md 16).
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called once at startup.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Gives the free pages of every arena back to the kernel; returns whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; safe at any time.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// What the allocator holds: in use by the program, free but kept in its arenas, and mapped
/// straight from the kernel (blocks over the mmap threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeapUsage {
    pub in_use: u64,
    pub free: u64,
    pub mapped: u64,
}

/// The allocator's figures now (`None` off glibc). Walks every arena, like a trim: for scrapes,
/// not for hot paths.
pub fn usage() -> Option<HeapUsage> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(HeapUsage { in_use: info.uordblks as u64, free: info.fordblks as u64, mapped: info.hblkhd as u64 })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

/// The bytes SQLite has allocated now (its page caches, statements and schema, for every
/// connection), out of [`HeapUsage::in_use`].
pub fn sqlite_in_use() -> u64 {
    // SAFETY: sqlite3_memory_used only reads SQLite's own counter.
    let used = unsafe { libsqlite3_sys::sqlite3_memory_used() };
    used.max(0) as u64
}

/// Trims every `every` until `stop` says so; `every` of zero trims never. A trim walks the
/// arenas' free lists (about a millisecond for a few hundred MiB here), so it runs on a blocking
/// thread, not on the runtime's workers.
pub fn spawn_trimmer(every: Duration, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if every.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let _ = tokio::task::spawn_blocking(trim).await;
                }
                _ = stop.changed() => return,
            }
        }
    })
}
