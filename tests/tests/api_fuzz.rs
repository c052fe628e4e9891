//! The server API fuzzed from its spec by schemathesis (`scripts/api-fuzz.sh`):
//! thousands of generated requests, valid and invalid, against a node on the
//! Redis backend (a real `redis-server`); zero 5xx and every answer as the
//! spec documents it.
//!
//! Needs Python 3 with `venv` and `pip`, and PyPI access the first time (the
//! script installs schemathesis under `target/api-fuzz/venv`).

use std::process::Command;

use palaver_tests::{RedisServer, node::binary};

fn has(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|out| out.status.success())
}

#[test]
fn the_api_survives_a_fuzz_from_its_spec() {
    assert!(
        has("python3", &["--version"]),
        "python3 is not installed: the API fuzz needs Python 3 with venv and pip \
         (Debian: apt-get install python3 python3-venv python3-pip)"
    );
    assert!(
        has("python3", &["-c", "import venv, ensurepip"]),
        "python3 cannot create virtualenvs with pip: install python3-venv and python3-pip"
    );
    let redis = RedisServer::start();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/api-fuzz.sh"))
        .env("PALAVER_BIN", binary())
        .env("PALAVER_REDIS_URL", redis.url())
        .env("FUZZ_MAX_EXAMPLES", std::env::var("FUZZ_MAX_EXAMPLES").unwrap_or("40".into()))
        .status()
        .expect("run scripts/api-fuzz.sh");
    assert!(status.success(), "scripts/api-fuzz.sh failed ({status}); its output is above");
}
