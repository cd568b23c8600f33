//! Roles as data: each role is a folder under `playbooks/<role>/`, embedded in the binary.
//! This module reads their metadata (phase, dependencies, hardware needs); the steps that
//! converge a host are added by the engine.

pub mod catalog;
pub mod step;
