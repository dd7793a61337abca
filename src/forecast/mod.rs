//! forecast (being written)
