//! SSH agent authentication through the real `broker` binary: a real OpenSSH `ssh-agent` holding
//! the only key the test sshd accepts, and no key file or password configured.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{BrokerDir, stderr, wait_for};

/// A process of the test's, stopped when dropped (also when the test fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether OpenSSH's server and agent are installed (scripts/setup-sshd). When they are not, a
/// failure if `BROKER_REQUIRE_SSHD` is set (as scripts/test does), else a skip.
fn openssh_present() -> bool {
    let present = Path::new("/usr/sbin/sshd").exists()
        && ["ssh-keygen", "ssh-agent", "ssh-add"].iter().all(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !present {
        assert!(
            std::env::var_os("BROKER_REQUIRE_SSHD").is_none(),
            "BROKER_REQUIRE_SSHD is set but OpenSSH is missing; run scripts/setup-sshd"
        );
        eprintln!("SKIPPED: SSH agent authentication needs OpenSSH; run scripts/setup-sshd");
    }
    present
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

/// sshd on 127.0.0.1 accepting `authorized` (a public key file) for any user, and no password.
fn start_sshd(dir: &Path, authorized: &Path) -> (Running, u16) {
    keygen(&dir.join("host_key"));
    std::fs::copy(authorized, dir.join("authorized_keys")).unwrap();
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
    let _made = std::fs::create_dir_all("/run/sshd");
    let sshd = Running(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd"),
    );
    assert!(
        wait_for(Duration::from_secs(20), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "sshd did not start"
    );
    (sshd, port)
}

/// `ssh-agent` on a socket in `dir`, holding `key`.
fn start_agent(dir: &Path, key: &Path) -> (Running, std::path::PathBuf) {
    let socket = dir.join("agent.sock");
    let agent = Running(
        Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh-agent"),
    );
    assert!(
        wait_for(Duration::from_secs(20), || socket.exists()),
        "ssh-agent did not start"
    );
    let added = Command::new("ssh-add")
        .arg(key)
        .env("SSH_AUTH_SOCK", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ssh-add");
    assert!(added.success(), "ssh-add {}", key.display());
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
    let out = dir
        .command(&["ssh", "0", "--", "id -un"])
        .env("SSH_AUTH_SOCK", &socket)
        .output()
        .unwrap();
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
    let out = dir
        .command(&["ssh", "0", "--", "id -un"])
        .env("SSH_AUTH_SOCK", &other_socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no agent key was accepted"),
        "{}",
        stderr(&out)
    );
}
