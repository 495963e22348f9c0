use super::*;
use crate::config::GatewayConfig;
use std::path::Path;

const PETS_31: &str = r#"
openapi: 3.1.0
info: {title: Pets, version: "2"}
servers:
  - url: https://pets.example.com/v1
paths:
  /pets:
    x-x402-price: "$0.02"
    get:
      operationId: listPets
      summary: List pets
      responses:
        "200":
          description: ok
          content:
            text/plain: {}
            application/json: {}
    post:
      operationId: createPet
      x-x402-free: true
      summary: Create a pet
  /pets/{petId}:
    get:
      operationId: showPet
      x-x402-price: 0.05
      description: |
        Info for a
        specific pet
    delete:
      operationId: deletePet
  /health:
    get:
      x-price: free
  /files/{name}.json:
    get:
      x-x402-price: "$0.001"
"#;

fn generate(text: &str, options: &InitOptions) -> Result<Generated, OpenApiError> {
    gateway_toml(&ApiDocument::parse(text, "api.yaml")?, options)
}

fn pricing_of<'a>(generated: &'a Generated, pattern: &str) -> &'a Pricing {
    &generated
        .routes
        .iter()
        .find(|r| r.pattern == pattern)
        .unwrap_or_else(|| panic!("no route {pattern}: {:?}", generated.routes))
        .pricing
}

fn valid(text: &str) -> GatewayConfig {
    GatewayConfig::parse(text, Path::new("gateway.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn path_templates_become_route_patterns_under_the_server_base_path() {
    assert_eq!(
        route_path("/v1", "/pets/{petId}"),
        ("/v1/pets/:petId".into(), false)
    );
    assert_eq!(route_path("", "/"), ("/".into(), false));
    assert_eq!(route_path("", "/a/{x}/b/{y}"), ("/a/:x/b/:y".into(), false));
    assert_eq!(
        route_path("", "/files/{name}.json"),
        ("/files/*".into(), true),
        "a parameter inside a segment widens to any one segment"
    );
    assert_eq!(
        route_path("/api/", "/my docs"),
        ("/api/my%20docs".into(), false)
    );
}

#[test]
fn operations_become_routes_with_prices_from_the_operation_the_path_item_or_the_default() {
    let generated = generate(PETS_31, &InitOptions::default()).unwrap();
    assert_eq!(
        pricing_of(&generated, "GET /v1/pets"),
        &Pricing::Priced {
            price: "$0.02".into(),
            from: "the path item"
        }
    );
    assert_eq!(
        pricing_of(&generated, "POST /v1/pets"),
        &Pricing::Free {
            from: "the operation"
        }
    );
    assert_eq!(
        pricing_of(&generated, "GET /v1/pets/:petId"),
        &Pricing::Priced {
            price: "$0.05".into(),
            from: "the operation"
        },
        "a number is a price too"
    );
    assert_eq!(
        pricing_of(&generated, "DELETE /v1/pets/:petId"),
        &Pricing::Unpriced
    );
    assert!(matches!(
        pricing_of(&generated, "GET /v1/health"),
        Pricing::Free { .. }
    ));
    assert_eq!(generated.upstream, "https://pets.example.com");

    let with_default = generate(
        PETS_31,
        &InitOptions {
            default_price: Some("0.003".into()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        pricing_of(&with_default, "DELETE /v1/pets/:petId"),
        &Pricing::Priced {
            price: "$0.003".into(),
            from: "--price"
        }
    );
    assert_eq!(
        pricing_of(&with_default, "GET /v1/pets/:petId"),
        &Pricing::Priced {
            price: "$0.05".into(),
            from: "the operation"
        },
        "the operation's own price wins over --price"
    );
}

#[test]
fn the_generated_file_is_a_valid_configuration_with_every_priced_operation() {
    let generated = generate(PETS_31, &InitOptions::default()).unwrap();
    let config = valid(&generated.text);
    let routes = config.routes.in_file_order();
    let sources: Vec<&str> = routes.iter().map(|r| r.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "GET /v1/pets",
            "POST /v1/pets",
            "GET /v1/pets/:petId",
            "GET /v1/health",
            "GET /v1/files/*"
        ],
        "the unpriced DELETE is commented out"
    );
    assert_eq!(config.unmatched, UnmatchedPolicy::Deny);
    let RouteKind::Priced(list) = &routes[0].kind else {
        panic!("GET /v1/pets is priced");
    };
    assert_eq!(list.options[0].requirements.amount, "20000");
    assert_eq!(list.description, "List pets");
    assert_eq!(list.mime_type, "application/json");
    let RouteKind::Priced(show) = &routes[2].kind else {
        panic!("GET /v1/pets/:petId is priced");
    };
    assert_eq!(show.description, "Info for a specific pet", "on one line");
    assert!(matches!(routes[1].kind, RouteKind::Free));
    let text = &generated.text;
    assert!(text.contains("# operationId: showPet"), "{text}");
    assert!(
        text.contains("# [[routes]]\n# match = \"DELETE /v1/pets/:petId\""),
        "{text}"
    );
    assert!(text.contains("NOT PRICED"), "{text}");
}

#[test]
fn the_upstream_comes_from_the_option_else_the_document_else_the_default() {
    let options = InitOptions {
        upstream: Some("http://127.0.0.1:9000".into()),
        ..Default::default()
    };
    let generated = generate(PETS_31, &options).unwrap();
    assert_eq!(generated.upstream, "http://127.0.0.1:9000");
    assert_eq!(
        valid(&generated.text).routes.in_file_order()[0].source,
        "GET /v1/pets",
        "the document's base path stays in the routes"
    );
    let relative = PETS_31.replace("https://pets.example.com/v1", "/api");
    let generated = generate(&relative, &InitOptions::default()).unwrap();
    assert_eq!(generated.upstream, DEFAULT_UPSTREAM);
    assert_eq!(generated.routes[0].pattern, "GET /api/pets");
    let variables = PETS_31.replace(
        "  - url: https://pets.example.com/v1\n",
        "  - url: http://{host}:{port}/v1\n    variables:\n      host: {default: localhost}\n      port: {default: '3000'}\n",
    );
    let generated = generate(&variables, &InitOptions::default()).unwrap();
    assert_eq!(generated.upstream, "http://localhost:3000");

    for bad in ["ftp://x", "http://host/base", "not a url"] {
        let err = generate(
            PETS_31,
            &InitOptions {
                upstream: Some(bad.into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, OpenApiError::Upstream { .. }), "{bad}: {err}");
    }
}

#[test]
fn openapi_3_0_in_json_is_read_too() {
    let json = r#"{
	"openapi": "3.0.3",
	"info": {"title": "Pets", "version": "1"},
	"paths": {"/pets/{id}": {"get": {"x-x402-price": "$1", "summary": "One pet",
	  "responses": {"200": {"description": "ok"}}}}}
}"#;
    let doc = ApiDocument::parse(json, "api.json").unwrap();
    assert_eq!(doc.version, "3.0.3");
    let generated = gateway_toml(&doc, &InitOptions::default()).unwrap();
    assert_eq!(generated.upstream, DEFAULT_UPSTREAM);
    let config = valid(&generated.text);
    assert_eq!(config.routes.in_file_order()[0].source, "GET /pets/:id");
}

#[test]
fn documents_that_are_not_openapi_3_are_refused_naming_the_file() {
    let problem = |text: &str| match ApiDocument::parse(text, "api.yaml") {
        Err(OpenApiError::Document { file, problem }) => {
            assert_eq!(file, "api.yaml");
            problem
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        problem("swagger: '2.0'\ninfo: {title: x, version: '1'}\npaths: {}\n"),
        Problem::Swagger("2.0".into())
    );
    assert_eq!(
        problem("openapi: 2.5.0\npaths: {}\n"),
        Problem::Version("2.5.0".into())
    );
    assert_eq!(problem("name: not an api\n"), Problem::NotOpenApi);
    assert_eq!(problem("- a list\n"), Problem::NotOpenApi);
    assert!(matches!(problem("{\"openapi\": "), Problem::Syntax(_)));
    assert!(matches!(problem("a: [unclosed\n"), Problem::Syntax(_)));
    let err = ApiDocument::parse("swagger: '2.0'\n", "api.yaml").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("api.yaml: is a Swagger 2.0 document; only OpenAPI 3.0 and 3.1"),
        "{err}"
    );
    let doc = ApiDocument::parse(
        "openapi: 3.1.0\ninfo: {title: x, version: '1'}\npaths: {}\n",
        "api.yaml",
    )
    .unwrap();
    assert_eq!(
        gateway_toml(&doc, &InitOptions::default()).unwrap_err(),
        OpenApiError::Document {
            file: "api.yaml".into(),
            problem: Problem::NoOperations
        }
    );
    let missing = ApiDocument::read(Path::new("/nonexistent/api.yaml")).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("/nonexistent/api.yaml: cannot read it"),
        "{missing}"
    );
}

#[test]
fn bad_prices_are_refused_naming_the_operation() {
    let priced = |price: &str| {
        format!("openapi: 3.0.0\ninfo: {{title: x, version: '1'}}\npaths:\n  /a:\n    get:\n      x-x402-price: {price}\n")
    };
    for bad in ["\"$0.0000001\"", "\"ten cents\"", "-1", "[1]"] {
        let err = generate(&priced(bad), &InitOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("api.yaml: GET /a: `x-x402-price`"),
            "{bad}: {text}"
        );
    }
    let both = "openapi: 3.0.0\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      x-x402-free: true\n      x-x402-price: $1\n";
    let err = generate(both, &InitOptions::default()).unwrap_err();
    assert!(err.to_string().contains("either free or priced"), "{err}");
    let err = generate(
        &priced("\"$1\""),
        &InitOptions {
            default_price: Some("cheap".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, OpenApiError::DefaultPrice { .. }), "{err}");
    // Zero is free, as `free = true` is the configuration's way to say so.
    let zero = generate(&priced("0"), &InitOptions::default()).unwrap();
    assert!(matches!(zero.routes[0].pricing, Pricing::Free { .. }));
}

#[test]
fn a_configuration_becomes_an_openapi_document_with_its_402_terms() {
    let config = valid(
        r#"
[server]
public_url = "https://api.example.com"
[upstream]
url = "http://127.0.0.1:9"
[facilitator]
kind = "x402"
url = "http://127.0.0.1:4020"
bearer_token = "very-secret-token"
[defaults]
pay_to = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
network = "eip155:84532"
[[routes]]
match = "GET /pets/:petId"
price = "$0.05"
description = "One pet"
discoverable = true
service_name = "Pet Shop"
[[routes]]
match = "* /reports/*/**"
accepts = [ { price = "$0.01" }, { price = "$0.01", network = "eip155:8453" } ]
[[routes]]
match = "GET /health"
free = true
"#,
    );
    let doc = document(&config);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Pet Shop");
    assert_eq!(doc["servers"][0]["url"], "https://api.example.com");
    let pet = &doc["paths"]["/pets/{petId}"]["get"];
    assert_eq!(pet["x-x402-price"], "$0.05");
    assert_eq!(pet["summary"], "One pet");
    assert_eq!(pet["parameters"][0]["name"], "petId");
    assert_eq!(pet["parameters"][0]["in"], "path");
    let RouteKind::Priced(priced) = &config.routes.in_file_order()[0].kind else {
        panic!("priced");
    };
    assert_eq!(
        pet["x-x402-accepts"],
        serde_json::to_value(
            priced
                .options
                .iter()
                .map(|o| &o.requirements)
                .collect::<Vec<_>>()
        )
        .unwrap(),
        "the options exactly as the 402 lists them"
    );
    assert_eq!(pet["x-x402-accepts"][0]["amount"], "50000");
    let reports = &doc["paths"]["/reports/{var1}/{rest}"];
    for method in ["get", "put", "post", "delete", "patch"] {
        assert_eq!(
            reports[method]["x-x402-accepts"].as_array().map(Vec::len),
            Some(2),
            "{method}"
        );
    }
    let health = &doc["paths"]["/health"]["get"];
    assert!(health.is_object());
    assert!(health.get("x-x402-price").is_none() && health.get("x-x402-accepts").is_none());
    assert!(!doc.to_string().contains("very-secret-token"));
}

#[test]
fn a_document_round_trips_through_init() {
    let generated = generate(PETS_31, &InitOptions::default()).unwrap();
    let doc = document(&valid(&generated.text));
    assert_eq!(doc["info"]["title"], "x402-gateway");
    assert!(doc.get("servers").is_none());
    assert_eq!(doc["paths"]["/v1/pets"]["get"]["x-x402-price"], "$0.02");
    assert_eq!(
        doc["paths"]["/v1/pets/{petId}"]["get"]["x-x402-price"],
        "$0.05"
    );
    // Written back as a document, the prices read the same again.
    let again = ApiDocument::parse(&doc.to_string(), "again.json").unwrap();
    let regenerated = gateway_toml(&again, &InitOptions::default()).unwrap();
    assert_eq!(
        pricing_of(&regenerated, "GET /v1/pets/:petId"),
        &Pricing::Priced {
            price: "$0.05".into(),
            from: "the operation"
        }
    );
}
