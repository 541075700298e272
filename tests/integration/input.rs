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
