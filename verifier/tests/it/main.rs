//! Integration tests: a fake hallpass on 127.0.0.1 (see `common`) and a real `Verifier`
//! against it, with time injected through a `ManualClock`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[cfg(feature = "axum")]
mod extract;
mod feed;
mod keys;
mod rbac;
mod verify;
