//! Canonical request paths for route matching.
//!
//! A priced path must not be reachable unpaid through another spelling of it. The canonical form
//! therefore resolves every ambiguity in the direction of "more requests match": percent-escapes are
//! decoded (repeatedly, against double encoding), `\` counts as `/`, `;matrix` parameters are dropped,
//! empty and `.` segments vanish, `..` removes the previous segment, the trailing slash goes;
//! whitespace and control characters around a segment are ignored, and so are the trailing dots
//! and spaces and the `::$DATA` stream suffix that Windows file systems drop (`/paid.`,
//! `/paid.%20`, `/paid::$DATA`). Letters are compared caselessly the way the most lenient
//! upstreams compare them: compatibility forms are unified (NFKC: the Kelvin sign is `k`,
//! full-width letters are ASCII), case is fully folded (`ß` is `ss`), and a letter whose upper or
//! lower case is ASCII counts as that ASCII letter (`ı`, `İ`, `ſ`, as in Java's
//! `equalsIgnoreCase`). Routes are compiled into the same form.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use unicode_normalization::UnicodeNormalization;

/// How many rounds of percent-decoding are applied; three covers `%25252F`-style stacking.
const DECODE_ROUNDS: usize = 3;

/// Whether `raw` is already canonical, so the common request needs no rewriting: only lower-case
/// letters, digits and unreserved punctuation, no empty segment, no segment ending in `.`, no
/// trailing slash.
fn is_canonical(raw: &str) -> bool {
    if raw == "/" {
        return true;
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.last() == Some(&b'/') {
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
            .all(|segment| !segment.is_empty() && !segment.ends_with('.'))
}

/// The suffix naming a file's default data stream on NTFS: `paid::$DATA` serves `paid`.
const NTFS_DATA_STREAM: &str = "::$data";

/// A segment as a Windows file system reads it: trailing dots and spaces dropped, and the
/// default-stream suffix too. `.` and `..` keep their meaning.
fn windows_name(segment: &str) -> &str {
    if matches!(segment, "." | "..") {
        return segment;
    }
    let mut name = segment;
    loop {
        let trimmed = name.trim_end_matches(['.', ' ']);
        let stream = trimmed.len() >= NTFS_DATA_STREAM.len()
            && trimmed.is_char_boundary(trimmed.len() - NTFS_DATA_STREAM.len())
            && trimmed[trimmed.len() - NTFS_DATA_STREAM.len()..]
                .eq_ignore_ascii_case(NTFS_DATA_STREAM);
        let next = if stream {
            &trimmed[..trimmed.len() - NTFS_DATA_STREAM.len()]
        } else {
            trimmed
        };
        if next.len() == name.len() {
            return name;
        }
        name = next;
    }
}

/// A segment without what routers and file systems ignore around it: whitespace and control
/// characters (`/paid%0a`, `/paid%00`) and the Windows trailing dots, spaces and stream suffix, in
/// any interleaving (`/paid%00.`), until nothing more goes.
fn segment_name(segment: &str) -> &str {
    let mut name = segment;
    loop {
        let next = windows_name(name.trim_matches(|c: char| c.is_whitespace() || c.is_control()));
        if next.len() == name.len() {
            return name;
        }
        name = next;
    }
}

/// Caseless form of a non-ASCII path: NFKC, then per character the ASCII letter its upper or
/// lower case is (`ı` → `i`, `İ` → `i`, `ſ` → `s`), else its full case folding; NFKC again
/// because folding can leave a string that is not normalised.
fn fold_unicode(text: &str) -> String {
    let mut folded = String::with_capacity(text.len());
    for c in text.nfkc() {
        if c.is_ascii() {
            folded.push(c.to_ascii_lowercase());
            continue;
        }
        let upper: String = c.to_uppercase().collect();
        if upper.is_ascii() {
            folded.push_str(&upper.to_ascii_lowercase());
            continue;
        }
        let lower: String = c.to_lowercase().collect();
        let mut chars = lower.chars();
        match chars.next() {
            // `İ` lower-cases to `i` + U+0307 COMBINING DOT ABOVE; Java's char mapping gives `i`.
            Some(base) if base.is_ascii() && chars.all(is_combining_mark) => folded.push(base),
            _ => folded.push_str(&caseless::default_case_fold_str(&c.to_string())),
        }
    }
    folded.nfkc().collect()
}

fn is_combining_mark(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036F}')
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
    let mut out = structure(&percent_decoded(raw));
    // Folding can create separators, dots or escapes (full-width `／`, `．`, `％`): fold until stable.
    for _ in 0..DECODE_ROUNDS {
        if out.is_ascii() {
            break;
        }
        let next = structure(&percent_decoded(&fold_unicode(&out)));
        if next == out {
            break;
        }
        out = next;
    }
    out
}

fn percent_decoded(raw: &str) -> Cow<'_, str> {
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
    decoded
}

/// Segments resolved (`.`, `..`, empty, matrix parameters, surrounding whitespace, Windows
/// names) and ASCII letters lower-cased.
fn structure(decoded: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split(['/', '\\']) {
        let segment = segment.split(';').next().unwrap_or("");
        match segment_name(segment) {
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
            "/api/data%00.",
            "/api/data.%00%20.%0a",
            "/api/data%00%00.%00%01",
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
