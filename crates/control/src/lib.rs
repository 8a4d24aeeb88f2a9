//! The rvs control plane, apart from any I/O.
//!
//! [`model::Model`] is the desired state: services, reals, local addresses
//! and timeouts. Every change — an `rvs adm` command, a config reload, later a
//! health check — produces a new model, which is validated whole and then
//! reaches the data path as a list of [`model::Op`]s. So there is one place
//! where a real's weight or presence changes, and each worker applies the same
//! ops to its own engine.

#![warn(missing_docs)]

pub mod adm;
pub mod config;
pub mod health;
pub mod metrics;
pub mod model;
pub mod plane;
pub mod protocol;
pub mod snapshot;
