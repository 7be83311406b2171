//! What is declared for each script, kept between requests by the long-running modes, so a
//! request costs one `stat` of the sidecar instead of reading and parsing it and matching the
//! rules again.
//!
//! Exact: an entry is used only while the sidecar's [`FileStamp`] (or its absence), the
//! script's real path and the rules in use (the same loaded generation: a SIGHUP reload is a
//! new one) are what they were when it was made; and it is made only from a sidecar whose
//! stamp is settled and whose bytes were read from the file that stamp describes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::declaration::Declared;
use crate::file_stamp::FileStamp;
use crate::rules::Rules;

/// Scripts kept at once; past it the cache starts over (a site with more scripts than this
/// re-reads some sidecars, as every request did before the cache).
const CAPACITY: usize = 4096;

/// What identifies the inputs a declaration was merged from.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The sidecar's stamp; `None` when there is no sidecar.
    pub sidecar: Option<FileStamp>,
    /// The script's real path (rules match on it).
    pub real_path: PathBuf,
    /// The rules generation in use, if any.
    pub rules: Option<Arc<Rules>>,
}

impl PartialEq for Inputs {
    fn eq(&self, other: &Inputs) -> bool {
        let same_rules = match (&self.rules, &other.rules) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_rules && self.sidecar == other.sidecar && self.real_path == other.real_path
    }
}

/// Declarations per script path (the path as named: the sidecar sits next to it).
#[derive(Debug, Default)]
pub struct DeclarationCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

/// A declaration (`None`: a pass-through script) and what it was made from.
#[derive(Debug)]
struct Entry {
    inputs: Inputs,
    declared: Option<Arc<Declared>>,
}

impl DeclarationCache {
    /// The declaration kept for `script` if it was made from exactly `inputs`: `Some(None)`
    /// for a pass-through script, `None` when nothing usable is kept.
    pub fn get(&self, script: &Path, inputs: &Inputs) -> Option<Option<Arc<Declared>>> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(script)?;
        (entry.inputs == *inputs).then(|| entry.declared.clone())
    }

    /// Keeps `declared`, made from `inputs`, for `script`.
    pub fn put(&self, script: &Path, inputs: Inputs, declared: Option<Arc<Declared>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(script) {
            entries.clear();
        }
        entries.insert(script.to_path_buf(), Entry { inputs, declared });
    }
}
