//! The command line: `check` output, start-up errors, secrets never printed.

mod common;

use common::*;
use std::process::Command;

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
    let path = write_config(&config);
    let out = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
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
}

#[test]
fn run_fails_fast_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = write_config(&config(port, 8080, 8081, "", ""));
    let out = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}
