//! The pieces both loops (the master's and the emperor's) run on: the
//! current-thread runtime, and sleeping until an optional deadline. They sit
//! below `commands`, `supervisor` and `emperor` so none has to import another.

use std::time::Instant;

/// Runs a loop on a current-thread runtime and returns its exit code (1 if the
/// runtime cannot start).
pub fn run_loop(main: impl std::future::Future<Output = i32>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let code = runtime.block_on(main);
    // Forwarding tasks may still be parked on signals; do not wait for them.
    runtime.shutdown_background();
    code
}

/// Sleeps until `deadline`, or forever when there is none (no timer at all).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
