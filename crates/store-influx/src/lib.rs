//! procwatch-store-influx (to be written).
