//! `mcp`: which request paths carry the Model Context Protocol, how much of an MCP request body
//! is read, and whether `tools/list` results are filtered per caller.

use crate::check::Check;
use crate::raw;

/// MCP awareness (`mcp`). Absent: no request is read as MCP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McpConfig {
    paths: Vec<String>,
    max_body: usize,
    filter_tools_list: bool,
}

// === impl McpConfig ===

impl McpConfig {
    /// The default body cap: 1 MiB.
    pub const DEFAULT_MAX_BODY: usize = 1 << 20;

    /// The largest body cap: a buffered body is memory held per request.
    pub const MAX_BODY_LIMIT: usize = 64 << 20;

    /// The request paths that carry MCP (streamable HTTP), exact matches. Default `[/mcp]`.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether `path` is one of [`Self::paths`], as an app's router could match it: without
    /// regard to ASCII case and to one trailing slash (`/MCP/` is `/mcp`), so that a spelling
    /// the tool server would still answer is never decided as plain HTTP.
    pub fn is_mcp_path(&self, path: &str) -> bool {
        let trim = |p: &str| -> usize { p.len() - usize::from(p.len() > 1 && p.ends_with('/')) };
        let path = path.get(..trim(path)).unwrap_or(path);
        self.paths
            .iter()
            .any(|p| p.get(..trim(p)).unwrap_or(p).eq_ignore_ascii_case(path))
    }

    /// The largest MCP request body read (and `tools/list` result filtered); a larger request is
    /// 413. Default 1 MiB.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Whether the inbound side drops from a `tools/list` result every tool the caller may not
    /// call. Default `true`.
    pub fn filter_tools_list(&self) -> bool {
        self.filter_tools_list
    }

    pub(crate) fn from_raw(raw: raw::Mcp, check: &mut Check) -> Option<Self> {
        let paths = match raw.paths {
            None => Some(vec!["/mcp".to_owned()]),
            Some(paths) => check_paths(paths, check),
        };
        let path = "mcp.max_body";
        let max_body = match raw.max_body.as_deref().map(crate::size::parse) {
            None => Some(Self::DEFAULT_MAX_BODY),
            Some(Ok(size)) if (1024..=Self::MAX_BODY_LIMIT).contains(&size) => Some(size),
            Some(Ok(_)) => {
                check.error(path, "must be from `1KiB` to `64MiB`");
                None
            }
            Some(Err(e)) => {
                check.error(path, e.to_string());
                None
            }
        };
        Some(Self {
            paths: paths?,
            max_body: max_body?,
            filter_tools_list: raw.filter_tools_list.unwrap_or(true),
        })
    }
}

/// Each path absolute, without query, fragment, whitespace or dot segments, and listed once.
fn check_paths(paths: Vec<String>, check: &mut Check) -> Option<Vec<String>> {
    if paths.is_empty() {
        check.error(
            "mcp.paths",
            "is empty; list at least one path, such as `/mcp`",
        );
        return None;
    }
    let mut ok = true;
    for (i, path) in paths.iter().enumerate() {
        let at = format!("mcp.paths[{i}]");
        let shown = path.escape_debug();
        let problem = if !path.starts_with('/') {
            Some(format!("`{shown}` must start with `/`"))
        } else if path.contains(['?', '#']) {
            Some(format!(
                "`{shown}` holds a query or fragment; paths match without them"
            ))
        } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some(format!("`{shown}` holds whitespace or a control character"))
        } else if path.split('/').any(|s| s == "." || s == "..") {
            Some(format!("`{shown}` holds a dot segment"))
        } else if paths.iter().take(i).any(|p| p == path) {
            Some(format!("`{shown}` is listed twice"))
        } else {
            None
        };
        if let Some(problem) = problem {
            check.error(&at, problem);
            ok = false;
        }
    }
    ok.then_some(paths)
}

#[cfg(test)]
mod tests {
    use crate::McpConfig;
    use crate::test_support::{Fixture, MINIMAL};

    #[test]
    fn mcp_is_off_without_its_section_and_defaults_to_slash_mcp_one_mebibyte_and_filtering() {
        let fx = Fixture::new();
        assert!(fx.load(MINIMAL).mcp().is_none());
        let config = fx.load(&format!("{MINIMAL}mcp: {{}}\n"));
        let mcp = config.mcp().unwrap();
        assert_eq!(mcp.paths(), ["/mcp"]);
        assert_eq!(mcp.max_body(), McpConfig::DEFAULT_MAX_BODY);
        assert!(mcp.filter_tools_list());
        assert!(mcp.is_mcp_path("/mcp"));
        assert!(!mcp.is_mcp_path("/mcpx"));
        assert!(!mcp.is_mcp_path("/mcp/x"));
        assert!(!mcp.is_mcp_path("/"));
    }

    #[test]
    fn an_mcp_path_matches_as_a_router_could_read_it_in_another_case_or_with_a_slash() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "{MINIMAL}mcp: {{ paths: [/v1/Tools/] }}
"
        ));
        let mcp = config.mcp().unwrap();
        for path in ["/v1/Tools/", "/v1/tools", "/V1/TOOLS/", "/v1/tools/"] {
            assert!(mcp.is_mcp_path(path), "{path}");
        }
        for path in ["/v1/tools//", "/v1/tool", "/v1"] {
            assert!(!mcp.is_mcp_path(path), "{path}");
        }
    }

    #[test]
    fn mcp_paths_and_body_cap_are_read_and_checked() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "{MINIMAL}mcp: {{ paths: [/mcp, /tools/mcp], max_body: 64KiB, filter_tools_list: false }}\n"
        ));
        let mcp = config.mcp().unwrap();
        assert_eq!(mcp.paths(), ["/mcp", "/tools/mcp"]);
        assert_eq!(mcp.max_body(), 65_536);
        assert!(!mcp.filter_tools_list());
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}mcp: {{ paths: [mcp, '/a?b', /a/../b, /x, /x], max_body: 512B }}\n"
            )),
            [
                "mcp.paths[0]: `mcp` must start with `/`",
                "mcp.paths[1]: `/a?b` holds a query or fragment; paths match without them",
                "mcp.paths[2]: `/a/../b` holds a dot segment",
                "mcp.paths[4]: `/x` is listed twice",
                "mcp.max_body: must be from `1KiB` to `64MiB`",
            ]
        );
        assert_eq!(
            fx.errors(&format!("{MINIMAL}mcp: {{ paths: [] }}\n")),
            ["mcp.paths: is empty; list at least one path, such as `/mcp`"]
        );
        assert_eq!(
            fx.errors(&format!("{MINIMAL}mcp: {{ filter: true }}\n"))
                .len(),
            1
        );
    }
}
