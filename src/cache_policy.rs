//! Cache policy headers for a declared script (RFC 9111 §5.2, §5.3).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sidecar::Privacy;
use crate::timestamp::format_http_date;

/// How long, and by whom, a declared script's answers may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// <0 no-store; 0 revalidate every time; N>0 fresh for N seconds.
    pub seconds: i64,
    /// Private or public.
    pub privacy: Privacy,
}

impl CachePolicy {
    /// Cache-Control, Expires and (for no-store) Pragma, the same on a 200 and a 304.
    pub fn headers(&self, now: SystemTime) -> Vec<(&'static str, String)> {
        let privacy = match self.privacy {
            Privacy::Private => "private",
            Privacy::Public => "public",
        };
        match self.seconds {
            s if s < 0 => vec![
                ("Cache-Control", "no-store".to_string()),
                ("Pragma", "no-cache".to_string()),
                ("Expires", format_http_date(UNIX_EPOCH)),
            ],
            0 => vec![
                (
                    "Cache-Control",
                    "private, max-age=0, must-revalidate".to_string(),
                ),
                ("Expires", format_http_date(now)),
            ],
            s => {
                let fresh_until = now
                    .checked_add(Duration::from_secs(s.unsigned_abs()))
                    .unwrap_or(now);
                vec![
                    ("Cache-Control", format!("{privacy}, max-age={s}")),
                    ("Expires", format_http_date(fresh_until)),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn get<'a>(h: &'a [(&str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn negative_is_no_store_with_pragma() {
        let h = CachePolicy {
            seconds: -1,
            privacy: Privacy::Public,
        }
        .headers(now());
        assert_eq!(get(&h, "Cache-Control"), Some("no-store"));
        assert_eq!(get(&h, "Pragma"), Some("no-cache"));
        assert_eq!(get(&h, "Expires"), Some("Thu, 01 Jan 1970 00:00:00 GMT"));
    }

    #[test]
    fn zero_is_revalidate_every_time() {
        let h = CachePolicy {
            seconds: 0,
            privacy: Privacy::Public,
        }
        .headers(now());
        assert_eq!(
            get(&h, "Cache-Control"),
            Some("private, max-age=0, must-revalidate")
        );
        assert_eq!(get(&h, "Expires"), Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        assert_eq!(get(&h, "Pragma"), None);
    }

    #[test]
    fn positive_is_fresh_for_n_seconds_with_privacy() {
        let h = CachePolicy {
            seconds: 60,
            privacy: Privacy::Public,
        }
        .headers(now());
        assert_eq!(get(&h, "Cache-Control"), Some("public, max-age=60"));
        assert_eq!(get(&h, "Expires"), Some("Sun, 06 Nov 1994 08:50:37 GMT"));
        let h = CachePolicy {
            seconds: 60,
            privacy: Privacy::Private,
        }
        .headers(now());
        assert_eq!(get(&h, "Cache-Control"), Some("private, max-age=60"));
    }
}
