//! The precondition decision of RFC 9110 §13.2.2, as one pure function.
//!
//! Each header has one small function answering `Absent`, `Pass` or `Fail`; every rule for when
//! a header is skipped (wrong method, unusable date, unknown validator) lives in that function.
//! `evaluate` does no I/O, so `explain` and the unit tests see exactly what requests see.

use std::fmt;

use crate::request::{Conditions, Header, Method};
use crate::validators::Validators;

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the script and send its response.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

impl Decision {
    /// The status code this decision answers with, when it answers itself.
    pub fn status(self) -> Option<u16> {
        match self {
            Decision::Proceed => None,
            Decision::NotModified => Some(304),
            Decision::PreconditionFailed => Some(412),
        }
    }
}

/// Which step of RFC 9110 §13.2.2 made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Step 1: If-Match had no strong match.
    IfMatchFailed,
    /// Step 2: modified after If-Unmodified-Since.
    IfUnmodifiedSinceFailed,
    /// Step 3: If-None-Match matched on GET/HEAD.
    IfNoneMatchMatched,
    /// Step 3: If-None-Match matched on another method.
    IfNoneMatchMatchedUnsafe,
    /// Step 3: If-None-Match present, nothing matched.
    IfNoneMatchNoMatch,
    /// Step 4: not modified since If-Modified-Since.
    IfModifiedSinceNotModified,
    /// Step 4: modified since If-Modified-Since.
    IfModifiedSinceModified,
    /// Step 5: no condition applied; the method is performed.
    NoConditionApplies,
}

impl Rule {
    /// The status a rule answers with, when it answers without performing the method.
    pub fn status(self) -> Option<u16> {
        match self {
            Rule::IfNoneMatchMatched | Rule::IfModifiedSinceNotModified => Some(304),
            Rule::IfMatchFailed
            | Rule::IfUnmodifiedSinceFailed
            | Rule::IfNoneMatchMatchedUnsafe => Some(412),
            _ => None,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::IfMatchFailed => "RFC 9110 §13.2.2 step 1: If-Match has no strong match",
            Rule::IfUnmodifiedSinceFailed => {
                "RFC 9110 §13.2.2 step 2: modified after If-Unmodified-Since"
            }
            Rule::IfNoneMatchMatched => {
                "RFC 9110 §13.2.2 step 3: If-None-Match matched on GET/HEAD"
            }
            Rule::IfNoneMatchMatchedUnsafe => {
                "RFC 9110 §13.2.2 step 3: If-None-Match matched on a method other than GET/HEAD"
            }
            Rule::IfNoneMatchNoMatch => "RFC 9110 §13.2.2 step 3: If-None-Match did not match",
            Rule::IfModifiedSinceNotModified => {
                "RFC 9110 §13.2.2 step 4: not modified since If-Modified-Since"
            }
            Rule::IfModifiedSinceModified => {
                "RFC 9110 §13.2.2 step 4: modified since If-Modified-Since"
            }
            Rule::NoConditionApplies => "RFC 9110 §13.2.2 step 5: no condition applies",
        })
    }
}

/// A decision and the rule that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to answer.
    pub decision: Decision,
    /// Why.
    pub rule: Rule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Absent,
    Pass,
    Fail,
}

/// Evaluates the request's conditions against the current validators (RFC 9110 §13.2.2).
pub fn evaluate(conditions: &Conditions, current: &Validators, method: &Method) -> Verdict {
    let verdict = |decision, rule| Verdict { decision, rule };
    match if_match(conditions, current) {
        Cond::Fail => return verdict(Decision::PreconditionFailed, Rule::IfMatchFailed),
        Cond::Absent if if_unmodified_since(conditions, current) == Cond::Fail => {
            return verdict(Decision::PreconditionFailed, Rule::IfUnmodifiedSinceFailed);
        }
        _ => {}
    }
    match if_none_match(conditions, current) {
        Cond::Fail if method.is_get_or_head() => {
            return verdict(Decision::NotModified, Rule::IfNoneMatchMatched);
        }
        Cond::Fail => {
            return verdict(Decision::PreconditionFailed, Rule::IfNoneMatchMatchedUnsafe);
        }
        Cond::Pass => return verdict(Decision::Proceed, Rule::IfNoneMatchNoMatch),
        Cond::Absent => {}
    }
    if method.is_get_or_head() {
        match if_modified_since(conditions, current) {
            Cond::Fail => return verdict(Decision::NotModified, Rule::IfModifiedSinceNotModified),
            Cond::Pass => return verdict(Decision::Proceed, Rule::IfModifiedSinceModified),
            Cond::Absent => {}
        }
    }
    verdict(Decision::Proceed, Rule::NoConditionApplies)
}

/// §13.1.1: passes on `*` or a strong match; an unparseable list matches nothing.
fn if_match(conditions: &Conditions, current: &Validators) -> Cond {
    match &conditions.if_match {
        Header::Absent => Cond::Absent,
        Header::Ignored(_) => Cond::Fail,
        Header::Value(list) => {
            let matched = list.any(|tag| {
                current
                    .etag
                    .as_ref()
                    .is_some_and(|ours| tag.strong_matches(ours))
            });
            if matched { Cond::Pass } else { Cond::Fail }
        }
    }
}

/// §13.1.4: fails when the representation changed after the date; skipped without a valid
/// date or a known modification time.
fn if_unmodified_since(conditions: &Conditions, current: &Validators) -> Cond {
    match (
        conditions.if_unmodified_since.value(),
        current.last_modified,
    ) {
        (Some(&date), Some(modified)) if modified > date => Cond::Fail,
        (Some(_), Some(_)) => Cond::Pass,
        _ => Cond::Absent,
    }
}

/// §13.1.2: "fails" (the condition is false) when a tag matches weakly, or on `*`.
fn if_none_match(conditions: &Conditions, current: &Validators) -> Cond {
    match &conditions.if_none_match {
        Header::Value(list) => {
            let matched = list.any(|tag| {
                current
                    .etag
                    .as_ref()
                    .is_some_and(|ours| tag.weak_matches(ours))
            });
            if matched { Cond::Fail } else { Cond::Pass }
        }
        _ => Cond::Absent,
    }
}

/// §13.1.3: "fails" when not modified since the date; only without If-None-Match, and only
/// for a valid date not in the future (filtered when parsed).
fn if_modified_since(conditions: &Conditions, current: &Validators) -> Cond {
    if conditions.if_none_match.is_sent() {
        return Cond::Absent;
    }
    match (conditions.if_modified_since.value(), current.last_modified) {
        (Some(&date), Some(modified)) if modified <= date => Cond::Fail,
        (Some(_), Some(_)) => Cond::Pass,
        _ => Cond::Absent,
    }
}

/// True when any validator exists to evaluate conditions against.
pub fn has_validators(current: &Validators) -> bool {
    current.etag.is_some() || current.last_modified.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etag::{EntityTag, EtagList};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const T: u64 = 1_000_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn current() -> Validators {
        Validators {
            etag: Some(EntityTag::strong("abc")),
            last_modified: Some(at(T)),
        }
    }

    fn none() -> Conditions {
        Conditions {
            if_match: Header::Absent,
            if_none_match: Header::Absent,
            if_modified_since: Header::Absent,
            if_unmodified_since: Header::Absent,
        }
    }

    fn list(raw: &str) -> Header<EtagList> {
        match EtagList::parse(raw.as_bytes()) {
            Some(l) => Header::Value(l),
            None => Header::Ignored("malformed"),
        }
    }

    fn get() -> Method {
        Method::Get
    }

    fn post() -> Method {
        Method::Other("POST".into())
    }

    fn check(c: Conditions, m: Method, decision: Decision, rule: Rule) {
        let v = evaluate(&c, &current(), &m);
        assert_eq!(v, Verdict { decision, rule }, "{c:?} {m:?}");
    }

    #[test]
    fn no_conditions_proceeds() {
        check(none(), get(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_match_strong_match_proceeds() {
        let c = Conditions {
            if_match: list(r#""abc""#),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_match_star_proceeds() {
        let c = Conditions {
            if_match: list("*"),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_match_no_match_is_412() {
        let c = Conditions {
            if_match: list(r#""zzz""#),
            ..none()
        };
        check(c, get(), Decision::PreconditionFailed, Rule::IfMatchFailed);
    }

    #[test]
    fn if_match_weak_tag_never_matches_strongly_so_412() {
        let c = Conditions {
            if_match: list(r#"W/"abc""#),
            ..none()
        };
        check(c, post(), Decision::PreconditionFailed, Rule::IfMatchFailed);
    }

    #[test]
    fn if_match_malformed_matches_nothing_so_412() {
        let c = Conditions {
            if_match: list("garbage"),
            ..none()
        };
        check(c, post(), Decision::PreconditionFailed, Rule::IfMatchFailed);
    }

    #[test]
    fn if_match_without_our_etag_is_412_unless_star() {
        let c = Conditions {
            if_match: list(r#""abc""#),
            ..none()
        };
        let v = evaluate(
            &c,
            &Validators {
                etag: None,
                last_modified: Some(at(T)),
            },
            &post(),
        );
        assert_eq!(v.decision, Decision::PreconditionFailed);
        let c = Conditions {
            if_match: list("*"),
            ..none()
        };
        let v = evaluate(
            &c,
            &Validators {
                etag: None,
                last_modified: None,
            },
            &post(),
        );
        assert_eq!(v.decision, Decision::Proceed);
    }

    #[test]
    fn if_unmodified_since_modified_after_is_412() {
        let c = Conditions {
            if_unmodified_since: Header::Value(at(T - 1)),
            ..none()
        };
        check(
            c,
            post(),
            Decision::PreconditionFailed,
            Rule::IfUnmodifiedSinceFailed,
        );
    }

    #[test]
    fn if_unmodified_since_not_modified_proceeds() {
        let c = Conditions {
            if_unmodified_since: Header::Value(at(T)),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_unmodified_since_is_ignored_when_if_match_present() {
        let c = Conditions {
            if_match: list(r#""abc""#),
            if_unmodified_since: Header::Value(at(T - 100)),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_unmodified_since_invalid_date_is_ignored() {
        let c = Conditions {
            if_unmodified_since: Header::Ignored("bad"),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_none_match_match_on_get_is_304() {
        let c = Conditions {
            if_none_match: list(r#""abc""#),
            ..none()
        };
        check(c, get(), Decision::NotModified, Rule::IfNoneMatchMatched);
    }

    #[test]
    fn if_none_match_match_on_head_is_304() {
        let c = Conditions {
            if_none_match: list(r#""x", "abc""#),
            ..none()
        };
        check(
            c,
            Method::Head,
            Decision::NotModified,
            Rule::IfNoneMatchMatched,
        );
    }

    #[test]
    fn if_none_match_weak_tag_matches_weakly_304() {
        let c = Conditions {
            if_none_match: list(r#"W/"abc""#),
            ..none()
        };
        check(c, get(), Decision::NotModified, Rule::IfNoneMatchMatched);
    }

    #[test]
    fn if_none_match_with_front_end_suffix_is_304() {
        for raw in [r#""abc-gzip""#, r#""abc-br""#, r#"W/"abc-gzip""#] {
            let c = Conditions {
                if_none_match: list(raw),
                ..none()
            };
            check(c, get(), Decision::NotModified, Rule::IfNoneMatchMatched);
        }
    }

    #[test]
    fn if_none_match_star_on_get_is_304() {
        let c = Conditions {
            if_none_match: list("*"),
            ..none()
        };
        check(c, get(), Decision::NotModified, Rule::IfNoneMatchMatched);
    }

    #[test]
    fn if_none_match_star_on_post_is_412() {
        let c = Conditions {
            if_none_match: list("*"),
            ..none()
        };
        check(
            c,
            post(),
            Decision::PreconditionFailed,
            Rule::IfNoneMatchMatchedUnsafe,
        );
    }

    #[test]
    fn if_none_match_match_on_post_is_412() {
        let c = Conditions {
            if_none_match: list(r#""abc""#),
            ..none()
        };
        check(
            c,
            post(),
            Decision::PreconditionFailed,
            Rule::IfNoneMatchMatchedUnsafe,
        );
    }

    #[test]
    fn if_none_match_no_match_proceeds_and_overrides_if_modified_since() {
        let c = Conditions {
            if_none_match: list(r#""old""#),
            if_modified_since: Header::Value(at(T + 10)),
            ..none()
        };
        check(c, get(), Decision::Proceed, Rule::IfNoneMatchNoMatch);
    }

    #[test]
    fn if_none_match_malformed_counts_as_sent_so_if_modified_since_is_skipped() {
        // A broken If-None-Match is treated as non-matching, and step 4 still only applies
        // without If-None-Match (§13.2.2), so the script runs.
        let c = Conditions {
            if_none_match: list("garbage"),
            if_modified_since: Header::Value(at(T)),
            ..none()
        };
        check(c, get(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_modified_since_not_modified_is_304() {
        let c = Conditions {
            if_modified_since: Header::Value(at(T)),
            ..none()
        };
        check(
            c,
            get(),
            Decision::NotModified,
            Rule::IfModifiedSinceNotModified,
        );
    }

    #[test]
    fn if_modified_since_modified_proceeds() {
        let c = Conditions {
            if_modified_since: Header::Value(at(T - 1)),
            ..none()
        };
        check(c, get(), Decision::Proceed, Rule::IfModifiedSinceModified);
    }

    #[test]
    fn if_modified_since_is_ignored_on_post() {
        let c = Conditions {
            if_modified_since: Header::Value(at(T)),
            ..none()
        };
        check(c, post(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_modified_since_ignored_date_proceeds() {
        let c = Conditions {
            if_modified_since: Header::Ignored("future"),
            ..none()
        };
        check(c, get(), Decision::Proceed, Rule::NoConditionApplies);
    }

    #[test]
    fn if_modified_since_without_last_modified_is_skipped() {
        let c = Conditions {
            if_modified_since: Header::Value(at(T)),
            ..none()
        };
        let v = evaluate(
            &c,
            &Validators {
                etag: None,
                last_modified: None,
            },
            &get(),
        );
        assert_eq!(v.rule, Rule::NoConditionApplies);
    }

    #[test]
    fn if_match_pass_then_if_none_match_match_on_get_is_304() {
        let c = Conditions {
            if_match: list(r#""abc""#),
            if_none_match: list(r#""abc""#),
            ..none()
        };
        check(c, get(), Decision::NotModified, Rule::IfNoneMatchMatched);
    }

    #[test]
    fn if_match_failure_wins_over_if_none_match() {
        let c = Conditions {
            if_match: list(r#""nope""#),
            if_none_match: list(r#""abc""#),
            ..none()
        };
        check(c, get(), Decision::PreconditionFailed, Rule::IfMatchFailed);
    }

    #[test]
    fn if_unmodified_since_failure_wins_over_if_modified_since() {
        let c = Conditions {
            if_unmodified_since: Header::Value(at(T - 5)),
            if_modified_since: Header::Value(at(T)),
            ..none()
        };
        check(
            c,
            get(),
            Decision::PreconditionFailed,
            Rule::IfUnmodifiedSinceFailed,
        );
    }
}
