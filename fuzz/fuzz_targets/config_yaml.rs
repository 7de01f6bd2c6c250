//! Fuzzes the config loader (`hopgate_config::from_yaml`: YAML syntax, the document tree, serde,
//! then every section's validation), which `hopgate check-config` runs on any file it is given:
//! it must return `Ok` or `Err`, never panic, whatever the text, and a refusal lists at least one
//! problem. The base folder holds the files the test fixtures do (`svid.pem`, `svid_key.pem`,
//! `bundle.pem`, `sub/other.pem`, `idp-jwks.json`, `policies/`), so inputs naming them get past
//! the file checks into the cross-section ones. It is `from_yaml` with an empty environment
//! (`from_yaml_with_env(.., |_| None)`: no `$OTEL_*`, no `$SPIFFE_ENDPOINT_SOCKET`), so a finding
//! replays anywhere.
//!
//!   RUSTC_BOOTSTRAP=1 cargo fuzz run config_yaml

#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use hopgate_config::{ConfigError, from_yaml_with_env};
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("hopgate-fuzz-config-{}", std::process::id()));
    for file in [
        "svid.pem",
        "svid_key.pem",
        "bundle.pem",
        "sub/other.pem",
        "idp-jwks.json",
    ] {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("a scratch folder");
        }
        std::fs::write(path, "placeholder").expect("a placeholder file");
    }
    std::fs::create_dir_all(dir.join("policies")).expect("a policy folder");
    dir
});

fuzz_target!(|yaml: &str| {
    match from_yaml_with_env(yaml, &BASE, |_| None) {
        Ok(config) => {
            let _ = (config.identity().trust_domains(), config.token().ttl());
        }
        Err(ConfigError::Invalid(errors)) => {
            assert!(!errors.is_empty(), "a refused config names a problem");
            let _ = ConfigError::Invalid(errors).to_string();
        }
        Err(other) => panic!("from_yaml reads no config file: {other}"),
    }
});
