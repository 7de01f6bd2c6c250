//! hopgate's Cedar authorization: load → validate → snapshot → authorize → reload.
//!
//! ```text
//!  policies/ (schema.cedarschema, *.cedar, entities.json, revocations.yaml)
//!      │ PolicySnapshot::load: parse, re-key by @id, strict validation, entities, slice index,
//!      │ revocations
//!      ▼
//!  PolicyStore ── ArcSwap<PolicySnapshot> ◀── reload / check (the proxy watches the folder)
//!      │ current()
//!      ▼
//!  HopRequest (peer, destination, action, http, intent, token facts)
//!      │ PolicySnapshot::authorize: sync, no I/O, no panics
//!      ▼
//!  Decision { effect, reason, policies, errors, id (UUID v4), action }
//! ```
//!
//! # The Cedar model (docs/cedar.md, "The model")
//!
//! - principal `Hop::Workload::"<peer SPIFFE ID>"`, resource `Hop::Workload::"<destination>"`,
//!   each with `trust_domain` and `path` attributes and `Hop::TrustDomain::"<td>"` as parent,
//!   plus the groups and attributes entities.json gives it;
//! - action `Hop::Action::"<intent-action header or the default>"`; an action the schema does not
//!   declare is denied with `unknown_action` and nothing is evaluated;
//! - context `{ direction, http: { method, path, host }, intent: { ... }, token: { present,
//!   sub?, iss?, txn?, scope?, actors?, depth?, origin? } }`. `intent` holds only the attributes
//!   the schema declares in the action's `context.intent` record; they must be optional
//!   `String`s (a declared attribute of another type, or a required one, fails the load), and
//!   undeclared intent headers are dropped silently.
//!
//! # Safety rules (docs/security.md, "Cedar evaluation pitfalls")
//!
//! Default deny. Any evaluation error denies (CED-01: Cedar itself skips an erring policy and
//! may allow). An empty policy set denies (CED-02). Forbid wins (CED-03). UIDs are built through
//! Cedar's API, never by pasting text (CED-04). Workload and trust-domain ids in policy scopes
//! and entities.json must be canonical (CED-05, a load error). A permit that admits any principal
//! without naming a trust domain is warned about (CED-06). Warnings never fail a load; they are in
//! [`PolicySnapshot::warnings`] for `policy check`. A broken reload keeps the last good
//! snapshot (CED-07). The principal is always the mTLS peer; the token's actors are context, and
//! a permit that reads them is warned about (CED-08).
//!
//! This crate knows nothing of HTTP or TLS: the proxy hands it plain facts.

mod context;
mod engine;
mod entities;
mod error;
mod policies;
mod reload;
mod schema;
mod slice;
mod snapshot;
mod source;
mod token;
mod usage;

pub use hopgate_config::{Revocation, RevocationFacts, RevocationKey, Revocations, SpiffeId};

pub use context::{Direction, HopRequest, McpFacts, is_mcp_method};
pub use engine::{CedarRequest, Decision, DenyReason, Effect};
pub use error::{PolicyError, Problem};
pub use reload::{PolicyReloadStatus, PolicyStore, ReloadHook, ReloadOutcome};
pub use snapshot::PolicySnapshot;
pub use token::{ActError, MAX_ACTORS, TokenFacts, act_chain, tctx_entries};

#[cfg(test)]
mod tests;
