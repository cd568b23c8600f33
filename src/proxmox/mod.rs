//! Proxmox VE: the API client ([`client`]), the online checks of the answers against the API
//! ([`check`]), and the phase that creates the site's guests before anything connects to them
//! over SSH ([`provision`]).

pub mod check;
pub mod client;
pub mod provision;

pub use client::{Client, Error};
