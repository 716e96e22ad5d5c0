//! What a benchmark reports about the machine it ran on. Benches of several crates use it, so it
//! is included by path (`#[path = ".../bench-support/machine.rs"] mod machine;`): a shared
//! library crate would need a dependency cycle with the crates under test.

// Each bench reads only part of this.
#![allow(dead_code)]

/// The CPUs, their model and the load average, read once.
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub load_average: String,
}

impl Machine {
    pub fn read() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(),
            load_average: load_average(),
        }
    }
}

/// The 1, 5 and 15 minute load averages, as `uptime` shows them ("unknown" off Linux).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The CPU's model name from `/proc/cpuinfo` ("unknown" off Linux).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
