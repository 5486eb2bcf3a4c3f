//! hallpass-verifier: see README.md.
