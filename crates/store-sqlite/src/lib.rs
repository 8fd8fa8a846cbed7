//! procwatch-store-sqlite (to be written).
