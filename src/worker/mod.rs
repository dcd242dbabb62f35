//! Worker processes: the contract with the Python side and how they are spawned.

pub mod contract;
pub mod spawn;
