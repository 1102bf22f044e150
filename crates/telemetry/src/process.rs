//! The usual `process_*` metrics of the Prometheus client libraries, read
//! from `/proc/self` at scrape time (Linux; elsewhere they are absent).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// What one read of `/proc/self` found; a field that could not be read
/// is `None` and its metric is left out of the scrape.
#[derive(Debug, Default, PartialEq)]
pub struct Sample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub start_time_seconds: Option<f64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

/// Fields of `/proc/self/stat` after the command name, which is in
/// parentheses and may itself hold spaces and parentheses.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().collect())
}

/// `VmRSS:  1234 kB` → bytes.
fn status_kb(status: &str, field: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: i64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Parses the files (split out so it is tested on fixed text).
pub fn parse(stat: &str, status: &str, proc_stat: &str, clock_ticks: f64) -> Sample {
    let fields = stat_fields(stat).unwrap_or_default();
    // After the name: state is field 3 of proc(5), so index = n - 3.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(u), Some(s)) if clock_ticks > 0.0 => Some((u + s) / clock_ticks),
        _ => None,
    };
    let boot = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    let start = match (boot, field(22)) {
        (Some(b), Some(t)) if clock_ticks > 0.0 => Some(b + t / clock_ticks),
        _ => None,
    };
    Sample {
        cpu_seconds: cpu,
        resident_bytes: status_kb(status, "VmRSS:"),
        virtual_bytes: status_kb(status, "VmSize:"),
        start_time_seconds: start,
        open_fds: None,
        max_fds: None,
    }
}

/// Reads this process's figures now.
pub fn sample() -> Sample {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(0.0);
    let mut s = parse(
        &read("/proc/self/stat"),
        &read("/proc/self/status"),
        &read("/proc/stat"),
        ticks,
    );
    s.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as i64);
    s.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
    s
}

#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = sample();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?)?;
        }
        let gauges: [(&str, &str, Option<Unit>, Option<f64>); 5] = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                s.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                s.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                s.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                s.max_fds.map(|v| v as f64),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
            }
        }
        // Both processes register this collector, so the trace exporter's
        // counter rides along rather than needing a registration of its own.
        crate::otel::encode_dropped(&mut encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (testbed (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 150 0 0 20 0 8 0 12000 123456789 4000 18446744073709551615";
        let status = "Name:\ttestbed\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        let proc_stat = "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n";
        let s = parse(stat, status, proc_stat, 100.0);
        assert_eq!(s.cpu_seconds, Some(4.0));
        assert_eq!(s.resident_bytes, Some(2048 * 1024));
        assert_eq!(s.virtual_bytes, Some(123456 * 1024));
        assert_eq!(s.start_time_seconds, Some(1_700_000_120.0));
    }

    #[test]
    fn unreadable_proc_files_leave_metrics_out() {
        let s = parse("", "", "", 100.0);
        assert_eq!(s, Sample::default());
    }

    #[test]
    fn live_process_sample_is_plausible() {
        let s = sample();
        if cfg!(target_os = "linux") {
            assert!(s.resident_bytes.unwrap_or(0) > 0, "{s:?}");
            assert!(s.open_fds.unwrap_or(0) > 0, "{s:?}");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let start = s.start_time_seconds.unwrap_or(0.0);
            assert!(start > now - 86_400.0 && start <= now + 1.0, "{s:?}");
        }
    }
}
