//! `policy` and `intent`: where the Cedar policies live, and how a call's intent headers become
//! the Cedar action and `context.intent`.

use std::path::{Path, PathBuf};

use crate::check::{Check, header_name};
use crate::raw;

/// Cedar policies (`policy`). Without this section hopgate runs identity-only.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    dir: PathBuf,
    outbound: bool,
}

/// How intent headers map to Cedar (`intent`).
#[derive(Clone, Debug)]
pub struct IntentConfig {
    header_prefix: String,
    default_action: String,
}

// === impl PolicyConfig ===

impl PolicyConfig {
    /// The folder of `*.cedar`, `schema.cedarschema` and optional `entities.json`; absolute,
    /// and readable when the config loaded.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether calls are also checked on the caller's side before they leave. Default `false`.
    pub fn outbound(&self) -> bool {
        self.outbound
    }

    pub(crate) fn from_raw(raw: raw::Policy, check: &mut Check) -> Option<Self> {
        let dir = check.dir(raw.dir, "policy.dir")?;
        Some(Self {
            dir,
            outbound: raw.outbound.unwrap_or(false),
        })
    }
}

// === impl IntentConfig ===

impl IntentConfig {
    /// Headers starting with this become `context.intent.*`; `<prefix>action` names the Cedar
    /// action. A lowercase header-name prefix. Default `intent-`.
    pub fn header_prefix(&self) -> &str {
        &self.header_prefix
    }

    /// The Cedar action when a call has no `<prefix>action` header. Default `call`.
    pub fn default_action(&self) -> &str {
        &self.default_action
    }

    pub(crate) fn from_raw(raw: raw::Intent, check: &mut Check) -> Option<Self> {
        let path = "intent.header_prefix";
        let prefix = raw.header_prefix.unwrap_or_else(|| "intent-".to_owned());
        let prefix = match header_name(&prefix) {
            Ok(()) => Some(prefix),
            Err(problem) => {
                check.error(path, problem);
                None
            }
        };
        let action = check.word(raw.default_action, "intent.default_action", "call");
        Some(Self {
            header_prefix: prefix?,
            default_action: action?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{Fixture, MINIMAL};

    #[test]
    fn policy_dir_resolves_against_the_config_folder() {
        let fx = Fixture::new();
        let config = fx.load(&format!("{MINIMAL}policy: {{ dir: policies/ }}\n"));
        let policy = config.policy().unwrap();
        assert_eq!(policy.dir(), fx.dir().join("policies/"));
        assert!(!policy.outbound());
        assert!(
            fx.load(&format!(
                "{MINIMAL}policy: {{ dir: policies, outbound: true }}\n"
            ))
            .policy()
            .unwrap()
            .outbound()
        );
        assert!(fx.load(MINIMAL).policy().is_none());
    }

    #[test]
    fn policy_dir_must_be_a_readable_folder() {
        let fx = Fixture::new();
        let dir = fx.dir().display();
        assert_eq!(
            fx.errors(&format!("{MINIMAL}policy: {{ dir: nope }}\n")),
            [format!(
                "policy.dir: cannot read `{dir}/nope`: No such file or directory (os error 2)"
            )]
        );
        assert_eq!(
            fx.errors(&format!("{MINIMAL}policy: {{ dir: bundle.pem }}\n")),
            [format!(
                "policy.dir: cannot read `{dir}/bundle.pem`: Not a directory (os error 20)"
            )]
        );
        assert_eq!(
            fx.errors(&format!("{MINIMAL}policy: {{ outbound: true }}\n")),
            ["policy.dir: is required"]
        );
    }

    #[test]
    fn intent_defaults_and_checks() {
        let fx = Fixture::new();
        let config = fx.load(MINIMAL);
        assert_eq!(config.intent().header_prefix(), "intent-");
        assert_eq!(config.intent().default_action(), "call");
        let custom = fx.load(&format!(
            "{MINIMAL}intent: {{ header_prefix: x-intent-, default_action: invoke }}\n"
        ));
        assert_eq!(custom.intent().header_prefix(), "x-intent-");
        assert_eq!(custom.intent().default_action(), "invoke");
        assert_eq!(
            fx.errors(&format!(
                "{MINIMAL}intent: {{ header_prefix: Intent-, default_action: 'do it' }}\n"
            )),
            [
                "intent.header_prefix: `Intent-` must be lowercase",
                "intent.default_action: `do it` holds ` `; whitespace and control characters are not allowed",
            ]
        );
    }
}
