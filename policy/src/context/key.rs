//! The memo key: every fact of a request that a policy can observe, written so that no two
//! different requests share one.

use std::fmt::Write as _;

use crate::TokenFacts;
use crate::context::{HopRequest, McpFacts};
use crate::usage::ContextUsage;

/// Every fact of `req` under `action` that a policy can observe, each field length-prefixed
/// (and each list count-prefixed) so that no two different requests share a key.
///
/// `token.txn` is written only when `usage` says a policy observes it: it is new with every
/// transaction, so keying on it unobserved would make every transaction miss the memo, and a
/// field the context leaves out (see [`token_record`]) cannot change a decision.
///
/// The request and its token are destructured without `..` on purpose: a field added to
/// [`HopRequest`] or [`TokenFacts`] does not compile until it is written here (or skipped with
/// a reason), so it can never silently share a cached decision with requests that differ only
/// in it. `keys_differ_in_every_field` checks each field is written.
pub(crate) fn key(req: &HopRequest<'_>, action: &str, usage: &ContextUsage) -> String {
    let txn_observed = usage.field("token").is_some_and(|token| token.has("txn"));
    let HopRequest {
        peer,
        destination,
        direction,
        // The header's value, or none: `action` is what it resolved to, which is what decides.
        action: _,
        method,
        path,
        host,
        intent,
        token,
        mcp,
    } = req;
    let mut key = Key(String::with_capacity(256));
    key.field(action);
    key.field(peer.as_str());
    key.field(destination.as_str());
    key.field(direction.as_str());
    key.field(method);
    key.field(path);
    key.field(host);
    key.count(intent.len());
    for (name, value) in *intent {
        key.field(name);
        key.field(value);
    }
    match mcp {
        None => key.field("-"),
        Some(McpFacts {
            method,
            name,
            protocol_version,
        }) => {
            key.field("+");
            key.field(method);
            key.field(protocol_version);
            match name {
                None => key.field("-"),
                Some(name) => {
                    key.field("+");
                    key.field(name);
                }
            }
        }
    }
    match token {
        None => key.field("-"),
        Some(TokenFacts {
            sub,
            iss,
            txn,
            scope,
            actors,
            tctx,
        }) => {
            key.field("+");
            key.field(sub);
            key.field(iss);
            match txn {
                _ if !txn_observed => key.field("~"),
                None => key.field("-"),
                Some(txn) => {
                    key.field("+");
                    key.field(txn);
                }
            }
            for list in [scope, actors] {
                key.count(list.len());
                for item in list {
                    key.field(item);
                }
            }
            key.count(tctx.len());
            for (name, value) in tctx {
                key.field(name);
                key.field(value);
            }
        }
    }
    key.0
}

/// A key being written, without an allocation per number.
struct Key(String);

impl Key {
    fn field(&mut self, s: &str) {
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{}:", s.len());
        self.0.push_str(s);
    }

    fn count(&mut self, n: usize) {
        let _ = write!(self.0, "#{n};");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{Direction, Kind, TOKEN, http_attr, token_attr};
    use hopgate_config::SpiffeId;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// The key as policies that observe everything would have it.
    fn key(req: &HopRequest<'_>, action: &str) -> String {
        super::key(req, action, &ContextUsage::everything())
    }

    #[test]
    fn an_unobserved_txn_is_left_out_of_the_key_and_an_observed_one_is_not() {
        let (peer, dest) = (id("spiffe://example.org/a"), id("spiffe://example.org/b"));
        let facts = |txn: &str| TokenFacts {
            sub: "alice".to_owned(),
            iss: "spiffe://example.org/a".to_owned(),
            txn: Some(txn.to_owned()),
            scope: vec!["read".to_owned()],
            actors: vec![],
            tctx: vec![],
        };
        let (t1, t2) = (facts("t1"), facts("t2"));
        let request = |token| HopRequest {
            peer: &peer,
            destination: &dest,
            direction: Direction::Inbound,
            action: None,
            method: "GET",
            path: "/",
            host: "b",
            intent: &[],
            token: Some(token),
            mcp: None,
        };
        let policies = |text: &str| ContextUsage::of(&text.parse().unwrap());
        let scope_only = policies(
            "permit (principal, action, resource) when { context.token.scope.contains(\"read\") };",
        );
        assert_eq!(
            super::key(&request(&t1), "call", &scope_only),
            super::key(&request(&t2), "call", &scope_only),
            "two transactions, one decision"
        );
        let reads_txn = policies(
            "forbid (principal, action, resource) when { context.token has txn && context.token.txn == \"t1\" };",
        );
        assert_ne!(
            super::key(&request(&t1), "call", &reads_txn),
            super::key(&request(&t2), "call", &reads_txn)
        );
    }

    const MCP: McpFacts<'static> = McpFacts {
        method: "tools/call",
        name: Some("read_ticket"),
        protocol_version: "2026-07-28",
    };

    #[test]
    fn keys_differ_in_every_field() {
        let (peer, dest, other) = (
            id("spiffe://example.org/a"),
            id("spiffe://example.org/b"),
            id("spiffe://example.org/c"),
        );
        let token = TokenFacts {
            sub: "alice".to_owned(),
            iss: "spiffe://example.org/a".to_owned(),
            txn: Some("t1".to_owned()),
            scope: vec!["read".to_owned()],
            actors: vec!["spiffe://example.org/a".to_owned()],
            tctx: vec![("purpose".to_owned(), "support".to_owned())],
        };
        let intent = [("purpose", "support")];
        let other_intent = [("purpose", "billing")];
        let base = HopRequest {
            peer: &peer,
            destination: &dest,
            direction: Direction::Inbound,
            action: None,
            method: "GET",
            path: "/",
            host: "b",
            intent: &intent,
            token: Some(&token),
            mcp: Some(MCP),
        };
        let tokens = [
            (
                "sub",
                TokenFacts {
                    sub: "bob".to_owned(),
                    ..token.clone()
                },
            ),
            (
                "iss",
                TokenFacts {
                    iss: "spiffe://example.org/c".to_owned(),
                    ..token.clone()
                },
            ),
            (
                "txn",
                TokenFacts {
                    txn: None,
                    ..token.clone()
                },
            ),
            (
                "scope",
                TokenFacts {
                    scope: vec!["write".to_owned()],
                    ..token.clone()
                },
            ),
            (
                "actors",
                TokenFacts {
                    actors: vec![],
                    ..token.clone()
                },
            ),
            (
                "tctx",
                TokenFacts {
                    tctx: vec![("purpose".to_owned(), "billing".to_owned())],
                    ..token.clone()
                },
            ),
        ];
        let base_key = key(&base, "call");
        let mut variants = vec![
            ("action", key(&base, "read")),
            (
                "peer",
                key(
                    &HopRequest {
                        peer: &other,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "destination",
                key(
                    &HopRequest {
                        destination: &other,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "direction",
                key(
                    &HopRequest {
                        direction: Direction::Outbound,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "method",
                key(
                    &HopRequest {
                        method: "POST",
                        ..base
                    },
                    "call",
                ),
            ),
            ("path", key(&HopRequest { path: "/x", ..base }, "call")),
            ("host", key(&HopRequest { host: "c", ..base }, "call")),
            (
                "intent",
                key(
                    &HopRequest {
                        intent: &other_intent,
                        ..base
                    },
                    "call",
                ),
            ),
            (
                "token",
                key(
                    &HopRequest {
                        token: None,
                        ..base
                    },
                    "call",
                ),
            ),
        ];
        for (field, mcp) in [
            ("mcp", None),
            (
                "mcp.method",
                Some(McpFacts {
                    method: "tools/list",
                    ..MCP
                }),
            ),
            ("mcp.name", Some(McpFacts { name: None, ..MCP })),
            (
                "mcp.name",
                Some(McpFacts {
                    name: Some("delete_ticket"),
                    ..MCP
                }),
            ),
            (
                "mcp.protocol_version",
                Some(McpFacts {
                    protocol_version: "2025-06-18",
                    ..MCP
                }),
            ),
        ] {
            variants.push((field, key(&HopRequest { mcp, ..base }, "call")));
        }
        for (field, token) in &tokens {
            variants.push((
                field,
                key(
                    &HopRequest {
                        token: Some(token),
                        ..base
                    },
                    "call",
                ),
            ));
        }
        for (field, variant) in &variants {
            assert_ne!(*variant, base_key, "`{field}` is not part of the memo key");
        }
    }

    #[test]
    fn every_filled_attribute_has_a_type_and_one_name() {
        let mut names: Vec<&str> = TOKEN.iter().map(|a| a.name).collect();
        names.push("present");
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            TOKEN.len() + 1,
            "a token attribute is listed twice"
        );
        assert_eq!(token_attr("present"), Some((Kind::Bool, true)));
        assert_eq!(http_attr("host"), Some((Kind::String, true)));
        assert_eq!(http_attr("query"), None);
    }

    #[test]
    fn direction_displays_as_policies_compare_it() {
        assert_eq!(Direction::Inbound.to_string(), "inbound");
        assert_eq!(Direction::Outbound.to_string(), "outbound");
    }
}
