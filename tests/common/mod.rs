//! Shared test plumbing: the Python virtual environment that holds the outside conformance clients.

#![allow(dead_code)]

pub mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Returns the path of a Python interpreter whose environment has `tests/python/requirements.txt` installed.
///
/// The environment lives in cargo's target directory and is created once, under a file lock, so test
/// binaries running side by side share it. A missing `python3` or an unreachable package index fails the
/// test with the command's own output.
pub fn python() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(target).expect("create target tmp dir");
    let venv = target.join("python-venv");
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt");
    let wanted =
        std::fs::read_to_string(&requirements).expect("read tests/python/requirements.txt");
    let stamp = venv.join("installed-requirements.txt");
    let lock =
        std::fs::File::create(target.join("python-venv.lock")).expect("create venv lock file");
    lock.lock().expect("lock the python venv");
    let interpreter = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&interpreter)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements)
            // The Cassandra driver builds C extensions unless told not to; the pure-Python path is what we pin.
            .env("CASS_DRIVER_NO_EXTENSIONS", "1"));
        std::fs::write(&stamp, &wanted).expect("write venv stamp");
    }
    interpreter
}

/// The path of a script under `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs a Python conformance script with arguments and returns its stdout; fails the test with its output otherwise.
pub fn run_script(name: &str, args: &[&str]) -> String {
    let output = Command::new(python())
        .arg(script(name))
        .args(args)
        .env("CASS_DRIVER_NO_EXTENSIONS", "1")
        .output()
        .expect("start python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python {name} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
