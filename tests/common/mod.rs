//! Helpers shared by the integration tests. Each test file uses what it needs.
#![allow(dead_code)]

pub mod double;
pub mod lab;
pub mod pty;
pub mod pve;
pub mod run;
