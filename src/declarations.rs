//! The one place the engine asks "what is declared for this script?": the site rules file
//! (loaded once, swapped whole on SIGHUP) and the sidecar next to the script (read per
//! request, or kept while its stat is unchanged: [`Declarations::cached`]), merged field by
//! field (rules `[defaults]` ← the matching rule ← the sidecar).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use crate::declaration::{Declared, DeclaredFields, Origin, merge};
use crate::declaration_cache::{DeclarationCache, Inputs};
use crate::failure::Failure;
use crate::file_stamp::FileStamp;
use crate::request::Request;
use crate::rules::{Rules, RulesError};
use crate::script::Script;
use crate::sidecar;

/// The environment variable naming the rules file in CGI mode (set by the server).
pub const RULES_VARIABLE: &str = "CONDITIONAL_RULES";

/// The declarations a front end serves from: sidecars always, a rules file when one is given.
#[derive(Debug, Default)]
pub struct Declarations {
    rules: Option<LoadedRules>,
    /// Declarations kept between requests (long-running modes).
    cache: Option<DeclarationCache>,
}

#[derive(Debug)]
struct LoadedRules {
    path: PathBuf,
    // Requests clone the Arc and drop the lock at once, so a reload waits for no request.
    current: RwLock<Arc<Rules>>,
}

impl Declarations {
    /// Sidecars only (no `--rules`, no `CONDITIONAL_RULES`).
    pub fn sidecars_only() -> Self {
        Declarations::default()
    }

    /// Sidecars and the rules file at `path`, loaded now (a long-running mode's start-up).
    pub fn with_rules(path: &Path) -> Result<Self, RulesError> {
        let rules = Rules::load(path)?;
        Ok(Declarations {
            rules: Some(LoadedRules {
                path: path.to_path_buf(),
                current: RwLock::new(Arc::new(rules)),
            }),
            cache: None,
        })
    }

    /// These declarations, kept per script between requests while the sidecar's stat, the
    /// script's real path and the rules in use stay the same (a long-running mode; CGI mode
    /// serves one request per process and has nothing to keep).
    pub fn cached(self) -> Self {
        Declarations {
            cache: Some(DeclarationCache::default()),
            ..self
        }
    }

    /// CGI mode: the rules file named by `CONDITIONAL_RULES`, if the request carries it. A file
    /// that cannot be used is a 500 naming it, as a bad sidecar is.
    pub fn for_cgi(request: &Request) -> Result<Self, Failure> {
        match request.var(RULES_VARIABLE) {
            None | Some([]) => Ok(Declarations::sidecars_only()),
            Some(raw) => {
                let path = Path::new(std::ffi::OsStr::from_bytes(raw));
                Declarations::with_rules(path).map_err(|e| bad_rules(path, &e))
            }
        }
    }

    /// Re-reads the rules file (SIGHUP). A file that fails keeps the rules in use and returns
    /// why; without a rules file there is nothing to do. Returns the number of rules now in use.
    pub fn reload(&self) -> Result<usize, RulesError> {
        let Some(loaded) = &self.rules else {
            return Ok(0);
        };
        let fresh = Arc::new(Rules::load(&loaded.path)?);
        let count = fresh.len();
        *loaded
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(count)
    }

    /// The rules in use, if any (for `explain` and logs).
    pub fn rules(&self) -> Option<Arc<Rules>> {
        self.rules.as_ref().map(|loaded| {
            Arc::clone(
                &loaded
                    .current
                    .read()
                    .unwrap_or_else(PoisonError::into_inner),
            )
        })
    }

    /// What is declared for `script`: `None` when neither a rule matches its real path nor a
    /// sidecar sits next to it (a pass-through script). A bad sidecar is a 500 naming it.
    pub fn declared_for(&self, script: &Script) -> Result<Option<Arc<Declared>>, Failure> {
        self.declared_at(script, SystemTime::now())
    }

    /// [`Declarations::declared_for`], with `now` the time a sidecar's stamp must be settled by.
    fn declared_at(
        &self,
        script: &Script,
        now: SystemTime,
    ) -> Result<Option<Arc<Declared>>, Failure> {
        let rules = self.rules();
        let Some(cache) = &self.cache else {
            let sidecar = sidecar::load_fields(&script.path)?;
            return Ok(merged(rules.as_deref(), script, sidecar.as_ref()));
        };
        // One stat says whether what is kept still holds. Anything but a regular file or no
        // file at all is never kept: reading it names the error.
        let stamp = match std::fs::metadata(sidecar::sidecar_path(&script.path)) {
            Ok(meta) if meta.is_file() => Some(Some(FileStamp::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(None),
            _ => None,
        };
        let inputs = stamp.map(|sidecar| Inputs {
            sidecar,
            real_path: script.real_path.clone(),
            rules: rules.clone(),
        });
        if let Some(inputs) = &inputs
            && let Some(kept) = cache.get(&script.path, inputs)
        {
            return Ok(kept);
        }
        let loaded = sidecar::load_stamped(&script.path)?;
        let declared = merged(rules.as_deref(), script, loaded.as_ref().map(|(f, _)| f));
        // Kept only when what was read is what the stat saw (no change in between) and that
        // version is settled (a change within the same clock tick could keep its stamp).
        let read = loaded.map(|(_, stamp)| stamp);
        if let Some(inputs) = inputs
            && inputs.sidecar == read
            && read.is_none_or(|stamp| stamp.settled(now))
        {
            cache.put(&script.path, inputs, declared.clone());
        }
        Ok(declared)
    }
}

/// The rules' match for `script` (if any) with the sidecar's fields over it.
fn merged(
    rules: Option<&Rules>,
    script: &Script,
    sidecar: Option<&DeclaredFields>,
) -> Option<Arc<Declared>> {
    let matched = rules.and_then(|rules| rules.declared_for(&script.real_path));
    if matched.is_none() && sidecar.is_none() {
        return None;
    }
    let mut layers = matched.map(|m| m.layers()).unwrap_or_default();
    if let Some(fields) = sidecar {
        layers.push((fields, Origin::Sidecar));
    }
    Some(Arc::new(merge(layers)))
}

/// The failure for a rules file that cannot be used: its file name and the first problem.
fn bad_rules(path: &Path, error: &RulesError) -> Failure {
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = error
        .problems
        .first()
        .map(|p| match p.position {
            Some((line, column)) => format!("line {line}, column {column}: {}", p.message),
            None => p.message.clone(),
        })
        .unwrap_or_default();
    Failure::BadRules { file, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::Field;

    struct Site {
        dir: PathBuf,
    }

    impl Site {
        fn new(label: &str) -> Site {
            let dir = std::env::temp_dir().join(format!("hc-decl-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Site {
                dir: std::fs::canonicalize(&dir).unwrap(),
            }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        fn script(&self, name: &str) -> Script {
            let path = self.write(name, "#!/bin/sh\n");
            Script::resolve(&path, &[]).unwrap()
        }
    }

    impl Drop for Site {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_sidecar_next_to_a_script_overrides_the_matching_rule() {
        let site = Site::new("merge");
        let rules = site.write(
            "site.toml",
            "[defaults]\ncompress = true\n[[rule]]\nmatch = \"*.cgi\"\ncache_seconds = 300\nfeed = true\n",
        );
        let declarations = Declarations::with_rules(&rules).unwrap();
        let page = site.script("page.cgi");
        site.write("page.cgi.conditional.json", r#"{"cache_seconds": 60}"#);
        let declared = declarations.declared_for(&page).unwrap().unwrap();
        assert_eq!(declared.declaration.cache_seconds, 60);
        assert!(declared.declaration.feed && declared.declaration.compress);
        assert_eq!(
            declared.provenance.of(Field::CacheSeconds),
            &Origin::Sidecar
        );
        assert_eq!(
            declared.provenance.of(Field::Compress),
            &Origin::RulesDefault
        );
        assert_eq!(declared.rule.as_ref().map(|r| r.number), Some(1));

        let plain = site.script("plain.sh");
        assert!(
            declarations.declared_for(&plain).unwrap().is_none(),
            "pass-through"
        );
        site.write("plain.sh.conditional.json", r#"{"probe": true}"#);
        let alone = declarations.declared_for(&plain).unwrap().unwrap();
        assert!(alone.rule.is_none() && alone.declaration.probe);
        assert!(
            !alone.declaration.compress,
            "[defaults] belong to rules, not sidecars"
        );

        site.write("plain.sh.conditional.json", r#"{"prob": true}"#);
        assert!(matches!(
            declarations.declared_for(&plain),
            Err(Failure::BadSidecar { .. })
        ));
    }

    #[test]
    fn a_kept_declaration_is_served_only_while_the_sidecar_and_rules_are_unchanged() {
        let site = Site::new("cache");
        let rules = site.write(
            "site.toml",
            "[[rule]]\nmatch = \"*.cgi\"\ncache_seconds = 1\n",
        );
        let declarations = Declarations::with_rules(&rules).unwrap().cached();
        let page = site.script("page.cgi");
        site.write("page.cgi.conditional.json", r#"{"cache_seconds": 60}"#);
        let later = SystemTime::now() + 2 * crate::file_stamp::SETTLE;
        let at = |now| declarations.declared_at(&page, now).unwrap().unwrap();
        let same = |a: &Arc<Declared>, b: &Arc<Declared>| Arc::ptr_eq(a, b);

        // A sidecar written within the settle window is read again each time.
        let fresh = at(SystemTime::now());
        assert!(
            !same(&fresh, &at(SystemTime::now())),
            "not kept while unsettled"
        );
        let kept = at(later);
        assert!(same(&kept, &at(later)), "kept once settled");
        assert_eq!(kept.declaration.cache_seconds, 60);

        // A changed sidecar has a new stat, which misses.
        site.write("page.cgi.conditional.json", r#"{"cache_seconds": 600}"#);
        assert_eq!(at(later).declaration.cache_seconds, 600);
        // A reload is a new generation of the rules, which misses too.
        let before = at(later);
        declarations.reload().unwrap();
        assert!(
            !same(&before, &at(later)),
            "the reloaded rules are consulted"
        );
        // So does a removed sidecar: the rule alone applies.
        std::fs::remove_file(site.dir.join("page.cgi.conditional.json")).unwrap();
        assert_eq!(at(later).declaration.cache_seconds, 1);
        // And a sidecar that turns bad is an error at once, not a kept answer.
        site.write("page.cgi.conditional.json", r#"{"cache_secondz": 6}"#);
        assert!(matches!(
            declarations.declared_at(&page, later),
            Err(Failure::BadSidecar { .. })
        ));
    }

    #[test]
    fn a_reload_that_fails_keeps_the_old_rules() {
        let site = Site::new("reload");
        let rules = site.write(
            "site.toml",
            "[[rule]]\nmatch = \"*.cgi\"\ncache_seconds = 1\n",
        );
        let declarations = Declarations::with_rules(&rules).unwrap();
        let page = site.script("page.cgi");
        let seconds = |d: &Declarations| {
            d.declared_for(&page)
                .unwrap()
                .map(|d| d.declaration.cache_seconds)
        };
        assert_eq!(seconds(&declarations), Some(1));
        site.write(
            "site.toml",
            "[[rule]]\nmatch = \"*.cgi\"\ncache_seconds = 2\n",
        );
        assert_eq!(declarations.reload().unwrap(), 1);
        assert_eq!(seconds(&declarations), Some(2));
        site.write(
            "site.toml",
            "[[rule]]\nmatch = \"*.cgi\"\ncache_secondz = 3\n",
        );
        let err = declarations.reload().unwrap_err();
        assert!(err.to_string().contains("site.toml:3:1"), "{err}");
        assert_eq!(seconds(&declarations), Some(2), "the old rules stay");
    }

    #[test]
    fn cgi_mode_reads_the_rules_named_by_conditional_rules() {
        let site = Site::new("cgi");
        let rules = site.write("site.toml", "[[rule]]\nmatch = \"*.cgi\"\n");
        let request = |value: &Path| {
            Request::new(vec![(
                RULES_VARIABLE.as_bytes().to_vec(),
                value.as_os_str().as_bytes().to_vec(),
            )])
        };
        let page = site.script("page.cgi");
        let declarations = Declarations::for_cgi(&request(&rules)).unwrap();
        assert!(declarations.declared_for(&page).unwrap().is_some());
        assert!(
            Declarations::for_cgi(&Request::new(vec![]))
                .unwrap()
                .rules()
                .is_none()
        );
        let broken = site.write("broken.toml", "[[rule]]\nmatch = \"[\"\n");
        let failure = Declarations::for_cgi(&request(&broken)).unwrap_err();
        assert_eq!(failure.status(), 500);
        assert!(failure.to_string().contains("broken.toml"), "{failure}");
        assert!(
            failure.to_string().contains("line 2, column 9"),
            "{failure}"
        );
    }
}
