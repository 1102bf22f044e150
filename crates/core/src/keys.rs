//! The store key layout, in one place so no caller spells a key by hand
//! (seed 003's keys beside ours: docs/seed-interfaces.md#seed-003-the-store).
//! Keys are relative to the store's root prefix, which the store itself
//! applies.

use uuid::Uuid;

pub const AGENTS: &str = "/agents/";
pub const TASKS: &str = "/tasks/";
pub const ASSIGN: &str = "/assign/";
pub const USERS: &str = "/users/";
pub const CONFIG: &str = "/config/";
pub const COUNTERS: &str = "/counters/";
pub const LEADER_CONTROLLER: &str = "/leader/controller";
pub const TESTCASES: &str = "/testcases/";
pub const ENVIRONMENTS: &str = "/environments/";
pub const PLANS: &str = "/plans/";
pub const RUNS: &str = "/runs/";
pub const RESULTS: &str = "/results/";
pub const REPORTS: &str = "/reports/";
pub const GROUPS: &str = "/groups/";
/// Index of runs not yet finished, so the controller never scans history.
pub const ACTIVE_RUNS: &str = "/active/runs/";

/// The rule for every name that becomes one key segment and one URL path
/// segment (test cases, environments, groups, users): letters, digits, `.`,
/// `_` and `-`, starting with a letter or digit — so no name is `.` or `..`
/// (which the API's path guard refuses) or looks like a command-line flag.
/// `max` is the longest name allowed. The OpenAPI patterns spell the same
/// rule: `^[A-Za-z0-9][A-Za-z0-9._-]{0,max-1}$`.
pub fn is_valid_name(name: &str, max: usize) -> bool {
    name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// What [`is_valid_name`] asks for, for error messages.
pub fn name_rule(max: usize) -> String {
    format!(
        "1–{max} characters of letters, digits, `.`, `_` and `-`, starting with a letter or digit"
    )
}

pub fn testcase(name: &str) -> String {
    format!("/testcases/{name}")
}

pub fn environment(name: &str) -> String {
    format!("/environments/{name}")
}

pub fn plan(id: &Uuid) -> String {
    format!("/plans/{id}")
}

pub fn run(id: &Uuid) -> String {
    format!("/runs/{id}")
}

/// One step's state of a run: written alone, so a step transition costs
/// one small record whatever the plan's size.
pub fn run_step(id: &Uuid, step: &str) -> String {
    format!("/runs/{id}/steps/{step}")
}

pub fn run_steps_prefix(id: &Uuid) -> String {
    format!("/runs/{id}/steps/")
}

/// `/runs/{id}` (a run-level record, not one of its steps) → the run's id.
pub fn parse_run(key: &str) -> Option<Uuid> {
    key.strip_prefix(RUNS)?.parse().ok()
}

/// Index of every run's summary (what `GET /api/runs` shows), so listing
/// runs reads neither the plans nor the steps of every run.
pub const RUN_INDEX: &str = "/index/runs/";

pub fn run_index(id: &Uuid) -> String {
    format!("/index/runs/{id}")
}

/// Set once every run record is in the per-step layout (see `engine::migrate`).
pub const RUN_LAYOUT: &str = "/config/run_layout";

pub fn active_run(id: &Uuid) -> String {
    format!("/active/runs/{id}")
}

/// Seed 001's performance plans, by numeric id.
pub const PERF_PLANS: &str = "/performance/plans/";
pub const PERF_EXECUTIONS: &str = "/performance/executions/";
pub const PERF_REPORTS: &str = "/performance/reports/";
/// One key per execution the controller leader still reconciles (from its
/// start until a minute after its report, when its live seconds go): the
/// index its watch follows, so an execution does not depend on the replica
/// that started it.
pub const PERF_ACTIVE: &str = "/performance/active/";

pub fn perf_plan(id: u64) -> String {
    format!("{PERF_PLANS}{id}")
}

pub fn perf_execution(id: &str) -> String {
    format!("{PERF_EXECUTIONS}{id}")
}

pub fn perf_active(execution: &str) -> String {
    format!("{PERF_ACTIVE}{execution}")
}

pub fn perf_report(id: u64) -> String {
    format!("{PERF_REPORTS}{id}")
}

/// One load task's window of one second of an execution's live metrics,
/// zero-padded so that key order is time order.
pub fn perf_live(execution: &str, second: u64, task: &Uuid) -> String {
    format!("/performance/live/{execution}/{second:020}/{task}")
}

pub fn perf_live_prefix(execution: &str) -> String {
    format!("/performance/live/{execution}/")
}

/// Blob of an execution's merged per-second windows.
pub fn perf_windows_blob(execution: &str) -> String {
    format!("performance/{execution}/windows.json")
}

pub fn result(testcase: &str, environment: &str) -> String {
    format!("/results/{testcase}/{environment}")
}

pub fn report(id: &Uuid) -> String {
    format!("/reports/{id}")
}

/// Blob path of a report's canonical JSON body.
pub fn report_blob(id: &Uuid) -> String {
    format!("reports/{id}.json")
}

pub fn group(name: &str) -> String {
    format!("/groups/{name}")
}

pub fn group_lock(name: &str) -> String {
    format!("/groups/{name}/lock")
}

pub fn agent(uuid: &Uuid) -> String {
    format!("/agents/{uuid}")
}

pub fn agent_alive(uuid: &Uuid) -> String {
    format!("/agents/{uuid}/alive")
}

/// Is this key an agent's liveness key? Returns the agent's uuid.
pub fn parse_agent_alive(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(AGENTS)?;
    let uuid = rest.strip_suffix("/alive")?;
    uuid.parse().ok()
}

/// Is this key an agent registration (not its liveness key)?
pub fn parse_agent(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(AGENTS)?;
    if rest.contains('/') {
        return None;
    }
    rest.parse().ok()
}

pub fn task(id: &Uuid) -> String {
    format!("/tasks/{id}")
}

pub fn assign_prefix(agent: &Uuid) -> String {
    format!("/assign/{agent}/")
}

pub fn assign(agent: &Uuid, task: &Uuid) -> String {
    format!("/assign/{agent}/{task}")
}

/// `/assign/{agent}/{task}` → (agent, task).
pub fn parse_assign(key: &str) -> Option<(Uuid, Uuid)> {
    let rest = key.strip_prefix(ASSIGN)?;
    let (a, t) = rest.split_once('/')?;
    Some((a.parse().ok()?, t.parse().ok()?))
}

pub fn user(name: &str) -> String {
    format!("/users/{name}")
}

pub fn config(name: &str) -> String {
    format!("/config/{name}")
}

pub fn counter(name: &str) -> String {
    format!("/counters/{name}")
}

/// Blob path of one chunk of a task's log, by the byte offset it starts at.
/// Zero-padded so that listing order is offset order.
pub fn log_chunk_blob(task: &Uuid, offset: u64) -> String {
    format!("tasks/{task}/log/{offset:020}")
}

pub fn log_chunks_prefix(task: &Uuid) -> String {
    format!("tasks/{task}/log/")
}

/// Blob path of a finished task's whole log.
pub fn log_blob(task: &Uuid) -> String {
    format!("tasks/{task}/log.txt")
}

pub fn artifact_blob(task: &Uuid, name: &str) -> String {
    format!("tasks/{task}/artifacts/{name}")
}

/// Blob path of the test report a task uploaded (gzip-compressed JSON, the
/// stored form of `testbed-report`) when it was too large to travel inside
/// the task's result. Derived from the task id, never from what the agent
/// says, so an agent can only fill its own task's report.
pub fn task_report_blob(task: &Uuid) -> String {
    format!("tasks/{task}/report.json.gz")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_that_cannot_be_path_segments_are_refused() {
        use super::is_valid_name;
        for ok in ["a", "web-1", "A.b_c", "9", &"x".repeat(128)] {
            assert!(is_valid_name(ok, 128), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-rf",
            "_x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_name(bad, 128), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn agent_keys_round_trip() {
        let id = Uuid::new_v4();
        assert_eq!(parse_agent_alive(&agent_alive(&id)), Some(id));
        assert_eq!(parse_agent(&agent(&id)), Some(id));
        assert_eq!(parse_agent(&agent_alive(&id)), None);
        assert_eq!(parse_agent_alive(&agent(&id)), None);
    }

    #[test]
    fn assign_keys_round_trip() {
        let (a, t) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(parse_assign(&assign(&a, &t)), Some((a, t)));
        assert!(assign(&a, &t).starts_with(&assign_prefix(&a)));
        assert_eq!(parse_assign("/assign/nonsense"), None);
    }

    #[test]
    fn run_step_keys_stay_under_their_run() {
        let id = Uuid::new_v4();
        assert_eq!(parse_run(&run(&id)), Some(id));
        assert_eq!(parse_run(&run_step(&id, "build")), None);
        assert!(run_step(&id, "build").starts_with(&run_steps_prefix(&id)));
        assert!(run_step(&id, "build").starts_with(&run(&id)));
    }

    #[test]
    fn log_chunks_sort_by_offset() {
        let t = Uuid::new_v4();
        let mut keys = [
            log_chunk_blob(&t, 100),
            log_chunk_blob(&t, 9),
            log_chunk_blob(&t, 0),
        ];
        keys.sort();
        assert!(keys[0].ends_with("00000000000000000000"));
        assert!(keys[2].ends_with("00000000000000000100"));
    }
}
