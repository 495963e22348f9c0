use super::*;
use crate::payment::SettlementPolicy;
use crate::pricing::RouteKind;
use crate::x402::PaymentRequirements;
use std::path::Path;
use std::time::Duration;

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
        _ => panic!("route is not priced"),
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

#[test]
fn operations_keys_have_defaults_and_located_errors() {
    let config = parse("").unwrap();
    assert_eq!(config.admin.listen, "127.0.0.1:9402".parse().unwrap());
    assert_eq!(config.admin.probe_interval, Duration::from_secs(5));
    assert!(config.journal.is_none());
    assert!(config.discovery);

    let config = GatewayConfig::parse(
        &format!(
            "{BASE}[admin]\nlisten = \"0.0.0.0:9500\"\nprobe_interval = \"250ms\"\n\
             [journal]\npath = \"data/journal.jsonl\"\n[discovery]\nenabled = false\n"
        ),
        Path::new("/etc/gw/gateway.toml"),
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.admin.listen.port(), 9500);
    assert_eq!(config.admin.probe_interval, Duration::from_millis(250));
    let journal = config.journal.unwrap();
    assert_eq!(journal.path, Path::new("/etc/gw/data/journal.jsonl"));
    assert_eq!(journal.reconcile_interval, Duration::from_secs(30));
    assert!(!config.discovery);

    let e = parse("[admin]\nlisten = \"9402\"\n").unwrap_err();
    assert_eq!(e.location, Some((10, 10)), "{e}");
    let e = parse("[admin]\nprobe_interval = \"0s\"\n").unwrap_err();
    assert!(e.message.contains("more than zero"), "{e}");
    let e = parse("[journal]\npath = \"j\"\nfsync = false\n").unwrap_err();
    assert!(e.message.contains("unknown field `fsync`"), "{e}");
    assert_eq!(e.location.map(|l| l.0), Some(11));
}

#[test]
fn the_admin_token_is_a_secret_and_explorers_default_to_base_and_can_be_added() {
    let config = parse("").unwrap();
    assert!(config.admin.token.is_none());
    let tx = format!("0x{}", "ab".repeat(32));
    assert_eq!(
        config.admin.explorer_url("eip155:8453", &tx),
        Some(format!("https://basescan.org/tx/{tx}"))
    );
    assert_eq!(
        config.admin.explorer_url("eip155:84532", &tx),
        Some(format!("https://sepolia.basescan.org/tx/{tx}"))
    );
    assert_eq!(config.admin.explorer_url("eip155:1", &tx), None);
    assert_eq!(config.admin.explorer_url("eip155:8453", ""), None);
    assert_eq!(
        config
            .admin
            .explorer_url("eip155:8453", "javascript:alert(1)"),
        None
    );

    let env = |name: &str| (name == "ADMIN_TOKEN").then(|| "tok-5f2a9".to_string());
    let config = parse_env(
        "[admin]\ntoken = \"${ADMIN_TOKEN}\"\n\
         explorers = { \"eip155:1\" = \"https://etherscan.io/tx/\", \"eip155:8453\" = \"https://base.blockscout.com/tx/\" }\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        config.admin.token.as_ref().map(Secret::expose),
        Some("tok-5f2a9")
    );
    assert!(!format!("{:?}", config.admin).contains("tok-5f2a9"));
    assert_eq!(
        config.admin.explorer_url("eip155:1", &tx),
        Some(format!("https://etherscan.io/tx/{tx}"))
    );
    assert_eq!(
        config.admin.explorer_url("eip155:8453", &tx),
        Some(format!("https://base.blockscout.com/tx/{tx}")),
        "a configured explorer replaces the built-in one"
    );

    let e = parse_env("[admin]\ntoken = \"${ADMIN_TOKEN}\"\n", &|_| None).unwrap_err();
    assert!(e.message.contains("`ADMIN_TOKEN` is not set"), "{e}");
    let e = parse("[admin]\ntoken = \"\"\n").unwrap_err();
    assert!(e.message.contains("empty"), "{e}");
    for bad in [
        "explorers = { \"eip155:1\" = \"javascript:alert(1)\" }",
        "explorers = { \"eip155:1\" = \"https://user:pw@scan.example/tx/\" }",
        "explorers = { \"base\" = \"https://basescan.org/tx/\" }",
    ] {
        let e = parse(&format!("[admin]\n{bad}\n")).unwrap_err();
        assert_eq!(e.location.map(|l| l.0), Some(10), "{bad}: {e}");
    }
}

#[test]
fn a_journal_database_url_is_a_secret_with_a_local_spool_beside_it() {
    let env = |name: &str| (name == "DB_PASSWORD").then(|| "pw-7e1c".to_string());
    let config = parse_env(
        "[journal]\nurl = \"postgres://gw:${DB_PASSWORD}@db:5432/ledger\"\npath = \"spool.jsonl\"\n",
        &env,
    )
    .unwrap();
    let journal = config.journal.unwrap();
    assert_eq!(
        journal.url.as_ref().map(Secret::expose),
        Some("postgres://gw:pw-7e1c@db:5432/ledger")
    );
    assert_eq!(journal.path, Path::new("spool.jsonl"));
    assert!(
        !format!("{journal:?}").contains("pw-7e1c"),
        "Debug hides it"
    );

    let e = parse_env(
        "[journal]\nurl = \"postgres://gw:${DB_PASSWORD}@db/ledger\"\n",
        &env,
    )
    .unwrap_err();
    assert!(e.message.contains("needs `path` too"), "{e}");
    let e = parse_env(
        "[journal]\nurl = \"mysql://gw:${DB_PASSWORD}@db/ledger\"\npath = \"s\"\n",
        &env,
    )
    .unwrap_err();
    assert!(e.message.contains("not a PostgreSQL URL"), "{e}");
    assert!(
        !e.to_string().contains("pw-7e1c"),
        "the error never repeats it: {e}"
    );
    let e = parse("[journal]\nurl = \"postgres://gw:${MISSING}@db/ledger\"\npath = \"s\"\n")
        .unwrap_err();
    assert!(e.message.contains("`MISSING` is not set"), "{e}");
    let e = parse("[journal]\nreconcile_interval = \"5s\"\n").unwrap_err();
    assert!(e.message.contains("needs `path`"), "{e}");
}

const OKX: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
[facilitator]
kind = "okx"
api_key = "${OKX_API_KEY}"
secret_key = "${OKX_SECRET_KEY}"
passphrase = "${OKX_PASSPHRASE}"
[defaults]
pay_to = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
network = "eip155:196"
asset = "USDT0"
"#;

fn okx_env(name: &str) -> Option<String> {
    name.starts_with("OKX_")
        .then(|| format!("value-of-{name}"))
        .or_else(|| (name == "AGENTWALLEX_API_KEY").then(|| "awx_sk_test_x".into()))
}

fn parse_okx(text: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::parse(text, Path::new("gateway.toml"), &okx_env)
}

#[test]
fn okx_defaults_to_the_current_api_on_web3_okx_com_with_secrets_kept_secret() {
    let config = parse_okx(&format!(
        "{OKX}[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n"
    ))
    .unwrap();
    let f = &config.facilitators[0];
    assert_eq!((f.kind, f.name.as_str()), (FacilitatorKind::Okx, "okx"));
    assert_eq!(f.url.as_deref(), Some(OKX_DEFAULT_URL));
    let okx = f.okx.as_ref().unwrap();
    assert_eq!(okx.api, OkxApi::V2);
    assert_eq!(okx.passphrase.expose(), "value-of-OKX_PASSPHRASE");
    assert_eq!(okx.settle_poll_deadline, Duration::from_secs(5));
    let printed = format!("{config:?}");
    assert!(!printed.contains("value-of-"), "{printed}");
    let RouteKind::Priced(p) = &config.routes.in_file_order()[0].kind else {
        panic!()
    };
    assert!(!p.sync_settle, "async unless asked");
}

#[test]
fn okx_settings_are_checked() {
    let err = parse_okx(&OKX.replace("passphrase = \"${OKX_PASSPHRASE}\"\n", "")).unwrap_err();
    assert!(err.message.contains("needs `passphrase`"), "{err}");
    let err =
        parse_okx(&OKX.replace("kind = \"okx\"", "kind = \"okx\"\napi = \"v3\"")).unwrap_err();
    assert!(err.message.contains("\"v2\" or \"legacy\""), "{err}");
    let err = parse_okx(&OKX.replace("kind = \"okx\"", "kind = \"okx\"\nbearer_token = \"t\""))
        .unwrap_err();
    assert!(
        err.message
            .contains("`bearer_token` applies to kind \"x402\" only"),
        "{err}"
    );
    let err = parse_okx(&OKX.replace("kind = \"okx\"", "kind = \"okx\"\nsecrte_key = \"t\""))
        .unwrap_err();
    assert!(err.message.contains("unknown field `secrte_key`"), "{err}");
    assert_eq!(err.location.map(|l| l.0), Some(6));
    let legacy_batch = format!(
        "{}[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nscheme = \"aggr_deferred\"\n",
        OKX.replace("kind = \"okx\"", "kind = \"okx\"\napi = \"legacy\"")
    );
    let err = parse_okx(&legacy_batch).unwrap_err();
    assert!(err.message.contains("needs OKX's current API"), "{err}");
}

#[test]
fn batch_payments_need_an_okx_facilitator_and_sync_settle_is_per_route_or_default() {
    let text = "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nscheme = \"aggr_deferred\"\nnetwork = \"eip155:196\"\nasset = \"USDT0\"\n";
    let err = parse(text).unwrap_err();
    assert!(err.message.contains("settled by OKX only"), "{err}");
    let config = parse_okx(&format!(
        "{}[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n[[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\nsync_settle = false\n",
        OKX.replace("asset = \"USDT0\"", "asset = \"USDT0\"\nsync_settle = true")
    ))
    .unwrap();
    let sync: Vec<bool> = config
        .routes
        .in_file_order()
        .iter()
        .map(|r| match &r.kind {
            RouteKind::Priced(p) => p.sync_settle,
            _ => false,
        })
        .collect();
    assert_eq!(sync, vec![true, false]);
}

const TWO: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
[[facilitators]]
name = "okx"
kind = "okx"
api_key = "${OKX_API_KEY}"
secret_key = "${OKX_SECRET_KEY}"
passphrase = "${OKX_PASSPHRASE}"
networks = ["eip155:196"]
[[facilitators]]
name = "awx"
kind = "agentwallex"
environment = "sandbox"
api_key = "${AGENTWALLEX_API_KEY}"
networks = ["eip155:84532"]
fallback = "backup"
[[facilitators]]
name = "backup"
kind = "x402"
url = "http://127.0.0.1:4020"
networks = ["eip155:84532"]
[defaults]
pay_to = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
[[routes]]
match = "GET /a"
accepts = [ { price = "$0.01", network = "eip155:196", asset = "USDT0" }, { price = "$0.01", network = "eip155:84532" } ]
"#;

#[test]
fn several_facilitators_are_chosen_by_network_and_a_fallback_is_not_a_primary() {
    let config = parse_okx(TWO).unwrap();
    let names: Vec<&str> = config
        .facilitators
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["okx", "awx", "backup"]);
    assert_eq!(
        config.facilitators[1].url.as_deref(),
        Some(AGENTWALLEX_SANDBOX_URL)
    );
    assert_eq!(
        primary_facilitator(&config.facilitators, "eip155:196"),
        Some(0)
    );
    assert_eq!(
        primary_facilitator(&config.facilitators, "eip155:84532"),
        Some(1)
    );
    assert_eq!(
        primary_facilitator(&config.facilitators, "eip155:8453"),
        None
    );
}

#[test]
fn several_facilitators_are_checked() {
    let err = parse_okx(&TWO.replace("fallback = \"backup\"", "fallback = \"spare\"")).unwrap_err();
    assert!(
        err.message
            .contains("fallback `spare` of facilitator `awx`"),
        "{err}"
    );
    let err = parse_okx(&TWO.replace("fallback = \"backup\"\n", "")).unwrap_err();
    assert!(
        err.message
            .contains("network `eip155:84532` is served by facilitators `awx`, `backup`"),
        "{err}"
    );
    let err = parse_okx(&TWO.replace("name = \"backup\"", "name = \"okx\"")).unwrap_err();
    assert!(
        err.message
            .contains("two `[[facilitators]]` are named `okx`"),
        "{err}"
    );
    let err = parse_okx(&TWO.replace("networks = [\"eip155:196\"]\n", "")).unwrap_err();
    assert!(
        err.message.contains("facilitator `okx` needs `networks`"),
        "{err}"
    );
    let err = parse_okx(&format!("{TWO}[facilitator]\nkind = \"local\"\n")).unwrap_err();
    assert!(
        err.message
            .contains("either one `[facilitator]` or `[[facilitators]]`"),
        "{err}"
    );
    let err = parse_okx(&TWO.replace(
        "networks = [\"eip155:196\"]",
        "networks = [\"eip155:8453\"]",
    ))
    .unwrap_err();
    assert!(
        err.message.contains(
            "route `GET /a` takes payments on `eip155:196`, but no facilitator lists that network"
        ),
        "{err}"
    );
}

#[test]
fn the_vendor_examples_are_valid() {
    for (text, kinds) in [
        (
            include_str!("../../examples/okx/gateway.toml"),
            vec![FacilitatorKind::Okx],
        ),
        (
            include_str!("../../examples/agentwallex/gateway.toml"),
            vec![
                FacilitatorKind::Okx,
                FacilitatorKind::AgentWallex,
                FacilitatorKind::X402,
            ],
        ),
    ] {
        let config = parse_okx(text).unwrap();
        let got: Vec<FacilitatorKind> = config.facilitators.iter().map(|f| f.kind).collect();
        assert_eq!(got, kinds);
    }
}

#[test]
fn redis_is_optional_and_has_defaults() {
    assert!(parse("").unwrap().redis.is_none());
    let env = |name: &str| (name == "REDIS_URL").then(|| "redis://:hunter2@10.0.0.5:6380/2".into());
    let config = parse_env("[redis]\nurl = \"${REDIS_URL}\"\n", &env).unwrap();
    let redis = config.redis.unwrap();
    assert_eq!(redis.url.expose(), "redis://:hunter2@10.0.0.5:6380/2");
    assert_eq!(redis.key_prefix, "x402:");
    assert_eq!(redis.timeout, Duration::from_millis(250));
    assert_eq!(redis.display_url(), "redis://:***@10.0.0.5:6380/2");
    assert!(
        !format!("{redis:?}").contains("hunter2"),
        "Debug hides the password"
    );
}

#[test]
fn redis_settings_are_validated_without_printing_the_password() {
    let config = parse(
        "[redis]\nurl = \"rediss://cache.internal:6380\"\nkey_prefix = \"shop:\"\ntimeout = \"100ms\"\n",
    )
    .unwrap();
    let redis = config.redis.unwrap();
    assert_eq!(redis.key_prefix, "shop:");
    assert_eq!(redis.timeout, Duration::from_millis(100));

    let err = parse("[redis]\nurl = \"http://user:hunter2@cache:6379\"\n").unwrap_err();
    assert!(err.message.contains("redis://"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = parse("[redis]\nurl = \"redis://cache\"\ntimeout = \"0s\"\n").unwrap_err();
    assert!(err.message.contains("more than zero"), "{err}");
    let err = parse("[redis]\nurl = \"redis://cache\"\npassword = \"x\"\n").unwrap_err();
    assert!(err.message.contains("unknown field"), "{err}");
}

#[test]
fn rate_limits_are_validated() {
    let config = parse(
        "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n\
         [[rate_limits]]\nper = \"ip\"\nrequests = 10\nwindow = \"1m\"\napplies_to = \"challenges\"\nroutes = [\"GET /a\"]\n\
         [[rate_limits]]\nper = \"payer\"\nrequests = 3\nwindow = \"10s\"\n",
    )
    .unwrap();
    let limits = &config.rate_limits;
    assert_eq!(limits.len(), 2);
    assert_eq!(limits[0].per, RatePer::ClientIp);
    assert!(limits[0].challenges && !limits[0].paid);
    assert_eq!(limits[0].routes, vec![0]);
    assert_eq!(limits[1].per, RatePer::Payer);
    assert!(limits[1].challenges && limits[1].paid && limits[1].covers(5));
    assert_eq!(limits[1].window, Duration::from_secs(10));

    for (bad, says) in [
        (
            "per = \"user\"\nrequests = 1\nwindow = \"1m\"\n",
            "expected \"ip\" or \"payer\"",
        ),
        (
            "per = \"ip\"\nrequests = 0\nwindow = \"1m\"\n",
            "at least 1",
        ),
        (
            "per = \"ip\"\nrequests = 1\nwindow = \"10ms\"\n",
            "at least 1s",
        ),
        (
            "per = \"payer\"\nrequests = 1\nwindow = \"1m\"\napplies_to = \"challenges\"\n",
            "no payer",
        ),
        (
            "per = \"ip\"\nrequests = 1\nwindow = \"1m\"\nroutes = [\"GET /b\"]\n",
            "no `[[routes]]`",
        ),
    ] {
        let err = parse(&format!(
            "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n[[rate_limits]]\n{bad}"
        ))
        .unwrap_err();
        assert!(err.message.contains(says), "{err}");
    }
}

#[test]
fn route_level_keys_are_the_defaults_of_each_accepts_entry() {
    let config = parse(
        "[[routes]]\nmatch = \"GET /a\"\npay_to = \"0x90F79bf6EB2c4f870365E785982E1f101E93b906\"\n\
         max_timeout_seconds = 60\nsettle = \"before\"\n\
         accepts = [ { price = \"$0.01\" }, { price = \"$0.02\", pay_to = \"0x70997970c51812dc3a010c7d01b50e0d17dc79c8\" } ]\n",
    )
    .unwrap();
    let RouteKind::Priced(route) = &config.routes.in_file_order()[0].kind else {
        panic!("priced")
    };
    let first = &route.options[0].requirements;
    assert_eq!(first.pay_to, "0x90F79bf6EB2c4f870365E785982E1f101E93b906");
    assert_eq!(first.max_timeout_seconds, 60);
    let second = &route.options[1].requirements;
    assert_eq!(
        second.pay_to, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "the entry wins"
    );
    assert_eq!(second.max_timeout_seconds, 60);
    assert_eq!(route.settle, SettlementPolicy::Before);
}

#[test]
fn settle_before_routes_announce_the_upfront_flow_and_others_announce_none() {
    let config = parse(
        "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nsettle = \"before\"\n\
         [[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\n",
    )
    .unwrap();
    let extra = |i: usize| match &config.routes.in_file_order()[i].kind {
        RouteKind::Priced(p) => p.options[0].requirements.extra.clone(),
        _ => panic!("route is not priced"),
    };
    assert_eq!(extra(0)["paymentFlow"], "upfront");
    assert!(extra(1).get("paymentFlow").is_none());
}

#[test]
fn payment_keys_on_a_free_route_are_refused_not_ignored() {
    for key in [
        "pay_to = \"0x90F79bf6EB2c4f870365E785982E1f101E93b906\"",
        "network = \"eip155:8453\"",
        "settle = \"before\"",
        "max_timeout_seconds = 60",
        "description = \"shown nowhere\"",
    ] {
        let e = parse(&format!(
            "[[routes]]\nmatch = \"GET /a\"\nfree = true\n{key}\n"
        ))
        .unwrap_err();
        let name = key.split(' ').next().unwrap();
        assert!(e.to_string().contains(&format!("`{name}`")), "{key}: {e}");
    }
}

#[test]
fn request_normalisation_settings_are_read_from_server() {
    let defaults = parse("").unwrap().server.requests;
    assert_eq!(defaults, crate::pricing::RequestRules::default());
    let set = GatewayConfig::parse(
        &format!("[server]\nmethod_override = \"forward\"\ndrop_underscore_headers = true\n{BASE}"),
        Path::new("g.toml"),
        &|_| None,
    )
    .unwrap()
    .server
    .requests;
    assert_eq!(set.method_override, crate::pricing::MethodOverride::Forward);
    assert!(set.drop_underscore_headers);
    let err = GatewayConfig::parse(
        &format!("[server]\nmethod_override = \"keep\"\n{BASE}"),
        Path::new("g.toml"),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(err.location.map(|l| l.0), Some(2), "{err}");
    assert!(err.message.contains("\"strip\" or \"forward\""), "{err}");
}

mod price_rules {
    use super::*;
    use crate::pricing::{PricedRoute, RequestFacts};

    const RULES: &str = r#"
[[routes]]
match = "POST /v1/:model/complete"
price = "$0.01"
[[routes.price_rules]]
query = "quality"
equals = ["high", "max"]
price = "$0.05"
[[routes.price_rules]]
header = "X-Priority"
price = "$0.02"
[[routes.price_rules]]
path_param = "model"
equals = "Large"
price = "$0.03"
[[routes.price_rules]]
body_over = 1000
amount = "40000"
[[routes.price_rules]]
body_over = 100000
price = "$0.25"
"#;

    fn route(config: &GatewayConfig) -> &PricedRoute {
        match &config.routes.in_file_order()[0].kind {
            RouteKind::Priced(p) => p,
            _ => panic!("route is not priced"),
        }
    }

    /// The amount `path?query` with `headers` is charged, and the one its challenge asks for.
    fn charged(config: &GatewayConfig, target: &str, headers: &[(&str, &str)]) -> String {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        let canonical = crate::pricing::canonical_path(path);
        let priced = route(config).for_request(&RequestFacts {
            canonical_path: &canonical,
            query,
            headers: &map,
        });
        let challenge: serde_json::Value =
            serde_json::from_str(&priced.challenge().v2_json("http://x/y", "e")).unwrap();
        let advertised = challenge["accepts"][0]["amount"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            advertised, priced.options[0].requirements.amount,
            "the challenge asks for the price the payment is checked against"
        );
        assert_eq!(priced.options[0].amount.to_string(), advertised);
        advertised
    }

    #[test]
    fn each_rule_kind_changes_the_price_of_the_request() {
        let config = parse(RULES).unwrap();
        let c = &config;
        assert_eq!(charged(c, "/v1/small/complete", &[]), "10000");
        assert_eq!(charged(c, "/v1/small/complete?quality=high", &[]), "50000");
        assert_eq!(charged(c, "/v1/small/complete?quality=max", &[]), "50000");
        assert_eq!(charged(c, "/v1/small/complete?quality=low", &[]), "10000");
        assert_eq!(
            charged(c, "/v1/small/complete?quality=h%69gh", &[]),
            "50000",
            "query values are compared decoded"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("x-priority", "1")]),
            "20000"
        );
        assert_eq!(charged(c, "/v1/large/complete", &[]), "30000");
        assert_eq!(
            charged(c, "/v1/LARGE/complete", &[]),
            "30000",
            "path parameters are compared in canonical form"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("content-length", "1000")]),
            "10000"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("content-length", "1001")]),
            "40000"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("content-length", "200000")]),
            "250000",
            "the highest matching tier wins, whatever the file order"
        );
        assert_eq!(
            charged(c, "/v1/large/complete?quality=high", &[("x-priority", "1")]),
            "50000",
            "several rules match: the highest price"
        );
    }

    #[test]
    fn an_ambiguous_request_pays_the_highest_price_of_the_route() {
        let config = parse(RULES).unwrap();
        let c = &config;
        assert_eq!(
            charged(c, "/v1/small/complete?quality=low&quality=high", &[]),
            "250000",
            "a repeated parameter the upstream may read either way"
        );
        assert_eq!(
            charged(c, "/v1/small/complete?quality=low&quality=low", &[]),
            "10000",
            "repeats of one value are not ambiguous"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("transfer-encoding", "chunked")]),
            "250000",
            "a body of unannounced size"
        );
        assert_eq!(
            charged(
                c,
                "/v1/small/complete",
                &[("content-length", "5"), ("content-length", "5000")]
            ),
            "250000"
        );
        assert_eq!(
            charged(c, "/v1/small/complete", &[("x-priority", "\u{e9}")]),
            "250000",
            "a header that is not text"
        );
    }

    #[test]
    fn rules_keep_every_option_and_its_terms() {
        let config = parse(
            "[[routes]]\nmatch = \"GET /a\"\nsettle = \"before\"\n\
             [[routes.accepts]]\nprice = \"$0.01\"\n\
             [[routes.accepts]]\nprice = \"$0.01\"\nnetwork = \"eip155:8453\"\n\
             [[routes.price_rules]]\nheader = \"x-tier\"\nequals = \"pro\"\nprice = \"$1\"\n",
        )
        .unwrap();
        let base = route(&config);
        let rule = &base.price_rules[0].priced;
        assert!(rule.price_rules.is_empty());
        assert_eq!(rule.options.len(), 2);
        assert_eq!(rule.settle, base.settle);
        for (r, b) in rule.options.iter().zip(&base.options) {
            assert_eq!(r.requirements.amount, "1000000");
            assert_eq!(r.requirements.network, b.requirements.network);
            assert_eq!(r.requirements.pay_to, b.requirements.pay_to);
            assert_eq!(r.requirements.extra, b.requirements.extra);
        }
    }

    #[test]
    fn bad_rules_are_refused_with_a_clear_error() {
        let cases = [
            (
                "query = \"a\"\nheader = \"b\"\nprice = \"$1\"",
                "exactly one of",
            ),
            ("price = \"$1\"", "exactly one of"),
            (
                "path_param = \"nope\"\nprice = \"$1\"",
                "has no `:nope` segment",
            ),
            ("query = \"a\"", "sets no `price` or `amount`"),
            (
                "body_over = 10\nequals = \"x\"\nprice = \"$1\"",
                "takes no `equals`",
            ),
            (
                "query = \"a\"\nequals = []\nprice = \"$1\"",
                "empty `equals`",
            ),
            (
                "header = \"bad header\"\nprice = \"$1\"",
                "is not a header name",
            ),
            ("query = \"a\"\nprice = \"$0\"", ""),
            ("query = \"a\"\nprice = \"$1\"\ncost = 3", "unknown field"),
        ];
        for (rule, expected) in cases {
            let text = format!(
                "[[routes]]\nmatch = \"GET /a/:id\"\nprice = \"$0.01\"\n[[routes.price_rules]]\n{rule}\n"
            );
            let err = parse(&text).expect_err(rule).to_string();
            assert!(err.contains(expected), "{rule}: {err}");
        }
        let err = parse(
            "[[routes]]\nmatch = \"GET /a\"\nfree = true\n[[routes.price_rules]]\nquery = \"a\"\nprice = \"$1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("price_rules"), "{err}");
    }
}

fn mcp_route(config: &GatewayConfig) -> &crate::pricing::mcp::McpRoute {
    match &config.routes.in_file_order()[0].kind {
        RouteKind::Mcp(mcp) => mcp,
        _ => panic!("route is not an MCP route"),
    }
}

#[test]
fn an_mcp_route_prices_its_items_with_the_route_keys_as_defaults() {
    use crate::pricing::mcp::{McpItem, McpItemKind};
    let config = parse(
        r#"
[[routes]]
match = "POST /mcp"
mcp = true
network = "eip155:8453"
settle = "before"
[[routes.tools]]
name = "search"
price = "$0.01"
[[routes.tools]]
name = "deep"
amount = "250000"
network = "eip155:84532"
settle = "after-success"
[[routes.resources]]
uri = "report://daily"
price = "$0.02"
[[routes.prompts]]
name = "advice"
accepts = [ { price = "$0.03" }, { price = "$0.03", network = "eip155:84532" } ]
"#,
    )
    .unwrap();
    let mcp = mcp_route(&config);
    let kinds: Vec<(McpItemKind, &str)> = mcp
        .items
        .iter()
        .map(|i| (i.kind, i.name.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (McpItemKind::Tool, "search"),
            (McpItemKind::Tool, "deep"),
            (McpItemKind::Resource, "report://daily"),
            (McpItemKind::Prompt, "advice"),
        ]
    );
    let search = &mcp.items[0].priced;
    assert_eq!(search.options[0].requirements.network, "eip155:8453");
    assert_eq!(search.options[0].requirements.amount, "10000");
    assert_eq!(search.settle, SettlementPolicy::Before);
    let deep = &mcp.items[1].priced;
    assert_eq!(deep.options[0].requirements.network, "eip155:84532");
    assert_eq!(deep.options[0].requirements.amount, "250000");
    assert_eq!(deep.settle, SettlementPolicy::AfterSuccess);
    let advice = &mcp.items[3].priced;
    let networks: Vec<&str> = advice
        .options
        .iter()
        .map(|o| o.requirements.network.as_str())
        .collect();
    assert_eq!(networks, ["eip155:8453", "eip155:84532"]);
    assert!(
        mcp.find(&McpItem::Tool("echo".into())).is_none(),
        "unlisted tools are free"
    );
    assert_eq!(
        mcp.find(&McpItem::Resource("report://daily".into()))
            .map(|(i, _)| i),
        Some(2)
    );
    assert!(
        mcp.find(&McpItem::Prompt("search".into())).is_none(),
        "kinds do not mix"
    );
}

#[test]
fn mcp_route_mistakes_are_refused_with_their_location() {
    let cases = [
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\nprice = \"$0.01\"\n",
            "not the route",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\n[[routes.tools]]\nname = \"a\"\nprice = \"$0.01\"\n",
            "is not `mcp = true`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\nfree = true\n",
            "both `free = true` and `mcp = true`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.tools]]\nprice = \"$0.01\"\n",
            "a tool of route `POST /mcp` has no `name`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.resources]]\nname = \"r\"\nprice = \"$0.01\"\n",
            "named by `uri`, not `name`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.tools]]\nname = \"a\"\nprice = \"$0.01\"\n[[routes.tools]]\nname = \"a\"\nprice = \"$0.02\"\n",
            "prices tool `a` twice",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.tools]]\nname = \"a\"\n",
            "route `POST /mcp tool a` has no `price`, `amount` or `accepts`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.tools]]\nname = \"a\"\nprice = \"$0.01\"\ncolour = \"red\"\n",
            "unknown field `colour`",
        ),
    ];
    for (text, wanted) in cases {
        let error = parse(text).unwrap_err();
        assert!(
            error.to_string().contains(wanted),
            "{text}\nwanted `{wanted}`, got: {error}"
        );
        assert!(error.location.is_some(), "{error} names a line");
    }
}

mod verify_policy {
    use super::*;
    use crate::pricing::VerifyPolicy;

    fn policies(config: &GatewayConfig) -> Vec<VerifyPolicy> {
        config
            .routes
            .in_file_order()
            .iter()
            .map(|r| match &r.kind {
                RouteKind::Priced(p) => p.verify,
                _ => panic!("route is not priced"),
            })
            .collect()
    }

    #[test]
    fn local_verify_is_taken_by_exact_routes_settled_after_success() {
        let config = parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nverify = \"local\"\n[[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\n[[routes]]\nmatch = \"GET /c\"\nprice = \"$0.01\"\nverify = \"facilitator\"\n").unwrap();
        assert_eq!(
            policies(&config),
            [
                VerifyPolicy::Local,
                VerifyPolicy::Facilitator,
                VerifyPolicy::Facilitator
            ]
        );
    }

    #[test]
    fn a_default_applies_where_it_can_and_a_route_that_cannot_take_it_is_refused() {
        // BASE ends in `[defaults]`: a key written first lands there.
        let defaults_only = |routes: &str| parse(&format!("verify = \"local\"\n{routes}"));
        let config = defaults_only("[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n[[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\nsettle = \"before\"\n[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-Tokens\"\nunit_price = \"$0.0001\"\n").unwrap();
        assert_eq!(
            policies(&config),
            [
                VerifyPolicy::Local,
                VerifyPolicy::Facilitator,
                VerifyPolicy::Facilitator
            ]
        );
        for (route, wanted) in [
            ("settle = \"before\"\nverify = \"local\"\n", "settle = \"before\" routes make no `/verify` call"),
            ("scheme = \"upto\"\nusage_header = \"X-Tokens\"\nunit_price = \"$0.0001\"\nverify = \"local\"\n", "`upto` payments are verified by the facilitator"),
            ("verify = \"sometimes\"\n", "verify = `sometimes`: expected \"facilitator\" or \"local\""),
        ] {
            let error = parse(&format!("[[routes]]\nmatch = \"GET /x\"\nprice = \"$1\"\n{route}"))
                .expect_err(route);
            assert!(error.message.contains(wanted), "{route}: {}", error.message);
            assert!(error.location.is_some(), "{error} names a line");
        }
    }
}

mod metered {
    use super::*;
    use crate::pricing::{Meter, Metering, UsageFallback, UsageHeader};

    fn metering(config: &GatewayConfig) -> Option<Metering> {
        match &config.routes.in_file_order()[0].kind {
            RouteKind::Priced(p) => p.metering.as_deref().cloned(),
            _ => panic!("route is not priced"),
        }
    }

    fn refused(route: &str) -> String {
        parse(&format!("[[routes]]\nmatch = \"GET /m\"\n{route}"))
            .expect_err(route)
            .message
    }

    #[test]
    fn an_upto_route_takes_a_maximum_and_a_usage_header_priced_per_unit() {
        let config = parse(
            "[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-Tokens\"\nunit_price = \"$0.0001\"\n",
        )
        .expect("valid");
        let r = only_option(&config);
        assert_eq!(r.scheme, "upto");
        assert_eq!(r.amount, "1000000", "the price is the maximum");
        assert_eq!(r.extra["assetTransferMethod"], "permit2");
        assert_eq!(r.extra["name"], "USDC");
        assert!(
            r.extra.get("facilitatorAddress").is_none(),
            "read from the facilitator at start-up"
        );
        assert_eq!(
            metering(&config),
            Some(Metering {
                header: Some(UsageHeader {
                    name: http::HeaderName::from_static("x-tokens"),
                    meter: Meter::PerUnit { unit_amount: 100 },
                }),
                body: None,
                fallback: UsageFallback::Maximum,
            })
        );
    }

    #[test]
    fn an_amount_header_unit_amounts_and_the_fallback_are_read() {
        let config = parse(
            "[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\namount = \"5000\"\namount_header = \"X-Cost\"\nusage_fallback = \"nothing\"\n",
        )
        .expect("valid");
        let m = metering(&config).expect("metered");
        assert_eq!(m.fallback, UsageFallback::Nothing);
        assert_eq!(m.header.map(|h| h.meter), Some(Meter::Absolute));
        let config = parse(
            "[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\namount = \"5000\"\nusage_header = \"X-Units\"\nunit_amount = \"7\"\n",
        )
        .expect("valid");
        let m = metering(&config).expect("metered");
        assert_eq!(
            m.header.map(|h| h.meter),
            Some(Meter::PerUnit { unit_amount: 7 })
        );
        // Settlement-Overrides alone is a usage source too.
        let config = parse("[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\nprice = \"$1\"\n")
            .expect("valid");
        assert_eq!(metering(&config).expect("metered").header, None);
        // Exact routes are not metered.
        let config = parse("[[routes]]\nmatch = \"GET /m\"\nprice = \"$1\"\n").expect("valid");
        assert_eq!(metering(&config), None);
    }

    #[test]
    fn metering_mistakes_are_refused_with_clear_messages() {
        let cases = [
            ("price = \"$1\"\nusage_header = \"X-U\"\nunit_price = \"$0.01\"\n", "only metered routes read"),
            ("price = \"$1\"\nusage_fallback = \"nothing\"\n", "only metered routes read"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-U\"\n", "without `unit_price` or `unit_amount`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-U\"\nunit_price = \"$0.01\"\namount_header = \"X-A\"\n", "both `usage_header` and `amount_header`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-U\"\nunit_price = \"$0.01\"\nunit_amount = \"1\"\n", "both `unit_price` and `unit_amount`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nunit_price = \"$0.01\"\n", "without `usage_header`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-U\"\nunit_price = \"$0.0000001\"\n", "unit_price"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X U\"\nunit_amount = \"1\"\n", "not a header name"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_fallback = \"half\"\n", "usage_fallback = `half`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nsettle = \"before\"\n", "settle = \"before\" cannot apply"),
            ("price = \"$1\"\nusage_json = \"usage.total_tokens\"\nunit_price = \"$0.01\"\n", "`usage_json`, which only metered routes read"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\n", "sets `usage_json` without `unit_price` or `unit_amount`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\nusage_header = \"X-U\"\nunit_amount = \"1\"\n", "both `usage_json` and `usage_header`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\namount_header = \"X-A\"\nunit_amount = \"1\"\n", "both `usage_json` and `amount_header`"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage..total_tokens\"\nunit_amount = \"1\"\n", "usage_json = `usage..total_tokens`: `usage..total_tokens` has an empty segment"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"\"\nunit_amount = \"1\"\n", "usage_json = ``: the path is empty"),
            ("scheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\nunit_amount = \"1\"\nusage_fallback = \"half\"\n", "usage_fallback = `half`"),
            ("scheme = \"upto\"\naccepts = [{price = \"$1\"}, {price = \"$2\"}]\n", "exactly one payment option"),
            ("scheme = \"upto\"\nprice = \"$1\"\nnetwork = \"solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp\"\n", "not a CAIP-2 EVM id"),
        ];
        for (route, expected) in cases {
            let message = refused(route);
            assert!(message.contains(expected), "{route}: {message}");
        }
    }

    #[test]
    fn a_usage_json_path_is_priced_per_unit() {
        let config = parse(
            "[[routes]]\nmatch = \"POST /v1/chat\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\nunit_price = \"$0.001\"\nusage_fallback = \"nothing\"\n",
        )
        .expect("valid");
        let m = metering(&config).expect("metered");
        assert_eq!(m.header, None);
        assert_eq!(m.fallback, UsageFallback::Nothing);
        let body = m.body.expect("a body source");
        assert_eq!(body.path.as_str(), "usage.total_tokens");
        assert_eq!(body.unit_amount, 1_000);
        let config = parse(
            "[[routes]]\nmatch = \"POST /v1/messages\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.output_tokens\"\nunit_amount = \"15\"\n",
        )
        .expect("valid");
        let m = metering(&config).expect("metered");
        assert_eq!(m.fallback, UsageFallback::Maximum);
        assert_eq!(m.body.map(|b| b.unit_amount), Some(15));
    }

    #[test]
    fn metered_prices_are_refused_on_mcp_routes_and_items() {
        let item = parse(
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.tools]]\nname = \"t\"\nscheme = \"upto\"\nprice = \"$1\"\n",
        )
        .unwrap_err()
        .message;
        assert!(item.contains("not supported on MCP items"), "{item}");
        let route = parse(
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\nusage_fallback = \"nothing\"\n[[routes.tools]]\nname = \"t\"\nprice = \"$1\"\n",
        )
        .unwrap_err()
        .message;
        assert!(
            route.contains("metered prices are not supported on MCP routes"),
            "{route}"
        );
    }

    #[test]
    fn metering_keys_on_a_free_route_are_refused() {
        let message = refused("free = true\nusage_header = \"X-U\"\n");
        assert!(message.contains("usage_header"), "{message}");
    }
}

#[test]
fn an_access_window_is_read_from_its_duration_and_needs_a_public_url() {
    let server = "[server]\npublic_url = \"https://api.example.com\"\n";
    let config = parse(&format!(
        "{server}[[routes]]\nmatch = \"GET /report\"\nprice = \"$0.01\"\naccess = \"24h\"\n"
    ))
    .expect("an access window");
    match &config.routes.in_file_order()[0].kind {
        RouteKind::Priced(p) => assert_eq!(p.access, Some(Duration::from_secs(86_400))),
        _ => panic!("route is not priced"),
    }
    let plain = parse("[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n").expect("no window");
    match &plain.routes.in_file_order()[0].kind {
        RouteKind::Priced(p) => assert_eq!(p.access, None, "every request pays"),
        _ => panic!("route is not priced"),
    }
    for (route, expected) in [
        (
            "[[routes]]\nmatch = \"GET /report\"\nprice = \"$0.01\"\naccess = \"24h\"\n",
            "needs `[server] public_url`",
        ),
        (
            "[[routes]]\nmatch = \"GET /report\"\nprice = \"$0.01\"\naccess = \"soon\"\n",
            "access = `soon`",
        ),
        (
            "[[routes]]\nmatch = \"GET /report\"\nprice = \"$0.01\"\naccess = \"0s\"\n",
            "longer than 0s",
        ),
        (
            "[[routes]]\nmatch = \"GET /report\"\nfree = true\naccess = \"1h\"\n",
            "sets `access`",
        ),
        (
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\naccess = \"1h\"\n[[routes.tools]]\nname = \"search\"\nprice = \"$0.01\"\n",
            "MCP tools pay for each call",
        ),
    ] {
        let with_server = !expected.contains("public_url");
        let text = if with_server {
            format!("{server}{route}")
        } else {
            route.to_string()
        };
        let err = parse(&text).expect_err(route).to_string();
        assert!(err.contains(expected), "{route}: {err}");
    }
}

mod bazaar {
    use super::*;
    use serde_json::json;

    fn priced(config: &GatewayConfig, at: usize) -> &crate::pricing::PricedRoute {
        match &config.routes.in_file_order()[at].kind {
            RouteKind::Priced(p) => p,
            _ => panic!("route is not priced"),
        }
    }

    fn error(extra: &str) -> String {
        parse(extra).unwrap_err().to_string()
    }

    #[test]
    fn a_listed_route_declares_its_input_and_output() {
        let config = parse(
            r#"
[[routes]]
match = "GET /weather"
price = "$0.01"
discoverable = true
input_schema = { properties = { city = { type = "string" } }, required = ["city"] }
input_example = { city = "Paris" }
output_example = '{"temp": 21}'
service_name = "Weather"
tags = ["weather", "data"]
icon_url = "https://example.com/icon.png"
[[routes]]
match = "POST /search/:index"
price = "$0.01"
discoverable = true
input_schema = { type = "object", properties = { q = { type = "string" } } }
[[routes]]
match = "GET /plain"
price = "$0.01"
"#,
        )
        .unwrap();
        let weather = priced(&config, 0);
        let declared = weather
            .bazaar_declaration("GET", "https://api.example/weather?city=x")
            .unwrap();
        assert_eq!(
            declared["info"]["input"],
            json!({"type": "http", "method": "GET", "queryParams": {"city": "Paris"}})
        );
        assert_eq!(declared["info"]["output"]["example"], json!({"temp": 21}));
        let challenge: serde_json::Value =
            serde_json::from_str(&weather.v2_challenge("https://api.example/weather", "GET", "e"))
                .unwrap();
        assert_eq!(challenge["extensions"]["bazaar"], declared);
        assert_eq!(challenge["resource"]["serviceName"], "Weather");
        assert_eq!(challenge["resource"]["tags"], json!(["weather", "data"]));
        assert_eq!(
            challenge["resource"]["iconUrl"],
            "https://example.com/icon.png"
        );

        let search = priced(&config, 1)
            .bazaar_declaration("POST", "https://a/search/books")
            .unwrap();
        assert_eq!(search["routeTemplate"], "/search/:index");
        assert_eq!(
            search["info"]["input"]["pathParams"],
            json!({"index": "books"})
        );
        assert_eq!(search["info"]["input"]["bodyType"], "json");

        // A route that declares nothing keeps its challenge exactly.
        let plain = priced(&config, 2);
        assert!(plain.discovery.is_none());
        assert_eq!(
            plain.v2_challenge("https://a/plain", "GET", "e"),
            plain.challenge().v2_json("https://a/plain", "e")
        );
    }

    #[test]
    fn defaults_list_every_priced_route_and_mcp_tool() {
        let config = parse(
            r#"discoverable = true
service_name = "Acme"
[[routes]]
match = "GET /a"
price = "$0.01"
[[routes]]
match = "GET /b"
price = "$0.01"
discoverable = false
[[routes]]
match = "GET /free"
free = true
[[routes]]
match = "POST /mcp"
mcp = true
[[routes.tools]]
name = "search"
description = "Search"
price = "$0.01"
input_schema = { type = "object", properties = { q = { type = "string" } } }
[[routes.resources]]
uri = "file:///a"
price = "$0.01"
"#,
        )
        .unwrap();
        let a = priced(&config, 0).discovery.as_ref().unwrap();
        assert_eq!(a.service.service_name.as_deref(), Some("Acme"));
        assert!(priced(&config, 1).discovery.is_none());
        let RouteKind::Mcp(mcp) = &config.routes.in_file_order()[3].kind else {
            panic!("route is not an MCP route");
        };
        let tool = mcp.items[0]
            .priced
            .bazaar_declaration("POST", "mcp://tool/search")
            .unwrap();
        assert_eq!(tool["info"]["input"]["type"], "mcp");
        assert_eq!(tool["info"]["input"]["toolName"], "search");
        assert_eq!(tool["info"]["input"]["description"], "Search");
        assert!(
            mcp.items[1].priced.discovery.is_none(),
            "resources are not listed"
        );
    }

    #[test]
    fn check_names_the_route_of_a_bad_declaration() {
        let route =
            |keys: &str| format!("[[routes]]\nmatch = \"GET /w\"\nprice = \"$0.01\"\n{keys}\n");
        let cases = [
            (
                "input_schema = { type = \"object\" }",
                "not listed in the Bazaar",
            ),
            (
                "discoverable = true\ninput_schema = '[1]'",
                "must be a JSON object",
            ),
            (
                "discoverable = true\ninput_schema = '{'",
                "is not JSON text",
            ),
            (
                "discoverable = true\ninput_schema = { type = \"string\" }",
                "must be \"object\"",
            ),
            (
                "discoverable = true\nicon_url = \"http://example.com/i.png\"",
                "https",
            ),
            (
                "discoverable = true\nicon_url = \"https://127.0.0.1/i.png\"",
                "domain name",
            ),
            ("discoverable = true\nicon_url = \"/i.png\"", "absolute URL"),
            (
                "discoverable = true\ntags = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]",
                "at most 5",
            ),
            ("discoverable = true\ntags = [\"a\", \"A\"]", "twice"),
            (
                &format!("discoverable = true\ntags = [\"{}\"]", "x".repeat(33)),
                "1 to 32",
            ),
            (
                "discoverable = true\nservice_name = \"caf\u{e9}\"",
                "printable ASCII",
            ),
            ("discoverable = true\nbody_type = \"json\"", "send no body"),
            (
                "discoverable = true\noutput_schema = { type = \"object\" }",
                "without `output_example`",
            ),
            (
                "discoverable = true\ninput_schema = { required = [\"city\"] }",
                "requires `city`",
            ),
        ];
        for (keys, expected) in cases {
            let err = error(&route(keys));
            assert!(err.contains(expected), "{keys}: {err}");
            assert!(err.contains("GET /w"), "the route is named: {err}");
        }
        let err =
            error("[[routes]]\nmatch = \"OPTIONS /w\"\nprice = \"$0.01\"\ndiscoverable = true\n");
        assert!(err.contains("not OPTIONS"), "{err}");
        let err = error("[[routes]]\nmatch = \"GET /free\"\nfree = true\ndiscoverable = true\n");
        assert!(err.contains("`discoverable`"), "{err}");
        let err = error(
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\ninput_schema = { type = \"object\" }\n[[routes.tools]]\nname = \"t\"\nprice = \"$0.01\"\n",
        );
        assert!(err.contains("each [[routes.tools]]"), "{err}");
        let err = error(
            "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\n[[routes.prompts]]\nname = \"p\"\nprice = \"$0.01\"\ndiscoverable = true\n",
        );
        assert!(err.contains("only MCP tools"), "{err}");
    }
}

mod batch_settlement {
    use super::*;
    use crate::payment::batch::{MIN_DEPOSIT_KEY, WITHDRAW_DELAY_KEY};

    fn refused(text: &str) -> String {
        parse(text).expect_err(text).message
    }

    #[test]
    fn a_channel_route_announces_its_delay_and_deposit_and_has_no_v1_form() {
        let config = parse(
            "[[routes]]\nmatch = \"GET /q\"\nscheme = \"batch-settlement\"\nprice = \"$0.001\"\nwithdraw_delay = \"1h\"\nmin_deposit = \"$0.05\"\n",
        )
        .expect("valid");
        let r = only_option(&config);
        assert_eq!(r.scheme, "batch-settlement");
        assert_eq!(r.amount, "1000");
        assert_eq!(r.extra[WITHDRAW_DELAY_KEY], 3600);
        assert_eq!(r.extra[MIN_DEPOSIT_KEY], "50000");
        assert_eq!(r.extra["name"], "USDC");
        // The receiver authorizer is the facilitator's, read at start-up.
        assert!(r.extra.get("receiverAuthorizer").is_none());
        match &config.routes.in_file_order()[0].kind {
            RouteKind::Priced(p) => assert_eq!(p.options[0].v1_network, None),
            _ => panic!("route is not priced"),
        }
        // Defaults: 15 minutes, ten requests' worth, claims every 5 minutes.
        let config = parse(
            "[[routes]]\nmatch = \"GET /q\"\nscheme = \"batch-settlement\"\namount = \"7\"\n",
        )
        .expect("valid");
        let r = only_option(&config);
        assert_eq!(
            (
                r.extra[WITHDRAW_DELAY_KEY].as_u64(),
                r.extra[MIN_DEPOSIT_KEY].as_str()
            ),
            (Some(900), Some("70"))
        );
        assert_eq!(config.batch.claim_interval, Duration::from_secs(300));
        assert_eq!(config.batch.claim_threshold, None);
        let config = parse(
            "[[routes]]\nmatch = \"GET /q\"\nscheme = \"batch-settlement\"\namount = \"7\"\n[batch]\nclaim_interval = \"1m\"\nclaim_threshold = \"1000000\"\nreceiver_authorizer = \"facilitator\"\n",
        )
        .expect("valid");
        assert_eq!(config.batch.claim_interval, Duration::from_secs(60));
        assert_eq!(config.batch.claim_threshold, Some(1_000_000));
        // The gateway's own key: channels name its address, and no facilitator is asked.
        let config = parse_env(
            "[[routes]]\nmatch = \"GET /q\"\nscheme = \"batch-settlement\"\namount = \"7\"\n[batch]\nreceiver_authorizer_key = \"${AUTHORIZER_KEY}\"\n",
            &|name| (name == "AUTHORIZER_KEY").then(|| "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a".to_string()),
        )
        .expect("valid");
        assert_eq!(
            only_option(&config).extra["receiverAuthorizer"],
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
        );
        assert_eq!(
            format!("{:?}", config.batch.receiver_authorizer_key),
            "Some(***)"
        );
    }

    #[test]
    fn channel_mistakes_are_refused_with_clear_messages() {
        let route =
            "[[routes]]\nmatch = \"GET /q\"\nscheme = \"batch-settlement\"\nprice = \"$0.001\"\n";
        let cases = [
            (format!("{route}withdraw_delay = \"10m\"\n"), "withdraw_delay must be whole seconds from 15m to 720h"),
            (format!("{route}withdraw_delay = \"745h\"\n"), "withdraw_delay must be whole seconds from 15m to 720h"),
            (format!("{route}min_deposit = \"$0.0001\"\n"), "min_deposit must cover at least one request"),
            (format!("{route}settle = \"before\"\n"), "settle = \"before\" cannot apply"),
            (format!("{route}[batch]\nclaim_interval = \"6m\"\n"), "at most a third of the shortest withdraw_delay (900s)"),
            (format!("{route}[batch]\nclaim_threshold = \"0\"\n"), "claim_threshold `0`"),
            (format!("{route}[batch]\nreceiver_authorizer = \"0x70997970c51812dc3a010c7d01b50e0d17dc79c8\"\n"), "for the gateway's own key set receiver_authorizer_key"),
            (format!("{route}[batch]\nreceiver_authorizer_key = \"0xnotakey-secret\"\n"), "receiver_authorizer_key is not a 32-byte hex private key"),
            (format!("{route}[batch]\nreceiver_authorizer = \"facilitator\"\nreceiver_authorizer_key = \"0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a\"\n"), "use one"),
            ("[[routes]]\nmatch = \"GET /q\"\nprice = \"$0.001\"\nwithdraw_delay = \"1h\"\n".to_string(), "only scheme = \"batch-settlement\" reads"),
        ];
        for (text, expected) in cases {
            let message = refused(&text);
            assert!(message.contains(expected), "{text}: {message}");
            assert!(
                !message.contains("notakey-secret"),
                "a key is never echoed: {message}"
            );
        }
        let with_access =
            format!("[server]\npublic_url = \"https://api.example.com\"\n{route}access = \"1h\"\n");
        // `[server]` must come before the routes in one document: put it in the base instead.
        let message = GatewayConfig::parse(
            &format!("[server]\npublic_url = \"https://api.example.com\"\n{BASE}{route}access = \"1h\"\n"),
            Path::new("gateway.toml"),
            &|_| None,
        )
        .expect_err(&with_access)
        .message;
        assert!(
            message.contains("access windows are sold with exact or upto payments"),
            "{message}"
        );
        // A metered route charges each request for what it used: a window has no price to sell.
        let metered = "[[routes]]\nmatch = \"GET /m\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-Tokens\"\nunit_price = \"$0.0001\"\naccess = \"1h\"\n";
        let message = GatewayConfig::parse(
            &format!("[server]\npublic_url = \"https://api.example.com\"\n{BASE}{metered}"),
            Path::new("gateway.toml"),
            &|_| None,
        )
        .expect_err(metered)
        .message;
        assert!(
            message.contains("`access` needs a fixed price; a metered (upto) route"),
            "{message}"
        );
    }
}

mod settle_buffer {
    use super::*;

    fn route_buffer(config: &GatewayConfig, at: usize) -> Option<u32> {
        match &config.routes.in_file_order()[at].kind {
            RouteKind::Priced(p) => p.settle_buffer,
            _ => panic!("route is not priced"),
        }
    }

    #[test]
    fn the_bound_defaults_to_one_mebibyte_and_is_read_as_a_size_or_bytes() {
        let route = "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\n";
        let config = parse(route).unwrap();
        assert_eq!(config.server.settle_buffer, 1_048_576);
        assert_eq!(route_buffer(&config, 0), None);
        for (written, bytes) in [("\"256KiB\"", 262_144), ("4096", 4096), ("0", 0)] {
            let config = parse(&format!("[server]\nsettle_buffer = {written}\n{route}")).unwrap();
            assert_eq!(config.server.settle_buffer, bytes, "{written}");
        }
        let env = |name: &str| (name == "BUFFER").then(|| "2MiB".to_string());
        let config = parse_env(
            &format!("[server]\nsettle_buffer = \"${{BUFFER}}\"\n{route}"),
            &env,
        )
        .unwrap();
        assert_eq!(config.server.settle_buffer, 2 * 1_048_576);
    }

    #[test]
    fn a_route_may_set_its_own_bound() {
        let config = parse(
            "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nsettle_buffer = \"16KiB\"\n\
             [[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\nsettle_buffer = 0\n\
             [[routes]]\nmatch = \"GET /c\"\nprice = \"$0.01\"\n",
        )
        .unwrap();
        assert_eq!(route_buffer(&config, 0), Some(16_384));
        assert_eq!(route_buffer(&config, 1), Some(0));
        assert_eq!(route_buffer(&config, 2), None);
    }

    #[test]
    fn a_bound_that_cannot_apply_or_cannot_be_read_is_refused() {
        for (extra, said) in [
            ("[server]\nsettle_buffer = \"lots\"\n", "settle_buffer"),
            ("[server]\nsettle_buffer = \"1TiB\"\n", "unknown unit"),
            ("[server]\nsettle_buffer = \"65MiB\"\n", "at most"),
            (
                "[[routes]]\nmatch = \"GET /a\"\nprice = \"$0.01\"\nsettle = \"before\"\nsettle_buffer = \"1MiB\"\n",
                "cannot apply",
            ),
            (
                "[[routes]]\nmatch = \"GET /a\"\nfree = true\nsettle_buffer = \"1MiB\"\n",
                "settle_buffer",
            ),
            (
                "[[routes]]\nmatch = \"POST /mcp\"\nmcp = true\nsettle_buffer = \"1MiB\"\n[[routes.tools]]\nname = \"t\"\nprice = \"$0.01\"\n",
                "cannot apply",
            ),
        ] {
            let error = parse(extra).expect_err(extra).to_string();
            assert!(error.contains(said), "{extra}: {error}");
        }
    }
}
