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
