//! `hopgate dev-ca`: a development CA and X.509-SVIDs, for trying hopgate without SPIRE.
//!
//! ```text
//! dev-ca init DIR --trust-domain TD    DIR/ca.pem  ca_key.pem (0600)  bundle.pem (= ca.pem)  trust_domain
//! dev-ca issue DIR spiffe://TD/a/b [--dns NAME]... [--force]
//!                                      DIR/b/svid.pem (leaf)  svid_key.pem (PKCS#8, 0600)  bundle.pem
//! ```
//!
//! The certificates follow the X.509-SVID profile of docs/security.md ("Inbound: the SVID on
//! the handshake") so that hopgate's strict verifier accepts them:
//! - CA: `cA=true` with `pathLen=0` (it signs leaves only), critical key usage
//!   `keyCertSign` + `cRLSign`, URI SAN `spiffe://<td>` without a path.
//! - Leaf: `cA=false`, exactly one URI SAN (the SPIFFE ID, non-root path) plus any `--dns`
//!   names, critical key usage `digitalSignature` only, EKU `serverAuth` + `clientAuth`.
//!
//! Keys are ECDSA P-256. Nothing here is meant for production: the CA key lies on disk unencrypted.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hopgate_config::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// The CA certificate file in a dev CA folder.
const CA_CERT: &str = "ca.pem";
/// The CA private key file (PKCS#8 PEM, mode 0600).
const CA_KEY: &str = "ca_key.pem";
/// The trust bundle: the CA certificate again, under the name the config expects.
const BUNDLE: &str = "bundle.pem";
/// A one-line text file naming the CA's trust domain.
const TRUST_DOMAIN: &str = "trust_domain";
/// The SVID chain file, leaf first.
const SVID_CERT: &str = "svid.pem";
/// The SVID private key file (PKCS#8 PEM, mode 0600).
const SVID_KEY: &str = "svid_key.pem";

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The longest SVID lifetime `issue` accepts.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);
/// How far `notBefore` is backdated, so that a peer whose clock runs slightly behind accepts
/// a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(60);

/// The files `init` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaFiles {
    /// The CA certificate.
    pub(crate) ca_cert: PathBuf,
    /// The CA private key (mode 0600).
    pub(crate) ca_key: PathBuf,
    /// The trust bundle for `identity.bundles` (the CA certificate).
    pub(crate) bundle: PathBuf,
    /// The file naming the trust domain.
    pub(crate) trust_domain: PathBuf,
}

/// The files `issue` wrote, and when the SVID expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SvidFiles {
    /// The SVID chain, leaf first, for `identity.svid.cert`.
    pub(crate) svid: PathBuf,
    /// The SVID private key, PKCS#8 (mode 0600), for `identity.svid.key`.
    pub(crate) key: PathBuf,
    /// The trust bundle, for `identity.bundles`.
    pub(crate) bundle: PathBuf,
    /// The SVID's `notAfter`.
    pub(crate) not_after: OffsetDateTime,
}

// === impl CaFiles, SvidFiles ===

impl fmt::Display for CaFiles {
    /// One line per file, for the command's output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "CA certificate  {}", self.ca_cert.display())?;
        writeln!(f, "CA key          {}", self.ca_key.display())?;
        writeln!(f, "trust bundle    {}", self.bundle.display())?;
        write!(f, "trust domain    {}", self.trust_domain.display())
    }
}

impl fmt::Display for SvidFiles {
    /// One line per file and the expiry in RFC 3339 UTC, for the command's output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "SVID chain      {}", self.svid.display())?;
        writeln!(f, "SVID key        {}", self.key.display())?;
        writeln!(f, "trust bundle    {}", self.bundle.display())?;
        let t = self.not_after.to_offset(time::UtcOffset::UTC);
        write!(
            f,
            "expires         {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

// === argument parsing ===

/// Parses a `--ttl` such as `90s`, `30m`, `24h` or `7d`: a whole number followed by one unit.
///
/// # Errors
/// [`DevCaError::BadTtl`] when the shape is wrong, the value is zero or it exceeds 90 days.
pub(crate) fn parse_ttl(input: &str) -> Result<Duration, DevCaError> {
    let bad = |reason| DevCaError::BadTtl {
        input: input.to_owned(),
        reason,
    };
    let (digits, unit) = input
        .char_indices()
        .last()
        .and_then(|(i, _)| input.split_at_checked(i))
        .ok_or_else(|| bad("is empty"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err(bad("must end in a unit: `s`, `m`, `h` or `d`")),
    };
    // u64::from_str would also take a leading `+`; only plain digits are a duration here.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            "must be a whole number followed by a unit, such as `24h`",
        ));
    }
    let ttl = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .map(Duration::from_secs)
        .ok_or_else(|| bad("is longer than 90 days"))?;
    check_ttl(ttl).map_err(bad)?;
    Ok(ttl)
}

fn check_ttl(ttl: Duration) -> Result<(), &'static str> {
    if ttl.is_zero() {
        return Err("must be longer than zero");
    }
    if ttl > MAX_TTL {
        return Err("is longer than 90 days");
    }
    Ok(())
}

/// Checks a `--dns` name: a host name of letters, digits and hyphens in dot-separated labels,
/// as curl and browsers match it against the certificate. No wildcards: a dev SVID names hosts.
///
/// # Errors
/// [`DevCaError::BadDns`] naming what is wrong.
pub(crate) fn parse_dns(input: &str) -> Result<String, DevCaError> {
    let bad = |reason| DevCaError::BadDns {
        input: input.to_owned(),
        reason,
    };
    let name = input
        .strip_suffix('.')
        .unwrap_or(input)
        .to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "only letters, digits, hyphens and dots (no wildcards, no IP addresses)",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label cannot start or end with a hyphen"));
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("an IP address is not a DNS name"));
    }
    Ok(name)
}

// === init ===

/// Creates a CA for `trust_domain` in `dir` (created with its parents if missing).
///
/// # Errors
/// - [`DevCaError::Exists`] when any of the four CA files is already in `dir`; nothing is
///   overwritten.
/// - [`DevCaError::Write`] when the folder or a file cannot be written.
/// - [`DevCaError::Crypto`] when key generation or signing fails.
pub(crate) fn init(dir: &Path, trust_domain: &TrustDomain) -> Result<CaFiles, DevCaError> {
    let files = CaFiles {
        ca_cert: dir.join(CA_CERT),
        ca_key: dir.join(CA_KEY),
        bundle: dir.join(BUNDLE),
        trust_domain: dir.join(TRUST_DOMAIN),
    };
    // Check all four before writing any, so a refusal leaves no half-made CA behind.
    for path in [
        &files.ca_key,
        &files.ca_cert,
        &files.bundle,
        &files.trust_domain,
    ] {
        if path.symlink_metadata().is_ok() {
            return Err(DevCaError::Exists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| DevCaError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let now = OffsetDateTime::now_utc();
    let mut params = ca_params(trust_domain)?;
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key)?.pem();

    // The key first: a CA certificate without its key would be useless.
    write_new(&files.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&files.ca_cert, cert.as_bytes(), 0o644)?;
    write_new(&files.bundle, cert.as_bytes(), 0o644)?;
    write_new(
        &files.trust_domain,
        format!("{trust_domain}\n").as_bytes(),
        0o644,
    )?;
    Ok(files)
}

/// The CA's certificate parameters, without validity or serial.
///
/// `issue` rebuilds the issuer from these and the CA key, so the subject written here must
/// depend on the trust domain only: it becomes the leaf's issuer name, which must equal the CA
/// certificate's subject byte for byte for the chain to build.
fn ca_params(trust_domain: &TrustDomain) -> Result<CertificateParams, DevCaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hopgate dev CA");
    params
        .distinguished_name
        .push(DnType::CommonName, trust_domain.as_str());
    // A signing certificate may carry its trust domain's ID, never with a path (X509-SVID §3.2).
    params.subject_alt_names = vec![SanType::URI(trust_domain.id_string().try_into()?)];
    // pathLen 0: this CA signs leaves only, never an intermediate.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

// === issue ===

/// Issues an X.509-SVID for `id` from the CA in `dir`, valid from a minute ago for `ttl`.
///
/// Writes `svid.pem` (the leaf; the CA signs leaves directly, so the chain has no
/// intermediate), `svid_key.pem` (PKCS#8, mode 0600) and `bundle.pem` into `out`, or by default
/// into `dir/<last path segment of id>`. `dns` names go into the certificate as DNS SANs beside
/// the SPIFFE ID, so a client that checks host names (curl) can verify a sidecar by them.
/// Existing SVID files there are refused unless `force`; then they are replaced, each by an
/// atomic rename, so a running hopgate watching them sees a whole file or the old one.
///
/// # Errors
/// - [`DevCaError::BadTtl`] when `ttl` is zero or longer than 90 days.
/// - [`DevCaError::RootId`] when `id` has no path.
/// - [`DevCaError::NoCa`] when `dir` holds no CA key; [`DevCaError::BadCaFile`] when a CA file
///   does not parse; [`DevCaError::Read`] when one cannot be read.
/// - [`DevCaError::ForeignTrustDomain`] when `id` is not in the CA's trust domain.
/// - [`DevCaError::SvidExists`] when an SVID file is in `out` and `force` is not set.
/// - [`DevCaError::Write`] and [`DevCaError::Crypto`] when writing or signing fails.
pub(crate) fn issue(
    dir: &Path,
    id: &SpiffeId,
    options: &IssueOptions<'_>,
) -> Result<SvidFiles, DevCaError> {
    let IssueOptions {
        out,
        ttl,
        dns,
        force,
    } = *options;
    check_ttl(ttl).map_err(|reason| DevCaError::BadTtl {
        input: format!("{}s", ttl.as_secs()),
        reason,
    })?;
    if id.is_root() {
        return Err(DevCaError::RootId { id: id.clone() });
    }
    let ca = Ca::load(dir)?;
    if id.trust_domain_name() != ca.trust_domain.as_str() {
        return Err(DevCaError::ForeignTrustDomain {
            id: id.clone(),
            ca: ca.trust_domain,
        });
    }

    let out = match out {
        Some(out) => out.to_owned(),
        // INVARIANT: a non-root canonical path ends in a non-empty segment that is neither `.`
        // nor `..`, so joining it stays inside `dir`.
        None => dir.join(id.path().rsplit('/').next().unwrap_or_default()),
    };

    let files = SvidFiles {
        svid: out.join(SVID_CERT),
        key: out.join(SVID_KEY),
        bundle: out.join(BUNDLE),
        not_after: OffsetDateTime::UNIX_EPOCH,
    };
    if !force {
        // Check both before writing either, so a refusal leaves the old pair whole.
        for path in [&files.svid, &files.key] {
            if path.symlink_metadata().is_ok() {
                return Err(DevCaError::SvidExists { path: path.clone() });
            }
        }
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // Whole seconds, as the certificate stores them, so `SvidFiles::not_after` is exact.
    let now = OffsetDateTime::now_utc();
    let now = now - Duration::from_nanos(now.nanosecond().into());
    let not_after = now + ttl;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "hopgate dev SVID");
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    for name in dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.as_str().try_into()?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let issuer = Issuer::new(ca_params(&ca.trust_domain)?, &ca.key);
    let cert = params.signed_by(&key, &issuer)?.pem();

    fs::create_dir_all(&out).map_err(|source| DevCaError::Write {
        path: out.clone(),
        source,
    })?;
    let files = SvidFiles { not_after, ..files };
    // The key before the certificate: a watcher that sees the new certificate finds its key.
    write_replace(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_replace(&files.svid, cert.as_bytes(), 0o644)?;
    write_replace(&files.bundle, ca.cert_pem.as_bytes(), 0o644)?;
    Ok(files)
}

/// How `issue` issues: where to, for how long, with which DNS names, over an existing SVID or
/// not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IssueOptions<'a> {
    /// The folder for the files; `None`: `DIR/<last path segment of the ID>`.
    pub(crate) out: Option<&'a Path>,
    /// How long the SVID is valid.
    pub(crate) ttl: Duration,
    /// DNS SANs besides the SPIFFE ID, each checked by [`parse_dns`].
    pub(crate) dns: &'a [String],
    /// Replace an SVID already in the folder.
    pub(crate) force: bool,
}

/// A CA loaded from its folder.
struct Ca {
    trust_domain: TrustDomain,
    key: KeyPair,
    cert_pem: String,
}

impl Ca {
    fn load(dir: &Path) -> Result<Self, DevCaError> {
        let key_path = dir.join(CA_KEY);
        if !key_path.exists() {
            return Err(DevCaError::NoCa {
                dir: dir.to_owned(),
            });
        }
        let td_path = dir.join(TRUST_DOMAIN);
        let trust_domain =
            TrustDomain::parse(read(&td_path)?.trim()).map_err(|e| DevCaError::BadCaFile {
                path: td_path.clone(),
                reason: format!("trust domain {e}"),
            })?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| DevCaError::BadCaFile {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let cert_path = dir.join(CA_CERT);
        let cert_pem = read(&cert_path)?;
        if !cert_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(DevCaError::BadCaFile {
                path: cert_path,
                reason: "no PEM certificate".to_owned(),
            });
        }
        Ok(Self {
            trust_domain,
            key,
            cert_pem,
        })
    }
}

// === helpers ===

/// A random, positive 128-bit serial number, from aws-lc's CSPRNG.
fn random_serial() -> Result<SerialNumber, DevCaError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| DevCaError::Crypto(rcgen::Error::KeyGenerationUnavailable))?;
    // Clear the sign bit so the DER INTEGER stays positive and 16 bytes long.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn read(path: &Path) -> Result<String, DevCaError> {
    fs::read_to_string(path).map_err(|source| DevCaError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file that must not exist yet (`O_EXCL`), with `mode` on Unix.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCaError> {
    let write_err = |source| DevCaError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, mode);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            DevCaError::Exists {
                path: path.to_owned(),
            }
        } else {
            write_err(source)
        }
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(write_err)
}

/// Replaces a file atomically: writes a fresh temporary sibling with `mode`, then renames it.
fn write_replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), DevCaError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover from an interrupted run may have other permissions; start from nothing.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(DevCaError::Write { path: tmp, source }),
    }
    write_new(&tmp, contents, mode)?;
    fs::rename(&tmp, path).map_err(|source| DevCaError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, mode: u32) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode);
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _mode: u32) {}

mod error;
#[cfg(test)]
mod tests;

pub(crate) use error::DevCaError;
