//! Output conventions shared by every command (docs/cli.md, "CLI
//! conventions"): colour only on a terminal without `NO_COLOR`, a quiet exit
//! when the reader of stdout goes away, one `--json` shape for lists, and
//! human-readable tables.

use std::io::IsTerminal;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::Value;

/// Exit status when stdout's reader has gone (`testbed runs ls | head -1`):
/// what a shell reports for a process ended by SIGPIPE (128 + 13).
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Whether to colour what goes to `stream`: only a terminal, and only
/// when `NO_COLOR` (https://no-color.org) is unset or empty.
pub fn color_enabled(stream: &impl IsTerminal) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && stream.is_terminal()
}

/// Lets a closed stdout end the process the way it ends `cat` or `ls`:
/// quietly, by SIGPIPE. Rust ignores SIGPIPE so that a write to a closed
/// pipe fails instead; `println!` then panics with "failed printing to
/// stdout: Broken pipe". Only for commands that write to no child
/// process's stdin: with the default action, a task whose program exited
/// before reading its input would kill the agent serving it.
pub fn default_sigpipe() {
    #[cfg(unix)]
    {
        use nix::sys::signal::{signal, SigHandler, Signal};
        // SAFETY: called first thing in `main`, before any thread is
        // started; SIG_DFL installs no handler code.
        let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    }
}

/// For the commands that keep SIGPIPE ignored (they serve tasks or run
/// programs): a print to a closed stdout exits quietly with
/// [`BROKEN_PIPE_EXIT`] instead of a panic message and a backtrace hint.
/// Every other panic is reported as before.
pub fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.starts_with("failed printing to stdout") && payload.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default(info);
    }));
}

/// Prints a list for `--json`: always a JSON array of the listed objects,
/// the same rows the table shows (docs/cli.md).
pub fn print_json_list(items: &[Value]) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(items)?);
    Ok(())
}

/// Prints one object for `--json`.
pub fn print_json(item: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(item)?);
    Ok(())
}

/// A table in the house style, with `header`.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}

/// A JSON value as a table cell: strings without quotes, null as empty.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A typed API value as a table cell, spelled as the server sends it
/// (status names, RFC 3339 times): what [`cell`] shows of the same JSON.
pub fn text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .map(|v| cell(&v))
        .unwrap_or_default()
}

/// A step or task status with the server's reason, for one line:
/// `pending` + `pending: no agent matches …` reads `pending (no agent
/// matches …)`, not `pending pending: no agent matches …`.
pub fn status_with_reason(status: &str, reason: &str) -> String {
    let reason = reason.trim();
    let reason = reason
        .strip_prefix(status)
        .and_then(|r| r.strip_prefix(':'))
        .map(str::trim_start)
        .unwrap_or(reason);
    if reason.is_empty() {
        status.to_string()
    } else {
        format!("{status} ({reason})")
    }
}

/// The reason alone, without a repeat of the status it explains.
pub fn reason_only(status: &str, reason: &str) -> String {
    let full = status_with_reason(status, reason);
    full.strip_prefix(status)
        .map(|r| {
            r.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .to_string()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_not_repeated_by_its_reason() {
        assert_eq!(
            status_with_reason("pending", "pending: no agent matches host `x`"),
            "pending (no agent matches host `x`)"
        );
        assert_eq!(status_with_reason("running", ""), "running");
        assert_eq!(
            status_with_reason("failed", "exit code 3"),
            "failed (exit code 3)"
        );
        assert_eq!(
            reason_only("pending", "pending: group `lab` is reserved by run r"),
            "group `lab` is reserved by run r"
        );
    }
}
