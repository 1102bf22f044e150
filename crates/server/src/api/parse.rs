//! Parsing uploaded documents (plans) off the async runtime, a few at a time.
//!
//! Even within the YAML input limits (`testbed_core::yaml`) a parse costs
//! milliseconds of CPU and megabytes of memory; on a runtime worker it would
//! hold up every other request, and unbounded in number they would add up.
//! So each parse runs on the blocking pool and takes one of [`PARALLEL`]
//! slots; a request that finds none free within [`WAIT`] gets a 503.

use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Documents parsed at the same time, server-wide.
pub const PARALLEL: usize = 2;
/// How long a request waits for a free slot before it is refused with 503.
pub const WAIT: Duration = Duration::from_secs(10);

static SLOTS: Semaphore = Semaphore::const_new(PARALLEL);

/// Runs `parse` on the blocking pool once a slot is free.
pub async fn off_runtime<T, F>(parse: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let permit = match tokio::time::timeout(WAIT, SLOTS.acquire()).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::unavailable(
                "the server is busy parsing other documents; retry shortly",
            ))
        }
    };
    // The permit moves into the task: a client that hangs up does not free
    // the slot while its parse still runs.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        parse()
    })
    .await
    .map_err(|e| ApiError::internal(format!("parsing the document failed: {e}")))
}
