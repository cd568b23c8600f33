//! groundwork: the first program an operator runs on a fresh server.
//!
//! Data flows one way: answer file -> [`answers`] (model, validation) -> [`plan`] (the role
//! graph) -> engine over SSH -> verify. [`probe`] feeds the wizard's defaults and preflight.

pub mod answers;
pub mod bundle;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod handoff;
pub mod http;
pub mod phase;
pub mod plan;
pub mod playbook;
pub mod probe;
pub mod proxmox;
pub mod rotate;
pub mod ssh;
pub mod state;
pub mod trial;
pub mod verify;
pub mod wizard;

/// The lab example, bundled so `groundwork plan` has something real to show out of the box.
pub const LAB_EXAMPLE: (&str, &str) = ("wizard/examples/lab.toml", include_str!("../wizard/examples/lab.toml"));
