//! SSH sessions to the target hosts (russh): one connection per host, a channel per command.
