//! The fault suite's record and judge (issue 13): [`history`] is what client tasks write, one JSON
//! line per operation with its request, times and outcome; [`final_state`] is what the runner reads
//! once the faults have healed; [`check`] compares the two and names every lost or doubled write,
//! double charge, illegal status path, seq gap or conflict, changed retry, unconserved stock and
//! order left pending, with the counts of the results table. `bazaar-bench check-history HISTORY
//! FINAL` runs it on files.
//!
//! The run itself: [`runner`] (`bazaar-bench faults`) starts a [`cluster`] whose nodes reach each
//! other only through [`proxy`] links, sets up and drives the [`workload`]'s client tasks while the
//! [`nemesis`] cuts links, pauses, kills and restarts, then reads the final state and checks it.

pub mod check;
pub mod cluster;
pub mod final_state;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod runner;
pub mod workload;

use std::path::Path;

/// Checks a history file against a final-state file, prints the results table and says whether
/// the run kept every promise.
pub fn check_files(history: &Path, final_state: &Path) -> anyhow::Result<bool> {
    let entries = history::read(history)?;
    let state = final_state::read(final_state)?;
    let report = check::check(&entries, &state);
    print!("{}", report.table());
    Ok(report.violations.is_empty())
}
