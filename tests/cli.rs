//! The command line: `check` output, start-up errors, secrets never printed.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn check(config: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    let path = write_config(config);
    let out = Command::new(gateway_bin())
        .arg("check")
        .arg(&path)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn check_prints_atomic_prices_and_overlaps() {
    let config = config(8402, 8080, 8081, "bearer_token = \"${FAC_TOKEN}\"", "");
    let (ok, stdout, stderr) = check(&config, &[("FAC_TOKEN", "very-secret-token")]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("GET /paid"), "{stdout}");
    assert!(
        stdout.contains("10000 USDC (0.01) on eip155:84532"),
        "{stdout}"
    );
    assert!(
        stdout.contains("20000 USDT0 (0.02) on eip155:196"),
        "{stdout}"
    );
    assert!(stdout.contains("settle before"), "{stdout}");
    assert!(
        stdout.contains("overlap: `GET /paid` (route 1) and `* /paid/**` (route 2)"),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-token") && !stderr.contains("very-secret-token"));
}

#[test]
fn check_warns_when_a_path_is_priced_for_some_methods_only_and_unmatched_is_proxy() {
    let proxy = config(8402, 8080, 8081, "", "");
    let (ok, stdout, stderr) = check(&proxy, &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("warning: `POST /upload` (route 3) prices only the method it names"),
        "{stdout}"
    );
    // `* /paid/**` covers every method on /paid, so `GET /paid` leaves nothing free.
    assert!(!stdout.contains("warning: `GET /paid`"), "{stdout}");
    let deny = proxy.replacen("unmatched = \"proxy\"", "unmatched = \"deny\"", 1);
    let (ok, stdout, stderr) = check(&deny, &[]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("warning:"), "{stdout}");
}

#[test]
fn check_prints_bazaar_listings_and_names_the_route_of_a_bad_one() {
    let listed = "[[routes]]\nmatch = \"GET /listed/:id\"\nprice = \"$0.01\"\ndiscoverable = true\noutput_example = { ok = true }\nservice_name = \"Acme\"\n";
    let (ok, stdout, stderr) = check(&config(8402, 8080, 8081, "", listed), &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("listed in the Bazaar: http query parameters: nothing declared; route template /listed/:id; output example; service \"Acme\""),
        "{stdout}"
    );
    let bad = "[[routes]]\nmatch = \"GET /listed\"\nprice = \"$0.01\"\ndiscoverable = true\nicon_url = \"http://acme.example/i.png\"\n";
    let (ok, _, stderr) = check(&config(8402, 8080, 8081, "", bad), &[]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "route `GET /listed`: `icon_url` `http://acme.example/i.png` must be an https URL"
        ),
        "{stderr}"
    );
}

#[test]
fn check_names_file_line_and_column_of_an_error() {
    let config = config(
        8402,
        8080,
        8081,
        "",
        "[[routes]]\nmatch = \"GET /bad\"\nprice = \"$0.001.5\"\n",
    );
    let (ok, _, stderr) = check(&config, &[]);
    assert!(!ok);
    let line = config.lines().position(|l| l.contains("$0.001.5")).unwrap() + 1;
    assert!(
        stderr.contains(&format!(
            "gateway.toml:{line}:9: price `$0.001.5` is not a decimal amount"
        )),
        "{stderr}"
    );
}

#[test]
fn run_refuses_to_start_without_a_referenced_variable() {
    let config = config(
        free_port(),
        8080,
        8081,
        "bearer_token = \"${SURELY_UNSET_VAR}\"",
        "",
    );
    let (ok, stderr) = TestGateway::builder(&config).run_to_exit(Duration::from_secs(20));
    assert!(!ok);
    assert!(
        stderr.contains("environment variable `SURELY_UNSET_VAR` is not set"),
        "{stderr}"
    );
}

#[test]
fn version_and_help_describe_the_commands() {
    let out = Command::new(gateway_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("x402-gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(gateway_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("run") && help.contains("check"), "{help}");
    assert!(help.contains("init") && help.contains("openapi"), "{help}");
    let out = Command::new(gateway_bin())
        .args(["init", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--from-openapi",
        "--price",
        "--out",
        "--upstream",
        "--force",
        "x-x402-price",
    ] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}

/// Pingora builds zlib-ng with cmake: cargo hands that build the repository's wrapper, which runs
/// the machine's cmake or, without one, says what to install.
#[test]
fn a_build_without_cmake_says_what_to_install() {
    // Set by cargo from .cargo/config.toml (the build fails without it).
    let handed_over = env!("CMAKE");
    assert!(
        std::path::Path::new(handed_over).is_file(),
        "CMAKE={handed_over} is not a file"
    );
    let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/cmake.sh");
    let without = Command::new("/bin/sh")
        .args([wrapper, "--version"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(127));
    let said = String::from_utf8_lossy(&without.stderr);
    assert!(
        said.contains("cmake is not installed") && said.contains("sudo apt-get install cmake"),
        "{said}"
    );
    let with = Command::new("/bin/sh")
        .args([wrapper, "--version"])
        .output()
        .unwrap();
    assert!(with.status.success());
    assert!(
        String::from_utf8_lossy(&with.stdout).starts_with("cmake version"),
        "the wrapper runs the machine's cmake"
    );
}

#[test]
fn run_fails_fast_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (ok, stderr) = TestGateway::builder(&config(port, 8080, 8081, "", ""))
        .run_to_exit(Duration::from_secs(20));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn check_prints_the_access_window_of_a_route() {
    let config = "[server]\npublic_url = \"https://api.example.com\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[defaults]\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\nnetwork = \"eip155:84532\"\n[[routes]]\nmatch = \"GET /report\"\nprice = \"$0.05\"\naccess = \"24h\"\n[[routes]]\nmatch = \"GET /other\"\nprice = \"$0.05\"\n";
    let (ok, stdout, stderr) = check(config, &[]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let report = lines
        .iter()
        .position(|l| l.starts_with("GET /report"))
        .expect("the route is listed");
    assert!(
        lines[report + 1].contains("sign in instead of paying again for 86400s"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("access:").count(),
        1,
        "only the route with a window: {stdout}"
    );
}

#[test]
fn check_prints_how_a_metered_route_charges() {
    let config = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[defaults]\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\nnetwork = \"eip155:84532\"\n[[routes]]\nmatch = \"POST /v1/chat\"\nscheme = \"upto\"\nprice = \"$0.50\"\nusage_json = \"usage.total_tokens\"\nunit_price = \"$0.00002\"\nusage_fallback = \"nothing\"\n[[routes]]\nmatch = \"GET /render\"\nscheme = \"upto\"\namount = \"90000\"\namount_header = \"X-Charge\"\n";
    let (ok, stdout, stderr) = check(config, &[]);
    assert!(ok, "{stderr}");
    let metered: Vec<&str> = stdout.lines().filter(|l| l.contains("metered:")).collect();
    assert_eq!(metered.len(), 2, "{stdout}");
    assert!(
        metered[0].contains("maximum 500000 USDC (0.5)")
            && metered[0].contains("usage_json `usage.total_tokens`")
            && metered[0].contains("unit price 20 USDC (0.00002)")
            && metered[0].ends_with("when missing or unreadable: nothing"),
        "{stdout}"
    );
    assert!(
        metered[1].contains("maximum 90000 USDC")
            && metered[1].contains("amount header `x-charge` (atomic units)")
            && metered[1].ends_with("when missing or unreadable: maximum"),
        "{stdout}"
    );
}

#[test]
fn check_says_which_routes_verify_locally() {
    let config = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[defaults]\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\nnetwork = \"eip155:84532\"\nverify = \"local\"\n[[routes]]\nmatch = \"GET /fast\"\nprice = \"$0.01\"\n[[routes]]\nmatch = \"GET /upfront\"\nprice = \"$0.01\"\nsettle = \"before\"\n";
    let (ok, stdout, stderr) = check(config, &[]);
    assert!(ok, "{stderr}");
    let line = |route: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(route))
            .unwrap_or_else(|| panic!("{route} listed: {stdout}"))
            .to_string()
    };
    assert!(
        line("GET /fast").ends_with("settle after-success, verify local"),
        "{stdout}"
    );
    // `[defaults] verify` leaves the routes it cannot apply to with the facilitator's /verify.
    assert!(line("GET /upfront").ends_with("settle before"), "{stdout}");
}

#[test]
fn check_prints_the_channel_terms_of_a_batch_settlement_route() {
    let config = "[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[defaults]\npay_to = \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\nnetwork = \"eip155:84532\"\n[[routes]]\nmatch = \"GET /quote\"\nscheme = \"batch-settlement\"\nprice = \"$0.001\"\nwithdraw_delay = \"1h\"\n[batch]\nclaim_interval = \"10m\"\n";
    let (ok, stdout, stderr) = check(config, &[]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let quote = lines
        .iter()
        .position(|l| l.starts_with("GET /quote"))
        .expect("the route is listed");
    assert!(lines[quote].contains("batch-settlement"), "{stdout}");
    assert!(
        lines[quote + 1].contains("vouchers of 1000 USDC each; deposits of at least 10000 USDC; withdrawals wait 3600s; claimed every 600s"),
        "{stdout}"
    );
}

/// An upstream on a loopback port that answers every request `200` with the request line, and
/// counts them: what a free route reaches.
struct EchoUpstream {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EchoUpstream {
    fn start() -> Self {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(&stream);
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = serde_json::json!({"request": request_line.trim()}).to_string();
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs the gateway binary with `args`: whether it succeeded, its stdout and stderr.
fn gateway(args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let out = Command::new(gateway_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A fresh directory for one test's files.
fn scratch_dir() -> std::path::PathBuf {
    write_config("")
        .parent()
        .expect("a configuration file lives in a directory")
        .to_path_buf()
}

/// The generated file's listeners moved to free ports, so that tests can run side by side:
/// the text, the public port and the admin port.
fn on_free_ports(generated: &str) -> (String, u16, u16) {
    let (public, admin) = (free_port(), free_port());
    let text = generated
        .replacen("127.0.0.1:8402", &format!("127.0.0.1:{public}"), 1)
        .replacen("127.0.0.1:9402", &format!("127.0.0.1:{admin}"), 1);
    (text, public, admin)
}

/// `openapi --config PATH`, parsed.
fn openapi_of(config: &std::path::Path) -> serde_json::Value {
    let (ok, stdout, stderr) =
        gateway(&["openapi".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert!(ok, "{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

async fn challenge_of(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let r = http.get(url).send().await.unwrap();
    assert_eq!(r.status(), 402, "{url}");
    decode_b64_json(
        r.headers()["payment-required"]
            .to_str()
            .expect("an ASCII header"),
    )
}

/// The Swagger Petstore as OpenAPI 3.0, from the `@readme/oas-examples` npm package (a
/// devDependency of tests/), with an `x-x402-price` on one operation and `x-x402-free` on
/// another; every other operation takes `--price`.
#[tokio::test]
#[cfg_attr(
    not(feature = "rig-tests"),
    ignore = "reads @readme/oas-examples from tests/node_modules (npm ci --prefix tests)"
)]
async fn init_from_the_public_petstore_document_serves_its_prices() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node_modules/@readme/oas-examples/3.0/yaml/petstore.yaml");
    let text = std::fs::read_to_string(&sample)
        .unwrap_or_else(|e| panic!("{}: {e} (npm ci --prefix tests)", sample.display()));
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["paths"]["/pet/{petId}"]["get"]["x-x402-price"] = "$0.05".into();
    doc["paths"]["/store/inventory"]["get"]["x-x402-free"] = true.into();
    let dir = scratch_dir();
    let source = dir.join("petstore.yaml");
    std::fs::write(&source, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = dir.join("generated.toml");
    let upstream = EchoUpstream::start();
    let upstream_url = format!("http://127.0.0.1:{}", upstream.port);
    let (ok, stdout, stderr) = gateway(&[
        "init".as_ref(),
        "--from-openapi".as_ref(),
        source.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--upstream".as_ref(),
        upstream_url.as_ref(),
        "--price".as_ref(),
        "$0.002".as_ref(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains(": OK"), "the file is checked: {stdout}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line: {stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        line("GET /v2/pet/:petId ")
            .starts_with("GET /v2/pet/:petId 50000 USDC (0.05) on eip155:84532"),
        "{stdout}"
    );
    assert_eq!(
        line("GET /v2/store/inventory "),
        "GET /v2/store/inventory free"
    );
    // The written file passes `check` on its own, as generated.
    let (ok, _, stderr) = gateway(&["check".as_ref(), out.as_os_str()]);
    assert!(ok, "{stderr}");

    let generated = std::fs::read_to_string(&out).unwrap();
    let running = dir.join("gateway.toml");
    let (text, public, admin) = on_free_ports(&generated);
    std::fs::write(&running, text).unwrap();
    let gw = TestGateway::builder_at(&running)
        .port(public)
        .admin_port(admin)
        .start();
    let http = reqwest::Client::new();
    let priced = challenge_of(&http, &gw.url("/v2/pet/7")).await;
    assert_eq!(
        priced["accepts"][0]["amount"], "50000",
        "$0.05 in USDC units"
    );
    let defaulted = challenge_of(&http, &gw.url("/v2/pet/findByStatus?status=sold")).await;
    assert_eq!(defaulted["accepts"][0]["amount"], "2000", "--price $0.002");
    assert_eq!(upstream.hits(), 0, "nothing unpaid reached the API");

    let free = http
        .get(gw.url("/v2/store/inventory"))
        .send()
        .await
        .unwrap();
    assert_eq!(free.status(), 200);
    let body: serde_json::Value = free.json().await.unwrap();
    assert_eq!(body["request"], "GET /v2/store/inventory HTTP/1.1");
    assert_eq!(upstream.hits(), 1);
    let undescribed = http.get(gw.url("/v2/admin")).send().await.unwrap();
    assert_eq!(undescribed.status(), 404, "unmatched = \"deny\"");

    // A payment for the priced operation is verified by the test-mode facilitator and served.
    let payment = pay_header_for(&gw.url("/v2/pet/7")).await;
    let paid = http
        .get(gw.url("/v2/pet/7"))
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200, "{}", gw.log());
    assert!(paid.headers().contains_key("payment-response"));
    assert_eq!(upstream.hits(), 2);

    let described = openapi_of(&running);
    let pet = &described["paths"]["/v2/pet/{petId}"]["get"];
    assert_eq!(pet["x-x402-price"], "$0.05");
    assert_eq!(pet["x-x402-accepts"], priced["accepts"]);
    assert_eq!(pet["parameters"][0]["name"], "petId");
    assert_eq!(pet["summary"], "Find pet by ID");
    let inventory = &described["paths"]["/v2/store/inventory"]["get"];
    assert!(inventory.is_object() && inventory.get("x-x402-price").is_none());
}

/// The OpenAPI 3.1 Petstore in JSON from the same package: every operation takes `--price`.
#[test]
#[cfg_attr(
    not(feature = "rig-tests"),
    ignore = "reads @readme/oas-examples from tests/node_modules (npm ci --prefix tests)"
)]
fn init_reads_the_public_openapi_3_1_petstore_in_json() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node_modules/@readme/oas-examples/3.1/json/petstore.json");
    let out = scratch_dir().join("generated.toml");
    let (ok, stdout, stderr) = gateway(&[
        "init".as_ref(),
        "--from-openapi".as_ref(),
        sample.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--price".as_ref(),
        "0.01".as_ref(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("wrote") && stdout.contains(": OK"),
        "{stdout}"
    );
    assert!(
        stdout.contains("DELETE /v2/user/:username") && stdout.contains("10000 USDC (0.01)"),
        "{stdout}"
    );
    assert!(!stdout.contains("not priced"), "{stdout}");
}

#[test]
fn init_writes_nothing_from_a_bad_document_and_keeps_an_existing_file() {
    let dir = scratch_dir();
    let source = dir.join("api.json");
    std::fs::write(
        &source,
        r#"{"openapi": "3.1.0", "info": {"title": "Tiny", "version": "1"},
            "paths": {"/items/{id}": {"get": {"x-x402-price": "$0.25", "operationId": "getItem"},
                                      "delete": {}}}}"#,
    )
    .unwrap();
    let out = dir.join("gateway.toml");
    let init = |source: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "init".as_ref(),
            "--from-openapi".as_ref(),
            source.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        gateway(&args)
    };
    // `scratch_dir` leaves an empty gateway.toml there: it is not overwritten.
    let (ok, _, stderr) = init(&source, &[]);
    assert!(!ok);
    assert!(stderr.contains("exists already; pass --force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");

    let (ok, stdout, stderr) = init(&source, &["--force"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("not priced (commented out): DELETE /items/:id"),
        "{stdout}"
    );
    assert!(stdout.contains("250000 USDC (0.25)"), "{stdout}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("# operationId: getItem"), "{written}");

    let swagger = dir.join("swagger.yaml");
    std::fs::write(
        &swagger,
        "swagger: '2.0'\ninfo: {title: Old, version: '1'}\npaths: {}\n",
    )
    .unwrap();
    let (ok, _, stderr) = init(&swagger, &["--force"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{}: is a Swagger 2.0 document", swagger.display())),
        "{stderr}"
    );
    let (ok, _, stderr) = init(&source, &["--force", "--price", "a dollar"]);
    assert!(!ok);
    assert!(
        stderr.contains("--price `a dollar`: price `a dollar` is not a decimal amount"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        written,
        "nothing written"
    );
    let missing = dir.join("missing.yaml");
    let fresh = dir.join("fresh.toml");
    let (ok, _, stderr) = gateway(&[
        "init".as_ref(),
        "--from-openapi".as_ref(),
        missing.as_os_str(),
        "--out".as_ref(),
        fresh.as_os_str(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("missing.yaml: cannot read it"), "{stderr}");
    assert!(!fresh.exists());
}

#[tokio::test]
async fn openapi_describes_the_priced_routes_with_the_terms_of_their_402() {
    let port = free_port();
    let upstream = ClosedPort::new();
    let facilitator = ClosedPort::new();
    let text = config(
        port,
        upstream.port,
        facilitator.port,
        "bearer_token = \"${FAC_TOKEN}\"",
        "[[routes]]\nmatch = \"GET /items/:id/*\"\nprice = \"$0.03\"\n",
    );
    let gw = TestGateway::builder(&text)
        .env("FAC_TOKEN", "very-secret-token")
        .start();
    let (ok, stdout, stderr) = {
        let out = Command::new(gateway_bin())
            .args(["openapi", "--config"])
            .arg(gw.config_path())
            .env("FAC_TOKEN", "very-secret-token")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("very-secret-token"));
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "x402-gateway");
    let http = reqwest::Client::new();
    for (path, template, method) in [
        ("/paid", "/paid", "get"),
        ("/multi", "/multi", "get"),
        ("/paid/a/b", "/paid/{rest}", "get"),
        ("/items/7/x", "/items/{id}/{var1}", "get"),
    ] {
        let challenge = challenge_of(&http, &gw.url(path)).await;
        let operation = &doc["paths"][template][method];
        assert_eq!(
            operation["x-x402-accepts"], challenge["accepts"],
            "{template}: {operation}"
        );
    }
    let item = &doc["paths"]["/items/{id}/{var1}"]["get"];
    let names: Vec<&str> = item["parameters"]
        .as_array()
        .expect("declared path parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["id", "var1"]);
    assert_eq!(item["x-x402-price"], "$0.03");
    assert_eq!(
        doc["paths"]["/multi"]["get"]["x-x402-accepts"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(
        doc["paths"]["/paid/{rest}"]["post"]["x-x402-accepts"].is_array(),
        "`*` routes list every method"
    );
    let free = &doc["paths"]["/free/{rest}"]["get"];
    assert!(
        free.is_object() && free.get("x-x402-accepts").is_none(),
        "{free}"
    );
}
