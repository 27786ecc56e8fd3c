//! Interlock: a host-level gateway that controls what AI agents reach.
//!
//! One connection's path through the modules:
//! `kernel` (eBPF connect hooks redirect it) -> `listener` (accept, kernel
//! record) -> `identity` (who is calling) -> `proxy` (upstream connect and
//! relay) -> `audit` (one typed event). `control` owns operator state,
//! `config` the file, `daemon` wires it together, `cli` is the command line.
pub mod api;
pub mod audit;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod detect;
#[doc(hidden)]
pub mod fuzz;
pub mod identity;
pub mod kernel;
pub mod limits;
pub mod listener;
pub mod masking;
pub mod net;
pub mod persist;
pub mod policy;
pub mod proxy;
pub mod review;
pub mod sql;
pub mod targets;
pub mod types;
pub mod uri_path;
