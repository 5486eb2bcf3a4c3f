//! hallpass: a self-hosted session authority that answers Stytch's consumer Sessions API.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod directory;
pub mod domain;
pub mod error;
pub mod http;
pub mod keyring;
pub mod metrics;
pub mod server;
pub mod store;
pub mod trusted;

pub use app::{AppState, Settings, router};
pub use error::{Error, Result};
