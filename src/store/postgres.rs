//! Connection pools to PostgreSQL: the journal's ledger and the stores kept in the same database
//! (channels, sign-ins) open theirs the same way.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;

/// The bound of a connection attempt and of a wait for a pooled connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A pool of at most `max_size` connections to `url`; nothing is connected yet. The error never
/// carries the URL (it may hold a password).
pub fn postgres_pool(url: &str, max_size: usize) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| "the url is not a PostgreSQL URL".to_string())?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .application_name("x402-gateway");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| e.to_string())
}

/// A runtime of one worker thread, named `name`, that lives as long as the process: database
/// connections made on it outlive the start-up runtime and never depend on which proxy thread
/// asked. Returns its handle.
pub fn database_runtime(name: &str) -> Result<tokio::runtime::Handle, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start its runtime: {e}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(format!("{name}-owner"))
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("cannot start its thread: {e}"))?;
    Ok(handle)
}
