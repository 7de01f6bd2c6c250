//! hopgate's Cedar authorization: load → validate → snapshot → authorize → reload.
//!
//! This crate holds the policy engine once the per-hop Cedar milestone lands. Until then hopgate
//! runs identity-only: every verified peer of an allowed trust domain is admitted, and the
//! sidecar says so at startup and on `/ready`. It lives in its own crate so that Cedar's long
//! compile is not repeated when the data path changes.
