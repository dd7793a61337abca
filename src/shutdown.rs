//! The cancellation tree and grace period shared by every long-running task.
