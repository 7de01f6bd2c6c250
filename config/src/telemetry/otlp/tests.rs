//! `telemetry.otlp` and the `OTEL_*` variables: every key, its default, its errors with their
//! paths, and which source wins.

use std::path::Path;

use crate::test_support::{Fixture, MINIMAL};
use crate::{Config, LogFormat, OtlpCompression, OtlpConfig, OtlpProtocol};

fn otlp(config: &Config) -> &OtlpConfig {
    config.telemetry().otlp().expect("export is on")
}

#[test]
fn otlp_protocol_defaults_to_grpc() {
    let fx = Fixture::new();
    let config = fx.load(&format!(
        "{MINIMAL}telemetry:\n  service_name: inference sidecar\n  log_format: text\n  otlp: {{ endpoint: 'http://127.0.0.1:4317' }}\n"
    ));
    let telemetry = config.telemetry();
    assert_eq!(telemetry.service_name(), "inference sidecar");
    assert_eq!(telemetry.log_format(), LogFormat::Text);
    let otlp = telemetry.otlp().unwrap();
    assert_eq!(otlp.endpoint(), "http://127.0.0.1:4317");
    assert_eq!(otlp.protocol(), OtlpProtocol::Grpc);
    let http = fx.load(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4318', protocol: http, tls: {{ ca: bundle.pem }} }} }}\n"
    ));
    assert_eq!(
        http.telemetry().otlp().unwrap().protocol(),
        OtlpProtocol::Http
    );
    assert_eq!(OtlpProtocol::Http.to_string(), "http");
    assert_eq!(LogFormat::Text.to_string(), "text");
}

#[test]
fn closed_sets_and_endpoints_are_checked() {
    let fx = Fixture::new();
    let errors = fx.errors(&format!(
        "{MINIMAL}telemetry:\n  service_name: ''\n  log_format: yaml\n  otlp: {{ endpoint: 'grpc://c:4317', protocol: thrift }}\n"
    ));
    assert_eq!(
        errors,
        [
            "telemetry.log_format: `yaml` is not one of `json` or `text`",
            "telemetry.otlp.protocol: `thrift` is not one of `grpc` or `http`",
            "telemetry.service_name: is empty",
            "telemetry.otlp.endpoint: `grpc://c:4317` must start with `http://` or `https://`",
        ]
    );
    assert_eq!(
        fx.errors(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://' }} }}\n"
        )),
        ["telemetry.otlp.endpoint: `http://` has no host"]
    );
    assert_eq!(
        fx.errors(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ protocol: http }} }}\n"
        )),
        [
            "telemetry.otlp.endpoint: is required (or set $OTEL_EXPORTER_OTLP_ENDPOINT or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
        ]
    );
}

#[test]
fn tls_headers_and_compression_default_to_none() {
    let config = Fixture::new().load(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://127.0.0.1:4318/', protocol: http }} }}\n"
    ));
    let otlp = otlp(&config);
    assert_eq!(otlp.tls(), None);
    assert!(otlp.headers().is_empty());
    assert_eq!(otlp.compression(), OtlpCompression::None);
    assert_eq!(otlp.http_url(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(OtlpCompression::Gzip.to_string(), "gzip");
}

#[test]
fn an_https_endpoint_takes_its_ca_relative_to_the_config_file_and_client_svid_defaults_to_false() {
    let fx = Fixture::new();
    let config = fx.load(&format!(
        "{MINIMAL}telemetry:\n  otlp:\n    endpoint: https://otel-collector:4317\n    tls: {{ ca: sub/other.pem }}\n    compression: gzip\n"
    ));
    let tls = otlp(&config).tls().unwrap();
    assert_eq!(tls.ca(), fx.dir().join("sub/other.pem"));
    assert!(!tls.client_svid());
    assert_eq!(otlp(&config).compression(), OtlpCompression::Gzip);
    let mtls = fx.load(&format!(
        "{MINIMAL}telemetry:\n  otlp:\n    endpoint: https://otel-collector:4318\n    protocol: http\n    tls: {{ ca: bundle.pem, client_svid: true }}\n"
    ));
    assert!(otlp(&mtls).tls().unwrap().client_svid());
}

#[test]
fn an_https_endpoint_without_a_ca_is_an_error_naming_telemetry_otlp_tls_ca() {
    let fx = Fixture::new();
    for yaml in [
        "otlp: { endpoint: 'https://c:4317' }",
        "otlp: { endpoint: 'https://c:4317', tls: { client_svid: true } }",
    ] {
        let errors = fx.errors(&format!("{MINIMAL}telemetry: {{ {yaml} }}\n"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("telemetry.otlp.tls.ca: is required for an `https://` endpoint (or set $OTEL_EXPORTER_OTLP_CERTIFICATE)"),
            "{errors:?}"
        );
    }
}

#[test]
fn tls_on_a_plain_http_endpoint_is_an_error() {
    let errors = Fixture::new().errors(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://c:4317', tls: {{ ca: bundle.pem }} }} }}\n"
    ));
    assert_eq!(
        errors,
        ["telemetry.otlp.tls: is for an `https://` endpoint; `http://c:4317` is plain `http://`"]
    );
}

#[test]
fn an_unreadable_ca_file_and_unknown_tls_keys_are_errors_with_their_paths() {
    let fx = Fixture::new();
    let errors = fx.errors(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4317', tls: {{ ca: absent.pem }} }} }}\n"
    ));
    let absent = fx.dir().join("absent.pem");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "telemetry.otlp.tls.ca: cannot read `{}`",
            absent.display()
        )),
        "{errors:?}"
    );
    let errors = fx.errors(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4317', tls: {{ ca: bundle.pem, cert: x.pem }}, compression: zstd }} }}\n"
    ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("telemetry.otlp.tls.cert: "),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        "telemetry.otlp.compression: `zstd` is not one of `none` or `gzip`"
    );
}

#[test]
fn headers_are_lowercased_in_name_order_and_checked_with_their_path() {
    let fx = Fixture::new();
    let config = fx.load(&format!(
        "{MINIMAL}telemetry:\n  otlp:\n    endpoint: http://c:4317\n    headers: {{ x-tenant: ml, Authorization: 'Bearer s3cr3t' }}\n"
    ));
    assert_eq!(
        otlp(&config).headers(),
        [
            ("authorization".to_owned(), "Bearer s3cr3t".to_owned()),
            ("x-tenant".to_owned(), "ml".to_owned())
        ]
    );
    let errors = fx.errors(&format!(
        "{MINIMAL}telemetry:\n  otlp:\n    endpoint: http://c:4317\n    headers: {{ 'x tenant': a, content-type: b, x-ok: \"line\\nbreak\", X-Dup: c, x-dup: d }}\n"
    ));
    assert_eq!(
        errors,
        [
            "telemetry.otlp.headers.content-type: `content-type` is set by hopgate itself",
            "telemetry.otlp.headers.x tenant: `x tenant` is not a header name",
            "telemetry.otlp.headers.x-dup: repeats `x-dup` (header names ignore case)",
            "telemetry.otlp.headers.x-ok: the value holds a character a header value cannot (a control character or non-ASCII)",
        ]
    );
}

#[test]
fn debug_of_the_config_redacts_header_values() {
    let fx = Fixture::new().with_env("OTEL_EXPORTER_OTLP_HEADERS", "api-key=env-s3cr3t");
    let config = fx.load(&format!(
        "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://c:4317', headers: {{ authorization: 'Bearer file-s3cr3t' }} }} }}\n"
    ));
    let shown = format!("{config:?}");
    assert!(shown.contains("authorization"), "{shown}");
    assert!(shown.contains("api-key"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    let errors = Fixture::new()
        .with_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "s3cr3t-token-pasted-whole,x=%zz-s3cr3t",
        )
        .errors(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://c:4317' }} }}\n"
        ));
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| !e.contains("s3cr3t")), "{errors:?}");
}

#[test]
fn the_endpoint_variables_turn_export_on_without_a_telemetry_section() {
    let fx = Fixture::new().with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317");
    let config = fx.load(MINIMAL);
    assert_eq!(otlp(&config).endpoint(), "http://collector:4317");
    assert_eq!(otlp(&config).protocol(), OtlpProtocol::Grpc);
    let fx = Fixture::new().with_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317");
    let config = fx.load(&format!("{MINIMAL}telemetry: {{ log_format: text }}\n"));
    assert_eq!(otlp(&config).endpoint(), "http://c:4317");
    // Set but empty is unset.
    let fx = Fixture::new().with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "");
    assert!(fx.load(MINIMAL).telemetry().otlp().is_none());
}

#[test]
fn over_http_the_generic_endpoint_gets_v1_traces_and_the_traces_endpoint_is_used_as_is() {
    let generic = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base/")
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .load(MINIMAL);
    assert_eq!(otlp(&generic).protocol(), OtlpProtocol::Http);
    assert_eq!(otlp(&generic).http_url(), "http://c:4318/base/v1/traces");
    let traces = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318")
        .with_env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/custom/spans",
        )
        .with_env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .load(MINIMAL);
    assert_eq!(otlp(&traces).protocol(), OtlpProtocol::Http);
    assert_eq!(otlp(&traces).http_url(), "http://c:4318/custom/spans");
    // The file's endpoint keeps its meaning: `/v1/traces` is appended.
    let file = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:4318/x")
        .load(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'http://file:4318', protocol: http }} }}\n"
        ));
    assert_eq!(otlp(&file).http_url(), "http://file:4318/v1/traces");
}

#[test]
fn the_file_wins_over_every_variable() {
    let fx = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4317")
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .with_env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
        .with_env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=env,x-env=1")
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/absent/ca.pem")
        .with_env("OTEL_SERVICE_NAME", "env-name");
    let config = fx.load(&format!(
        "{MINIMAL}telemetry:\n  service_name: file-name\n  otlp:\n    endpoint: https://file:4317\n    protocol: grpc\n    tls: {{ ca: bundle.pem }}\n    headers: {{ x-tenant: ml }}\n    compression: gzip\n"
    ));
    let otlp = otlp(&config);
    assert_eq!(config.telemetry().service_name(), "file-name");
    assert_eq!(otlp.endpoint(), "https://file:4317");
    assert_eq!(otlp.protocol(), OtlpProtocol::Grpc);
    assert_eq!(otlp.compression(), OtlpCompression::Gzip);
    assert_eq!(otlp.tls().unwrap().ca(), fx.dir().join("bundle.pem"));
    assert_eq!(
        otlp.headers(),
        [
            ("x-env".to_owned(), "1".to_owned()),
            ("x-tenant".to_owned(), "ml".to_owned())
        ]
    );
}

#[test]
fn the_protocol_variables_read_grpc_and_http_protobuf_and_refuse_the_rest_naming_the_variable() {
    let with = |var: &str, value: &str| {
        Fixture::new()
            .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
            .with_env(var, value)
    };
    let grpc = with("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").load(MINIMAL);
    assert_eq!(otlp(&grpc).protocol(), OtlpProtocol::Grpc);
    assert_eq!(
        with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json").errors(MINIMAL),
        [
            "$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: `http/json` is not supported: hopgate exports protobuf; use `http/protobuf` or `grpc`"
        ]
    );
    assert_eq!(
        with("OTEL_EXPORTER_OTLP_PROTOCOL", "http").errors(MINIMAL),
        ["$OTEL_EXPORTER_OTLP_PROTOCOL: `http` is not one of `grpc` or `http/protobuf`"]
    );
    assert_eq!(
        with("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "br").errors(MINIMAL),
        ["$OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: `br` is not one of `none` or `gzip`"]
    );
    let gzip = with("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip").load(MINIMAL);
    assert_eq!(otlp(&gzip).compression(), OtlpCompression::Gzip);
    let traces_first = with("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .with_env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")
        .load(MINIMAL);
    assert_eq!(otlp(&traces_first).compression(), OtlpCompression::None);
    assert_eq!(
        Fixture::new()
            .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")
            .errors(MINIMAL),
        ["$OTEL_EXPORTER_OTLP_ENDPOINT: `collector:4317` must start with `http://` or `https://`"]
    );
}

#[test]
fn the_headers_variables_are_url_decoded_and_merged_per_name_below_the_file() {
    let config = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
        .with_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            " Authorization = Basic%20dXNlcjpwYXNz , x-both=generic,,x-generic=%2C",
        )
        .with_env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-both=traces")
        .load(MINIMAL);
    assert_eq!(
        otlp(&config).headers(),
        [
            ("authorization".to_owned(), "Basic dXNlcjpwYXNz".to_owned()),
            ("x-both".to_owned(), "traces".to_owned()),
            ("x-generic".to_owned(), ",".to_owned()),
        ]
    );
    let errors = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
        .with_env(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "ok=1,=v,bad header=1,c=%0A",
        )
        .errors(MINIMAL);
    assert_eq!(
        errors,
        [
            "$OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 2 has an empty key",
            "$OTEL_EXPORTER_OTLP_TRACES_HEADERS: header `bad header`: `bad header` is not a header name",
            "$OTEL_EXPORTER_OTLP_TRACES_HEADERS: header `c`: the value holds a character a header value cannot (a control character or non-ASCII)",
        ]
    );
}

#[test]
fn the_certificate_variables_fill_tls_ca_for_https_only() {
    let fx = Fixture::new();
    let ca = fx.dir().join("sub/other.pem");
    let https = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/absent/generic.pem")
        .with_env(
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            &ca.display().to_string(),
        )
        .load(MINIMAL);
    assert_eq!(otlp(&https).tls().unwrap().ca(), ca);
    // `tls.client_svid` from the file, the CA from the variable.
    let mtls = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca.display().to_string())
        .load(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4317', tls: {{ client_svid: true }} }} }}\n"
        ));
    assert!(otlp(&mtls).tls().unwrap().client_svid());
    assert_eq!(otlp(&mtls).tls().unwrap().ca(), ca);
    // A plain endpoint has no TLS to use it for.
    let plain = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/absent/ca.pem")
        .load(MINIMAL);
    assert_eq!(otlp(&plain).tls(), None);
    let errors = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")
        .with_env("OTEL_EXPORTER_OTLP_CERTIFICATE", "/absent/ca.pem")
        .errors(MINIMAL);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("$OTEL_EXPORTER_OTLP_CERTIFICATE: cannot read `/absent/ca.pem`"),
        "{errors:?}"
    );
}

#[test]
fn the_client_certificate_variables_are_refused_for_https_as_hopgate_presents_its_svid() {
    let errors = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")
        .errors(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ endpoint: 'https://c:4317', tls: {{ ca: bundle.pem }} }} }}\n"
        ));
    assert_eq!(
        errors,
        [
            "$OTEL_EXPORTER_OTLP_CLIENT_KEY: is not read: hopgate presents its own SVID to the collector with `telemetry.otlp.tls.client_svid: true`; unset it"
        ]
    );
}

#[test]
fn otel_service_name_fills_the_service_name_and_resource_attributes_join_the_resource() {
    let config = Fixture::new()
        .with_env("OTEL_SERVICE_NAME", "from-env")
        .with_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,deployment.environment.name=prod,k8s.pod.name=a%2Cb,service.version=0.0.1,k8s.pod.name=c",
        )
        .load(MINIMAL);
    let telemetry = config.telemetry();
    assert_eq!(telemetry.service_name(), "from-env");
    assert_eq!(
        telemetry.resource_attributes(),
        [
            ("deployment.environment.name".to_owned(), "prod".to_owned()),
            ("k8s.pod.name".to_owned(), "c".to_owned()),
        ]
    );
    let errors = Fixture::new()
        .with_env("OTEL_SERVICE_NAME", "bell\u{7}")
        .errors(MINIMAL);
    assert_eq!(
        errors,
        ["$OTEL_SERVICE_NAME: `bell\\u{7}` holds a control character"]
    );
    let errors = Fixture::new()
        .with_env("OTEL_RESOURCE_ATTRIBUTES", "a=1,b")
        .errors(MINIMAL);
    assert_eq!(
        errors,
        ["$OTEL_RESOURCE_ATTRIBUTES: entry 2 is not `key=value` (entries are separated by `,`)"]
    );
}

#[test]
fn service_name_comes_from_resource_attributes_only_when_neither_the_file_nor_otel_service_name_set_one()
 {
    let fx = Fixture::new().with_env("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr-name");
    assert_eq!(fx.load(MINIMAL).telemetry().service_name(), "attr-name");
    let config = fx.load(&format!("{MINIMAL}telemetry: {{ service_name: file }}\n"));
    assert_eq!(config.telemetry().service_name(), "file");
    assert_eq!(
        Fixture::new()
            .load(MINIMAL)
            .telemetry()
            .resource_attributes(),
        []
    );
}

#[test]
fn an_otlp_section_without_an_endpoint_anywhere_names_the_key_and_both_variables() {
    assert_eq!(
        Fixture::new().errors(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ compression: gzip }} }}\n"
        )),
        [
            "telemetry.otlp.endpoint: is required (or set $OTEL_EXPORTER_OTLP_ENDPOINT or $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
        ]
    );
    // The section's other keys still come from the file when the endpoint comes from the
    // environment.
    let config = Fixture::new()
        .with_env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces",
        )
        .load(&format!(
            "{MINIMAL}telemetry: {{ otlp: {{ protocol: http, compression: gzip }} }}\n"
        ));
    assert_eq!(otlp(&config).http_url(), "http://c:4318/v1/traces");
    assert_eq!(otlp(&config).compression(), OtlpCompression::Gzip);
}

#[test]
fn with_export_off_the_other_export_variables_are_not_read() {
    let config = Fixture::new()
        .with_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .with_env("OTEL_EXPORTER_OTLP_HEADERS", "broken")
        .with_env("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")
        .with_env("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")
        .load(MINIMAL);
    assert!(config.telemetry().otlp().is_none());
    assert_eq!(config.telemetry().log_format(), LogFormat::Json);
}

#[test]
fn load_with_env_reads_the_lookup_it_is_given_and_not_the_process() {
    let fx = Fixture::new();
    let path = fx.dir().join("hopgate.yaml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = crate::load_with_env(&path, |name| {
        (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://lookup:4317".to_owned())
    })
    .unwrap();
    assert_eq!(otlp(&config).endpoint(), "http://lookup:4317");
    let none = crate::from_yaml_with_env(MINIMAL, fx.dir(), |_| None).unwrap();
    assert!(none.telemetry().otlp().is_none());
    assert!(Path::new(fx.dir()).is_absolute());
}
