//! Integration tests of tsr-sample.

mod processors;
