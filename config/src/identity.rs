//! `identity`: where this workload's SVID and its trust bundles come from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::check::{Check, at};
use crate::{TrustDomain, raw};

/// This workload's identity source (`identity`).
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    source: IdentitySource,
}

/// Where the SVID and bundles come from.
#[derive(Clone, Debug)]
pub enum IdentitySource {
    /// PEM files on disk, watched for rotation (`identity.svid` + `identity.bundles`).
    Files(FileIdentity),
    /// The SPIFFE Workload API (`identity.workload_api`).
    WorkloadApi(WorkloadApi),
}

/// SVID and bundles as files. Every path is absolute and was readable when the config loaded.
#[derive(Clone, Debug)]
pub struct FileIdentity {
    cert: PathBuf,
    key: PathBuf,
    bundles: BTreeMap<TrustDomain, PathBuf>,
}

/// The SPIFFE Workload API endpoint.
#[derive(Clone, Debug)]
pub struct WorkloadApi {
    socket: String,
    initial_timeout: Duration,
}

/// The variable a SPIFFE workload reads its Workload API address from.
pub const SPIFFE_ENDPOINT_SOCKET: &str = "SPIFFE_ENDPOINT_SOCKET";

const PATH: &str = "identity";

// === impl IdentityConfig ===

impl IdentityConfig {
    /// Where the SVID and bundles come from.
    pub fn source(&self) -> &IdentitySource {
        &self.source
    }

    /// The trust domains that have a bundle file (`identity.bundles` keys, sorted); empty for
    /// the Workload API, whose bundles are known only at run time.
    pub fn trust_domains(&self) -> Vec<TrustDomain> {
        match &self.source {
            IdentitySource::Files(files) => files.bundles.keys().cloned().collect(),
            IdentitySource::WorkloadApi(_) => Vec::new(),
        }
    }

    pub(crate) fn from_raw(raw: raw::Identity, check: &mut Check) -> Option<Self> {
        let source = match raw {
            raw::Identity {
                svid: None,
                bundles: None,
                workload_api: Some(api),
            } => WorkloadApi::from_raw(api, check).map(IdentitySource::WorkloadApi),
            raw::Identity {
                svid,
                bundles,
                workload_api: None,
            } if svid.is_some() || bundles.is_some() => {
                FileIdentity::from_raw(svid, bundles, check).map(IdentitySource::Files)
            }
            raw::Identity {
                workload_api: Some(_),
                ..
            } => {
                check.error(
                    at(PATH, "workload_api"),
                    "cannot be combined with `svid` and `bundles`; use one or the other",
                );
                None
            }
            raw::Identity { .. } => {
                if !check.dropped_within(PATH) {
                    check.error(PATH, "needs either `svid` and `bundles`, or `workload_api`");
                }
                None
            }
        };
        Some(Self { source: source? })
    }
}

// === impl FileIdentity ===

impl FileIdentity {
    /// The certificate chain PEM, leaf first (`identity.svid.cert`).
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The leaf's PKCS#8 private key PEM (`identity.svid.key`).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// Trust domain → CA bundle PEM file; never empty.
    pub fn bundles(&self) -> &BTreeMap<TrustDomain, PathBuf> {
        &self.bundles
    }

    fn from_raw(
        svid: Option<raw::Svid>,
        bundles: Option<BTreeMap<String, PathBuf>>,
        check: &mut Check,
    ) -> Option<Self> {
        let (cert, key) = match svid {
            Some(svid) => (
                check.file(svid.cert, "identity.svid.cert"),
                check.file(svid.key, "identity.svid.key"),
            ),
            None => {
                check.error("identity.svid", "is required with `bundles`");
                (None, None)
            }
        };
        let bundles = match bundles {
            Some(bundles) => Self::bundles_from_raw(bundles, check),
            None => {
                check.error("identity.bundles", "is required with `svid`");
                None
            }
        };
        Some(Self {
            cert: cert?,
            key: key?,
            bundles: bundles?,
        })
    }

    fn bundles_from_raw(
        raw: BTreeMap<String, PathBuf>,
        check: &mut Check,
    ) -> Option<BTreeMap<TrustDomain, PathBuf>> {
        if raw.is_empty() {
            check.error("identity.bundles", "must name at least one trust domain");
            return None;
        }
        let mut bundles = BTreeMap::new();
        let mut complete = true;
        for (name, file) in raw {
            let path = at("identity.bundles", &name);
            let trust_domain = match TrustDomain::parse(&name) {
                Ok(td) => Some(td),
                Err(e) => {
                    let shown = name.escape_debug();
                    check.error(&path, format!("`{shown}` is not a valid trust domain: {e}"));
                    None
                }
            };
            match (trust_domain, check.readable_file(&file, &path)) {
                (Some(td), Some(file)) => {
                    bundles.insert(td, file);
                }
                _ => complete = false,
            }
        }
        complete.then_some(bundles)
    }
}

// === impl WorkloadApi ===

impl WorkloadApi {
    /// The agent's address: `unix:///absolute/path` (or `unix:/absolute/path`) or
    /// `tcp://ip:port`, as configured or from `$SPIFFE_ENDPOINT_SOCKET`.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// How long startup waits for a first usable SVID (`initial_timeout`, default 30s).
    pub fn initial_timeout(&self) -> Duration {
        self.initial_timeout
    }

    fn from_raw(raw: raw::WorkloadApi, check: &mut Check) -> Option<Self> {
        let path = "identity.workload_api.socket";
        let initial_timeout = check.duration(
            raw.initial_timeout,
            "identity.workload_api.initial_timeout",
            Duration::from_secs(30),
            Duration::from_secs(1)..=Duration::from_secs(600),
        );
        let (socket, shown) = match raw.socket {
            Some(socket) => {
                let shown = format!("`{}`", socket.escape_debug());
                (socket, shown)
            }
            None => {
                let Some(socket) = check.env_var(SPIFFE_ENDPOINT_SOCKET) else {
                    check.error(
                        path,
                        format!("is required when ${SPIFFE_ENDPOINT_SOCKET} is not set"),
                    );
                    return None;
                };
                let shown = format!("${SPIFFE_ENDPOINT_SOCKET} (`{}`)", socket.escape_debug());
                (socket, shown)
            }
        };
        let problem = if let Some(file) = socket
            .strip_prefix("unix://")
            .or_else(|| socket.strip_prefix("unix:"))
        {
            (!file.starts_with('/') || file.len() < 2 || file.starts_with("//")).then(|| {
                format!(
                    "{shown} needs an absolute path, such as `unix:///run/spire/sockets/agent.sock`"
                )
            })
        } else if let Some(addr) = socket.strip_prefix("tcp://") {
            addr.parse::<SocketAddr>().is_err().then(|| {
                format!("{shown} needs an `ip:port` address, such as `tcp://127.0.0.1:8081`")
            })
        } else {
            Some(format!("{shown} must start with `unix://` or `tcp://`"))
        };
        if let Some(problem) = problem {
            check.error(path, problem);
            return None;
        }
        Some(Self {
            socket,
            initial_timeout: initial_timeout?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::IdentitySource;
    use crate::test_support::{Fixture, OUTBOUND};

    #[test]
    fn files_resolve_against_the_config_folder_and_list_their_trust_domains() {
        let fx = Fixture::new();
        let config = fx.load(&format!(
            "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{ example.org: bundle.pem, other.org: sub/other.pem }}\n{OUTBOUND}"
        ));
        let IdentitySource::Files(files) = config.identity().source() else {
            panic!("expected files");
        };
        assert_eq!(files.cert(), fx.dir().join("svid.pem"));
        assert_eq!(files.key(), fx.dir().join("svid_key.pem"));
        let domains: Vec<String> = config
            .identity()
            .trust_domains()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(domains, ["example.org", "other.org"]);
        assert_eq!(
            files.bundles().values().last().unwrap(),
            &fx.dir().join("sub/other.pem")
        );
    }

    #[test]
    fn absolute_paths_are_kept_as_written() {
        let fx = Fixture::new();
        let cert = fx.dir().join("svid.pem");
        let config = fx.load(&format!(
            "identity:\n  svid: {{ cert: '{}', key: svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\n{OUTBOUND}",
            cert.display()
        ));
        let IdentitySource::Files(files) = config.identity().source() else {
            panic!("expected files");
        };
        assert_eq!(files.cert(), cert);
    }

    #[test]
    fn missing_files_are_each_reported_with_the_os_error() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "identity:\n  svid: {{ cert: nope.pem, key: svid_key.pem }}\n  bundles: {{ example.org: gone.pem }}\n{OUTBOUND}"
        ));
        let dir = fx.dir().display();
        assert_eq!(
            errors,
            [
                format!(
                    "identity.svid.cert: cannot read `{dir}/nope.pem`: No such file or directory (os error 2)"
                ),
                format!(
                    "identity.bundles.example.org: cannot read `{dir}/gone.pem`: No such file or directory (os error 2)"
                ),
            ]
        );
    }

    #[test]
    fn a_folder_is_not_a_readable_file() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "identity:\n  svid: {{ cert: policies, key: svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\n{OUTBOUND}"
        ));
        assert_eq!(
            errors,
            [format!(
                "identity.svid.cert: `{}/policies` is not a file",
                fx.dir().display()
            )]
        );
    }

    #[test]
    fn bundle_keys_must_be_canonical_trust_domains() {
        let fx = Fixture::new();
        let errors = fx.errors(&format!(
            "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{ Example.org: bundle.pem, 'spiffe://x': bundle.pem }}\n{OUTBOUND}"
        ));
        assert_eq!(
            errors,
            [
                "identity.bundles.Example.org: `Example.org` is not a valid trust domain: trust domain character `E` is not allowed; only lowercase letters, digits, `.`, `-` and `_` are",
                "identity.bundles.spiffe://x: `spiffe://x` is not a valid trust domain: trust domain character `:` is not allowed; only lowercase letters, digits, `.`, `-` and `_` are",
            ]
        );
    }

    #[test]
    fn svid_and_bundles_need_each_other_and_bundles_cannot_be_empty() {
        let fx = Fixture::new();
        let only_svid = fx.errors(&format!(
            "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n{OUTBOUND}"
        ));
        assert_eq!(only_svid, ["identity.bundles: is required with `svid`"]);
        let only_bundles = fx.errors(&format!(
            "identity:\n  bundles: {{ example.org: bundle.pem }}\n{OUTBOUND}"
        ));
        assert_eq!(only_bundles, ["identity.svid: is required with `bundles`"]);
        let empty = fx.errors(&format!("identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{}}\n{OUTBOUND}"));
        assert_eq!(
            empty,
            ["identity.bundles: must name at least one trust domain"]
        );
        let no_key = fx.errors(&format!("identity:\n  svid: {{ cert: svid.pem }}\n  bundles: {{ example.org: bundle.pem }}\n{OUTBOUND}"));
        assert_eq!(no_key, ["identity.svid.key: is required"]);
    }

    #[test]
    fn identity_is_required_and_takes_one_source() {
        let fx = Fixture::new();
        assert_eq!(fx.errors(OUTBOUND), ["identity: is required"]);
        assert_eq!(
            fx.errors(&format!("identity: {{}}\n{OUTBOUND}")),
            ["identity: needs either `svid` and `bundles`, or `workload_api`"]
        );
        let both = fx.errors(&format!(
            "identity:\n  svid: {{ cert: svid.pem, key: svid_key.pem }}\n  bundles: {{ example.org: bundle.pem }}\n  workload_api: {{ socket: 'unix:///a.sock' }}\n{OUTBOUND}"
        ));
        assert_eq!(
            both,
            [
                "identity.workload_api: cannot be combined with `svid` and `bundles`; use one or the other"
            ]
        );
    }

    #[test]
    fn workload_api_takes_a_unix_or_tcp_socket() {
        let fx = Fixture::new();
        let config = fx.load(&format!("identity:\n  workload_api: {{ socket: 'unix:///run/spire/sockets/agent.sock' }}\n{OUTBOUND}"));
        let IdentitySource::WorkloadApi(api) = config.identity().source() else {
            panic!("expected the workload api");
        };
        assert_eq!(api.socket(), "unix:///run/spire/sockets/agent.sock");
        assert!(config.identity().trust_domains().is_empty());
        fx.load(&format!(
            "identity:\n  workload_api: {{ socket: 'tcp://127.0.0.1:8081' }}\n{OUTBOUND}"
        ));

        let path = "identity.workload_api.socket";
        for (socket, message) in [
            (
                "/run/agent.sock",
                "`/run/agent.sock` must start with `unix://` or `tcp://`",
            ),
            (
                "unix://relative.sock",
                "`unix://relative.sock` needs an absolute path, such as `unix:///run/spire/sockets/agent.sock`",
            ),
            (
                "tcp://localhost:8081",
                "`tcp://localhost:8081` needs an `ip:port` address, such as `tcp://127.0.0.1:8081`",
            ),
        ] {
            let errors = fx.errors(&format!(
                "identity:\n  workload_api: {{ socket: '{socket}' }}\n{OUTBOUND}"
            ));
            assert_eq!(errors, [format!("{path}: {message}")]);
        }
        assert_eq!(
            fx.errors(&format!("identity:\n  workload_api: {{}}\n{OUTBOUND}")),
            [format!(
                "{path}: is required when $SPIFFE_ENDPOINT_SOCKET is not set"
            )]
        );
    }

    #[test]
    fn workload_api_socket_defaults_to_spiffe_endpoint_socket() {
        let fx = Fixture::new().with_env("SPIFFE_ENDPOINT_SOCKET", "unix:/spiffe/agent.sock");
        let config = fx.load(&format!("identity:\n  workload_api: {{}}\n{OUTBOUND}"));
        let IdentitySource::WorkloadApi(api) = config.identity().source() else {
            panic!("expected the workload api");
        };
        assert_eq!(api.socket(), "unix:/spiffe/agent.sock");
        assert_eq!(api.initial_timeout(), std::time::Duration::from_secs(30));
        // The file wins over the variable.
        let config = fx.load(&format!(
            "identity:\n  workload_api: {{ socket: 'unix:///a.sock', initial_timeout: 5s }}\n{OUTBOUND}"
        ));
        let IdentitySource::WorkloadApi(api) = config.identity().source() else {
            panic!("expected the workload api");
        };
        assert_eq!(api.socket(), "unix:///a.sock");
        assert_eq!(api.initial_timeout(), std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_bad_spiffe_endpoint_socket_is_named_as_the_variable() {
        let fx = Fixture::new().with_env("SPIFFE_ENDPOINT_SOCKET", "/run/agent.sock");
        assert_eq!(
            fx.errors(&format!("identity:\n  workload_api: {{}}\n{OUTBOUND}")),
            [
                "identity.workload_api.socket: $SPIFFE_ENDPOINT_SOCKET (`/run/agent.sock`) must start with `unix://` or `tcp://`"
            ]
        );
        assert_eq!(
            fx.errors(&format!(
                "identity:\n  workload_api: {{ socket: 'unix:///a.sock', initial_timeout: 0s }}\n{OUTBOUND}"
            )),
            ["identity.workload_api.initial_timeout: `0s` is too short; the least allowed is `1s`"]
        );
    }
}
