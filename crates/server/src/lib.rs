//! procwatch-server (to be written).
