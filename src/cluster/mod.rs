//! The k3s cluster: the order nodes start and restart in, the gates between them, and how a
//! gate's answer is read. Pure decisions; the phase that runs them over SSH builds on these.

pub mod reach;
pub mod ready;
pub mod rollout;
pub mod start;
