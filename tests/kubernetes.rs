//! `examples/kubernetes/`: the manifests parse, agree with each other and with the gateway
//! configuration they ship, and the probes hit paths the real binary serves.

mod common;

use common::*;
use serde_yaml::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use x402_gateway::config::GatewayConfig;

fn manifests() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/gateway.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

struct Sidecar<'a> {
    gateway: &'a Value,
    app: &'a Value,
    pod: &'a Value,
}

fn sidecar(docs: &[Value]) -> Sidecar<'_> {
    let pod = &of_kind(docs, "Deployment")["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    let named = |name: &str| containers.iter().find(|c| c["name"] == name).unwrap();
    Sidecar {
        gateway: named("x402-gateway"),
        app: named("app"),
        pod,
    }
}

/// Container port by name.
fn port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}")) as u16
}

fn secret_env(docs: &[Value]) -> HashMap<String, String> {
    of_kind(docs, "Secret")["stringData"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (str_of(k).to_string(), str_of(v).to_string()))
        .collect()
}

/// A Kubernetes memory quantity in MiB ("512Mi", "1Gi").
fn mebibytes(v: &Value) -> u64 {
    let q = str_of(v);
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("memory quantity {q}: use Mi or Gi")
    }
}

fn shipped_config(docs: &[Value]) -> String {
    str_of(&of_kind(docs, "ConfigMap")["data"]["gateway.toml"]).to_string()
}

#[test]
fn manifests_agree_with_the_gateway_configuration_they_ship() {
    let docs = manifests();
    let kinds: Vec<&str> = docs.iter().map(|d| str_of(&d["kind"])).collect();
    assert_eq!(kinds, ["ConfigMap", "Secret", "Deployment", "Service"]);
    let s = sidecar(&docs);
    let env = secret_env(&docs);
    let config = GatewayConfig::parse(
        &shipped_config(&docs),
        Path::new("/etc/x402-gateway/gateway.toml"),
        &|name| env.get(name).cloned(),
    )
    .unwrap();

    // The gateway serves :8402 on every interface and proxies to the app on localhost:8080.
    assert_eq!(config.server.listen.port(), port(s.gateway, "http"));
    assert_eq!(config.server.listen.port(), 8402);
    assert!(config.server.listen.ip().is_unspecified());
    assert_eq!(config.upstream.port, port(s.app, "app"));
    assert_eq!(config.upstream.port, 8080);
    assert!(["127.0.0.1", "localhost"].contains(&config.upstream.host.as_str()));

    // The Service targets the gateway, never the app.
    let service = of_kind(&docs, "Service");
    let target = &service["spec"]["ports"][0]["targetPort"];
    assert!(
        target == "http" || target.as_u64() == Some(8402),
        "Service targets {target:?}"
    );
    let labels = &of_kind(&docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[str_of(k)], v);
    }

    // Probes on the admin port, reachable by the kubelet, on the gateway's own paths.
    assert_eq!(config.admin.listen.port(), port(s.gateway, "admin"));
    assert!(config.admin.listen.ip().is_unspecified());
    for (probe, path) in [
        ("livenessProbe", x402_gateway::ops::HEALTHZ_PATH),
        ("readinessProbe", x402_gateway::ops::READYZ_PATH),
    ] {
        let get = &s.gateway[probe]["httpGet"];
        assert_eq!(str_of(&get["path"]), path, "{probe}");
        assert!(get["port"] == "admin" || get["port"].as_u64() == Some(9402));
    }

    // Credentials come from the Secret.
    assert_eq!(
        s.gateway["envFrom"][0]["secretRef"]["name"],
        of_kind(&docs, "Secret")["metadata"]["name"]
    );
    assert_eq!(
        config.facilitators[0]
            .bearer_token
            .as_ref()
            .map(|t| t.expose()),
        env.get("FACILITATOR_TOKEN").map(String::as_str)
    );
    // Two replicas share their state through the Redis of the Secret.
    let replicas = of_kind(&docs, "Deployment")["spec"]["replicas"]
        .as_u64()
        .unwrap();
    let redis = config.redis.as_ref().expect("replicas > 1 need [redis]");
    assert!(replicas > 1);
    assert_eq!(
        Some(redis.url.expose()),
        env.get("REDIS_URL").map(String::as_str)
    );

    // The ConfigMap is mounted as a directory, where the gateway reads it and sees updates.
    let mounts = s.gateway["volumeMounts"].as_sequence().unwrap();
    let config_mount = mounts.iter().find(|m| m["name"] == "config").unwrap();
    assert!(
        config_mount["subPath"].is_null(),
        "subPath mounts never update"
    );
    let args: Vec<&str> = s.gateway["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(
        Path::new(config_arg).parent().unwrap(),
        Path::new(str_of(&config_mount["mountPath"]))
    );
    // The journal lives on a writable volume.
    let journal = config.journal.as_ref().unwrap();
    assert!(mounts
        .iter()
        .any(|m| m["name"] != "config" && journal.path.starts_with(str_of(&m["mountPath"]))));

    // Sized resources: a CPU request, a memory limit that holds thousands of connections and the
    // replay guard (BENCHMARKS.md), and a thread count that does not follow the node's CPUs.
    let resources = &s.gateway["resources"];
    assert!(!resources["requests"]["cpu"].is_null(), "no CPU request");
    assert!(
        mebibytes(&resources["limits"]["memory"]) >= 256,
        "memory limit {:?}",
        resources["limits"]["memory"]
    );
    let shipped: toml::Value = toml::from_str(&shipped_config(&docs)).unwrap();
    assert!(
        shipped["server"].get("threads").is_some(),
        "[server] threads must be set: the default is one thread per CPU of the node"
    );

    // The image's user and state volume are the ones the pod runs as and mounts.
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let image_user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile sets USER");
    let run_as = s.gateway["securityContext"]["runAsUser"].as_u64().unwrap();
    assert_eq!(
        image_user.split(':').next(),
        Some(run_as.to_string().as_str())
    );
    let image_volume = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("VOLUME "))
        .expect("Dockerfile declares the state VOLUME");
    assert!(journal.path.starts_with(image_volume.trim()));
    assert!(mounts.iter().any(|m| m["mountPath"] == image_volume.trim()));

    // preStop + grace period fit in terminationGracePeriodSeconds, with room to spare.
    let pre_stop: Vec<&str> = s.gateway["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(pre_stop[0], "sleep");
    let pre_stop_secs: u64 = pre_stop[1].parse().unwrap();
    let termination = s.pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        pre_stop_secs + config.server.grace_period.as_secs() + 5 <= termination,
        "preStop {pre_stop_secs}s + grace {:?} must end well before {termination}s",
        config.server.grace_period
    );
}

#[tokio::test]
async fn the_shipped_configuration_serves_the_probed_paths() {
    let docs = manifests();
    let mut env = secret_env(&docs);
    let s = sidecar(&docs);
    // The pod's Redis is elsewhere; a redis-server of this test stands in for it.
    let redis_port = free_port();
    let mut redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    env.insert(
        "REDIS_URL".into(),
        format!("redis://127.0.0.1:{redis_port}"),
    );
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let (port, admin) = (free_port(), free_port());
    // Only addresses change: this machine is not the pod.
    let dir = write_config("").parent().unwrap().to_path_buf();
    let text = shipped_config(&docs)
        .replace("0.0.0.0:8402", &format!("127.0.0.1:{port}"))
        .replace("0.0.0.0:9402", &format!("127.0.0.1:{admin}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", upstream.port))
        .replace(
            "https://x402.org/facilitator",
            &format!("http://127.0.0.1:{}", facilitator.port),
        )
        .replace(
            "/var/lib/x402-gateway/journal.jsonl",
            &dir.join("journal.jsonl").to_string_lossy(),
        );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    // Spawned, not started: the probes below are what this test waits on.
    let gateway = TestGateway::builder_at(&path)
        .port(port)
        .admin_port(admin)
        .envs(&env)
        .spawn();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut results = Vec::new();
    for probe in ["livenessProbe", "readinessProbe"] {
        let probe_path = str_of(&s.gateway[probe]["httpGet"]["path"]);
        loop {
            let r = http
                .get(format!("http://127.0.0.1:{admin}{probe_path}"))
                .send()
                .await;
            if let Ok(r) = &r {
                if r.status() == 200 {
                    results.push(probe_path.to_string());
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let paid = http
        .get(format!("http://127.0.0.1:{port}/api/data"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    drop(gateway);
    let _ = redis.kill();
    let _ = redis.wait();
    assert_eq!(results, ["/healthz", "/readyz"]);
    assert_eq!(paid.unwrap(), 402);
}
