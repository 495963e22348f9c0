//! A `_method` field in a POST body: Rails (`Rack::MethodOverride`, form and multipart bodies,
//! and POSTs with no content type) and Symfony/Laravel (form bodies; Laravel JSON bodies too)
//! route such a POST as the method it names. The gateway reads the body, bounded, only when that
//! could change the price: a POST that is not priced on a path some other method is priced on.
//!
//! Pure: the proxy hands over the content type and the body bytes.

use super::request::{override_method, Refusal};

/// The most body bytes read to look for a `_method` field. A larger body on such a request is
/// refused rather than passed on unread, because the upstream would read the field.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How a POST body is read by the upstreams that honour a `_method` field in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded`, or no content type at all (Rack reads a POST without
    /// one as a form).
    UrlEncoded,
    /// `multipart/form-data` with its boundary.
    Multipart { boundary: String },
    /// `application/json` and `…+json` (Laravel merges a JSON body into the request parameters).
    Json,
}

/// The encoding of a POST body that an upstream could read a `_method` field from, or `None`
/// when no common upstream reads one from a body of this content type.
pub fn body_encoding(content_type: Option<&[u8]>) -> Option<BodyEncoding> {
    let Some(content_type) = content_type else {
        return Some(BodyEncoding::UrlEncoded);
    };
    let text = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let mut parts = text.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    match media_type {
        "" | "application/x-www-form-urlencoded" => Some(BodyEncoding::UrlEncoded),
        "multipart/form-data" => {
            // The boundary is case-sensitive: take it from the original bytes.
            let original = String::from_utf8_lossy(content_type);
            let boundary = original.split(';').skip(1).find_map(|p| {
                let (key, value) = p.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("boundary")
                    .then(|| value.trim().trim_matches('"').to_string())
            });
            // Without a boundary nothing can be parsed, by the gateway or the upstream; the
            // upstream refuses it too, but an unread body must not slip through: read it as
            // opaque form data, which finds nothing and prices the request as sent.
            Some(match boundary {
                Some(boundary) if !boundary.is_empty() => BodyEncoding::Multipart { boundary },
                _ => BodyEncoding::UrlEncoded,
            })
        }
        json if json.ends_with("/json") || json.ends_with("+json") => Some(BodyEncoding::Json),
        _ => None,
    }
}

/// The method a body's `_method` field names (upper-cased, as the frameworks do), if it has one.
pub fn body_method_override(
    encoding: &BodyEncoding,
    body: &[u8],
) -> Result<Option<String>, Refusal> {
    let mut found: Vec<String> = Vec::new();
    match encoding {
        BodyEncoding::UrlEncoded => {
            for (key, value) in url::form_urlencoded::parse(body) {
                if key == "_method" {
                    found.push(override_method(value.as_bytes())?);
                }
            }
        }
        BodyEncoding::Json => {
            // A body that is not a JSON object has no top-level `_method`; the upstream refuses
            // what it cannot parse.
            if let Ok(serde_json::Value::Object(object)) =
                serde_json::from_slice::<serde_json::Value>(body)
            {
                match object.get("_method") {
                    None => {}
                    Some(serde_json::Value::String(m)) => {
                        found.push(override_method(m.as_bytes())?)
                    }
                    Some(other) => {
                        return Err(Refusal::OverrideMethod(
                            other.to_string().chars().take(32).collect(),
                        ))
                    }
                }
            }
        }
        BodyEncoding::Multipart { boundary } => {
            for value in multipart_fields(body, boundary.as_bytes(), b"_method") {
                found.push(override_method(value)?);
            }
        }
    }
    let mut chosen: Option<String> = None;
    for method in found {
        match &chosen {
            Some(c) if *c != method => {
                return Err(Refusal::ConflictingOverrides(c.clone(), method))
            }
            _ => chosen = Some(method),
        }
    }
    Ok(chosen)
}

/// The values of the multipart fields called `name`. Lenient the way multipart readers are:
/// parts may end lines with CRLF or LF, and the name may be quoted or not.
fn multipart_fields<'b>(body: &'b [u8], boundary: &[u8], name: &[u8]) -> Vec<&'b [u8]> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut values = Vec::new();
    for part in split_on(body, &delimiter).skip(1) {
        let Some((head, content)) = split_head(part) else {
            continue;
        };
        let names_field = head.split(|b| *b == b'\n').any(|line| {
            let line = line.trim_ascii();
            let lower = line.to_ascii_lowercase();
            lower.starts_with(b"content-disposition:") && disposition_names(&lower, name)
        });
        if names_field {
            // The line break before the next delimiter belongs to the delimiter.
            let content = content
                .strip_suffix(b"\r\n")
                .or_else(|| content.strip_suffix(b"\n"))
                .unwrap_or(content);
            values.push(content);
        }
    }
    values
}

/// Whether a (lower-cased) `Content-Disposition` line gives the field `name`.
fn disposition_names(line: &[u8], name: &[u8]) -> bool {
    line.split(|b| *b == b';').any(|param| {
        let param = param.trim_ascii();
        let Some(value) = param.strip_prefix(b"name=") else {
            return false;
        };
        let value = value.trim_ascii();
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        value == name
    })
}

/// A part's header block and its content, split at the first empty line.
fn split_head(part: &[u8]) -> Option<(&[u8], &[u8])> {
    let crlf = find(part, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(part, b"\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&part[..at], &part[at + len..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `haystack` split on every occurrence of `delimiter`.
fn split_on<'h, 'd>(
    haystack: &'h [u8],
    delimiter: &'d [u8],
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'd> {
    let mut rest = Some(haystack);
    std::iter::from_fn(move || {
        let current = rest?;
        match find(current, delimiter) {
            Some(at) => {
                rest = Some(&current[at + delimiter.len()..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(content_type: &str) -> BodyEncoding {
        body_encoding(Some(content_type.as_bytes())).expect("an encoding a framework reads")
    }

    #[test]
    fn content_types_that_frameworks_read_a_method_from() {
        assert_eq!(body_encoding(None), Some(BodyEncoding::UrlEncoded));
        assert_eq!(
            encoding("Application/X-WWW-Form-Urlencoded; charset=utf-8"),
            BodyEncoding::UrlEncoded
        );
        assert_eq!(
            encoding("multipart/form-data; boundary=\"AbC\""),
            BodyEncoding::Multipart {
                boundary: "AbC".into()
            }
        );
        assert_eq!(encoding("application/json"), BodyEncoding::Json);
        assert_eq!(encoding("application/vnd.api+json"), BodyEncoding::Json);
        assert_eq!(body_encoding(Some(b"text/plain")), None);
        assert_eq!(body_encoding(Some(b"application/octet-stream")), None);
    }

    #[test]
    fn a_form_field_names_the_method() {
        let form = BodyEncoding::UrlEncoded;
        assert_eq!(
            body_method_override(&form, b"a=1&_method=get").unwrap(),
            Some("GET".into())
        );
        assert_eq!(
            body_method_override(&form, b"_%6Dethod=DELETE").unwrap(),
            Some("DELETE".into())
        );
        assert_eq!(body_method_override(&form, b"method=GET").unwrap(), None);
        assert!(matches!(
            body_method_override(&form, b"_method=GET&_method=PUT"),
            Err(Refusal::ConflictingOverrides(..))
        ));
        assert!(matches!(
            body_method_override(&form, b"_method=G%20T"),
            Err(Refusal::OverrideMethod(_))
        ));
    }

    #[test]
    fn a_json_member_names_the_method() {
        let json = BodyEncoding::Json;
        assert_eq!(
            body_method_override(&json, br#"{"q":1,"_method":"Get"}"#).unwrap(),
            Some("GET".into())
        );
        assert_eq!(
            body_method_override(&json, br#"{"q":{"_method":"GET"}}"#).unwrap(),
            None
        );
        assert_eq!(body_method_override(&json, b"not json").unwrap(), None);
        assert!(body_method_override(&json, br#"{"_method":["GET"]}"#).is_err());
    }

    #[test]
    fn a_multipart_field_names_the_method() {
        let multipart = BodyEncoding::Multipart {
            boundary: "XyZ".into(),
        };
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XyZ\r\ncontent-disposition: form-data; name=\"_method\"\r\n\r\nget\r\n--XyZ--\r\n";
        assert_eq!(
            body_method_override(&multipart, body).unwrap(),
            Some("GET".into())
        );
        let lf_only = b"--XyZ\nContent-Disposition: form-data; name=_method\n\nDELETE\n--XyZ--\n";
        assert_eq!(
            body_method_override(&multipart, lf_only).unwrap(),
            Some("DELETE".into())
        );
        let other =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"_method_x\"\r\n\r\nGET\r\n--XyZ--";
        assert_eq!(body_method_override(&multipart, other).unwrap(), None);
    }
}
