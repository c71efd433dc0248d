//! The decoder.
use tch::{Device, Kind};

/// Where and in which dtype to build a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    pub device: Device,
    pub kind: Kind,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { device: Device::Cpu, kind: Kind::Float }
    }
}

/// A decoder-only language model.
#[derive(Debug)]
pub struct Model {}
