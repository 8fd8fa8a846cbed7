//! procwatch-alarm (in progress).
pub mod backtest;
pub mod forecast;
