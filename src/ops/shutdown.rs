//! `SIGTERM`: Pingora stops accepting and then always waits its whole grace period before it
//! stops. This watcher ends the process as soon as the last in-flight request is done (each
//! payment is already in the journal by then), and at the latest when `[server] grace_period`
//! is over, so an idle gateway stops at once and a busy one within its grace period.

use crate::ops::admin::Health;
use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct DrainingShutdown {
    health: Arc<Health>,
    grace: Duration,
}

impl DrainingShutdown {
    pub fn new(health: Arc<Health>, grace: Duration) -> Self {
        Self { health, grace }
    }
}

/// Idle long enough that no request raced the check: two looks this far apart.
const SETTLE: Duration = Duration::from_millis(100);

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let signal = UnixShutdownSignalWatch.recv().await;
        if matches!(signal, ShutdownSignal::GracefulTerminate) {
            self.health.start_draining();
            let health = self.health.clone();
            let deadline = Instant::now() + self.grace;
            tracing::info!(grace_period = ?self.grace, in_flight = health.in_flight(), "SIGTERM: draining");
            let spawned = std::thread::Builder::new()
                .name("drain".into())
                .spawn(move || {
                    // Give Pingora a moment to close the listeners before counting.
                    std::thread::sleep(SETTLE);
                    let mut idle_looks = 0;
                    while Instant::now() < deadline {
                        if health.in_flight() <= 0 {
                            idle_looks += 1;
                            if idle_looks >= 2 {
                                tracing::info!("drained: every in-flight request finished");
                                std::process::exit(0);
                            }
                        } else {
                            idle_looks = 0;
                        }
                        std::thread::sleep(SETTLE);
                    }
                    tracing::warn!(
                        in_flight = health.in_flight(),
                        "grace period over with requests still in flight; exiting"
                    );
                    std::process::exit(0);
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot watch the drain; Pingora's grace period applies");
            }
        }
        signal
    }
}
