//! Hostile or mistaken input from the command line and the settings file: a clear error naming the
//! place, never a crash, and no file read by accident.

use crate::util::{BrokerDir, SETTINGS, stderr};

#[test]
fn a_deeply_nested_filter_is_a_user_error_not_a_crash() {
    let dir = BrokerDir::new(SETTINGS);
    dir.ok(&["checkout", "--nick", "N"]);
    let filter = format!("{}@inv.name{}", "(".repeat(10_000), ")".repeat(10_000));
    for verb in [&["inventory"][..], &["checkin", "--all"]] {
        let mut args = verb.to_vec();
        args.extend(["--filter", &filter]);
        let out = dir.run(&args);
        assert_eq!(out.status.code(), Some(13), "{verb:?}: {}", stderr(&out));
        let message = stderr(&out);
        assert!(
            message.contains("invalid filter at column 101")
                && message.contains("nests too deeply"),
            "{verb:?}: {}",
            &message[..message.len().min(300)]
        );
    }
    assert_eq!(dir.inventory().len(), 1, "nothing was checked in");
}

#[test]
fn config_set_reads_a_file_only_when_asked() {
    let dir = BrokerDir::new(SETTINGS);
    std::fs::write(dir.path().join("root"), "not a user name\n").unwrap();
    std::fs::write(dir.path().join("ssh.yaml"), "host_ssh_port: 2222\n").unwrap();
    let set = |args: &[&str]| {
        let mut full = vec!["config", "set"];
        full.extend_from_slice(args);
        let out = dir.command(&full).current_dir(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    };
    set(&["ssh.host_username", "root"]);
    set(&["nicks.from_file", "@root"]);
    set(&["ssh_extra", "ssh.yaml"]);
    let settings: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.path().join("broker_settings.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["ssh"]["host_username"], "root");
    assert_eq!(settings["nicks"]["from_file"], "not a user name");
    assert_eq!(settings["ssh_extra"]["host_ssh_port"], 2222);
    let out = dir
        .command(&["config", "set", "ssh.host_username", "@missing"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
}
