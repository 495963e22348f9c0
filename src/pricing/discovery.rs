//! The Bazaar discovery declaration of a route: what a catalog (CDP Bazaar, x402scan) needs to
//! list it, in the shape the official `@x402/extensions/bazaar` server declares and validates.
//!
//! A declaration is `{info, schema}`: `info` describes the call (`input`, optional `output`) and
//! `schema` is a JSON Schema that `info` must satisfy. The official server fills in the request's
//! method, and for routes with `:param` segments a `routeTemplate` and the request's `pathParams`,
//! so part of the declaration depends on the request; everything else is fixed by configuration.

use serde_json::{json, Map, Value};

/// The key of the discovery extension in `PaymentRequired.extensions`.
pub const BAZAAR: &str = "bazaar";

const SCHEMA_DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Methods whose input is the query string, and methods whose input is the body (the official
/// declaration refuses any other method).
const QUERY_METHODS: [&str; 3] = ["GET", "HEAD", "DELETE"];
const BODY_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// The body encodings a Bazaar declaration may name.
pub const BODY_TYPES: [&str; 3] = ["json", "form-data", "text"];

/// The MCP transport the gateway serves (its MCP routes are Streamable HTTP endpoints).
const MCP_TRANSPORT: &str = "streamable-http";

/// Catalog fields of the challenge's `resource` object (`serviceName`, `tags`, `iconUrl`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceMeta {
    pub service_name: Option<String>,
    pub tags: Vec<String>,
    pub icon_url: Option<String>,
}

/// An example of a response and, optionally, the JSON Schema it follows.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDecl {
    pub example: Value,
    pub schema: Option<Value>,
}

/// What the caller sends.
#[derive(Debug, Clone, PartialEq)]
pub enum InputDecl {
    /// An HTTP route: query parameters (GET, HEAD, DELETE) or a body (POST, PUT, PATCH).
    Http {
        /// JSON Schema of the query parameters or of the body.
        schema: Option<Value>,
        /// Example query parameters or body.
        example: Option<Value>,
        /// `json`, `form-data` or `text`, for body methods.
        body_type: String,
        /// `/users/:id` for routes with variable segments (`*` reads as `:var1`, `:var2`, ...).
        route_template: Option<String>,
    },
    /// A tool of an MCP route.
    Mcp {
        tool_name: String,
        description: Option<String>,
        /// JSON Schema of the tool's arguments.
        schema: Option<Value>,
        /// Example arguments.
        example: Option<Value>,
    },
}

/// Everything a discoverable route declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    pub service: ServiceMeta,
    pub input: InputDecl,
    pub output: Option<OutputDecl>,
}

/// `target` with the keys of `extra` written over its own, as the official declaration spreads an
/// operator's schema into `{type: "object"}`.
fn spread(mut target: Map<String, Value>, extra: Option<&Value>) -> Value {
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            target.insert(k.clone(), v.clone());
        }
    }
    Value::Object(target)
}

fn object(pairs: Value) -> Map<String, Value> {
    match pairs {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The path of an absolute URL (`https://host/a/b?q` → `/a/b`), or the text itself when it has no
/// scheme.
fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The route template of a `match` path, when it has variable segments: `:name` stays, each `*`
/// becomes `:var1`, `:var2`, ... (as the official server names them). `None` for static paths, for
/// paths made of `*` only and for `**` paths, which the official catalog cannot template.
pub fn route_template(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.contains(&"**") || segments.iter().all(|s| *s == "*") {
        return None;
    }
    if !segments.iter().any(|s| *s == "*" || s.starts_with(':')) {
        return None;
    }
    let mut counter = 0;
    let named: Vec<String> = segments
        .iter()
        .map(|s| {
            if *s == "*" {
                counter += 1;
                format!(":var{counter}")
            } else {
                (*s).to_string()
            }
        })
        .collect();
    Some(format!("/{}", named.join("/")))
}

/// Whether a catalog accepts `template` (the official facilitator's rule: `/` then letters,
/// digits and `_/:.-~%`, no `..`).
pub fn is_valid_route_template(template: &str) -> bool {
    template.starts_with('/')
        && template.len() > 1
        && template
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/:.-~%".contains(&b))
        && !template.contains("..")
}

/// The values of the template's `:name` segments in `path`; empty when the path does not have the
/// template's shape (as the official server answers then).
fn path_params(template: &str, path: &str) -> Map<String, Value> {
    let names: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let values: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Map::new();
    if names.len() != values.len() {
        return out;
    }
    for (name, value) in names.iter().zip(values) {
        if let Some(name) = name.strip_prefix(':') {
            out.insert(name.to_string(), Value::String(value.to_string()));
        }
    }
    out
}

impl Discovery {
    /// Whether a request with `method` can be declared (HTTP routes: the six methods the official
    /// declaration names; MCP tools: always).
    pub fn declares_method(&self, method: &str) -> bool {
        match self.input {
            InputDecl::Http { .. } => {
                QUERY_METHODS.contains(&method) || BODY_METHODS.contains(&method)
            }
            InputDecl::Mcp { .. } => true,
        }
    }

    /// The `bazaar` extension of the challenge answering `method` on `resource_url`; `None` when
    /// the method cannot be declared.
    pub fn declaration(&self, method: &str, resource_url: &str) -> Option<Value> {
        match &self.input {
            InputDecl::Http {
                schema,
                example,
                body_type,
                route_template,
            } => {
                let body = if BODY_METHODS.contains(&method) {
                    true
                } else if QUERY_METHODS.contains(&method) {
                    false
                } else {
                    return None;
                };
                let default_schema = json!({"properties": {}});
                let input_schema = schema.as_ref().unwrap_or(&default_schema);
                let example = example.clone().unwrap_or_else(|| json!({}));
                let mut info_input = object(json!({"type": "http", "method": method}));
                let mut schema_props = object(json!({
                    "type": {"type": "string", "const": "http"},
                    "method": {"type": "string", "enum": [method]},
                }));
                let required = if body {
                    info_input.insert("bodyType".into(), Value::String(body_type.clone()));
                    info_input.insert("body".into(), example);
                    schema_props.insert(
                        "bodyType".into(),
                        json!({"type": "string", "enum": BODY_TYPES}),
                    );
                    schema_props.insert("body".into(), input_schema.clone());
                    json!(["type", "method", "bodyType", "body"])
                } else {
                    info_input.insert("queryParams".into(), example);
                    schema_props.insert(
                        "queryParams".into(),
                        spread(object(json!({"type": "object"})), Some(input_schema)),
                    );
                    json!(["type", "method"])
                };
                if let Some(template) = route_template {
                    info_input.insert(
                        "pathParams".into(),
                        Value::Object(path_params(template, path_of(resource_url))),
                    );
                    schema_props.insert("pathParams".into(), json!({"type": "object"}));
                }
                let input_schema = json!({
                    "type": "object",
                    "properties": schema_props,
                    "required": required,
                    "additionalProperties": false,
                });
                let mut declaration = self.wrap(Value::Object(info_input), input_schema);
                if let (Some(template), Some(map)) = (route_template, declaration.as_object_mut()) {
                    map.insert("routeTemplate".into(), Value::String(template.clone()));
                }
                Some(declaration)
            }
            InputDecl::Mcp {
                tool_name,
                description,
                schema,
                example,
            } => {
                let mut info_input = object(json!({"type": "mcp", "toolName": tool_name}));
                let mut props = object(json!({
                    "type": {"type": "string", "const": "mcp"},
                    "toolName": {"type": "string"},
                }));
                if let Some(description) = description {
                    info_input.insert("description".into(), Value::String(description.clone()));
                    props.insert("description".into(), json!({"type": "string"}));
                }
                info_input.insert("transport".into(), Value::String(MCP_TRANSPORT.into()));
                props.insert(
                    "transport".into(),
                    json!({"type": "string", "enum": [MCP_TRANSPORT]}),
                );
                info_input.insert(
                    "inputSchema".into(),
                    schema
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                props.insert("inputSchema".into(), json!({"type": "object"}));
                if let Some(example) = example {
                    info_input.insert("example".into(), example.clone());
                    props.insert("example".into(), json!({"type": "object"}));
                }
                let input_schema = json!({
                    "type": "object",
                    "properties": props,
                    "required": ["type", "toolName", "inputSchema"],
                    "additionalProperties": false,
                });
                Some(self.wrap(Value::Object(info_input), input_schema))
            }
        }
    }

    /// `{info: {input, output?}, schema}` around an input and its schema.
    fn wrap(&self, info_input: Value, input_schema: Value) -> Value {
        let mut info = object(json!({"input": info_input}));
        let mut props = object(json!({"input": input_schema}));
        if let Some(output) = &self.output {
            info.insert(
                "output".into(),
                json!({"type": "json", "example": output.example}),
            );
            props.insert(
                "output".into(),
                json!({
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "example": spread(object(json!({"type": "object"})), output.schema.as_ref()),
                    },
                    "required": ["type"],
                }),
            );
        }
        json!({
            "info": info,
            "schema": {
                "$schema": SCHEMA_DRAFT,
                "type": "object",
                "properties": props,
                "required": ["input"],
            },
        })
    }

    /// The catalog fields as JSON members to append to the `resource` object (`,"serviceName":…`),
    /// empty when none is set.
    pub fn resource_members(&self) -> String {
        let mut out = String::new();
        let s = &self.service;
        if let Some(name) = &s.service_name {
            out.push_str(&format!(
                r#","serviceName":{}"#,
                Value::String(name.clone())
            ));
        }
        if !s.tags.is_empty() {
            out.push_str(&format!(r#","tags":{}"#, json!(s.tags)));
        }
        if let Some(icon) = &s.icon_url {
            out.push_str(&format!(r#","iconUrl":{}"#, Value::String(icon.clone())));
        }
        out
    }

    /// One line for `check`: what the listing declares. `method` is the route's (`*` for any).
    pub fn describe(&self, method: &str) -> String {
        let mut parts = Vec::new();
        match &self.input {
            InputDecl::Http {
                schema,
                example,
                body_type,
                route_template,
            } => {
                let declared = match (schema.is_some(), example.is_some()) {
                    (true, true) => "schema and example",
                    (true, false) => "schema",
                    (false, true) => "example",
                    (false, false) => "nothing declared",
                };
                let input = if QUERY_METHODS.contains(&method) {
                    "query parameters".to_string()
                } else if BODY_METHODS.contains(&method) {
                    format!("{body_type} body")
                } else {
                    format!("query parameters or {body_type} body, by method")
                };
                parts.push(format!("http {input}: {declared}"));
                if let Some(template) = route_template {
                    parts.push(format!("route template {template}"));
                }
            }
            InputDecl::Mcp {
                tool_name, schema, ..
            } => {
                let schema = if schema.is_some() {
                    "its arguments' schema"
                } else {
                    "no arguments' schema"
                };
                parts.push(format!("mcp tool `{tool_name}`, {schema}"));
            }
        }
        if self.output.is_some() {
            parts.push("output example".into());
        }
        let s = &self.service;
        if let Some(name) = &s.service_name {
            parts.push(format!("service \"{name}\""));
        }
        if !s.tags.is_empty() {
            parts.push(format!("tags {}", s.tags.join(", ")));
        }
        if let Some(icon) = &s.icon_url {
            parts.push(format!("icon {icon}"));
        }
        parts.join("; ")
    }

    /// What `/.well-known/x402` lists about the route.
    pub fn summary(&self) -> Value {
        let mut out = Map::new();
        let s = &self.service;
        if let Some(name) = &s.service_name {
            out.insert("serviceName".into(), json!(name));
        }
        if !s.tags.is_empty() {
            out.insert("tags".into(), json!(s.tags));
        }
        if let Some(icon) = &s.icon_url {
            out.insert("iconUrl".into(), json!(icon));
        }
        match &self.input {
            InputDecl::Http {
                schema,
                example,
                body_type,
                route_template,
            } => {
                out.insert("type".into(), json!("http"));
                if let Some(template) = route_template {
                    out.insert("routeTemplate".into(), json!(template));
                }
                out.insert("bodyType".into(), json!(body_type));
                if let Some(schema) = schema {
                    out.insert("inputSchema".into(), schema.clone());
                }
                if let Some(example) = example {
                    out.insert("inputExample".into(), example.clone());
                }
            }
            InputDecl::Mcp {
                tool_name,
                schema,
                example,
                ..
            } => {
                out.insert("type".into(), json!("mcp"));
                out.insert("toolName".into(), json!(tool_name));
                if let Some(schema) = schema {
                    out.insert("inputSchema".into(), schema.clone());
                }
                if let Some(example) = example {
                    out.insert("inputExample".into(), example.clone());
                }
            }
        }
        if let Some(output) = &self.output {
            out.insert("outputExample".into(), output.example.clone());
            if let Some(schema) = &output.schema {
                out.insert("outputSchema".into(), schema.clone());
            }
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(schema: Option<Value>, example: Option<Value>, template: Option<&str>) -> Discovery {
        Discovery {
            service: ServiceMeta::default(),
            input: InputDecl::Http {
                schema,
                example,
                body_type: "json".into(),
                route_template: template.map(str::to_string),
            },
            output: None,
        }
    }

    #[test]
    fn a_get_route_declares_its_query_parameters_as_the_official_server_does() {
        let d = Discovery {
            output: Some(OutputDecl {
                example: json!({"temp": 21}),
                schema: Some(json!({"properties": {"temp": {"type": "number"}}})),
            }),
            ..http(
                Some(json!({"properties": {"city": {"type": "string"}}, "required": ["city"]})),
                Some(json!({"city": "Paris"})),
                None,
            )
        };
        let got = d
            .declaration("GET", "https://api.example/weather?city=x")
            .unwrap();
        let want = json!({
            "info": {
                "input": {"type": "http", "method": "GET", "queryParams": {"city": "Paris"}},
                "output": {"type": "json", "example": {"temp": 21}},
            },
            "schema": {
                "$schema": SCHEMA_DRAFT,
                "type": "object",
                "properties": {
                    "input": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "const": "http"},
                            "method": {"type": "string", "enum": ["GET"]},
                            "queryParams": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                            },
                        },
                        "required": ["type", "method"],
                        "additionalProperties": false,
                    },
                    "output": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string"},
                            "example": {"type": "object", "properties": {"temp": {"type": "number"}}},
                        },
                        "required": ["type"],
                    },
                },
                "required": ["input"],
            },
        });
        assert_eq!(got, want);
    }

    #[test]
    fn a_post_route_declares_its_body() {
        let d = http(
            Some(json!({"type": "object"})),
            Some(json!({"q": "x"})),
            None,
        );
        let got = d.declaration("POST", "https://a/search").unwrap();
        assert_eq!(
            got["info"]["input"],
            json!({"type": "http", "method": "POST", "bodyType": "json", "body": {"q": "x"}})
        );
        assert_eq!(
            got["schema"]["properties"]["input"]["properties"]["body"],
            json!({"type": "object"})
        );
        assert_eq!(
            got["schema"]["properties"]["input"]["required"],
            json!(["type", "method", "bodyType", "body"])
        );
        assert!(got.get("routeTemplate").is_none());
        assert!(d.declaration("OPTIONS", "https://a/search").is_none());
    }

    #[test]
    fn a_param_route_carries_its_template_and_the_request_path_params() {
        let d = http(None, None, Some("/users/:id/posts/:var1"));
        let got = d
            .declaration("GET", "https://a/users/42/posts/7?x=1")
            .unwrap();
        assert_eq!(got["routeTemplate"], "/users/:id/posts/:var1");
        assert_eq!(
            got["info"]["input"]["pathParams"],
            json!({"id": "42", "var1": "7"})
        );
        assert_eq!(
            got["schema"]["properties"]["input"]["properties"]["pathParams"],
            json!({"type": "object"})
        );
        let other = d.declaration("GET", "https://a/users/42").unwrap();
        assert_eq!(other["info"]["input"]["pathParams"], json!({}));
    }

    #[test]
    fn templates_follow_the_official_wildcard_naming() {
        assert_eq!(route_template("/a/b"), None);
        assert_eq!(route_template("/*"), None);
        assert_eq!(route_template("/a/**"), None);
        assert_eq!(route_template("/users/:id").as_deref(), Some("/users/:id"));
        assert_eq!(
            route_template("/a/*/b/*").as_deref(),
            Some("/a/:var1/b/:var2")
        );
        assert!(is_valid_route_template("/users/:id"));
        assert!(!is_valid_route_template("/a/../b"));
        assert!(!is_valid_route_template("/a b"));
    }

    #[test]
    fn an_mcp_tool_declares_its_arguments() {
        let d = Discovery {
            service: ServiceMeta::default(),
            input: InputDecl::Mcp {
                tool_name: "search".into(),
                description: Some("Search the web".into()),
                schema: Some(json!({"type": "object", "properties": {"q": {"type": "string"}}})),
                example: Some(json!({"q": "x402"})),
            },
            output: None,
        };
        let got = d.declaration("POST", "mcp://tool/search").unwrap();
        assert_eq!(
            got["info"]["input"],
            json!({
                "type": "mcp", "toolName": "search", "description": "Search the web",
                "transport": "streamable-http",
                "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}},
                "example": {"q": "x402"},
            })
        );
        assert_eq!(
            got["schema"]["properties"]["input"]["required"],
            json!(["type", "toolName", "inputSchema"])
        );
    }

    #[test]
    fn catalog_fields_are_json_members() {
        let d = Discovery {
            service: ServiceMeta {
                service_name: Some("Weather \"Co\"".into()),
                tags: vec!["weather".into(), "data".into()],
                icon_url: Some("https://example.com/i.png".into()),
            },
            ..http(None, None, None)
        };
        let members = d.resource_members();
        let parsed: Value = serde_json::from_str(&format!(r#"{{"a":1{members}}}"#)).unwrap();
        assert_eq!(parsed["serviceName"], "Weather \"Co\"");
        assert_eq!(parsed["tags"], json!(["weather", "data"]));
        assert_eq!(parsed["iconUrl"], "https://example.com/i.png");
        assert_eq!(http(None, None, None).resource_members(), "");
    }
}
