//! Why a `dev-ca` command failed, and the exit code each failure maps to.

use std::fmt;
use std::io;
use std::path::PathBuf;

use hopgate_config::{SpiffeId, TrustDomain};

/// Why a `dev-ca` command failed.
#[derive(Debug)]
pub(crate) enum DevCaError {
    /// The `--ttl` argument is not a duration such as `24h`, or is out of range.
    BadTtl {
        /// The argument as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ID to issue is in another trust domain than the CA's.
    ForeignTrustDomain {
        /// The requested ID.
        id: SpiffeId,
        /// The CA's trust domain.
        ca: TrustDomain,
    },
    /// The ID to issue has no path; an X.509-SVID leaf needs one (X509-SVID §3.1).
    RootId {
        /// The requested ID.
        id: SpiffeId,
    },
    /// A `--dns` name is not a DNS name an SVID can carry.
    BadDns {
        /// The argument as given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `issue` found an SVID already in place and `--force` was not given.
    SvidExists {
        /// The file that exists.
        path: PathBuf,
    },
    /// `init` found a CA file already in place.
    Exists {
        /// The file that exists.
        path: PathBuf,
    },
    /// `issue` found no CA in the folder.
    NoCa {
        /// The folder given.
        dir: PathBuf,
    },
    /// A CA file exists but does not hold what it should.
    BadCaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file or folder could not be written.
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Key generation or certificate signing failed.
    Crypto(rcgen::Error),
}

// === impl DevCaError ===

impl DevCaError {
    /// The process exit code for this error: 78 (`EX_CONFIG`) when the arguments are wrong,
    /// 1 when the command could not be carried out.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::BadTtl { .. }
            | Self::BadDns { .. }
            | Self::ForeignTrustDomain { .. }
            | Self::RootId { .. } => 78,
            Self::Exists { .. }
            | Self::SvidExists { .. }
            | Self::NoCa { .. }
            | Self::BadCaFile { .. }
            | Self::Read { .. }
            | Self::Write { .. }
            | Self::Crypto(_) => 1,
        }
    }
}

impl fmt::Display for DevCaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadTtl { input, reason } => write!(f, "invalid ttl `{input}`: {reason}"),
            Self::ForeignTrustDomain { id, ca } => write!(
                f,
                "`{id}` is not in the CA's trust domain `{ca}`; this CA issues only `spiffe://{ca}/...`"
            ),
            Self::RootId { id } => write!(
                f,
                "`{id}` has no path; an X.509-SVID needs one, such as `{id}/workload`"
            ),
            Self::BadDns { input, reason } => write!(f, "invalid --dns `{input}`: {reason}"),
            Self::SvidExists { path } => write!(
                f,
                "`{}` already exists; pass --force to replace the SVID there",
                path.display()
            ),
            Self::Exists { path } => write!(
                f,
                "`{}` already exists; refusing to overwrite a dev CA",
                path.display()
            ),
            Self::NoCa { dir } => write!(
                f,
                "no dev CA in `{}`: run `hopgate dev-ca init` first",
                dir.display()
            ),
            Self::BadCaFile { path, reason } => {
                write!(f, "`{}` is not a dev CA file: {reason}", path.display())
            }
            Self::Read { path, source } => {
                write!(f, "cannot read `{}`: {source}", path.display())
            }
            Self::Write { path, source } => {
                write!(f, "cannot write `{}`: {source}", path.display())
            }
            Self::Crypto(e) => write!(f, "cannot generate a key or certificate: {e}"),
        }
    }
}

impl std::error::Error for DevCaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } | Self::Write { source, .. } => Some(source),
            Self::Crypto(e) => Some(e),
            Self::BadTtl { .. }
            | Self::ForeignTrustDomain { .. }
            | Self::RootId { .. }
            | Self::BadDns { .. }
            | Self::SvidExists { .. }
            | Self::Exists { .. }
            | Self::NoCa { .. }
            | Self::BadCaFile { .. } => None,
        }
    }
}

impl From<rcgen::Error> for DevCaError {
    fn from(e: rcgen::Error) -> Self {
        Self::Crypto(e)
    }
}
