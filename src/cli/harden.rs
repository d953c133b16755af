//! Process hardening for `arca server`: keys must not reach a core dump or swap.
//!
//! * `PR_SET_DUMPABLE=0` (and a zero core-size limit): no core dump on a crash, and no
//!   `ptrace` or `/proc/<pid>/mem` access for other processes of the same user.
//! * `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: no page of the process is ever written
//!   to swap. `MCL_ONFAULT` locks pages as they are touched instead of faulting in every
//!   mapping (thread stacks, arenas) at once. It needs `CAP_IPC_LOCK` or a large enough
//!   `RLIMIT_MEMLOCK`; when refused the node runs anyway and says so once, as Vault does
//!   (`disable_mlock = true` in the config skips it, for hosts with encrypted or no swap).

use tracing::{info, warn};

/// What [`harden`] achieved, for the startup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    pub non_dumpable: bool,
    pub memory_locked: bool,
}

pub fn harden(lock_memory: bool) -> Hardened {
    let non_dumpable = disable_dumps();
    let memory_locked = lock_memory && lock_all_memory();
    info!(non_dumpable, memory_locked, "process hardening applied");
    Hardened { non_dumpable, memory_locked }
}

#[cfg(target_os = "linux")]
fn disable_dumps() -> bool {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls with constant arguments and a valid pointer to a local.
    let (limit, dumpable) =
        unsafe { (libc::setrlimit(libc::RLIMIT_CORE, &no_core), libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)) };
    if limit != 0 || dumpable != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "could not disable core dumps for this process: a crash may write keys to disk"
        );
    }
    dumpable == 0
}

#[cfg(not(target_os = "linux"))]
fn disable_dumps() -> bool {
    warn!("core dumps cannot be disabled on this platform: a crash may write keys to disk");
    false
}

#[cfg(target_os = "linux")]
fn lock_all_memory() -> bool {
    // SAFETY: a plain system call with constant flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } == 0 {
        return true;
    }
    warn!(
        error = %std::io::Error::last_os_error(),
        "memory could not be locked (mlockall): keys may be written to swap. Give the process CAP_IPC_LOCK \
         (or a large enough RLIMIT_MEMLOCK), or set disable_mlock = true if swap is off or encrypted"
    );
    false
}

#[cfg(not(target_os = "linux"))]
fn lock_all_memory() -> bool {
    warn!("memory locking is not supported on this platform: keys may be written to swap");
    false
}
