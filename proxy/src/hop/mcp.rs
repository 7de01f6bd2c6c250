//! The runner's MCP stages: the call read before the decision, and a `tools/list` result
//! filtered on its way back (docs/security.md, MCP-01..07).

use bytes::Bytes;
use hopgate_config::McpConfig;
use hopgate_policy::HopRequest;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::body::Incoming;

use super::{Shared, Side};
use crate::http::authorize::HttpFacts;
use crate::http::mcp::{self, McpCall, McpRefusal, ToolFilter};
use crate::http::{Body, RequestError, full_body};
use crate::telemetry::metrics::Direction;

/// Reads and parses an MCP request's body: within the header-read time, up to `max_body`.
pub(super) async fn read_call(
    shared: &Shared,
    mcp: &McpConfig,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<(McpCall, Bytes), McpRefusal> {
    let bytes = mcp::read_body(body, mcp.max_body(), shared.body_read).await?;
    Ok((McpCall::parse(&bytes, headers)?, bytes))
}

/// The filter a `tools/list` gets: on the inbound side, with policies and `filter_tools_list`
/// on. Outbound, the list is the callee's sidecar's to filter.
pub(super) fn tool_filter<S: Side>(
    shared: &Shared,
    call: &McpCall,
    request: &HopRequest<'_>,
    facts: &HttpFacts<'_>,
) -> Option<ToolFilter> {
    let authorizer = &shared.authorizer;
    let on = authorizer.mcp().is_some_and(McpConfig::filter_tools_list);
    (on && S::DIRECTION == Direction::Inbound
        && authorizer.has_policies()
        && call.method() == "tools/list")
        .then(|| ToolFilter::new(request, facts, call.facts().protocol_version))
}

/// The `tools/list` result, read whole and filtered; its length is the new one. A result that
/// cannot be read in time, is too large or is not what its content type says is a 502: an
/// unfiltered list is never passed on.
pub(super) async fn filter_result(
    shared: &Shared,
    filter: &ToolFilter,
    headers: &mut HeaderMap,
    body: Incoming,
) -> Result<Body, RequestError> {
    let authorizer = &shared.authorizer;
    let max_body = authorizer.mcp().map_or(0, McpConfig::max_body);
    let bad = |_| RequestError::Mcp(McpRefusal::BadResult);
    // Asked for uncompressed (the request's `Accept-Encoding` was removed); anything else
    // cannot be read, so it is not passed on.
    let encoding = headers.get(CONTENT_ENCODING).map(HeaderValue::as_bytes);
    if encoding.is_some_and(|e| !e.eq_ignore_ascii_case(b"identity")) {
        return Err(RequestError::Mcp(McpRefusal::BadResult));
    }
    let bytes = mcp::read_body(body, max_body, shared.result_read)
        .await
        .map_err(bad)?;
    if bytes.is_empty() {
        // A 202 or 204, or an empty answer: no list in it.
        return Ok(full_body(bytes));
    }
    let filtered = filter.apply(authorizer, headers, &bytes).map_err(bad)?;
    headers.remove(CONTENT_LENGTH);
    if headers.get(CONTENT_TYPE).is_none() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(full_body(filtered))
}
