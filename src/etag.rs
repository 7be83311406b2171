//! Entity tags (RFC 9110 §8.8.3) and the lists carried by If-Match / If-None-Match.

use std::fmt;

/// Suffixes that front ends append to an upstream ETag when they re-encode the body
/// (nginx gzip weakens it instead; Apache mod_deflate and mod_brotli append these).
const ENCODING_SUFFIXES: [&str; 3] = ["-gzip", "-br", "-deflate"];

/// The suffixes of the encoded variants the wrapper itself produces (see `variant`).
const OUR_VARIANTS: [&str; 2] = ["gzip", "deflate"];

/// Longest If-Match / If-None-Match value we parse; longer ones are treated as malformed.
const MAX_LIST_BYTES: usize = crate::request::MAX_HEADER_BYTES;

/// One entity tag, `W/"opaque"` or `"opaque"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// `W/` prefix present.
    pub weak: bool,
    /// The characters between the quotes.
    pub opaque: String,
}

impl EntityTag {
    /// A strong tag with the given opaque value.
    pub fn strong(opaque: impl Into<String>) -> Self {
        EntityTag {
            weak: false,
            opaque: opaque.into(),
        }
    }

    /// Parses a single tag as a script's own `ETag:` header carries it.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        match EtagList::parse(raw)? {
            EtagList::Tags(mut tags) if tags.len() == 1 => tags.pop(),
            _ => None,
        }
    }

    /// The opaque value with one front-end encoding suffix removed, so `"x-gzip"` compares as `"x"`.
    pub fn base_opaque(&self) -> &str {
        ENCODING_SUFFIXES
            .iter()
            .find_map(|suffix| self.opaque.strip_suffix(suffix))
            .unwrap_or(&self.opaque)
    }

    /// Strong comparison (RFC 9110 §8.8.3.2): identical opaque tags, neither weak. `ours` is the
    /// identity tag; the tags of the variants we encode ourselves (`-gzip`, `-deflate`) are ours
    /// too, and nothing else (a `-br` we never produced is not a strong match).
    pub fn strong_matches(&self, ours: &EntityTag) -> bool {
        if self.weak || ours.weak {
            return false;
        }
        self.opaque == ours.opaque
            || OUR_VARIANTS.iter().any(|suffix| {
                self.opaque
                    .strip_prefix(ours.opaque.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    == Some(suffix)
            })
    }

    /// Weak comparison (RFC 9110 §8.8.3.2), tolerant of a front end's encoding suffix.
    pub fn weak_matches(&self, ours: &EntityTag) -> bool {
        self.base_opaque() == ours.base_opaque()
    }

    /// The tag for an encoded variant of this representation: `"x"` becomes `"x-gzip"`.
    pub fn variant(&self, suffix: &str) -> EntityTag {
        EntityTag {
            weak: self.weak,
            opaque: format!("{}-{suffix}", self.opaque),
        }
    }

    /// The ETag header value of this tag, or with `suffix` of its encoded [variant], in one
    /// allocation (a 304's head is built on every revalidation).
    ///
    /// [variant]: EntityTag::variant
    pub fn header_value(&self, suffix: Option<&str>) -> Vec<u8> {
        let suffix = suffix.unwrap_or_default();
        let mut value = Vec::with_capacity(self.opaque.len() + suffix.len() + 5);
        if self.weak {
            value.extend_from_slice(b"W/");
        }
        value.push(b'"');
        value.extend_from_slice(self.opaque.as_bytes());
        if !suffix.is_empty() {
            value.push(b'-');
            value.extend_from_slice(suffix.as_bytes());
        }
        value.push(b'"');
        value
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weak {
            f.write_str("W/")?;
        }
        write!(f, "\"{}\"", self.opaque)
    }
}

/// The value of If-Match or If-None-Match (RFC 9110 §13.1.1, §13.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagList {
    /// `*`: any current representation.
    Any,
    /// One or more entity tags.
    Tags(Vec<EntityTag>),
}

impl EtagList {
    /// Parses `*` or a comma-separated list of tags; `None` when malformed, empty or huge.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if raw.len() > MAX_LIST_BYTES {
            return None;
        }
        let trimmed = raw.trim_ascii();
        if trimmed == b"*" {
            return Some(EtagList::Any);
        }
        let mut tags = Vec::new();
        let mut rest = trimmed;
        loop {
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            let (tag, after) = parse_one(rest)?;
            tags.push(tag);
            rest = after.trim_ascii_start();
            match rest.first() {
                None => break,
                Some(b',') => {}
                Some(_) => return None,
            }
        }
        if tags.is_empty() {
            None
        } else {
            Some(EtagList::Tags(tags))
        }
    }

    /// True when any tag in the list matches `ours` under `compare`.
    pub fn any(&self, compare: impl Fn(&EntityTag) -> bool) -> bool {
        match self {
            EtagList::Any => true,
            EtagList::Tags(tags) => tags.iter().any(compare),
        }
    }
}

fn skip_separators(mut rest: &[u8]) -> &[u8] {
    while let Some((&first, tail)) = rest.split_first() {
        if first == b',' || first.is_ascii_whitespace() {
            rest = tail;
        } else {
            break;
        }
    }
    rest
}

/// `entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE`, returning the tag and what follows it.
fn parse_one(input: &[u8]) -> Option<(EntityTag, &[u8])> {
    let (weak, quoted) = match input.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let body = quoted.strip_prefix(b"\"")?;
    let end = body.iter().position(|&b| b == b'"')?;
    let opaque = &body[..end];
    // etagc = %x21 / %x23-7E / obs-text
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
    {
        return None;
    }
    let tag = EntityTag {
        weak,
        opaque: String::from_utf8_lossy(opaque).into_owned(),
    };
    Some((tag, &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_value_is_the_tag_as_displayed_and_its_variant_as_displayed() {
        for tag in [
            EntityTag::strong("abc"),
            EntityTag::parse(b"W/\"w\"").unwrap(),
        ] {
            assert_eq!(tag.header_value(None), tag.to_string().into_bytes());
            assert_eq!(
                tag.header_value(Some("gzip")),
                tag.variant("gzip").to_string().into_bytes()
            );
        }
    }

    fn tags(raw: &str) -> Vec<EntityTag> {
        match EtagList::parse(raw.as_bytes()) {
            Some(EtagList::Tags(t)) => t,
            other => panic!("expected tags from {raw:?}, got {other:?}"),
        }
    }

    #[test]
    fn star_is_any() {
        assert_eq!(EtagList::parse(b" * "), Some(EtagList::Any));
    }

    #[test]
    fn list_of_strong_and_weak_tags() {
        let parsed = tags(r#""a", W/"b" ,"c,d""#);
        assert_eq!(parsed.len(), 3);
        assert!(!parsed[0].weak && parsed[0].opaque == "a");
        assert!(parsed[1].weak && parsed[1].opaque == "b");
        assert_eq!(parsed[2].opaque, "c,d");
    }

    #[test]
    fn malformed_lists_are_none() {
        for raw in [
            "",
            "abc",
            "\"unterminated",
            "\"a\" \"b\"",
            "W/abc",
            "\"a b\"",
            "*, \"a\"",
        ] {
            assert_eq!(EtagList::parse(raw.as_bytes()), None, "{raw:?}");
        }
        assert_eq!(EtagList::parse(&vec![b'"'; MAX_LIST_BYTES + 1]), None);
    }

    #[test]
    fn non_utf8_obs_text_parses_but_never_equals_ascii() {
        let parsed = tags("\"\u{00ff}\"");
        assert_ne!(parsed[0].opaque, "y");
        assert!(EtagList::parse(b"\"\xff\xfe\"").is_some());
    }

    #[test]
    fn weak_comparison_ignores_w_prefix() {
        let ours = EntityTag::strong("x");
        assert!(tags(r#"W/"x""#)[0].weak_matches(&ours));
        assert!(!tags(r#"W/"x""#)[0].strong_matches(&ours));
        assert!(tags(r#""x""#)[0].strong_matches(&ours));
    }

    #[test]
    fn front_end_suffixes_compare_as_the_base_tag() {
        let ours = EntityTag::strong("x");
        for raw in [
            r#""x-gzip""#,
            r#""x-br""#,
            r#""x-deflate""#,
            r#"W/"x-gzip""#,
        ] {
            assert!(tags(raw)[0].weak_matches(&ours), "{raw}");
        }
        assert!(tags(r#""x-gzip""#)[0].strong_matches(&ours));
        assert!(tags(r#""x-deflate""#)[0].strong_matches(&ours));
        assert!(
            !tags(r#""x-br""#)[0].strong_matches(&ours),
            "not a tag we produce"
        );
        assert!(!tags(r#""x-gzip-gzip""#)[0].strong_matches(&ours));
        assert!(!tags(r#""y-gzip""#)[0].weak_matches(&ours));
    }

    #[test]
    fn a_thousand_tags_parse() {
        let raw: Vec<String> = (0..1000).map(|i| format!("\"t{i}\"")).collect();
        assert_eq!(tags(&raw.join(", ")).len(), 1000);
    }
}
