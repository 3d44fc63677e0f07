//! Ctrl-C (SIGINT) and SIGTERM (what `scancel` and `kill` send) during a run: the
//! scheduler notices, says which stages were kept and which were interrupted, and exits.
//! Nothing needs undoing: results are committed by rename, an interrupted stage's work
//! directory is removed (or resumed, for training) by the next run, and the run lock is
//! an OS file lock.

use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: anything more is not async-signal-safe.
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Catch the first SIGINT/SIGTERM; a second one kills at once (SA_RESETHAND).
pub fn install() {
    // SAFETY: a zeroed sigaction with a handler that only stores an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// The signal received since [`install`], if any.
pub fn received() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("interrupted (Ctrl-C)"),
        _ => Some("terminated (SIGTERM)"),
    }
}

/// The exit code of a process ended by `received()` (128 + signal, as a shell reports).
pub fn exit_code() -> i32 {
    128 + SIGNAL.load(Ordering::SeqCst)
}
