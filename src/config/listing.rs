//! The Bazaar listing of a route or an MCP tool: its keys checked and turned into the declaration
//! its challenges carry. Catalogs drop what they cannot read, so every key is checked here, with
//! the limits the official catalog applies, rather than lost silently in production.

use super::surface::{Defaults, Document, Listing};
use super::Ctx;
use crate::config::model::ConfigError;
use crate::pricing::discovery::{
    is_valid_route_template, route_template, Discovery, InputDecl, OutputDecl, ServiceMeta,
    BODY_TYPES,
};
use serde_json::Value;
use std::sync::Arc;

/// The official catalog's limits on the `resource` catalog fields.
const MAX_SERVICE_NAME: usize = 32;
const MAX_TAG: usize = 32;
const MAX_TAGS: usize = 5;
const MAX_ICON_URL: usize = 2048;

/// What is being listed.
pub(super) enum Listed<'a> {
    /// An HTTP route, by the `match` string.
    Http { pattern: &'a str },
    /// A tool of an MCP route.
    Tool {
        name: &'a str,
        description: Option<String>,
    },
}

/// A TOML value as JSON; a string is read as JSON text (`input_schema = '{"type": "object"}'`).
fn to_json(value: &toml::Value) -> Result<Value, String> {
    fn convert(value: &toml::Value) -> Result<Value, String> {
        Ok(match value {
            toml::Value::String(s) => Value::String(s.clone()),
            toml::Value::Integer(i) => Value::from(*i),
            toml::Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| format!("{f} is not a JSON number"))?,
            toml::Value::Boolean(b) => Value::Bool(*b),
            toml::Value::Datetime(d) => {
                return Err(format!("{d} is a TOML date, which JSON has not: quote it"))
            }
            toml::Value::Array(items) => {
                Value::Array(items.iter().map(convert).collect::<Result<_, _>>()?)
            }
            toml::Value::Table(table) => Value::Object(
                table
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), convert(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
    match value {
        toml::Value::String(text) => {
            serde_json::from_str(text).map_err(|e| format!("is not JSON text: {e}"))
        }
        other => convert(other),
    }
}

/// The `required` property names of a JSON Schema object.
fn required_names(schema: &Value) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn printable_ascii(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

impl Ctx<'_> {
    /// A JSON object from a document key; `what` names the key and its owner in errors.
    fn json_object(&self, doc: &Document, what: &str) -> Result<Value, ConfigError> {
        let value = to_json(doc.get_ref()).map_err(|e| self.err(doc, format!("{what} {e}")))?;
        if !value.is_object() {
            return Err(self.err(
                doc,
                format!("{what} must be a JSON object (an inline table or a JSON string)"),
            ));
        }
        Ok(value)
    }

    /// The example of `schema`, checked for the properties the schema requires: a catalog
    /// validates the example against the schema and drops the listing when it fails.
    fn example_for(
        &self,
        example: &Option<Document>,
        schema: &Option<Value>,
        schema_key: &str,
        example_key: &str,
        owner: &str,
        at: &toml::Spanned<impl Sized>,
    ) -> Result<Option<Value>, ConfigError> {
        let example = example
            .as_ref()
            .map(|doc| {
                self.json_object(doc, &format!("`{example_key}` of {owner}"))
                    .map(|v| (v, doc.span()))
            })
            .transpose()?;
        let required = schema.as_ref().map(required_names).unwrap_or_default();
        for name in required {
            let has = example.as_ref().is_some_and(|(v, _)| v.get(name).is_some());
            if !has {
                let message = format!("{owner}: `{schema_key}` requires `{name}`, which `{example_key}` does not have (catalogs check the example against the schema)");
                return Err(match &example {
                    Some((_, span)) => self.error_at(span.clone(), message),
                    None => self.err(at, message),
                });
            }
        }
        Ok(example.map(|(v, _)| v))
    }

    /// The Bazaar declaration of a route or tool, `None` when it is not listed. `at` locates
    /// errors about the entry as a whole.
    pub(super) fn listing(
        &self,
        owner: &str,
        listing: &Listing,
        defaults: &Defaults,
        listed: Listed<'_>,
        at: &toml::Spanned<impl Sized>,
    ) -> Result<Option<Arc<Discovery>>, ConfigError> {
        let on = listing
            .discoverable
            .as_ref()
            .or(defaults.discoverable.as_ref())
            .is_some_and(|d| *d.get_ref());
        if !on {
            if let Some(key) = listing.set_keys().first() {
                return Err(self.err(
                    at,
                    format!("{owner} sets `{key}` but is not listed in the Bazaar: add `discoverable = true` (on it or in [defaults])"),
                ));
            }
            return Ok(None);
        }
        let service = self.service_meta(owner, listing, defaults)?;
        let schema = listing
            .input_schema
            .as_ref()
            .map(|doc| self.json_object(doc, &format!("`input_schema` of {owner}")))
            .transpose()?;
        let example = self.example_for(
            &listing.input_example,
            &schema,
            "input_schema",
            "input_example",
            owner,
            at,
        )?;
        let output_schema = listing
            .output_schema
            .as_ref()
            .map(|doc| self.json_object(doc, &format!("`output_schema` of {owner}")))
            .transpose()?;
        let output_example = self.example_for(
            &listing.output_example,
            &output_schema,
            "output_schema",
            "output_example",
            owner,
            at,
        )?;
        let output = match (output_example, output_schema) {
            (Some(example), schema) => Some(OutputDecl { example, schema }),
            (None, Some(_)) => {
                return Err(self.err(
                    at,
                    format!("{owner} sets `output_schema` without `output_example`: catalogs list a response by its example"),
                ))
            }
            (None, None) => None,
        };
        let input = match listed {
            Listed::Http { pattern } => {
                let (method, path) = pattern.split_once(' ').unwrap_or(("*", pattern));
                let method = method.trim();
                let query = ["GET", "HEAD", "DELETE"].contains(&method);
                let body = ["POST", "PUT", "PATCH"].contains(&method);
                if !(query || body || method == "*") {
                    return Err(self.err(
                        at,
                        format!("{owner}: the Bazaar lists GET, HEAD, DELETE, POST, PUT and PATCH calls, not {method}"),
                    ));
                }
                let body_type = match &listing.body_type {
                    None => "json".to_string(),
                    Some(text) => {
                        let value = self.expand(text)?;
                        if query {
                            return Err(self.err(
                                text,
                                format!(
                                    "{owner} sets `body_type`, but {method} requests send no body"
                                ),
                            ));
                        }
                        if !BODY_TYPES.contains(&value.as_str()) {
                            return Err(self.err(
                                text,
                                format!("{owner}: `body_type` is `{value}`; use \"json\", \"form-data\" or \"text\""),
                            ));
                        }
                        value
                    }
                };
                if query {
                    if let Some(kind) = schema.as_ref().and_then(|s| s.get("type")) {
                        if kind != "object" {
                            return Err(self.err(
                                at,
                                format!("{owner}: `input_schema` describes query parameters, so its `type` must be \"object\", not {kind}"),
                            ));
                        }
                    }
                }
                let template = route_template(path.trim());
                if let Some(t) = &template {
                    if !is_valid_route_template(t) {
                        return Err(self.err(
                            at,
                            format!("{owner}: its path `{t}` cannot be a Bazaar route template (letters, digits and _/:.-~% only)"),
                        ));
                    }
                }
                InputDecl::Http {
                    schema,
                    example,
                    body_type,
                    route_template: template,
                }
            }
            Listed::Tool { name, description } => InputDecl::Mcp {
                tool_name: name.to_string(),
                description: description.filter(|d| !d.is_empty()),
                schema,
                example,
            },
        };
        Ok(Some(Arc::new(Discovery {
            service,
            input,
            output,
        })))
    }

    /// `service_name`, `tags` and `icon_url` of the entry, or of `[defaults]`.
    fn service_meta(
        &self,
        owner: &str,
        listing: &Listing,
        defaults: &Defaults,
    ) -> Result<ServiceMeta, ConfigError> {
        let service_name = match listing
            .service_name
            .as_ref()
            .or(defaults.service_name.as_ref())
        {
            None => None,
            Some(text) => {
                let name = self.expand(text)?;
                if !printable_ascii(&name) || name.len() > MAX_SERVICE_NAME {
                    return Err(self.err(
                        text,
                        format!("{owner}: `service_name` must be 1 to {MAX_SERVICE_NAME} printable ASCII characters"),
                    ));
                }
                Some(name)
            }
        };
        let tags = match listing.tags.as_ref().or(defaults.tags.as_ref()) {
            None => Vec::new(),
            Some(list) => {
                let tags = list.get_ref();
                if tags.len() > MAX_TAGS {
                    return Err(self.err(
                        list,
                        format!("{owner}: at most {MAX_TAGS} `tags`, not {}", tags.len()),
                    ));
                }
                let mut seen: Vec<String> = Vec::new();
                for tag in tags {
                    if !printable_ascii(tag) || tag.len() > MAX_TAG {
                        return Err(self.err(
                            list,
                            format!("{owner}: tag `{tag}` must be 1 to {MAX_TAG} printable ASCII characters"),
                        ));
                    }
                    let folded = tag.to_ascii_lowercase();
                    if seen.contains(&folded) {
                        return Err(self.err(list, format!("{owner}: tag `{tag}` is listed twice")));
                    }
                    seen.push(folded);
                }
                tags.clone()
            }
        };
        let icon_url = match listing.icon_url.as_ref().or(defaults.icon_url.as_ref()) {
            None => None,
            Some(text) => {
                let value = self.expand(text)?;
                self.check_icon_url(&value)
                    .map_err(|why| self.err(text, format!("{owner}: `icon_url` {why}")))?;
                Some(value)
            }
        };
        Ok(ServiceMeta {
            service_name,
            tags,
            icon_url,
        })
    }

    /// Why catalogs would drop `value` as an icon, if they would.
    fn check_icon_url(&self, value: &str) -> Result<(), String> {
        if value.len() > MAX_ICON_URL {
            return Err(format!("is longer than {MAX_ICON_URL} characters"));
        }
        let parsed = url::Url::parse(value)
            .map_err(|e| format!("`{value}` is not an absolute URL ({e})"))?;
        if parsed.scheme() != "https" {
            return Err(format!("`{value}` must be an https URL"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("`{value}` must not carry credentials"));
        }
        match parsed.host() {
            Some(url::Host::Domain(host)) if host != "localhost" && !host.ends_with(".localhost") => {
                Ok(())
            }
            _ => Err(format!(
                "`{value}` must name a public host by its domain name (catalogs refuse addresses and localhost)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_tables_or_json_text() {
        let table: toml::Value =
            toml::from_str::<toml::Table>("v = { type = \"object\", n = 1.5 }")
                .unwrap()
                .remove("v")
                .unwrap();
        assert_eq!(
            to_json(&table).unwrap(),
            serde_json::json!({"type": "object", "n": 1.5})
        );
        let text = toml::Value::String(r#"{"a": [1, 2]}"#.into());
        assert_eq!(to_json(&text).unwrap(), serde_json::json!({"a": [1, 2]}));
        assert!(to_json(&toml::Value::String("{".into())).is_err());
        let date: toml::Value = toml::from_str::<toml::Table>("d = 1979-05-27")
            .unwrap()
            .remove("d")
            .unwrap();
        assert!(to_json(&date).is_err());
    }
}
