//! Child processes of a stage (command programs, the torch worker).

use std::process::{Child, Command};

/// Spawn `cmd` so that it is killed when pipe dies: a killed run must not leave a
/// program writing into a work directory the next run reuses.
pub fn spawn_owned(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
