//! The site rules file (`--rules FILE`, `CONDITIONAL_RULES`): declarations for many scripts in
//! one TOML file, so a site of many pages, or a packaged app under /usr/share, needs no sidecar
//! beside each script. Loaded and compiled once; asked per request by the script's real path.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::declaration::{DeclaredFields, Origin, RuleRef};
use crate::regular_file;

/// Rules files larger than this are refused: they are hand-written configuration, not data.
pub const MAX_RULES_BYTES: usize = regular_file::LIMIT;

/// A loaded rules file: `[defaults]` and the ordered `[[rule]]`s, their globs compiled once.
#[derive(Debug)]
pub struct Rules {
    file: PathBuf,
    defaults: Option<DeclaredFields>,
    rules: Vec<Rule>,
    globs: GlobSet,
}

#[derive(Debug)]
struct Rule {
    fields: DeclaredFields,
    origin: RuleRef,
}

/// The rule that applies to a script, with the defaults it starts from.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The rules file's `[defaults]`, when it has them.
    pub defaults: Option<&'a DeclaredFields>,
    /// The rule's own fields (paths already absolute).
    pub fields: &'a DeclaredFields,
    /// Which rule it is.
    pub rule: &'a RuleRef,
}

impl<'a> Matched<'a> {
    /// The layers to merge, lowest precedence first: `[defaults]`, then the rule.
    pub fn layers(&self) -> Vec<(&'a DeclaredFields, Origin)> {
        let mut layers = Vec::with_capacity(2);
        if let Some(defaults) = self.defaults {
            layers.push((defaults, Origin::RulesDefault));
        }
        layers.push((self.fields, Origin::Rule(self.rule.clone())));
        layers
    }
}

/// One thing wrong with a rules file or sidecar, at a position when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column, when the problem is at a place in the text.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

/// A rules file that cannot be used, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RulesError {
    /// The rules file as named.
    pub file: PathBuf,
    /// What is wrong, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for RulesError {
    /// `FILE:LINE:COLUMN: message`, one per line, as compilers and `nginx -t` print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some((line, column)) = problem.position {
                write!(f, ":{line}:{column}")?;
            }
            write!(f, ": {}", problem.message)?;
        }
        Ok(())
    }
}

impl Rules {
    /// Reads and compiles a rules file. Paths in it are relative to its folder (real path).
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let fail = |message: String| RulesError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                position: None,
                message,
            }],
        };
        let bytes = regular_file::read(path, MAX_RULES_BYTES).map_err(|e| fail(e.to_string()))?;
        // Relative paths are from the folder of the file's real path (a symlinked rules file
        // means what it means where it lives).
        let real = std::fs::canonicalize(path).map_err(|e| fail(e.to_string()))?;
        let folder = real
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Rules::parse(&bytes, path, &folder)
    }

    /// Compiles a rules file's text; `file` names it in errors, `folder` anchors relative paths.
    pub fn parse(bytes: &[u8], file: &Path, folder: &Path) -> Result<Rules, RulesError> {
        let mut problems = Vec::new();
        let parsed = parse_document(bytes, folder, &mut problems);
        // Tables come out of the parser sorted by name; report in file order.
        problems.sort_by_key(|p| p.position);
        let error = |problems| RulesError {
            file: file.to_path_buf(),
            problems,
        };
        match parsed {
            Some(rules) if problems.is_empty() => Ok(Rules {
                file: file.to_path_buf(),
                ..rules
            }),
            _ => Err(error(problems)),
        }
    }

    /// The first rule, in file order, whose `match` matches the script's real path.
    pub fn declared_for(&self, real_path: &Path) -> Option<Matched<'_>> {
        let first = self.globs.matches(real_path).into_iter().min()?;
        let rule = self.rules.get(first)?;
        Some(Matched {
            defaults: self.defaults.as_ref(),
            fields: &rule.fields,
            rule: &rule.origin,
        })
    }

    /// The file the rules came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many `[[rule]]`s there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (a file of `[defaults]` alone matches nothing).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// Parses the document, pushing every problem found; `None` when nothing usable came out.
fn parse_document(bytes: &[u8], folder: &Path, problems: &mut Vec<Problem>) -> Option<Rules> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            problems.push(Problem {
                position: Some(position(valid, valid.len())),
                message: "not UTF-8 text".into(),
            });
            return None;
        }
    };
    let at = |span: Range<usize>, message: String| Problem {
        position: Some(position(text, span.start)),
        message,
    };
    let (document, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let start = e.span().map_or(0, |s| s.start);
            problems.push(at(
                start..start,
                format!("not TOML: {}", e.message().trim()),
            ));
        }
        return None;
    }
    let mut defaults = None;
    let mut rules = Vec::new();
    let mut globs = GlobSetBuilder::new();
    for (key, value) in document.into_inner() {
        match &**key.get_ref() {
            "defaults" => match fields(value, text) {
                Ok(mut f) => {
                    f.resolve_paths(folder);
                    defaults = Some(f);
                }
                Err(p) => problems.push(p),
            },
            "rule" => {
                let span = value.span();
                let DeValue::Array(items) = value.into_inner() else {
                    problems.push(at(
                        span,
                        "`rule` must be an array of tables: [[rule]]".into(),
                    ));
                    continue;
                };
                for item in items {
                    let number = rules.len() + 1;
                    match rule(item, number, text, folder) {
                        Ok((rule, glob)) => {
                            rules.push(rule);
                            globs.add(glob);
                        }
                        Err(p) => problems.push(p),
                    }
                }
            }
            other => problems.push(at(
                key.span(),
                format!("unknown section `{other}`, expected `defaults` or `rule`"),
            )),
        }
    }
    let globs = match globs.build() {
        Ok(globs) => globs,
        Err(e) => {
            problems.push(Problem {
                position: None,
                message: format!("the globs do not compile together: {e}"),
            });
            return None;
        }
    };
    Some(Rules {
        file: PathBuf::new(),
        defaults,
        rules,
        globs,
    })
}

/// One `[[rule]]`: its `match` compiled to a glob, the rest parsed as declared fields.
fn rule(
    item: Spanned<DeValue<'_>>,
    number: usize,
    text: &str,
    folder: &Path,
) -> Result<(Rule, globset::Glob), Problem> {
    let at = |span: Range<usize>, message: String| Problem {
        position: Some(position(text, span.start)),
        message,
    };
    let span = item.span();
    let DeValue::Table(mut table) = item.into_inner() else {
        return Err(at(span, "a rule must be a table: [[rule]]".into()));
    };
    let Some((_, pattern)) = table.remove_entry("match") else {
        return Err(at(span, format!("rule {number} has no `match`")));
    };
    let pattern_span = pattern.span();
    let Some(written) = pattern.get_ref().as_str().map(str::to_owned) else {
        return Err(at(pattern_span, "`match` must be a string (a glob)".into()));
    };
    let glob = compile_glob(&written, folder).map_err(|e| at(pattern_span.clone(), e))?;
    let mut fields = fields(Spanned::new(span, DeValue::Table(table)), text)?;
    fields.resolve_paths(folder);
    let origin = RuleRef {
        number,
        pattern: written,
        line: position(text, pattern_span.start).0,
    };
    Ok((Rule { fields, origin }, glob))
}

/// A table's declared fields; unknown fields and bad values are problems at their position.
fn fields(value: Spanned<DeValue<'_>>, text: &str) -> Result<DeclaredFields, Problem> {
    let span = value.span();
    DeclaredFields::deserialize(ValueDeserializer::from(value)).map_err(|e| {
        let start = e.span().map_or(span.start, |s| s.start);
        Problem {
            position: Some(position(text, start)),
            message: e.message().trim().to_string(),
        }
    })
}

/// `match` as a glob on real paths: `*` stays within a segment, `**` crosses them; a relative
/// pattern is anchored at the rules file's folder.
fn compile_glob(pattern: &str, folder: &Path) -> Result<globset::Glob, String> {
    let full = if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        let mut base = folder.to_path_buf();
        let mut rest = pattern;
        // Real paths hold no `.` or `..`, so a pattern's leading ones are resolved here.
        loop {
            if let Some(tail) = rest.strip_prefix("./") {
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix("../") {
                base.pop();
                rest = tail;
            } else {
                break;
            }
        }
        let base = base
            .to_str()
            .ok_or_else(|| format!("the rules file's folder {} is not UTF-8", base.display()))?;
        let base = globset::escape(base);
        let separator = if base.ends_with('/') { "" } else { "/" };
        format!("{base}{separator}{rest}")
    };
    if full
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!(
            "bad glob {pattern:?}: `.` or `..` inside a pattern never matches a real path"
        ));
    }
    // globset reads `**` glued to other text (`/srv/**.cgi`, `blog**`) as `*`, which stays in
    // one segment: refuse it rather than silently match less than the rule says.
    if full
        .split('/')
        .any(|segment| segment.contains("**") && segment != "**")
    {
        return Err(format!(
            "bad glob {pattern:?}: `**` crosses folders only as a whole segment, as in `/srv/www/**/*.cgi`"
        ));
    }
    GlobBuilder::new(&full)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("bad glob {pattern:?}: {}", e.kind()))
}

/// The 1-based line and column (in characters) of a byte offset.
pub fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::{Privacy, merge};

    fn parse(text: &str) -> Result<Rules, RulesError> {
        Rules::parse(
            text.as_bytes(),
            Path::new("site.toml"),
            Path::new("/etc/site"),
        )
    }

    fn positions(text: &str) -> Vec<(Option<(usize, usize)>, String)> {
        parse(text)
            .unwrap_err()
            .problems
            .into_iter()
            .map(|p| (p.position, p.message))
            .collect()
    }

    const SITE: &str = r#"
[defaults]
cache_seconds = 7

[[rule]]
match = "/srv/www/blog/*.php"
depends_on = ["/var/lib/blog/posts/", "templates/"]
cache_privacy = "public"
cache_seconds = 300

[[rule]]
match = "/srv/www/**"
compress = true

[[rule]]
match = "apps/*.cgi"
"#;

    #[test]
    fn rules_are_tried_in_file_order_and_the_first_match_applies() {
        let rules = parse(SITE).unwrap();
        assert_eq!(rules.len(), 3);
        let blog = rules
            .declared_for(Path::new("/srv/www/blog/index.php"))
            .unwrap();
        assert_eq!((blog.rule.number, blog.rule.line), (1, 6));
        let d = merge(blog.layers()).declaration;
        assert_eq!(
            (d.cache_seconds, d.cache_privacy, d.compress),
            (300, Privacy::Public, false)
        );
        assert_eq!(
            d.depends_on,
            [
                PathBuf::from("/var/lib/blog/posts/"),
                PathBuf::from("/etc/site/templates/")
            ]
        );
        let other = rules
            .declared_for(Path::new("/srv/www/blog/sub/x.php"))
            .unwrap();
        assert_eq!(other.rule.number, 2, "`*` stays within one segment");
        let d = merge(other.layers()).declaration;
        assert_eq!(
            (d.cache_seconds, d.compress),
            (7, true),
            "a rule starts from [defaults]"
        );
        assert!(rules.declared_for(Path::new("/srv/other.php")).is_none());
    }

    #[test]
    fn a_relative_match_is_from_the_rules_files_folder() {
        let rules = parse(SITE).unwrap();
        assert_eq!(
            rules
                .declared_for(Path::new("/etc/site/apps/a.cgi"))
                .map(|m| m.rule.number),
            Some(3)
        );
        assert!(
            rules
                .declared_for(Path::new("/elsewhere/apps/a.cgi"))
                .is_none()
        );
        let up = parse("[[rule]]\nmatch = \"../share/./x/*.cgi\"\n").unwrap_err();
        assert!(up.problems[0].message.contains(".."), "{up}");
        let up = parse("[[rule]]\nmatch = \"./../share/x/*.cgi\"\n").unwrap();
        assert!(up.declared_for(Path::new("/etc/share/x/y.cgi")).is_some());
    }

    #[test]
    fn unknown_fields_are_errors_with_line_and_column() {
        let found = positions("[[rule]]\nmatch = \"*.cgi\"\ncache_second = 5\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, Some((3, 1)));
        assert!(found[0].1.contains("cache_second"), "{}", found[0].1);
        let found = positions("[default]\ncache_seconds = 5\n");
        assert_eq!(found[0].0, Some((1, 2)));
        let found =
            positions("[[rule]]\nmatch = \"*.cgi\"\nsession = { cookie = \"a\", cooky = 1 }\n");
        assert_eq!(found[0].0.map(|p| p.0), Some(3));
    }

    #[test]
    fn bad_globs_are_errors_with_line_and_column_and_each_is_reported() {
        let found = positions(
            "[[rule]]\nmatch = \"/a/[b\"\n\n[[rule]]\nmatch = \"/ok/*\"\n\n[[rule]]\n  match = \"/c/{x\"\n",
        );
        let at: Vec<_> = found.iter().map(|f| f.0).collect();
        assert_eq!(at, [Some((2, 9)), Some((8, 11))]);
        assert!(found[0].1.contains("bad glob"), "{}", found[0].1);
    }

    /// README: "`*` stays within one path segment, `**` crosses them" — only as a whole
    /// segment; glued to other text it would quietly match less, so it is refused.
    #[test]
    fn a_double_star_glued_to_other_text_is_a_bad_glob() {
        for pattern in ["/a/**.cgi", "/a/blog**", "/a/x**y/*.cgi"] {
            let found = positions(&format!("[[rule]]\nmatch = \"{pattern}\"\n"));
            assert_eq!(found.len(), 1, "{pattern}");
            assert!(found[0].1.contains("whole segment"), "{}", found[0].1);
        }
        assert!(parse("[[rule]]\nmatch = \"/a/**/*.cgi\"\n").is_ok());
    }

    #[test]
    fn text_that_is_not_toml_is_an_error_with_a_position() {
        let found = positions("[[rule]\nmatch = \"x\"\n");
        assert_eq!(found[0].0.map(|p| p.0), Some(1));
        assert!(found[0].1.starts_with("not TOML"), "{}", found[0].1);
        let found = positions("a = 1\n\u{0}\n");
        assert!(!found.is_empty());
        let bytes = b"cache_seconds = 1\n\xff\n";
        let err = Rules::parse(bytes, Path::new("x.toml"), Path::new("/")).unwrap_err();
        assert_eq!(err.problems[0].position, Some((2, 1)));
    }

    #[test]
    fn a_rule_without_match_or_with_a_bad_value_is_an_error() {
        let found = positions("[[rule]]\ncache_seconds = 1\n");
        assert!(found[0].1.contains("no `match`"), "{}", found[0].1);
        let found = positions("[[rule]]\nmatch = 5\n");
        assert_eq!(found[0].0, Some((2, 9)));
        let found = positions("[[rule]]\nmatch = \"*\"\ncache_privacy = \"shared\"\n");
        assert_eq!(found[0].0.map(|p| p.0), Some(3));
        let found = positions("rule = 1\n");
        assert_eq!(found[0].0, Some((1, 8)));
    }

    #[test]
    fn last_modified_may_be_a_toml_datetime() {
        let want = crate::timestamp::from_unix(1_714_564_800);
        for value in [
            "2024-05-01T12:00:00Z",
            "\"2024-05-01T12:00:00Z\"",
            "1714564800",
        ] {
            let text = format!("[[rule]]\nmatch = \"*\"\nlast_modified = {value}\n");
            let rules = parse(&text).unwrap_or_else(|e| panic!("{e}"));
            let matched = rules.declared_for(Path::new("/etc/site/x")).unwrap();
            assert_eq!(
                merge(matched.layers()).declaration.last_modified,
                want,
                "{value}"
            );
        }
        // A local time names no instant.
        let found = positions("[[rule]]\nmatch = \"*\"\nlast_modified = 2024-05-01T12:00:00\n");
        assert_eq!(found[0].0.map(|p| p.0), Some(3));
    }

    #[test]
    fn position_counts_lines_and_characters() {
        assert_eq!(position("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(position("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(position("ab\ncdé\nf", 8), (3, 1));
        assert_eq!(position("ab\ncdé\nf", 7), (2, 4));
    }

    /// The bundled examples: site.toml gives each script the declaration its sidecar gives.
    #[test]
    fn the_bundled_site_toml_declares_each_example_as_its_sidecar_does() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let rules = Rules::load(&examples.join("site.toml")).unwrap_or_else(|e| panic!("{e}"));
        let folder = std::fs::canonicalize(&examples).unwrap();
        let mut compared = 0;
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let Some(name) = path
                .to_str()
                .and_then(|p| p.strip_suffix(".conditional.json"))
            else {
                continue;
            };
            let script = PathBuf::from(name);
            let from_sidecar = crate::sidecar::load(&script).unwrap().unwrap();
            let matched = rules
                .declared_for(&script)
                .unwrap_or_else(|| panic!("no rule for {}", script.display()));
            let mut from_rules = merge(matched.layers()).declaration;
            // A sidecar's relative paths are resolved from the script's folder later, a rule's
            // already are: compare them resolved.
            let mut from_sidecar = from_sidecar;
            from_sidecar.depends_on = from_sidecar
                .depends_on
                .iter()
                .map(|p| folder.join(p))
                .collect();
            from_rules.depends_on.sort();
            from_sidecar.depends_on.sort();
            assert_eq!(from_rules, from_sidecar, "{}", script.display());
            compared += 1;
        }
        assert!(compared >= 5, "only {compared} examples compared");
        let feed = rules.declared_for(&folder.join("feed-db.cgi")).unwrap();
        let d = merge(feed.layers()).declaration;
        assert!(d.feed && d.probe);
        assert_eq!(
            d.probe_command.unwrap(),
            [
                "sqlite3",
                "-readonly",
                "feed.db",
                "SELECT max(modified) FROM items"
            ]
        );
    }

    #[test]
    fn a_fifo_or_a_large_file_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("hc-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = Rules::load(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_RULES_BYTES + 1]).unwrap();
        let err = Rules::load(&big).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        std::fs::write(&big, vec![b'#'; MAX_RULES_BYTES]).unwrap();
        assert!(Rules::load(&big).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
