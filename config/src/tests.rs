//! Whole-file tests: an annotated example config, defaults, path resolution and problems across
//! sections. Each section's own rules are tested in its file.

use std::fs;
use std::time::Duration;

use crate::test_support::{Fixture, IDENTITY, MINIMAL, OUTBOUND};
use crate::{ConfigError, IdentitySource, InboundMode, LogFormat, OtlpProtocol, load};

/// A compact annotated config covering the main sections, with `workload_api` commented out. Each
/// key is documented in docs/configuration.md.
const ANNOTATED_EXAMPLE: &str = r#"
identity:
  svid: { cert: svid.pem, key: svid_key.pem }     # files: chain PEM leaf first, PKCS#8 key; reloaded on change
  bundles: { example.org: bundle.pem }            # trust domain → CA bundle PEM; several = federation
  # workload_api: { socket: unix:///run/spire/sockets/agent.sock }   # instead of svid/bundles
inbound:
  listen: 0.0.0.0:15006
  app: 127.0.0.1:8080                 # the local workload
  mode: enforce                       # enforce | audit (log would-deny, allow)
  require_token: false                # true: a call without a hop token is 401
  allowed_trust_domains: [example.org]  # default: those in identity.bundles
outbound:
  listen: 127.0.0.1:15001             # explicit: app sends to this address (or uses it as HTTP proxy)
  transparent: false                  # true: iptables REDIRECT; destination from SO_ORIGINAL_DST
  routes:
    - host: inference.ml              # matched against :authority / Host (port optional)
      original_dst: 10.0.0.5:8080     # matched in transparent mode (optional)
      address: 127.0.0.1:16006        # the destination sidecar's inbound listener
      identity: spiffe://example.org/ns/ml/sa/inference   # the server SVID must carry exactly this
      scopes: [inference.generate]    # the most a token for this destination may carry
policy:
  dir: policies/                      # *.cedar, schema.cedarschema, optional entities.json; reloaded on change
  outbound: true                      # also check egress on the caller's side
intent:
  header_prefix: intent-              # intent-action, intent-purpose, ... → context.intent.*
  default_action: call                # Cedar action when no intent-action header
token:
  header: hop-token
  ttl: 60s                            # capped at the SVID's notAfter
  max_depth: 8                        # actors in the chain
  leeway: 5s
  origin:                             # who may start a chain on behalf of an end user
    issuers:
      - { issuer: https://idp.example, jwks_file: idp-jwks.json, audience: agents }
telemetry:
  service_name: inference-sidecar
  log_format: json                    # json | text
  otlp: { endpoint: http://127.0.0.1:4317, protocol: grpc }   # grpc | http; absent = no export
admin:
  listen: 127.0.0.1:15000
"#;

#[test]
fn the_design_example_loads_with_every_value_as_written() {
    let fx = Fixture::new();
    let config = fx.load(ANNOTATED_EXAMPLE);

    let IdentitySource::Files(files) = config.identity().source() else {
        panic!("expected files");
    };
    assert_eq!(files.cert(), fx.dir().join("svid.pem"));
    assert_eq!(files.key(), fx.dir().join("svid_key.pem"));
    assert_eq!(config.identity().trust_domains()[0].as_str(), "example.org");

    let inbound = config.inbound().unwrap();
    assert_eq!(inbound.listen(), "0.0.0.0:15006".parse().unwrap());
    assert_eq!(inbound.app().to_string(), "127.0.0.1:8080");
    assert_eq!(inbound.mode(), InboundMode::Enforce);
    assert!(!inbound.require_token());
    assert_eq!(
        inbound.allowed_trust_domains(),
        config.identity().trust_domains()
    );

    let outbound = config.outbound().unwrap();
    assert_eq!(outbound.listen(), "127.0.0.1:15001".parse().unwrap());
    assert!(!outbound.transparent());
    let route = &outbound.routes()[0];
    assert_eq!(route.host(), "inference.ml");
    assert_eq!(route.original_dst().unwrap().to_string(), "10.0.0.5:8080");
    assert_eq!(route.address().to_string(), "127.0.0.1:16006");
    assert_eq!(route.identity().path(), "/ns/ml/sa/inference");
    assert_eq!(route.scopes(), ["inference.generate"]);

    let policy = config.policy().unwrap();
    assert_eq!(policy.dir(), fx.dir().join("policies/"));
    assert!(policy.outbound());
    assert_eq!(config.intent().header_prefix(), "intent-");
    assert_eq!(config.intent().default_action(), "call");

    let token = config.token();
    assert_eq!(token.header(), "hop-token");
    assert_eq!(token.ttl(), Duration::from_secs(60));
    assert_eq!(token.max_depth(), 8);
    assert_eq!(token.leeway(), Duration::from_secs(5));
    assert_eq!(
        token.origin_issuers()[0].jwks_file(),
        fx.dir().join("idp-jwks.json")
    );

    let telemetry = config.telemetry();
    assert_eq!(telemetry.service_name(), "inference-sidecar");
    assert_eq!(telemetry.log_format(), LogFormat::Json);
    assert_eq!(telemetry.otlp().unwrap().protocol(), OtlpProtocol::Grpc);
    assert_eq!(config.admin().listen(), "127.0.0.1:15000".parse().unwrap());
    assert_eq!(config.shutdown_grace(), Duration::from_secs(30));
}

#[test]
fn a_minimal_config_gets_every_default() {
    let config = Fixture::new().load(MINIMAL);
    assert!(config.inbound().is_none());
    assert!(config.policy().is_none());
    assert_eq!(config.intent().header_prefix(), "intent-");
    assert_eq!(config.token().ttl(), Duration::from_secs(60));
    assert_eq!(config.telemetry().service_name(), "hopgate");
    assert_eq!(config.admin().listen(), "127.0.0.1:15000".parse().unwrap());
    assert_eq!(config.shutdown_grace(), Duration::from_secs(30));
}

#[test]
fn unknown_keys_in_two_sections_are_all_reported() {
    let errors = Fixture::new().errors(&format!(
        "{IDENTITY}inbound:\n  lisen: 0.0.0.0:15006\n  listen: 0.0.0.0:15006\n  app: 127.0.0.1:8080\ntoken:\n  ttl: 60s\n  tll: 5s\nadmn: {{}}\n"
    ));
    assert_eq!(
        errors,
        [
            "inbound.lisen: unknown key; expected one of `listen`, `app`, `mode`, `require_token`, `allowed_trust_domains`, `timeouts`, `limits` or `streams`",
            "token.tll: unknown key; expected one of `header`, `ttl`, `max_ttl`, `max_depth`, `leeway`, `relay_cache` or `origin`",
            "admn: unknown key; expected one of `identity`, `inbound`, `outbound`, `policy`, `intent`, `mcp`, `token`, `telemetry`, `admin` or `shutdown_grace`",
        ]
    );
}

#[test]
fn problems_of_every_kind_across_sections_are_reported_together() {
    let fx = Fixture::new();
    let errors = fx.errors(
        "identity:\n  svid: { cert: svid.pem, key: missing.pem }\n  bundles: { example.org: bundle.pem }\n\
         inbound:\n  listen: '0.0.0.0:99999'\n  app: 127.0.0.1:8080\n  require_token: maybe\n\
         outbound:\n  listen: 127.0.0.1:15001\n  routes:\n    - { host: a, address: 127.0.0.1:1, identity: 'spiffe://Example.org/a' }\n\
         token: { ttl: 60 }\nshutdown_grace: 2h\n"
    );
    let dir = fx.dir().display();
    assert_eq!(
        errors,
        [
            "inbound.require_token: expected `true` or `false`, found the string `maybe`".to_owned(),
            format!("identity.svid.key: cannot read `{dir}/missing.pem`: No such file or directory (os error 2)"),
            "inbound.listen: `0.0.0.0:99999` is not a socket address; expected `ip:port`".to_owned(),
            "outbound.routes[0].identity: `spiffe://Example.org/a` is not a SPIFFE ID: trust domain character `E` is not allowed; only lowercase letters, digits, `.`, `-` and `_` are".to_owned(),
            "token.ttl: `60` has no unit; expected a whole number followed by `ms`, `s`, `m` or `h`, such as `500ms` or `60s`".to_owned(),
            "shutdown_grace: `2h` is too long; the most allowed is `1h`".to_owned(),
        ]
    );
}

#[test]
fn a_section_of_the_wrong_type_is_reported_once() {
    let errors = Fixture::new().errors(&format!("{IDENTITY}inbound: [0.0.0.0:15006]\n"));
    assert_eq!(errors, ["inbound: expected a map, found a list"]);
    let errors = Fixture::new().errors("identity: files\noutbound: { listen: 127.0.0.1:1 }\n");
    assert_eq!(
        errors,
        ["identity: expected a map, found the string `files`"]
    );
}

#[test]
fn a_listener_section_is_required() {
    let errors = Fixture::new().errors(IDENTITY);
    assert_eq!(
        errors,
        ["inbound: at least one of `inbound` and `outbound` is required"]
    );
    let errors = Fixture::new().errors("");
    assert_eq!(
        errors,
        [
            "identity: is required",
            "inbound: at least one of `inbound` and `outbound` is required",
        ]
    );
}

#[test]
fn two_listeners_on_one_address_are_refused_naming_both() {
    let yaml = format!(
        "{IDENTITY}inbound:\n  listen: 127.0.0.1:15006\n  app: 127.0.0.1:8080\n\
         outbound:\n  listen: 127.0.0.1:15006\nadmin:\n  listen: 0.0.0.0:15006\n"
    );
    let errors = Fixture::new().errors(&yaml);
    assert_eq!(
        errors,
        [
            "outbound.listen: `127.0.0.1:15006` clashes with `inbound.listen` \
             (`127.0.0.1:15006`): each listener needs a port of its own",
            "admin.listen: `0.0.0.0:15006` clashes with `inbound.listen` \
             (`127.0.0.1:15006`): each listener needs a port of its own",
        ]
    );
}

#[test]
fn listeners_on_port_zero_or_on_other_ports_do_not_clash() {
    let fx = Fixture::new();
    fx.load(&format!(
        "{IDENTITY}inbound:\n  listen: 127.0.0.1:0\n  app: 127.0.0.1:8080\n\
         outbound:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\n"
    ));
    fx.load(&format!(
        "{IDENTITY}inbound:\n  listen: 127.0.0.1:15006\n  app: 127.0.0.1:8080\n\
         outbound:\n  listen: 0.0.0.0:15001\nadmin:\n  listen: 127.0.0.2:15006\n"
    ));
}

#[test]
fn shutdown_grace_may_be_zero() {
    let config = Fixture::new().load(&format!("{MINIMAL}shutdown_grace: 0s\n"));
    assert_eq!(config.shutdown_grace(), Duration::ZERO);
    let config = Fixture::new().load(&format!("{MINIMAL}shutdown_grace: 1500ms\n"));
    assert_eq!(config.shutdown_grace(), Duration::from_millis(1500));
}

#[test]
fn load_resolves_relative_paths_against_the_config_files_folder() {
    let fx = Fixture::new();
    let nested = fx.dir().join("etc");
    fs::create_dir(&nested).unwrap();
    let file = nested.join("hopgate.yaml");
    fs::write(
        &file,
        format!("identity:\n  svid: {{ cert: ../svid.pem, key: ../svid_key.pem }}\n  bundles: {{ example.org: ../bundle.pem }}\n{OUTBOUND}policy: {{ dir: ../policies }}\n"),
    )
    .unwrap();
    let config = load(&file).unwrap();
    let IdentitySource::Files(files) = config.identity().source() else {
        panic!("expected files");
    };
    assert_eq!(files.cert(), nested.join("../svid.pem"));
    assert!(files.cert().is_absolute());
    assert_eq!(config.policy().unwrap().dir(), nested.join("../policies"));

    // The same text read from the fixture folder itself misses every file by one level.
    let errors = crate::from_yaml(&fs::read_to_string(&file).unwrap(), &nested.join("deeper"));
    assert_eq!(errors.unwrap_err().errors().len(), 4);
}

#[test]
fn load_reports_a_missing_file_as_a_read_error() {
    let fx = Fixture::new();
    let missing = fx.dir().join("nope.yaml");
    let err = load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.errors().is_empty());
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read config file `{}`: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn load_reports_problems_with_their_paths() {
    let fx = Fixture::new();
    let file = fx.dir().join("hopgate.yaml");
    fs::write(
        &file,
        format!("{IDENTITY}outbound: {{ listen: nowhere }}\n"),
    )
    .unwrap();
    let err = load(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: outbound.listen: `nowhere` is not a socket address; expected `ip:port`"
    );
}

#[test]
fn configs_and_errors_are_clone_and_debug() {
    let config = Fixture::new().load(MINIMAL);
    let copy = config.clone();
    assert_eq!(format!("{config:?}"), format!("{copy:?}"));
    let err = Fixture::new().errors("x: 1\n");
    assert!(err[0].starts_with("x: unknown key"));
}
