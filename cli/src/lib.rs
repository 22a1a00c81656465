//! `shoal`: Swarm's commands against a shoal control plane, as a library so tests can
//! call the same renderers and connection code the binary uses.

pub mod commands;
pub mod config;
pub mod connect;
pub mod local;
pub mod output;
pub mod template;
