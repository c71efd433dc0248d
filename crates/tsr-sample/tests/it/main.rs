//! Integration tests of tsr-sample.

mod generate;
mod parity;
mod probe;
mod processors;
mod tiny;
