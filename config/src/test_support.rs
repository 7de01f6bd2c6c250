//! Test fixtures: a folder holding every file a config may reference, and YAML snippets.

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use crate::check::{Check, Env};
use crate::{Config, ConfigError, from_yaml_with};

/// A files identity whose referenced files exist in every [`Fixture`].
pub(crate) const IDENTITY: &str = "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: bundle.pem }\n";

/// The smallest outbound section.
pub(crate) const OUTBOUND: &str = "outbound:\n  listen: 127.0.0.1:15001\n";

/// The smallest valid config: [`IDENTITY`] + [`OUTBOUND`].
pub(crate) const MINIMAL: &str = "identity:\n  svid: { cert: svid.pem, key: svid_key.pem }\n  bundles: { example.org: bundle.pem }\noutbound:\n  listen: 127.0.0.1:15001\n";

/// A temporary folder with `svid.pem`, `svid_key.pem`, `bundle.pem`, `sub/other.pem`,
/// `idp-jwks.json` and `policies/`.
pub(crate) struct Fixture {
    dir: TempDir,
    /// The environment the config sees: none of the process's, unless a test sets some.
    env: Vec<(String, String)>,
}

impl Fixture {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "svid.pem",
            "svid_key.pem",
            "bundle.pem",
            "sub/other.pem",
            "idp-jwks.json",
        ] {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "placeholder").unwrap();
        }
        fs::create_dir(dir.path().join("policies")).unwrap();
        Self {
            dir,
            env: Vec::new(),
        }
    }

    /// The same folder, with `name=value` in the environment the config sees.
    pub(crate) fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    fn parse(&self, yaml: &str) -> Result<Config, ConfigError> {
        let check = Check::with_env(self.dir().to_owned(), Env::Fixed(self.env.clone()));
        from_yaml_with(yaml, check)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Loads `yaml` with this folder as base, panicking with every problem if it is invalid.
    pub(crate) fn load(&self, yaml: &str) -> Config {
        match self.parse(yaml) {
            Ok(config) => config,
            Err(e) => panic!("{e}\n--- yaml ---\n{yaml}"),
        }
    }

    /// The problems in `yaml`, displayed (`path: message`); panics if it is valid.
    pub(crate) fn errors(&self, yaml: &str) -> Vec<String> {
        match self.parse(yaml) {
            Ok(config) => panic!("expected problems, got {config:?}\n--- yaml ---\n{yaml}"),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }
}

#[test]
fn minimal_is_identity_then_outbound() {
    assert_eq!(MINIMAL, format!("{IDENTITY}{OUTBOUND}"));
}
