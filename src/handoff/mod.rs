//! The GitOps hand-off: the engine installed on the first k3s server, the site contract and the
//! sync objects applied, and their state read back.

pub mod install;
pub mod ready;
