//! The API through its public surface, on SQLite by default and on Postgres when
//! TEST_DATABASE_URL is set: the same tests run on both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod attest;
mod cli;
mod contention;
mod deploy;
mod input;
mod isolation;
mod jwks;
mod jwt;
mod keys;
mod magic_links;
mod migrate;
mod openapi;
mod process;
mod rbac;
mod relying;
mod replicas;
mod retention;
mod revocations;
mod sessions;
mod storage;
mod transport;
mod users;
