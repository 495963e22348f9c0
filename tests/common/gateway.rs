//! The one way tests start the gateway binary: [`TestGateway::builder`] takes the configuration
//! text, optional ports, flags and environment, and [`TestGatewayBuilder::start`] hands back a
//! process that listens on its port, keeps its stderr in a file beside its configuration, and is
//! killed when the handle is dropped.

use super::{gateway_bin, listening, write_config};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The log filter when a test does not choose one: warnings are what a failing test needs.
const DEFAULT_RUST_LOG: &str = "warn";

/// How long a gateway may take to listen. Start-up asks facilitators what they support and may
/// migrate a database; on a loaded two-core machine that has taken several seconds.
const START_WITHIN: Duration = Duration::from_secs(20);

/// How much of the log a test failure shows per gateway (debug logs run to megabytes).
const LOG_TAIL: usize = 8_000;

/// The port of the first `listen = "host:port"` line after `table` (e.g. `[server]`).
pub fn listen_port_in(config: &str, table: &str) -> Option<u16> {
    let start = config.find(table)?;
    config[start + table.len()..]
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find(|l| l.trim_start().starts_with("listen"))?
        .trim_end()
        .trim_end_matches('"')
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// What a [`TestGateway`] is started with; see [`TestGateway::builder`].
#[must_use = "a builder does nothing until `start`, `spawn` or `run_to_exit`"]
pub struct TestGatewayBuilder {
    config: PathBuf,
    port: Option<u16>,
    admin: Option<u16>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    rust_log: String,
    name: String,
}

/// A running `x402-gateway run`, killed (and reaped) on drop.
pub struct TestGateway {
    child: Child,
    /// The public port, where requests go.
    pub port: u16,
    admin: Option<u16>,
    config: PathBuf,
    log: PathBuf,
    name: String,
}

impl TestGateway {
    /// A gateway on `config` (TOML text), written to a fresh temporary directory. The public and
    /// admin ports are read from its `[server]` and `[admin]` `listen` lines unless set.
    pub fn builder(config: &str) -> TestGatewayBuilder {
        TestGatewayBuilder::new(write_config(config))
    }

    /// A gateway on a configuration file that already exists (symlinks, relative paths and
    /// reloads of one file are what some tests exercise).
    pub fn builder_at(config: &Path) -> TestGatewayBuilder {
        TestGatewayBuilder::new(config.to_path_buf())
    }
}

impl TestGatewayBuilder {
    fn new(config: PathBuf) -> Self {
        Self {
            config,
            port: None,
            admin: None,
            args: Vec::new(),
            env: Vec::new(),
            rust_log: DEFAULT_RUST_LOG.to_string(),
            name: "gateway".to_string(),
        }
    }

    /// The public port to wait for, when the configuration's `[server] listen` is not it.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The admin port, when the configuration's `[admin] listen` is not it.
    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin = Some(port);
        self
    }

    /// Flags before the `run` subcommand (e.g. `--log-format json`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The gateway's `RUST_LOG`; always set, so that the test's own environment cannot change
    /// what a test reads in the log.
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.to_string();
        self
    }

    /// What failure messages call this process (e.g. `replica 2`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the process without waiting for it, so that several can start at the same moment;
    /// [`TestGateway::wait_listening`] waits later.
    pub fn spawn(self) -> TestGateway {
        let text = std::fs::read_to_string(&self.config).expect("the configuration is readable");
        let port = self
            .port
            .or_else(|| listen_port_in(&text, "[server]"))
            .expect("a public port: `.port()` or a `[server] listen` line");
        let admin = self.admin.or_else(|| listen_port_in(&text, "[admin]"));
        let log = self.config.with_extension("log");
        let child = self.command(&log).spawn().expect("the gateway binary runs");
        TestGateway {
            child,
            port,
            admin,
            config: self.config,
            log,
            name: self.name,
        }
    }

    /// Starts the process and waits until its ports accept connections.
    pub fn start(self) -> TestGateway {
        let mut gateway = self.spawn();
        gateway.wait_listening();
        gateway
    }

    /// Runs a gateway expected to stop by itself within `within` (a refused start-up):
    /// whether it exited successfully, and its log.
    pub fn run_to_exit(self, within: Duration) -> (bool, String) {
        let log = self.config.with_extension("log");
        let mut child = self.command(&log).spawn().expect("the gateway binary runs");
        let read = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("the gateway's status") {
                return (status.success(), read());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} kept running: {}", self.name, read());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn command(&self, log: &Path) -> Command {
        let mut command = Command::new(gateway_bin());
        command
            .args(&self.args)
            .args(["run", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", &self.rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("a log file beside the configuration"));
        command
    }
}

impl TestGateway {
    /// Waits, boundedly, until the public port and the admin port (when there is one) accept
    /// connections: each is a service of its own, bound when its thread starts. Fails early with
    /// the log when the process exits instead.
    pub fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        while !listening(self.port) || self.admin.is_some_and(|admin| !listening(admin)) {
            if let Some(status) = self.try_wait() {
                panic!("{} exited with {status}: {}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {} (admin {:?}) within {START_WITHIN:?}: {}",
                self.name,
                self.port,
                self.admin,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The admin port (from the configuration or the builder).
    pub fn admin_port(&self) -> u16 {
        self.admin
            .expect("an admin port: `[admin] listen` or `.admin_port()`")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port())
    }

    /// The configuration file the gateway runs with (rewrite it to trigger a reload).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Everything the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `name` (e.g. `HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name} {}", self.name);
    }

    /// `kill -9`, then reaps the process: it is gone when this returns.
    pub fn kill(&mut self) {
        self.child.kill().expect("the gateway is running");
        self.child.wait().expect("the gateway is reaped");
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("the gateway's status")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what its gateways logged; output printed here is captured with
        // the test's and shown only on failure.
        if std::thread::panicking() {
            let log = self.log();
            let tail = log
                .char_indices()
                .nth_back(LOG_TAIL)
                .map_or(log.as_str(), |(i, _)| &log[i..]);
            eprintln!("--- {} on port {} logged:\n{tail}", self.name, self.port);
        }
    }
}
