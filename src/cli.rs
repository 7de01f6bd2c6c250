//! The command line: `hopgate run`, `check-config`, `demo`, `policy`, `token`, `audit` (the
//! sidecars' audit logs), `dev-ca`, `iptables` (the transparent-mode redirect rules) and `probe`
//! (exec probes of the admin listener).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `hopgate --version`: the crate version and the git commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("HOPGATE_COMMIT"), ")");

/// hopgate: a sidecar that enforces SPIFFE identity on every hop of a call chain.
#[derive(Debug, Parser)]
#[command(name = "hopgate", version = VERSION, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the sidecar.
    Run {
        /// The config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Load and validate a config and the files it names; print every problem with its path.
    CheckConfig {
        /// The config file (YAML).
        file: PathBuf,
    },
    /// The whole mission in one command: a three-workload mesh on loopback (dev CA, demo IdP,
    /// the example policies) runs four steps and prints decisions, token chains and span trees.
    /// Exit 0 when every step behaved as expected.
    Demo {
        /// Also export the spans to this OTLP collector (`http://host:4317` gRPC;
        /// `http://host:4318` HTTP/protobuf).
        #[arg(long)]
        otlp: Option<String>,
        /// Keep the mesh up afterwards and print curl commands to explore it.
        #[arg(long)]
        serve: bool,
    },
    /// Check, explain and test Cedar policies without deploying them.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Hop tokens: decode, verify and show their delegation chain.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The sidecars' audit logs: verify a signed one, follow one transaction across them.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// A development CA and SVIDs, for trying hopgate without SPIRE.
    #[command(subcommand)]
    DevCa(DevCaCommand),
    /// The iptables rules that redirect the app's TCP to hopgate (`outbound.transparent: true`),
    /// in hopgate's own nat chains HOPGATE_OUTPUT and HOPGATE_PREROUTING. Exit 0, or 1 on any
    /// failure.
    #[command(subcommand)]
    Iptables(IptablesCommand),
    /// Ask the admin listener's `/live` or `/ready`, for a Kubernetes exec probe. Prints the
    /// status line and body. Exit 0 on 200, 1 otherwise.
    Probe(ProbeArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum IptablesCommand {
    /// Install the rules, or bring installed ones up to date; running it again changes nothing.
    /// IPv4 with iptables, IPv6 with ip6tables when the kernel has IPv6 and ip6tables is
    /// installed.
    Apply {
        #[command(flatten)]
        rules: IptablesRules,
        #[command(flatten)]
        binaries: IptablesBinaries,
    },
    /// Remove hopgate's chains and every jump to them, whatever flags `apply` was given;
    /// succeeds when there is nothing to remove.
    Remove {
        #[command(flatten)]
        binaries: IptablesBinaries,
    },
    /// Print the rules `apply` installs, as iptables-restore input, without running iptables.
    Print {
        #[command(flatten)]
        rules: IptablesRules,
    },
}

/// What `iptables apply` and `print` redirect, and what they leave alone. Values are checked by
/// the command, so a bad one exits 1 naming it.
#[derive(Debug, Args)]
pub(crate) struct IptablesRules {
    /// The uid hopgate runs as: its own connections are never redirected.
    #[arg(long, value_name = "UID", default_value = "1337")]
    pub(crate) proxy_uid: String,
    /// Where outbound TCP is redirected: the port of `outbound.listen`.
    #[arg(long, value_name = "PORT", default_value = "15001")]
    pub(crate) outbound_port: String,
    /// Where inbound TCP is redirected, with --capture-inbound only (default 15006): the port of
    /// `inbound.listen`.
    #[arg(long, value_name = "PORT")]
    pub(crate) inbound_port: Option<String>,
    /// Also redirect TCP arriving from the network (PREROUTING) to --inbound-port.
    #[arg(long)]
    pub(crate) capture_inbound: bool,
    /// Destination ports never redirected, outbound or inbound: `22,5432` (repeatable).
    #[arg(long, value_name = "P,...")]
    pub(crate) exclude_ports: Vec<String>,
    /// Destination address ranges never redirected (outbound): `10.0.0.0/8,fd00::/8`
    /// (repeatable); each goes to the family of its address.
    #[arg(long, value_name = "C,...")]
    pub(crate) exclude_cidrs: Vec<String>,
}

/// Which iptables binaries `iptables apply` and `remove` run.
#[derive(Debug, Args)]
pub(crate) struct IptablesBinaries {
    /// `plain`: iptables-save and iptables-restore on PATH, whichever variant they are;
    /// `legacy`: iptables-legacy-save/-restore; `nft`: iptables-nft-save/-restore (and the
    /// ip6tables twins of each).
    #[arg(long, value_name = "MODE", default_value = "plain")]
    pub(crate) iptables_mode: String,
}

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// Which endpoint: `live` (the process answers) or `ready` (it can serve).
    pub(crate) check: ProbeCheck,
    /// The admin listener, as `admin.listen` gives it.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:15000")]
    pub(crate) admin: String,
    /// How long the connect may take, and then the response: `1s`, `500ms`.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub(crate) timeout: String,
}

/// The admin endpoint a probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProbeCheck {
    /// `GET /live`.
    Live,
    /// `GET /ready`.
    Ready,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Decode a hop token, verify it when bundles are given, print its chain as a tree.
    /// Exit 0 valid, 1 invalid.
    Inspect(TokenInspect),
}

#[derive(Debug, Args)]
pub(crate) struct TokenInspect {
    /// The token (compact JWS); `-` or nothing reads it from standard input.
    pub(crate) token: Option<String>,
    /// A CA bundle PEM to verify the x5c chain against (repeatable): `PATH` for the issuer's
    /// trust domain, or `TD=PATH`. Without one the token is decoded only, and the exit is 1.
    #[arg(long = "bundle")]
    pub(crate) bundles: Vec<String>,
    /// Print one JSON object (`verified`, `error`, `claims`, `chain`) instead of the tree.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `hopgate audit ...`: commands that read the audit records sidecars write to stdout.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the seals of signed audit logs: no record missing, altered, reordered or added, no
    /// seal missing or altered, every seal signed by an SVID that verifies against the bundles
    /// at the seal's time. Prints `FILE: intact: ...` per file, or `FILE:LINE: what` at the
    /// first break. Exit 0 when every file is intact and its signer verified, 1 otherwise.
    Verify(AuditVerify),
    /// Follow transaction TXN across the audit logs of the sidecars it crossed: every record
    /// with that `txn`, joined into hops by token hash and printed as a tree, caller →
    /// destination. Exit 0 when found; 1 when no record has it, a file cannot be read, or TXN
    /// is empty.
    Trace(AuditTrace),
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerify {
    /// The logs: the sidecar's stdout as written, or `kubectl logs` output (a prefix before
    /// each line's JSON is skipped); each file is verified on its own.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// A CA bundle PEM to verify the signers' x5c chains against (repeatable): `PATH` for the
    /// signer's trust domain, or `TD=PATH`. Without one the hash chain and signatures are
    /// checked but who signed is not, and the exit is 1.
    #[arg(long = "bundle", value_name = "PEM")]
    pub(crate) bundles: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AuditTrace {
    /// The transaction id: the `txn` of an audit record, a span's `hop.txn` or a hop token's.
    /// A txn is base64url and may start with `-`: it is taken as the id, not as an option.
    #[arg(allow_hyphen_values = true)]
    pub(crate) txn: String,
    /// The sidecars' logs (their stdout, or `kubectl logs` output): audit records among other
    /// lines, one JSON object a line.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Print the tree as one JSON object (`txn`, `sub`, `records`, `hops`, `files`, `tree`).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Parse and strictly validate the policies in DIR against its schema; report every problem
    /// of every file, and policies that can never apply. Exit 0 when all is well, 1 otherwise.
    Check {
        /// The policy folder: *.cedar, schema.cedarschema, optional entities.json.
        dir: PathBuf,
    },
    /// Build the request the sidecar would build and print the decision. Exit 0 allow, 1 deny,
    /// 78 bad input.
    Explain(PolicyExplain),
    /// Run a file of cases against the policies and print a pass/fail row each. Exit 0 when
    /// all pass, 1 when one fails, 78 bad input.
    #[command(allow_missing_positional = true)]
    Test(PolicyTest),
}

#[derive(Debug, Args)]
pub(crate) struct PolicyExplain {
    /// The policy folder (default with --config: its `policy.dir`).
    pub(crate) dir: Option<PathBuf>,
    /// A sidecar config (YAML): decide with its `intent.header_prefix`,
    /// `intent.default_action` and, without DIR, its `policy.dir`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The caller's SPIFFE ID (the principal).
    #[arg(long)]
    pub(crate) peer: String,
    /// The destination's SPIFFE ID (the resource).
    #[arg(long)]
    pub(crate) dest: String,
    /// The Cedar action, as the `<prefix>action` header would carry it (default: the default
    /// action, `call` without --config).
    #[arg(long)]
    pub(crate) action: Option<String>,
    /// The HTTP method.
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,
    /// The HTTP path.
    #[arg(long, default_value = "/")]
    pub(crate) path: String,
    /// A request header, `name: value` (repeatable), such as `intent-purpose: support`.
    #[arg(long = "header")]
    pub(crate) headers: Vec<String>,
    /// The verified hop token's claims, as JSON.
    #[arg(long)]
    pub(crate) token_claims: Option<String>,
    /// Which side decides.
    #[arg(long, default_value = "inbound", value_parser = ["inbound", "outbound"])]
    pub(crate) direction: String,
    /// Also print the Cedar request evaluated: principal, action, resource, the context and
    /// the entities involved, as Cedar JSON.
    #[arg(short, long)]
    pub(crate) verbose: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PolicyTest {
    /// The policy folder (default with --config: its `policy.dir`).
    pub(crate) dir: Option<PathBuf>,
    /// The cases (YAML): a list of `{name, peer, dest, action?, method?, path?, headers?,
    /// token_claims?, direction?, expect: allow|deny, expect_policies?, expect_reason?}`.
    pub(crate) cases: PathBuf,
    /// A sidecar config (YAML): decide with its `intent.header_prefix`,
    /// `intent.default_action` and, without DIR, its `policy.dir`.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevCaCommand {
    /// Create a CA for one trust domain in DIR (ca.pem, ca_key.pem, bundle.pem). Exit 0; 78 for
    /// a bad trust domain; 1 when a CA is already there or it cannot be written.
    Init(DevCaInit),
    /// Issue an X.509-SVID for SPIFFE_ID from the CA in DIR. Exit 0; 78 for bad arguments; 1
    /// when it cannot be done (no CA, an SVID already there without --force).
    Issue(DevCaIssue),
}

#[derive(Debug, Args)]
pub(crate) struct DevCaInit {
    /// The folder to create the CA in.
    pub(crate) dir: PathBuf,
    /// The trust domain the CA signs for, such as `example.org`.
    #[arg(long)]
    pub(crate) trust_domain: String,
}

#[derive(Debug, Args)]
pub(crate) struct DevCaIssue {
    /// The folder holding the CA (from `dev-ca init`).
    pub(crate) dir: PathBuf,
    /// The SPIFFE ID to issue, such as `spiffe://example.org/ns/prod/sa/api`.
    pub(crate) spiffe_id: String,
    /// Where to write svid.pem, svid_key.pem and bundle.pem (default: `DIR/<last path segment>`).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// How long the SVID is valid, such as `24h` or `30m` (default 24h).
    #[arg(long, default_value = "24h")]
    pub(crate) ttl: String,
    /// A DNS name to add as a subject alternative name (repeatable), such as `localhost`, so
    /// clients that check host names (curl, browsers) can verify the sidecar by it.
    #[arg(long = "dns", value_name = "NAME")]
    pub(crate) dns: Vec<String>,
    /// Replace an SVID already in the output folder (without it, `issue` refuses, exit 1).
    #[arg(long)]
    pub(crate) force: bool,
}
