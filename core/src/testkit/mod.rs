//! Shared test scaffolding for unit tests, benches and fuzz targets: quota stores that
//! fail, count or interleave, and configuration builders. Compiled for `cargo test` and
//! behind the `testkit` feature; never part of the module.

// Scaffolding may unwrap and index: it only ever runs under tests and benches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod stores;
pub mod traffic;
