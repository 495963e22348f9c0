use super::*;
use crate::pricing::RouteKind;

const BASE: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
[facilitator]
kind = "local"
[defaults]
pay_to = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
network = "eip155:84532"
"#;

fn parse(extra: &str) -> Result<GatewayConfig, ConfigError> {
    parse_env(extra, &|_| None)
}

fn parse_env(
    extra: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::parse(&format!("{BASE}{extra}"), Path::new("gateway.toml"), env)
}

fn only_option(config: &GatewayConfig) -> PaymentRequirements {
    match &config.routes.in_file_order()[0].kind {
        RouteKind::Priced(p) => p.options[0].requirements.clone(),
        RouteKind::Free => panic!("route is free"),
    }
}

#[test]
fn the_shipped_configuration_is_valid() {
    let text = include_str!("../../gateway.toml");
    let config = GatewayConfig::parse(text, Path::new("gateway.toml"), &|_| None).unwrap();
    assert_eq!(config.routes.in_file_order().len(), 4);
    assert_eq!(config.facilitators[0].kind, FacilitatorKind::Local);
}

#[test]
fn a_dollar_price_becomes_requirements_from_the_asset_registry() {
    let config = parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n").unwrap();
    let r = only_option(&config);
    assert_eq!(r.amount, "10000");
    assert_eq!(r.asset, "0x036CbD53842c5426634e7929541eC2318f3dCF7e");
    assert_eq!(
        r.pay_to, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "checksummed"
    );
    assert_eq!(r.extra, serde_json::json!({"name": "USDC", "version": "2"}));
    assert_eq!(r.max_timeout_seconds, 300);
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:8402");
}

#[test]
fn configured_assets_and_atomic_amounts_are_used() {
    let config = parse(
        "[assets.\"eip155:84532\".TOK]\naddress = \"0x0000000000000000000000000000000000000001\"\ndecimals = 2\nname = \"Tok\"\nversion = \"7\"\n\
         [[routes]]\nmatch = \"GET /a\"\namount = \"123\"\nasset = \"TOK\"\n",
    )
    .unwrap();
    let r = only_option(&config);
    assert_eq!(r.amount, "123");
    assert_eq!(r.extra["version"], "7");
}

#[test]
fn errors_name_file_line_and_column() {
    let err = parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.0000001\"\n").unwrap_err();
    assert_eq!(err.file, "gateway.toml");
    assert_eq!(err.location, Some((11, 9)));
    assert!(
        err.to_string()
            .starts_with("gateway.toml:11:9: price `$0.0000001` has more decimals"),
        "{err}"
    );

    let err = parse("[[routes]]\nmatch = \"GET /a\"\nprise = \"$1\"\n").unwrap_err();
    assert!(err.message.contains("unknown field `prise`"), "{err}");
    assert_eq!(err.location.map(|l| l.0), Some(11));

    let err = parse("[[routes]]\nmatch = \"GET /a\"\n").unwrap_err();
    assert!(
        err.message
            .contains("has no `price`, `amount` or `accepts`"),
        "{err}"
    );

    let err =
        parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$1\"\nasset = \"DOGE\"\n").unwrap_err();
    assert!(
        err.message
            .contains("asset `DOGE` is not known on `eip155:84532`"),
        "{err}"
    );
}

#[test]
fn environment_references_are_expanded_and_missing_ones_named() {
    let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
    let text = "[[routes]]\nmatch = \"GET /a\"\nprice = \"$1\"\n";
    let with_token = BASE.replace(
        "kind = \"local\"",
        "kind = \"x402\"\nurl = \"http://f\"\nbearer_token = \"${TOKEN}\"",
    );
    let config =
        GatewayConfig::parse(&format!("{with_token}{text}"), Path::new("g.toml"), &env).unwrap();
    assert_eq!(
        config.facilitators[0]
            .bearer_token
            .as_ref()
            .map(Secret::expose),
        Some("s3cret")
    );
    assert_eq!(
        format!("{:?}", config.facilitators[0].bearer_token),
        "Some(***)",
        "secrets are never printed"
    );

    let missing = BASE.replace(
        "kind = \"local\"",
        "kind = \"x402\"\nurl = \"${FACILITATOR_URL}\"",
    );
    let err =
        GatewayConfig::parse(&format!("{missing}{text}"), Path::new("g.toml"), &env).unwrap_err();
    assert!(
        err.to_string()
            .contains("environment variable `FACILITATOR_URL` is not set"),
        "{err}"
    );
}

#[test]
fn conflicting_or_missing_settings_are_refused() {
    assert!(
        parse("[[routes]]\nmatch = \"GET /a\"\nfree = true\nprice = \"$1\"\n")
            .unwrap_err()
            .message
            .contains("free = true")
    );
    assert!(
        parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$1\"\namount = \"1\"\n")
            .unwrap_err()
            .message
            .contains("both `price` and `amount`")
    );
    assert!(
        parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$1\"\nsettle = \"later\"\n")
            .unwrap_err()
            .message
            .contains("settle = `later`")
    );
    assert!(
        parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$1\"\nnetwork = \"base\"\n")
            .unwrap_err()
            .message
            .contains("CAIP-2")
    );
    let err = GatewayConfig::parse(
        &format!("unmatched = \"block\"\n{BASE}"),
        Path::new("g.toml"),
        &|_| None,
    )
    .unwrap_err();
    assert!(err.message.contains("\"proxy\" or \"deny\""), "{err}");
    let no_upstream = GatewayConfig::parse(
        "[facilitator]\nkind=\"local\"\n",
        Path::new("g.toml"),
        &|_| None,
    )
    .unwrap_err();
    assert!(no_upstream.message.contains("[upstream]"));
    let x402_without_url = BASE.replace("kind = \"local\"", "kind = \"x402\"");
    let err = GatewayConfig::parse(&x402_without_url, Path::new("g.toml"), &|_| None).unwrap_err();
    assert!(err.message.contains("needs a `url`"), "{err}");
}

#[test]
fn several_options_keep_their_order() {
    let config = parse("[[routes]]\nmatch = \"GET /a\"\naccepts = [ { price = \"$1\" }, { price = \"$2\", network = \"eip155:8453\" } ]\n").unwrap();
    let RouteKind::Priced(p) = &config.routes.in_file_order()[0].kind else {
        panic!()
    };
    assert_eq!(p.options.len(), 2);
    assert_eq!(p.options[1].requirements.network, "eip155:8453");
    assert_eq!(
        p.options[1].requirements.asset,
        "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    );
    assert_eq!(p.options[1].v1_network, Some("base"));
}
