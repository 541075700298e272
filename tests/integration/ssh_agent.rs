//! SSH agent authentication through the real `broker` binary: a real OpenSSH `ssh-agent` holding
//! the only key the test sshd accepts, and no key file or password configured.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{BrokerDir, ChildGuard, DEADLINE, output, stderr, wait_for};

/// Whether OpenSSH's server and agent are installed (scripts/setup-sshd); a missing one fails the
/// test unless `BROKER_ALLOW_SKIP=1` is set.
fn openssh_present() -> bool {
    let agent = ["ssh-agent", "ssh-add"]
        .iter()
        .find(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map_or(Ok(()), |tool| Err(format!("no {tool}")));
    broker_test_support::sshd() && broker_test_support::SSHD.check(agent)
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

/// sshd on 127.0.0.1 accepting `authorized` (a public key file) for any user, and no password.
fn start_sshd(dir: &Path, authorized: &Path) -> (ChildGuard, u16) {
    keygen(&dir.join("host_key"));
    std::fs::copy(authorized, dir.join("authorized_keys")).unwrap();
    let _made = std::fs::create_dir_all("/run/sshd");
    // A free port may be taken before sshd binds it: then sshd exits, and another is tried.
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin yes\nStrictModes no\nUsePAM no\n\
                 LogLevel ERROR\n"
            ),
        )
        .unwrap();
        let pid_file = dir.join("sshd.pid");
        let _stale = std::fs::remove_file(&pid_file);
        let mut sshd = ChildGuard::spawn(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        // sshd writes its pid file once it listens, and exits when it cannot bind.
        let mut exited = false;
        assert!(
            wait_for(DEADLINE, || {
                exited = matches!(sshd.try_wait(), Ok(Some(_)));
                exited || pid_file.exists()
            }),
            "sshd neither listened nor exited"
        );
        if !exited {
            return (sshd, port);
        }
    }
    panic!("sshd could not bind any of 5 free ports");
}

/// `ssh-agent` on a socket in `dir`, holding `key`.
fn start_agent(dir: &Path, key: &Path) -> (ChildGuard, std::path::PathBuf) {
    let socket = dir.join("agent.sock");
    let agent = ChildGuard::spawn(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_for(DEADLINE, || socket.exists()),
        "ssh-agent did not start"
    );
    let added = output(
        Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .stdin(Stdio::null()),
    );
    assert!(added.status.success(), "ssh-add: {}", stderr(&added));
    (agent, socket)
}

#[test]
fn ssh_authenticates_with_the_agents_key_when_no_key_file_or_password_is_set() {
    if !openssh_present() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_agent");
    keygen(&key);
    let (_sshd, port) = start_sshd(keys.path(), &keys.path().join("id_agent.pub"));
    let (_agent, socket) = start_agent(keys.path(), &key);
    // The key exists only in the agent from here on.
    std::fs::remove_file(&key).unwrap();

    let dir = BrokerDir::new(
        "AnsibleTower:\n  base_url: http://127.0.0.1:9/\n  token: t\nssh:\n  host_connection_timeout: 10\n",
    );
    std::fs::write(
        dir.inventory_path(),
        format!(
            "- hostname: 127.0.0.1:{port}\n  name: vm1\n  username: root\n  _broker_provider: AnsibleTower\n"
        ),
    )
    .unwrap();
    let out = output(
        dir.command(&["ssh", "0", "--", "id -un"])
            .env("SSH_AUTH_SOCK", &socket),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "root\n");

    // Without the agent nothing else can log in: each method is named.
    let out = dir.run(&["ssh", "0", "--", "id -un"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("agent: no SSH_AUTH_SOCK"),
        "{}",
        stderr(&out)
    );

    // An agent whose keys the host does not take is refused too.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("id_other");
    keygen(&other);
    let (_other_agent, other_socket) = start_agent(other_dir.path(), &other);
    let out = output(
        dir.command(&["ssh", "0", "--", "id -un"])
            .env("SSH_AUTH_SOCK", &other_socket),
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no agent key was accepted"),
        "{}",
        stderr(&out)
    );
}
