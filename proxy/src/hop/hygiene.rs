//! The request head's hygiene, before anything is read from it: what a proxy must refuse
//! rather than forward (docs/security.md, "Request smuggling and ambiguity").

use http::request::Parts;

use super::Side;
use crate::http::{Malformed, RequestError, headers, path};

/// Refusals of the head as it came: the side's own, the body's framing, hop-by-hop fields, the
/// path, the authority.
pub(super) fn check<S: Side>(side: &S, parts: &mut Parts) -> Result<(), RequestError> {
    side.screen(parts)?;
    // Read before the framing fields are stripped: the app must get the body as it was framed.
    headers::check_framing(&parts.method, &parts.headers)
        .map_err(|e| RequestError::BadRequest(Malformed::Framing, e))?;
    // Connection-scoped fields describe the caller's hop, not the request (RFC 9110 §7.6.1).
    headers::strip_hop_by_hop(&mut parts.headers).map_err(|_| {
        RequestError::BadRequest(
            Malformed::Connection,
            "connection header nominates a framing field",
        )
    })?;
    // The policy reads the path's bytes and one authority; a path the app could resolve
    // differently, or a request naming two hosts, is refused (PATH-03, SMG-17 in
    // docs/security.md).
    path::check(parts.uri.path()).map_err(|e| RequestError::BadRequest(Malformed::Path, e))?;
    headers::check_authority(parts).map_err(|e| RequestError::BadRequest(Malformed::Host, e))
}
