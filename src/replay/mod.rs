//! Replaying real arrival traces into the pipeline and comparing tuning strategies on the same load.
//!
//! * [`trace`]: the Azure LLM-inference request log and NAB `timestamp,value` series read into arrivals.
//! * [`generate`]: arrivals become event messages sized by their tokens, plus volume requests and malformed bodies.
//! * [`send`]: sends planned messages on schedule, in batches of whatever is due.
//! * [`strategy`]: the strategies compared (static, reactive, trimtab, recommend) and the reactive controller.
//! * [`run`]: one replay under one strategy against fresh stand-ins with the CQL capacity model on.
//! * [`report`]: the demo's summary and the comparison rows, counted from the stores.
//! * [`chart`]: PNG charts of lag and batch size over time, one line per strategy.
//! * [`cli`]: `trimtab replay`: the sweep for the best static setting, the runs, the table and the Markdown report.

pub mod chart;
pub mod cli;
pub mod generate;
pub mod report;
pub mod run;
pub mod send;
pub mod strategy;
pub mod trace;
