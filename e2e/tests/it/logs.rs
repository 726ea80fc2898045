//! What `caracal dev` writes to its log when it is not a terminal.

use crate::{
    dev::{Dev, agent_with_budget, config_yaml},
    harness::{FakeUpstream, curl, scratch_dir},
};

/// At the default `info` level every request ends with one line naming its
/// request id (the id the response carried) and status; written to a file,
/// the lines carry no terminal colour codes.
#[test]
fn a_log_file_gets_one_plain_line_per_request_with_its_id() {
    let dir = scratch_dir("logs");
    let upstream = FakeUpstream::start(&dir);
    let dev = Dev::start_logging(
        &dir,
        &agent_with_budget("team", "bot", "10.00", ""),
        &config_yaml(&upstream),
        &[],
        true,
        "info",
    );
    let key = dev.key("team", "bot");
    let (status, answer) = curl(
        &format!("{}/openai/v1/chat/completions", dev.url()),
        &[
            "-D",
            "-",
            "-H",
            &format!("authorization: Bearer {key}"),
            "-d",
            r#"{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi usage=3/2"}]}"#,
        ],
    );
    assert_eq!(status, 200, "{answer}");
    let request_id = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no x-request-id header in {answer}"));

    let log = dev.process.output();
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(request_id)).collect();
    assert_eq!(lines.len(), 1, "lines naming {request_id}:\n{log}");
    assert!(
        lines[0].contains("status=200") && lines[0].contains("INFO"),
        "{}",
        lines[0]
    );
}
