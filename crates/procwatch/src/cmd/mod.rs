//! One module per subcommand: flag definitions and the glue into the library crates.

pub mod agent;
pub mod alarm;
pub mod loadgen;
pub mod server;
pub mod signal;
pub mod status;
pub mod up;
