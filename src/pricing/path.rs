//! Canonical request paths for route matching.
//!
//! A priced path must not be reachable unpaid through another spelling of it. The canonical form
//! therefore resolves every ambiguity in the direction of "more requests match": percent-escapes are
//! decoded (repeatedly, against double encoding), `\` counts as `/`, `;matrix` parameters are dropped,
//! empty and `.` segments vanish, `..` removes the previous segment, the trailing slash goes and
//! letters are lower-cased; whitespace and control characters around a segment are ignored. Routes are compiled into the same form.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// How many rounds of percent-decoding are applied; three covers `%25252F`-style stacking.
const DECODE_ROUNDS: usize = 3;

/// Whether `raw` is already canonical, so the common request needs no rewriting: only lower-case
/// letters, digits and unreserved punctuation, no empty, `.` or `..` segment, no trailing slash.
fn is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') || (bytes.len() > 1 && bytes.last() == Some(&b'/')) {
        return false;
    }
    let plain = bytes.iter().all(|&b| {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~')
    });
    plain
        && raw
            .split('/')
            .skip(1)
            .all(|segment| !matches!(segment, "" | "." | "..") || raw == "/")
}

/// The canonical form of a request path (no query string): always starts with `/`. Borrowed
/// when the path is canonical already.
pub fn canonical_path(raw: &str) -> Cow<'_, str> {
    if is_canonical(raw) {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(rewrite(raw))
}

fn rewrite(raw: &str) -> String {
    let mut decoded: Cow<str> = Cow::Borrowed(raw);
    for _ in 0..DECODE_ROUNDS {
        if !decoded.contains('%') {
            break;
        }
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = Cow::Owned(next);
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or("");
        // Trailing spaces, tabs and line terminators are ignored by some routers (`/paid%0a`).
        let segment = segment.trim_matches(|c: char| c.is_whitespace() || c.is_control());
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out.make_ascii_lowercase();
    if !out.is_ascii() {
        out = out.to_lowercase();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{canonical_path, rewrite};
    use std::borrow::Cow;

    #[test]
    fn every_spelling_of_a_path_has_one_canonical_form() {
        for spelling in [
            "/api/data",
            "/API/Data",
            "/api/data/",
            "//api//data",
            "/api/./data",
            "/api/x/../data",
            "/x/../api/data",
            "/api%2Fdata",
            "/api%252Fdata",
            "/%61pi/data",
            "/api/data;jsessionid=1",
            "/api\\data",
            "/api/data/.",
            "/../api/data",
            "/api/%2e%2e/api/data",
            "/api/data%0a",
            "/api/data%0d%0a",
            "/api/data%20",
            "/api/data%09/",
            "/api/data%00",
        ] {
            assert_eq!(canonical_path(spelling), "/api/data", "{spelling}");
        }
    }

    #[test]
    fn canonical_paths_are_borrowed_and_others_rewritten() {
        for canonical in ["/", "/api/data", "/a-b_c~d/v1.2/x"] {
            assert!(
                matches!(canonical_path(canonical), Cow::Borrowed(_)),
                "{canonical}"
            );
            assert_eq!(
                rewrite(canonical),
                canonical,
                "the fast path agrees with the rewrite"
            );
        }
        for other in [
            "/api/", "/API", "/a//b", "/a/./b", "/a/../b", "/a/..", "/a%2fb", "/a;b", "/a b", "",
        ] {
            assert!(matches!(canonical_path(other), Cow::Owned(_)), "{other}");
        }
    }

    #[test]
    fn root_and_other_paths_stay_distinct() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path("/.."), "/");
        assert_eq!(canonical_path("/api/data2"), "/api/data2");
        assert_eq!(canonical_path("/api/dätä"), "/api/dätä");
        assert_eq!(canonical_path("/API/DÄTÄ"), "/api/dätä");
    }
}
