//! procwatch-agent (to be written).
