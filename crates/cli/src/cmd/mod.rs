pub mod admin;
pub mod agent;
pub mod api;
pub mod client;
pub mod load;
pub mod perf;
pub mod report;
pub mod run;
pub mod runs;
pub mod server;
pub mod tck;
pub mod up;

/// Waits for Ctrl-C or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
