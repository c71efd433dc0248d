//! Integration tests of tsr-sample.

mod generate;
mod parity;
mod processors;
mod tiny;
