//! Tests that need a real component (Podman, sshd, awxkit…) fail when it is missing, unless
//! `BROKER_ALLOW_SKIP=1` asks for a skip — which then says so on stderr.

use std::process::{Command, Output, Stdio};

/// Runs one Podman test of this very binary with a `podman` that cannot reach its engine first on
/// `PATH` (the machine's Podman is left alone).
fn podman_test_without_podman(allow_skip: bool) -> Output {
    let fake = tempfile::tempdir().expect("temp dir");
    let podman = fake.path().join("podman");
    std::fs::write(
        &podman,
        "#!/bin/sh\necho 'cannot connect to Podman (a stand-in for a machine without it)' >&2\nexit 125\n",
    )
    .expect("write the stand-in podman");
    let made_executable = Command::new("chmod")
        .args(["+x"])
        .arg(&podman)
        .status()
        .expect("run chmod");
    assert!(made_executable.success());
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut test = Command::new(std::env::current_exe().expect("this test binary"));
    test.args(["--exact", "container::container_checkout_ssh_checkin"])
        .env("PATH", path)
        .env_remove("BROKER_ALLOW_SKIP")
        .stdin(Stdio::null());
    if allow_skip {
        test.env("BROKER_ALLOW_SKIP", "1");
    }
    crate::util::output(&mut test)
}

#[test]
fn a_test_whose_component_is_missing_fails_unless_skipping_is_allowed() {
    let out = podman_test_without_podman(false);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "passed without Podman:\n{text}");
    assert!(text.contains("1 failed"), "{text}");
    assert!(
        text.contains("container::container_checkout_ssh_checkin needs Podman"),
        "{text}"
    );
    assert!(text.contains("bash scripts/setup-podman"), "{text}");
    assert!(text.contains("BROKER_ALLOW_SKIP=1"), "{text}");

    let out = podman_test_without_podman(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(
            "SKIPPED: container::container_checkout_ssh_checkin did not run: it needs Podman"
        ),
        "the skip is not shown: {stderr}"
    );
    assert!(stderr.contains("bash scripts/setup-podman"), "{stderr}");
}
