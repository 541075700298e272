//! Durations for people, depending on nothing else in broker-core.

use std::time::Duration;

/// A duration for people: `1.5s` under a minute (tenths when it has a fraction), else as
/// [`format_duration_human`] (`2m 30s`).
pub fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        if d.subsec_millis() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{:.1}s", d.as_secs_f64())
        }
    } else {
        format_duration_human(d.as_secs())
    }
}

/// `5d 2h`, `2h 3m 4s`; seconds are shown only when there are no days.
pub fn format_duration_human(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if d == 0 && (s > 0 || parts.is_empty()) {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}
