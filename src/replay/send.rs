//! Paced sending: each planned message goes out at its time offset, with everything already due packed into
//! batches; throttling is waited out, other failures stop the replay with the error.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::servicebus::{MessageSender, ServiceBusError};

use super::generate::PlannedMessage;

/// Most messages handed to one `send_batch` call (the sender still splits by the link's size limit).
const MAX_DUE_PER_CALL: usize = 512;

/// Sends `planned` on schedule. `progress` is called with the number sent so far after each call.
/// Returns the number sent, which is short of `planned.len()` only when `stop` was cancelled.
pub async fn send_paced(
    sender: &dyn MessageSender,
    planned: &[PlannedMessage],
    stop: &CancellationToken,
    mut progress: impl FnMut(usize),
) -> Result<usize, ServiceBusError> {
    let start = Instant::now();
    let mut next = 0;
    while next < planned.len() {
        let due_at = start + planned[next].at;
        tokio::select! {
            _ = stop.cancelled() => return Ok(next),
            _ = tokio::time::sleep_until(due_at) => {}
        }
        let elapsed = start.elapsed();
        let mut end = next;
        while end < planned.len() && planned[end].at <= elapsed && end - next < MAX_DUE_PER_CALL {
            end += 1;
        }
        let batch: Vec<_> = planned[next..end]
            .iter()
            .map(|p| p.message.clone())
            .collect();
        let mut attempt = 0u32;
        loop {
            match sender.send_batch(batch.clone()).await {
                Ok(_) => break,
                Err(error) if error.is_retriable() && attempt < 20 => {
                    attempt += 1;
                    let pause = error
                        .backoff_hint()
                        .unwrap_or(Duration::from_millis(200 * u64::from(attempt)));
                    tracing::warn!(%error, attempt, pause_ms = pause.as_millis() as u64, "send throttled or failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(next),
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                Err(error) => return Err(error),
            }
        }
        next = end;
        progress(next);
    }
    Ok(next)
}
