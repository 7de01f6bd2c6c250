//! Where `./test.sh setup` puts the programs the system tests start (SPIRE, Jaeger):
//! `${CARGO_TARGET_DIR:-target}/tools/`.

use std::path::{Path, PathBuf};

/// `tools/<sub>` under the target directory, a relative `CARGO_TARGET_DIR` taken from the
/// workspace root as cargo does.
pub(crate) fn dir(sub: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let target = if target.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(target)
    } else {
        target
    };
    target.join("tools").join(sub)
}
