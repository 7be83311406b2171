//! What a sidecar or a site rule declares about a script: the partial field set both parse
//! into, the field-by-field merge (defaults ← rule ← sidecar) that remembers where each field
//! came from, and the resolved [`Declaration`] the engine works from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::timestamp::parse_flexible;

/// Cache privacy of a declared script (`"cache_privacy"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Privacy {
    /// Only the visitor's own cache may store it.
    #[default]
    Private,
    /// Shared caches may store it too.
    Public,
}

/// What the ETag is derived from (`"etag"`, contract "Scale-out").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EtagBasis {
    /// The newest time of the sources (the default).
    #[default]
    Time,
    /// The bytes of the script and its `depends_on` files, so machines agree.
    Content,
}

/// Where the session mode finds the visitor's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The session cookie's name.
    pub cookie: String,
    /// The folder holding `sess_<id>` files.
    pub save_path: PathBuf,
    /// Globs on the names of other cookies whose values the ETag covers (a login cookie),
    /// compiled when parsed.
    pub cookies: CookieGlobs,
}

/// Globs on cookie names (`"cookies": ["DW*"]`): a login kept in a cookie beside the session's.
#[derive(Debug, Clone, Default)]
pub struct CookieGlobs {
    patterns: Vec<String>,
    set: globset::GlobSet,
}

impl CookieGlobs {
    /// Compiles the globs; an error names the one that does not parse.
    pub fn new(patterns: Vec<String>) -> Result<CookieGlobs, String> {
        let mut builder = globset::GlobSetBuilder::new();
        for pattern in &patterns {
            builder.add(cookie_glob(pattern)?);
        }
        Ok(CookieGlobs {
            set: builder.build().map_err(|e| e.to_string())?,
            patterns,
        })
    }

    /// Whether a cookie of this name is covered.
    pub fn matches(&self, name: &[u8]) -> bool {
        !self.patterns.is_empty()
            && std::str::from_utf8(name).is_ok_and(|name| self.set.is_match(name))
    }

    /// The globs as written.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl PartialEq for CookieGlobs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl Eq for CookieGlobs {}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie: "PHPSESSID".into(),
            save_path: PathBuf::from("/var/lib/php/sessions"),
            cookies: CookieGlobs::default(),
        }
    }
}

/// A script's resolved declaration: every field has its value, given or default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declaration {
    /// Fixed last-modified time.
    pub last_modified: Option<SystemTime>,
    /// Files and folders whose mtimes count. Relative paths are relative to the script's
    /// folder (a rule's are made absolute from the rules file's folder when it is loaded); they
    /// may hold `{query.NAME}` and `{path_info}`, see [`crate::path_template::expand_dependency`].
    pub depends_on: Vec<PathBuf>,
    /// Ask the script (or `probe_command`) for its last-modified time.
    pub probe: bool,
    /// <0 no-store; 0 revalidate every time; N>0 fresh for N seconds.
    pub cache_seconds: i64,
    /// Private or public.
    pub cache_privacy: Privacy,
    /// gzip/deflate when the client accepts it.
    pub compress: bool,
    /// RSS/Atom feed mode.
    pub feed: bool,
    /// Session-aware ETags.
    pub session: Option<SessionConfig>,
    /// Run as `INTERPRETER SCRIPT`.
    pub interpreter: Option<String>,
    /// `unix:/path` or `HOST:PORT` of a running FastCGI application that serves the script.
    pub upstream: Option<String>,
    /// A command (argv, no shell) run instead of the script as its probe; implies `probe`.
    pub probe_command: Option<Vec<String>>,
    /// How long a probe answer may be reused (zero: never).
    pub probe_ttl: Duration,
    /// Variables added to the script's environment.
    pub env: BTreeMap<String, String>,
    /// What the ETag is derived from.
    pub etag: EtagBasis,
    /// Seconds before 504.
    pub timeout: Option<Duration>,
}

/// What one source (a sidecar, a rule, the rules file's `[defaults]`) declares: every field
/// optional, so that a later source overrides only the fields it names.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredFields {
    /// See [`Declaration::last_modified`].
    #[serde(default, deserialize_with = "de_time")]
    pub last_modified: Option<SystemTime>,
    /// See [`Declaration::depends_on`].
    pub depends_on: Option<Vec<PathBuf>>,
    /// See [`Declaration::probe`].
    pub probe: Option<bool>,
    /// See [`Declaration::cache_seconds`].
    pub cache_seconds: Option<i64>,
    /// See [`Declaration::cache_privacy`].
    pub cache_privacy: Option<Privacy>,
    /// See [`Declaration::compress`].
    pub compress: Option<bool>,
    /// See [`Declaration::feed`].
    pub feed: Option<bool>,
    /// `Some(None)` is an explicit `"session": false`, which overrides a rule's session.
    #[serde(default, deserialize_with = "de_session")]
    pub session: Option<Option<SessionConfig>>,
    /// See [`Declaration::interpreter`].
    pub interpreter: Option<String>,
    /// See [`Declaration::upstream`].
    #[serde(default, deserialize_with = "de_nonempty")]
    pub upstream: Option<String>,
    /// See [`Declaration::probe_command`].
    #[serde(default, deserialize_with = "de_argv")]
    pub probe_command: Option<Vec<String>>,
    /// Whole seconds; see [`Declaration::probe_ttl`].
    pub probe_ttl: Option<u64>,
    /// See [`Declaration::env`].
    #[serde(default, deserialize_with = "de_env")]
    pub env: Option<BTreeMap<String, String>>,
    /// See [`Declaration::etag`].
    pub etag: Option<EtagBasis>,
    /// See [`Declaration::timeout`].
    #[serde(default, deserialize_with = "de_timeout")]
    pub timeout: Option<Duration>,
}

/// A field of a declaration, for provenance (`explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `last_modified`
    LastModified,
    /// `depends_on`
    DependsOn,
    /// `probe`
    Probe,
    /// `cache_seconds`
    CacheSeconds,
    /// `cache_privacy`
    CachePrivacy,
    /// `compress`
    Compress,
    /// `feed`
    Feed,
    /// `session`
    Session,
    /// `interpreter`
    Interpreter,
    /// `upstream`
    Upstream,
    /// `probe_command`
    ProbeCommand,
    /// `probe_ttl`
    ProbeTtl,
    /// `env`
    Env,
    /// `etag`
    Etag,
    /// `timeout`
    Timeout,
}

impl Field {
    /// Every field, in the contract's order.
    pub const ALL: [Field; 15] = [
        Field::LastModified,
        Field::DependsOn,
        Field::Probe,
        Field::CacheSeconds,
        Field::CachePrivacy,
        Field::Compress,
        Field::Feed,
        Field::Session,
        Field::Interpreter,
        Field::Upstream,
        Field::ProbeCommand,
        Field::ProbeTtl,
        Field::Env,
        Field::Etag,
        Field::Timeout,
    ];

    /// The field's name as written in a sidecar or rules file.
    pub fn name(self) -> &'static str {
        match self {
            Field::LastModified => "last_modified",
            Field::DependsOn => "depends_on",
            Field::Probe => "probe",
            Field::CacheSeconds => "cache_seconds",
            Field::CachePrivacy => "cache_privacy",
            Field::Compress => "compress",
            Field::Feed => "feed",
            Field::Session => "session",
            Field::Interpreter => "interpreter",
            Field::Upstream => "upstream",
            Field::ProbeCommand => "probe_command",
            Field::ProbeTtl => "probe_ttl",
            Field::Env => "env",
            Field::Etag => "etag",
            Field::Timeout => "timeout",
        }
    }
}

/// A rule of the site rules file, as `explain` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// 1-based position in the file.
    pub number: usize,
    /// Its `match`, as written.
    pub pattern: String,
    /// The line of its `match`.
    pub line: usize,
}

/// Where one field's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// Nobody set it: the contract's default.
    #[default]
    Default,
    /// The rules file's `[defaults]`.
    RulesDefault,
    /// A rule of the rules file.
    Rule(RuleRef),
    /// The sidecar next to the script.
    Sidecar,
}

/// Where each field of a declaration came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    origins: [Origin; Field::ALL.len()],
}

impl Provenance {
    /// Where `field` came from.
    pub fn of(&self, field: Field) -> &Origin {
        &self.origins[field as usize]
    }

    /// Every field with its origin, in the contract's order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, &Origin)> {
        Field::ALL.into_iter().zip(self.origins.iter())
    }
}

/// A declaration with the provenance of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// The resolved fields.
    pub declaration: Declaration,
    /// Where each came from.
    pub provenance: Provenance,
    /// The rule that applied, if one did.
    pub rule: Option<RuleRef>,
}

impl DeclaredFields {
    /// Overrides, field by field, the fields `over` names; records `origin` for each of them.
    fn overlay(&mut self, over: &DeclaredFields, origin: &Origin, provenance: &mut Provenance) {
        // One line per field: a field added to the struct but not here fails the exhaustive
        // destructuring below at compile time.
        let DeclaredFields {
            last_modified,
            depends_on,
            probe,
            cache_seconds,
            cache_privacy,
            compress,
            feed,
            session,
            interpreter,
            upstream,
            probe_command,
            probe_ttl,
            env,
            etag,
            timeout,
        } = over;
        let mut take = |field: Field, present: bool| {
            if present {
                provenance.origins[field as usize] = origin.clone();
            }
            present
        };
        macro_rules! field {
            ($name:ident, $field:expr) => {
                if take($field, $name.is_some()) {
                    self.$name = $name.clone();
                }
            };
        }
        field!(last_modified, Field::LastModified);
        field!(depends_on, Field::DependsOn);
        field!(probe, Field::Probe);
        field!(cache_seconds, Field::CacheSeconds);
        field!(cache_privacy, Field::CachePrivacy);
        field!(compress, Field::Compress);
        field!(feed, Field::Feed);
        field!(session, Field::Session);
        field!(interpreter, Field::Interpreter);
        field!(upstream, Field::Upstream);
        field!(probe_command, Field::ProbeCommand);
        field!(probe_ttl, Field::ProbeTtl);
        field!(env, Field::Env);
        field!(etag, Field::Etag);
        field!(timeout, Field::Timeout);
    }

    /// Makes relative paths absolute from `folder` (a rule's paths are relative to the rules
    /// file's folder, a sidecar's stay relative to the script's).
    pub fn resolve_paths(&mut self, folder: &Path) {
        if let Some(paths) = &mut self.depends_on {
            for path in paths.iter_mut() {
                *path = folder.join(&*path);
            }
        }
        if let Some(Some(session)) = &mut self.session {
            session.save_path = folder.join(&session.save_path);
        }
    }

    /// The resolved declaration: the fields given, the contract's defaults for the rest.
    pub fn resolve(self) -> Declaration {
        let probe_command = self.probe_command;
        Declaration {
            last_modified: self.last_modified,
            depends_on: self.depends_on.unwrap_or_default(),
            // The contract: `probe_command` implies `probe`.
            probe: self.probe.unwrap_or(false) || probe_command.is_some(),
            cache_seconds: self.cache_seconds.unwrap_or(0),
            cache_privacy: self.cache_privacy.unwrap_or_default(),
            compress: self.compress.unwrap_or(false),
            feed: self.feed.unwrap_or(false),
            session: self.session.flatten(),
            interpreter: self.interpreter,
            upstream: self.upstream,
            probe_command,
            probe_ttl: Duration::from_secs(self.probe_ttl.unwrap_or(0)),
            env: self.env.unwrap_or_default(),
            etag: self.etag.unwrap_or_default(),
            timeout: self.timeout,
        }
    }
}

/// Merges the layers, later ones overriding earlier ones field by field (defaults ← rule ←
/// sidecar), and resolves the result.
pub fn merge<'a>(layers: impl IntoIterator<Item = (&'a DeclaredFields, Origin)>) -> Declared {
    let mut fields = DeclaredFields::default();
    let mut provenance = Provenance::default();
    let mut rule = None;
    for (layer, origin) in layers {
        if let Origin::Rule(r) = &origin {
            rule = Some(r.clone());
        }
        fields.overlay(layer, &origin, &mut provenance);
    }
    Declared {
        declaration: fields.resolve(),
        provenance,
        rule,
    }
}

fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(i64),
        Text(String),
        // A rules file may write the time as a TOML datetime, unquoted.
        Toml(toml::value::Datetime),
    }
    let parsed = match Raw::deserialize(d) {
        Ok(Raw::Seconds(s)) => crate::timestamp::from_unix(s),
        Ok(Raw::Text(t)) => parse_flexible(&t),
        Ok(Raw::Toml(t)) => parse_flexible(&t.to_string()),
        Err(_) => None,
    };
    parsed.map(Some).ok_or_else(|| {
        serde::de::Error::custom(
            "last_modified must be unix seconds, an HTTP-date or an RFC 3339 time after 1970",
        )
    })
}

fn de_session<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<SessionConfig>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Detailed {
        cookie: Option<String>,
        save_path: Option<PathBuf>,
        #[serde(default)]
        cookies: Vec<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Detailed(Detailed),
    }
    let raw = Raw::deserialize(d).map_err(|_| {
        serde::de::Error::custom(
            "session must be true, false or a table of cookie, save_path and cookies",
        )
    })?;
    Ok(Some(match raw {
        Raw::Flag(false) => None,
        Raw::Flag(true) => Some(SessionConfig::default()),
        Raw::Detailed(detail) => {
            let cookies = CookieGlobs::new(detail.cookies).map_err(serde::de::Error::custom)?;
            let default = SessionConfig::default();
            Some(SessionConfig {
                cookie: detail.cookie.unwrap_or(default.cookie),
                save_path: detail.save_path.unwrap_or(default.save_path),
                cookies,
            })
        }
    }))
}

/// A glob on cookie names (`session.cookies`).
pub fn cookie_glob(pattern: &str) -> Result<globset::Glob, String> {
    globset::Glob::new(pattern).map_err(|e| format!("bad cookie glob {pattern:?}: {}", e.kind()))
}

fn de_nonempty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(Some(text))
}

fn de_argv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let argv = Vec::<String>::deserialize(d)?;
    if argv.first().is_none_or(|program| program.is_empty()) {
        return Err(serde::de::Error::custom(
            "probe_command must be a list whose first item names a program",
        ));
    }
    Ok(Some(argv))
}

fn de_env<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let env = BTreeMap::<String, String>::deserialize(d)?;
    // What the OS could not pass, or would pass as another variable.
    for (name, value) in &env {
        if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
            return Err(serde::de::Error::custom(format!(
                "env: {name:?} cannot be an environment variable (empty, `=` or NUL)"
            )));
        }
    }
    Ok(Some(env))
}

fn de_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let seconds = f64::deserialize(d)?;
    parse_timeout_seconds(seconds)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("timeout must be a positive number of seconds"))
}

/// A timeout in seconds as given in a sidecar, flag or environment variable.
pub fn parse_timeout_seconds(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds > 0.0 && seconds < 1e9)
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> DeclaredFields {
        serde_json::from_str(json).unwrap()
    }

    fn rule(n: usize) -> Origin {
        Origin::Rule(RuleRef {
            number: n,
            pattern: "*.php".into(),
            line: 3,
        })
    }

    #[test]
    fn a_sidecar_overrides_the_matching_rule_field_by_field() {
        let defaults = fields(r#"{"cache_seconds": 5, "compress": true}"#);
        let rule_fields =
            fields(r#"{"cache_seconds": 300, "cache_privacy": "public", "depends_on": ["/a"]}"#);
        let sidecar = fields(r#"{"cache_seconds": 60, "session": false}"#);
        let declared = merge([
            (&defaults, Origin::RulesDefault),
            (&rule_fields, rule(2)),
            (&sidecar, Origin::Sidecar),
        ]);
        let d = &declared.declaration;
        assert_eq!(d.cache_seconds, 60);
        assert_eq!(d.cache_privacy, Privacy::Public);
        assert!(d.compress);
        assert_eq!(d.depends_on, vec![PathBuf::from("/a")]);
        let p = &declared.provenance;
        assert_eq!(p.of(Field::CacheSeconds), &Origin::Sidecar);
        assert_eq!(p.of(Field::CachePrivacy), &rule(2));
        assert_eq!(p.of(Field::Compress), &Origin::RulesDefault);
        assert_eq!(p.of(Field::Session), &Origin::Sidecar);
        assert_eq!(p.of(Field::Feed), &Origin::Default);
        assert_eq!(declared.rule.map(|r| r.number), Some(2));
    }

    #[test]
    fn an_explicit_session_false_in_a_sidecar_turns_off_the_rules_session() {
        let rule_fields = fields(r#"{"session": true}"#);
        let sidecar = fields(r#"{"session": false}"#);
        let on = merge([(&rule_fields, rule(1))]);
        assert_eq!(on.declaration.session, Some(SessionConfig::default()));
        let off = merge([(&rule_fields, rule(1)), (&sidecar, Origin::Sidecar)]);
        assert_eq!(off.declaration.session, None);
    }

    #[test]
    fn probe_command_implies_probe() {
        let d = fields(r#"{"probe_command": ["sqlite3", "x.db", "SELECT 1"], "probe_ttl": 5}"#)
            .resolve();
        assert!(d.probe);
        assert_eq!(d.probe_ttl, Duration::from_secs(5));
        assert!(serde_json::from_str::<DeclaredFields>(r#"{"probe_command": []}"#).is_err());
        assert!(
            serde_json::from_str::<DeclaredFields>(r#"{"probe_command": "sqlite3 x"}"#).is_err()
        );
    }

    #[test]
    fn new_fields_parse() {
        let d = fields(
            r#"{"upstream": "unix:/run/php/fpm.sock", "env": {"GITWEB_CONFIG": "/etc/gitweb.conf"},
                "etag": "content", "session": {"cookie": "DokuWiki", "cookies": ["DW*"]}}"#,
        )
        .resolve();
        assert_eq!(d.upstream.as_deref(), Some("unix:/run/php/fpm.sock"));
        assert_eq!(d.env["GITWEB_CONFIG"], "/etc/gitweb.conf");
        assert_eq!(d.etag, EtagBasis::Content);
        let session = d.session.unwrap();
        assert_eq!(
            (session.cookie.as_str(), session.cookies.patterns()),
            ("DokuWiki", &["DW*".to_string()][..])
        );
        for bad in [
            r#"{"etag": "inode"}"#,
            r#"{"upstream": ""}"#,
            r#"{"session": {"cookies": ["a[b"]}}"#,
            r#"{"session": {"cooky": "x"}}"#,
            r#"{"env": {"A": 1}}"#,
            r#"{"env": {"A=B": "1"}}"#,
            r#"{"env": {"": "1"}}"#,
        ] {
            assert!(
                serde_json::from_str::<DeclaredFields>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rules_relative_paths_resolve_from_its_folder() {
        let mut f =
            fields(r#"{"depends_on": ["data/", "/abs"], "session": {"save_path": "sess"}}"#);
        f.resolve_paths(Path::new("/etc/site"));
        let d = f.resolve();
        assert_eq!(
            d.depends_on,
            vec![PathBuf::from("/etc/site/data/"), PathBuf::from("/abs")]
        );
        assert_eq!(
            d.session.unwrap().save_path,
            PathBuf::from("/etc/site/sess")
        );
    }
}
