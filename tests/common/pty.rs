//! Driving the real binary at a pseudo-terminal (rexpect): wait for a prompt, type an answer.

pub type Pty = rexpect::session::PtySession;

/// Starts `cmd` at a pseudo-terminal (ANSI escapes stripped from what it prints); every wait
/// gives up after `timeout_ms`.
pub fn spawn(cmd: std::process::Command, timeout_ms: u64) -> Pty {
    let opts = rexpect::reader::Options::new().timeout_ms(Some(timeout_ms)).strip_ansi_escape_codes(true);
    rexpect::session::spawn_with_options(cmd, opts).unwrap()
}

/// Waits for `expect`; what came before it is added to `seen`.
pub fn wait(p: &mut Pty, seen: &mut String, expect: &str) {
    match p.exp_string(expect) {
        Ok(text) => {
            seen.push_str(&text);
            seen.push_str(expect);
        }
        Err(e) => panic!("waiting for {expect:?}: {e}\nso far:\n{seen}"),
    }
}

/// Wait for a prompt, type a line and press Enter.
pub fn step(p: &mut Pty, seen: &mut String, expect: &str, send: &str) {
    wait(p, seen, expect);
    p.send(send).unwrap();
    p.send("\r").unwrap();
    p.flush().unwrap();
}

/// Wait for a yes/no prompt and press one key.
pub fn key(p: &mut Pty, seen: &mut String, expect: &str, k: &str) {
    wait(p, seen, expect);
    p.send(k).unwrap();
    p.flush().unwrap();
}
