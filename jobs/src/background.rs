//! Work that yields the cores. Under `spacepulse run` the daily jobs (activity, peaks,
//! accounts, advertisers: whole-day rescans) share the machine with the ingester, the
//! launch-pace campaigns job and the dashboard, and must never hold those back: on launch day
//! a brand's report is only as fresh as the slowest thing in front of it. The daily jobs run
//! on a [`runtime`] whose threads, and the rayon pool their folds use ([`pool`]), run at a
//! lower scheduling priority (nice [`NICE`]), the way ClickHouse runs its background merges
//! and `os_thread_priority` queries: when the cores are contended the kernel serves the rest
//! of the process first, and when they are idle the daily jobs run at full speed.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::scan::cores;

/// The nice value of background threads (0 is the default, 19 the lowest priority): at 10 a
/// thread gets about a tenth of the CPU time of a default one when both want a core.
pub const NICE: i32 = 10;

thread_local! {
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread belongs to a [`runtime`] or the [`pool`].
pub fn is_background() -> bool {
    BACKGROUND.get()
}

/// A multi-threaded runtime (one worker per core, and its blocking threads) whose threads run
/// at [`NICE`]; work it runs that uses [`crate::scan::par_map`] runs on the [`pool`].
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name("jobs-background")
        .on_thread_start(lower)
        .enable_all()
        .build()
}

/// The rayon pool of background threads, or `None` if it could not be made (then rayon's
/// global pool serves).
pub fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .thread_name(|i| format!("jobs-background-{i}"))
            .start_handler(|_| lower())
            .build()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no background pool; the global one serves"),
            )
            .ok()
    })
    .as_ref()
}

/// Marks the calling thread as background work and lowers its priority.
fn lower() {
    BACKGROUND.set(true);
    if let Err(e) = set_nice(NICE) {
        tracing::debug!(error = %e, "cannot lower a background thread's priority");
    }
}

/// Sets the calling thread's nice value. On Linux the nice value is a thread's, and
/// `setpriority(PRIO_PROCESS, 0, ..)` sets the calling thread's alone (setpriority(2), "BUGS");
/// raising one's own nice value needs no privilege.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: these calls take and return plain integers and touch no memory of ours.
    let rc = unsafe {
        // Never raise a thread's priority (a process started under `nice 19` stays there);
        // -1 here is either nice -1 or an error, and either way `nice` is the floor.
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        libc::setpriority(libc::PRIO_PROCESS, 0, nice.max(current))
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the threads keep the default priority.
#[cfg(not(target_os = "linux"))]
fn set_nice(_nice: i32) -> std::io::Result<()> {
    Ok(())
}

/// The calling thread's nice value, as the kernel reports it (`/proc/thread-self/stat`).
#[cfg(all(test, target_os = "linux"))]
fn nice_of_this_thread() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    // Fields after the command name (which ends at the last ')'): state is field 3, nice 19.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_and_the_pool_run_at_the_lower_priority() {
        let base = nice_of_this_thread();
        let lowered = base.max(NICE);
        assert!(!is_background());
        let rt = runtime().unwrap();
        let (worker, blocking, folded) = rt
            .block_on(rt.spawn(async {
                let worker = (nice_of_this_thread(), is_background());
                let blocking =
                    tokio::task::spawn_blocking(|| (nice_of_this_thread(), is_background()))
                        .await
                        .unwrap();
                let folded = crate::scan::par_map(vec![0, 1, 2, 3], |_| {
                    (nice_of_this_thread(), is_background())
                });
                (worker, blocking, folded)
            }))
            .unwrap();
        assert_eq!(worker, (lowered, true));
        assert_eq!(blocking, (lowered, true));
        assert_eq!(folded, vec![(lowered, true); 4]);
        // Elsewhere par_map keeps rayon's global pool, at the caller's priority.
        let plain = crate::scan::par_map(vec![0, 1], |_| (nice_of_this_thread(), is_background()));
        assert_eq!(plain, vec![(base, false); 2]);
        rt.shutdown_background();
    }
}
