//! Reading a policy folder: `schema.cedarschema` (required), `entities.json` (optional),
//! `*.cedar` (sorted by name) and `revocations.yaml` (optional), plus the digest of exactly what
//! was read.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::PolicyError;

/// The schema file's name.
pub(crate) const SCHEMA_FILE: &str = "schema.cedarschema";

/// The entities file's name.
pub(crate) const ENTITIES_FILE: &str = "entities.json";

/// The revocations file's name. Absent: nothing is revoked.
pub(crate) const REVOCATIONS_FILE: &str = "revocations.yaml";

/// Everything read from one policy folder.
#[derive(Debug)]
pub(crate) struct Sources {
    pub(crate) schema: SourceFile,
    pub(crate) entities: Option<SourceFile>,
    pub(crate) policies: Vec<SourceFile>,
    pub(crate) revocations: Option<SourceFile>,
    /// SHA-256, hex, over every file above (name, length, contents), schema first.
    pub(crate) digest: String,
}

/// One file and its text.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

// === impl Sources ===

impl Sources {
    /// Reads the folder. Names starting with `.` are skipped: editors' lock and swap files, and
    /// Kubernetes' `..data` links (the files themselves are links into it and are followed).
    pub(crate) fn read(dir: &Path) -> Result<Self, PolicyError> {
        let mut cedar_names = Vec::new();
        let mut has_entities = false;
        let mut has_revocations = false;
        for entry in fs::read_dir(dir).map_err(|e| PolicyError::io(dir, e))? {
            let entry = entry.map_err(|e| PolicyError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if name == ENTITIES_FILE {
                has_entities = true;
            } else if name == REVOCATIONS_FILE {
                has_revocations = true;
            } else if name.ends_with(".cedar") {
                cedar_names.push(name);
            }
        }
        cedar_names.sort();

        let schema_path = dir.join(SCHEMA_FILE);
        if !schema_path.exists() {
            return Err(PolicyError::MissingSchema { path: schema_path });
        }
        let schema = SourceFile::read(schema_path)?;
        let optional = |present: bool, name: &str| match present {
            true => SourceFile::read(dir.join(name)).map(Some),
            false => Ok(None),
        };
        let entities = optional(has_entities, ENTITIES_FILE)?;
        let policies = cedar_names
            .into_iter()
            .map(|name| SourceFile::read(dir.join(name)))
            .collect::<Result<Vec<_>, _>>()?;
        // Listed but unreadable (a dangling link, a folder) is an error, never "no revocations".
        let revocations = optional(has_revocations, REVOCATIONS_FILE)?;

        let mut hasher = Sha256::new();
        let files = std::iter::once(&schema)
            .chain(&entities)
            .chain(&policies)
            .chain(&revocations);
        for file in files {
            let name = file.path.file_name().unwrap_or_default().to_string_lossy();
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update((file.text.len() as u64).to_be_bytes());
            hasher.update(file.text.as_bytes());
        }
        let digest = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            schema,
            entities,
            policies,
            revocations,
            digest,
        })
    }
}

// === impl SourceFile ===

impl SourceFile {
    fn read(path: PathBuf) -> Result<Self, PolicyError> {
        let text = fs::read_to_string(&path).map_err(|e| PolicyError::io(&path, e))?;
        Ok(Self { path, text })
    }

    /// The file name without `.cedar`: the prefix of fallback policy ids.
    pub(crate) fn stem(&self) -> String {
        self.path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }
}
