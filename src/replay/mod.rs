//! Replaying real arrival traces into the pipeline: trace loading, message planning and paced sending.
//!
//! * [`trace`]: the Azure LLM-inference request log read into arrivals.
//! * [`generate`]: arrivals become event messages sized by their tokens, plus volume requests and malformed bodies.
//! * [`report`]: the end-of-run summary, counted from the stores.
//! * [`send`]: sends planned messages on schedule, in batches of whatever is due.

pub mod generate;
pub mod report;
pub mod send;
pub mod trace;
