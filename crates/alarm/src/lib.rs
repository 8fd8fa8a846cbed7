//! procwatch-alarm (to be written).
