//! The facts an open request was admitted on, owned, so it can be decided again after its
//! request head is gone. Most requests end before anything changes, so the copy is made cheap:
//! the request's text (path, host, action, MCP call, route, token `jti` and `prv`, intent) goes
//! into one allocation, and the connection's parties are shared, not copied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use hopgate_config::SpiffeId;
use hopgate_policy::{Direction, McpFacts, TokenFacts};
use http::Method;
use rustls_pki_types::CertificateDer;

use crate::telemetry::traceparent::TraceIdHex;

/// The facts a request was admitted on, owned, so it can be decided again.
#[derive(Debug)]
pub(crate) struct OpenFacts {
    pub(crate) direction: Direction,
    /// Who called, whom for, and (inbound) the chain the caller proved.
    pub(crate) parties: Arc<OpenParties>,
    pub(crate) method: Method,
    pub(crate) text: OpenText,
    pub(crate) token: Option<OpenToken>,
    pub(crate) client_addr: Option<SocketAddr>,
    pub(crate) trace_id: Option<TraceIdHex>,
    /// The request's decision id: the cut's audit record names the request it ends.
    pub(crate) decision_id: Arc<str>,
}

/// The parties of a request that its connection (inbound) or route (outbound) fixes: built
/// once and shared by every request on it.
#[derive(Debug)]
pub(crate) struct OpenParties {
    /// The mTLS peer (inbound); `None` outbound, where the caller is this workload.
    pub(crate) peer: Option<SpiffeId>,
    pub(crate) own: SpiffeId,
    /// Whom requests are for; `None`: this workload (inbound).
    pub(crate) dest: Option<SpiffeId>,
    /// The peer's certificate chain, leaf first (inbound), re-verified when bundles change.
    pub(crate) peer_chain: Option<PeerChain>,
}

/// The hop token a request was admitted with (inbound) or sent with (outbound); its `jti` and
/// `prv` are in the request's [`OpenText`].
#[derive(Debug)]
pub(crate) struct OpenToken {
    pub(crate) facts: TokenFacts,
    pub(crate) hash: [u8; 32],
    pub(crate) depth: usize,
    pub(crate) expires_at: SystemTime,
}

/// An inbound connection's verified chain and its leaf's notAfter.
#[derive(Clone, Debug)]
pub(crate) struct PeerChain {
    pub(crate) certs: Arc<[CertificateDer<'static>]>,
    pub(crate) not_after: SystemTime,
}

/// A piece of a request's text: the order of [`OpenText::new`]'s pieces.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Piece {
    Path,
    Host,
    Action,
    McpMethod,
    McpName,
    McpVersion,
    Route,
    Jti,
    Prv,
}

const PIECES: usize = Piece::Prv as usize + 1;

/// A request's text in one buffer: each [`Piece`], present or not, then the intent entries.
#[derive(Debug)]
pub(crate) struct OpenText {
    buf: Box<str>,
    /// Where each piece ends in `buf`: a piece starts where the one before it ends.
    ends: [usize; PIECES],
    /// Which pieces are present, one bit per [`Piece`].
    present: u16,
    /// Where each intent entry's name and value end, after the pieces.
    intent: Vec<(usize, usize)>,
}

// === impl OpenFacts ===

impl OpenFacts {
    /// Who the request's principal is: the peer (inbound) or this workload (outbound).
    pub(crate) fn principal(&self) -> &SpiffeId {
        self.parties.peer.as_ref().unwrap_or(&self.parties.own)
    }

    /// Whom the request was for.
    pub(crate) fn dest(&self) -> &SpiffeId {
        self.parties.dest.as_ref().unwrap_or(&self.parties.own)
    }

    /// The request path.
    pub(crate) fn path(&self) -> &str {
        self.text.get(Piece::Path).unwrap_or_default()
    }

    /// The MCP call of a request on an MCP path.
    pub(crate) fn mcp(&self) -> Option<McpFacts<'_>> {
        Some(McpFacts {
            method: self.text.get(Piece::McpMethod)?,
            name: self.text.get(Piece::McpName),
            protocol_version: self.text.get(Piece::McpVersion).unwrap_or_default(),
        })
    }
}

// === impl OpenText ===

impl OpenText {
    /// The text of `pieces` (in [`Piece`]'s order) and of `intent`, in one allocation.
    pub(crate) fn new(pieces: [Option<&str>; PIECES], intent: &[(&str, &str)]) -> Self {
        let len = pieces
            .iter()
            .flatten()
            .map(|piece| piece.len())
            .sum::<usize>()
            + intent
                .iter()
                .map(|(name, value)| name.len() + value.len())
                .sum::<usize>();
        let mut buf = String::with_capacity(len);
        let mut ends = [0; PIECES];
        let mut present = 0;
        for (bit, (piece, end)) in pieces.iter().zip(&mut ends).enumerate() {
            if let Some(piece) = piece {
                buf.push_str(piece);
                present |= 1 << bit;
            }
            *end = buf.len();
        }
        let intent = intent
            .iter()
            .map(|(name, value)| {
                buf.push_str(name);
                let name_end = buf.len();
                buf.push_str(value);
                (name_end, buf.len())
            })
            .collect();
        Self {
            buf: buf.into_boxed_str(),
            ends,
            present,
            intent,
        }
    }

    /// `piece`, when the request had it.
    pub(crate) fn get(&self, piece: Piece) -> Option<&str> {
        let at = piece as usize;
        if self.present & (1 << at) == 0 {
            return None;
        }
        let start = at
            .checked_sub(1)
            .map_or(0, |before| self.ends.get(before).copied().unwrap_or(0));
        self.buf.get(start..*self.ends.get(at)?)
    }

    /// The intent entries, as the policy request borrows them.
    pub(crate) fn intent(&self) -> Vec<(&str, &str)> {
        let mut start = self.ends.last().copied().unwrap_or(0);
        self.intent
            .iter()
            .map(|&(name_end, value_end)| {
                let name = self.buf.get(start..name_end).unwrap_or_default();
                let value = self.buf.get(name_end..value_end).unwrap_or_default();
                start = value_end;
                (name, value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{OpenText, Piece};

    #[test]
    fn open_text_gives_back_each_piece_and_intent_entry_it_was_built_from() {
        let text = OpenText::new(
            [
                Some("/v1/chat"),
                None,
                Some(""),
                Some("tools/call"),
                None,
                Some("2025-06-18"),
                None,
                Some("jti-1"),
                Some("prv-9"),
            ],
            &[("purpose", "support"), ("ticket", "")],
        );
        assert_eq!(text.get(Piece::Path), Some("/v1/chat"));
        assert_eq!(text.get(Piece::Host), None);
        assert_eq!(text.get(Piece::Action), Some(""));
        assert_eq!(text.get(Piece::McpMethod), Some("tools/call"));
        assert_eq!(text.get(Piece::McpName), None);
        assert_eq!(text.get(Piece::McpVersion), Some("2025-06-18"));
        assert_eq!(text.get(Piece::Route), None);
        assert_eq!(text.get(Piece::Jti), Some("jti-1"));
        assert_eq!(text.get(Piece::Prv), Some("prv-9"));
        assert_eq!(text.intent(), [("purpose", "support"), ("ticket", "")]);
    }

    #[test]
    fn open_text_of_nothing_has_no_pieces() {
        let text = OpenText::new([None; 9], &[]);
        assert_eq!(text.get(Piece::Path), None);
        assert_eq!(text.get(Piece::Prv), None);
        assert!(text.intent().is_empty());
    }
}
