//! The line commands the lab programs read on standard input.

use tokio::io::AsyncBufReadExt;

/// Read commands from standard input until it closes, then keep the
/// program serving (the network tasks run on) until it is interrupted.
/// `handle` gets each non-empty line split into words and says whether it
/// understood it; otherwise `help` is printed, prefixed with `program`.
pub async fn serve_stdin(program: &str, help: &str, mut handle: impl FnMut(&[&str]) -> bool) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.is_empty() && !handle(&words) {
            eprintln!("{program}: commands are {help}");
        }
    }
    std::future::pending::<()>().await;
}

/// Run a simulator's binary with its console held open (stdin piped, never
/// written) until it exits or `looks` looks 20 ms apart have passed, then
/// kill it: its exit status (`None`: still running) and what it wrote to
/// stderr. For the tests that check how a binary stops.
pub fn run_until_exit(
    command: &mut std::process::Command,
    looks: u32,
) -> std::io::Result<(Option<std::process::ExitStatus>, String)> {
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut status = None;
    for _ in 0..looks {
        status = child.try_wait()?;
        if status.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    Ok((status, String::from_utf8_lossy(&out.stderr).into_owned()))
}
