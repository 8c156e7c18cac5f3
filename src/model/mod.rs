pub mod checkpoint;
pub mod config;
