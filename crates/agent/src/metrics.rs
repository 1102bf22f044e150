//! System metrics for heartbeats, sampled with `sysinfo`.

use sysinfo::{Networks, System};
use testbed_core::agent::SystemMetrics;

/// Keeps the previous sample so that CPU and network figures are rates over
/// the heartbeat interval rather than totals since boot.
pub struct Sampler {
    system: System,
    networks: Networks,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Sampler {
            system,
            networks: Networks::new_with_refreshed_list(),
        }
    }

    pub fn sample(&mut self) -> SystemMetrics {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.networks.refresh(true);
        let (rx, tx) = self.networks.iter().fold((0u64, 0u64), |(rx, tx), (_, n)| {
            (rx + n.received(), tx + n.transmitted())
        });
        SystemMetrics {
            cpu_percent: self.system.global_cpu_usage(),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            network_rx_bytes: rx,
            network_tx_bytes: tx,
            load_average_1m: System::load_average().one,
        }
    }
}

/// The machine's hostname, the default `host` of an agent.
pub fn hostname() -> String {
    System::host_name().unwrap_or_else(|| "localhost".to_string())
}
