//! procwatch-collector (to be written).
