//! The binary's command line (this test also makes `cargo test --workspace`
//! build the `palaver` binary the end-to-end tests in `tests/` run).

use std::process::Command;

#[test]
fn help_lists_every_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_palaver")).arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in
        ["--listen", "--redis-url", "--queue-frames", "--read-deadline", "--shutdown-deadline"]
    {
        assert!(help.contains(flag), "missing {flag} in --help");
    }
}

#[test]
fn invalid_config_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_palaver"))
        .args(["--ping-interval", "soon"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}
