//! planner (being written)
