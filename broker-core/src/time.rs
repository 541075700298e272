//! Timestamps and durations as the inventory stores and shows them.
//!
//! Times are stored as integer seconds since the Unix epoch (what the Python broker's `*_time` fields
//! hold); durations are written `90`, `90s`, `30m`, `2h`, `1d` or combined (`1h30m`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub use format::{format_duration, format_duration_human};

/// Durations as text: a leaf, so that the error messages can use it without depending on this
/// module's parsing (which returns errors).
pub(crate) mod format;

/// Seconds since the Unix epoch, now.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses a duration such as `30`, `45s`, `30m`, `2h`, `1d` or `1h30m` (a bare number is seconds).
///
/// # Errors
/// [`Error::Usage`] naming the text when it is not a duration.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let bad = || {
        Error::usage(format!(
            "`{text}` is not a duration; write seconds (`90`) or units like `45s`, `30m`, `2h`, `1d`"
        ))
    };
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    // The last unit read: each must be smaller than the one before (`1h30m`, never `2h2h` or `30m1h`).
    let mut previous = u64::MAX;
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            ' ' if number.is_empty() => continue,
            _ => return Err(bad()),
        };
        if unit >= previous {
            return Err(Error::usage(format!(
                "`{text}` is not a duration: its units must go from largest to smallest, each once \
                 (`1d2h30m`)"
            )));
        }
        previous = unit;
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a `*_time` value the way `broker inventory` shows it.
///
/// An epoch between 2001 and 2100 becomes a UTC date (`Nov 22, 2026 03:10 UTC`); any other number is a
/// duration (`5d 2h`, `2h 3m 4s`); anything else is shown as it is.
pub fn format_time_value(value: &str) -> String {
    let Ok(number) = value.trim().parse::<f64>() else {
        return value.to_owned();
    };
    let secs = number as i64;
    const Y2001: i64 = 978_307_200;
    const Y2100: i64 = 4_102_444_800;
    if (Y2001..Y2100).contains(&secs) {
        format_epoch(secs)
    } else {
        format_duration_human(secs.max(0) as u64)
    }
}

/// `Nov 22, 2026 03:10 UTC`.
pub fn format_epoch(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:02}, {} {:02}:{:02} UTC",
        MONTHS[(month - 1) as usize],
        day,
        year,
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// `2026-11-22 03:10:00` (UTC; a `T` between date and time, fractions of a second and a `Z` are
/// taken too), as servers such as Beaker write times, to seconds since the epoch; `None` when it
/// is not such a time.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (t.next()??, t.next()??, t.next()??);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..61).contains(&second);
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Seconds since the epoch as `2026-11-22 03:10:00` (UTC), the form [`parse_utc`] reads.
pub fn format_utc(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// (year, month, day), proleptic Gregorian, to days since 1970-01-01 (the inverse of
/// [`civil_from_days`], Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_read_and_write_back() {
        for (text, secs) in [
            ("1970-01-01 00:00:00", 0),
            ("2000-02-29 12:34:56", 951_827_696),
            ("2026-11-26 17:05:00", 1_795_712_700),
        ] {
            assert_eq!(parse_utc(text), Some(secs), "{text}");
            assert_eq!(format_utc(secs), text);
        }
        assert_eq!(parse_utc("2026-11-26T17:05:00.123Z"), Some(1_795_712_700));
        for bad in [
            "",
            "2026-11-26",
            "2026-13-01 00:00:00",
            "2026-11-26 24:00:00",
            "soon",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(150)), "2m 30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn durations_parse_in_all_forms() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10m5").is_err());
    }

    #[test]
    fn durations_may_space_their_units_but_not_their_digits() {
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1d  2h").unwrap(),
            Duration::from_secs(93_600)
        );
        // A space inside a number is a typo, not `15m`.
        assert!(parse_duration("1 5m").is_err());
    }

    #[test]
    fn duration_units_go_from_largest_to_smallest_each_once() {
        for text in ["2h2h", "30m1h", "1h 1h", "5s1d", "1m1m30s"] {
            let message = parse_duration(text).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "`{text}` is not a duration: its units must go from largest to smallest, each \
                     once (`1d2h30m`)"
                ),
            );
        }
        assert_eq!(
            parse_duration("1d2h3m4s").unwrap(),
            Duration::from_secs(93_784)
        );
    }

    #[test]
    fn now_is_the_clock_of_the_machine() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let now = now_epoch();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (before..=after).contains(&now),
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn time_values_are_humanised_like_upstream() {
        assert_eq!(format_time_value("1765804090"), "Dec 15, 2025 13:08 UTC");
        assert_eq!(format_time_value("432000"), "5d");
        assert_eq!(format_time_value("7384"), "2h 3m 4s");
        assert_eq!(format_time_value("0"), "0s");
        assert_eq!(format_time_value("tomorrow"), "tomorrow");
    }

    #[test]
    fn epoch_formatting_handles_leap_years() {
        assert_eq!(format_epoch(951_782_400), "Feb 29, 2000 00:00 UTC");
        assert_eq!(format_epoch(0), "Jan 01, 1970 00:00 UTC");
        assert_eq!(format_epoch(-86_400), "Dec 31, 1969 00:00 UTC");
    }

    #[test]
    fn epoch_formatting_skips_the_leap_day_of_2100_but_not_of_2400() {
        // Centuries are leap years only every 400 years; dates past 2100 reach format_epoch when
        // a caller formats a far lease or a hand-edited time.
        assert_eq!(format_epoch(4_107_456_000), "Feb 28, 2100 00:00 UTC");
        assert_eq!(format_epoch(4_107_542_400), "Mar 01, 2100 00:00 UTC");
        assert_eq!(format_epoch(4_133_980_800), "Jan 01, 2101 00:00 UTC");
        assert_eq!(format_epoch(13_574_563_200), "Feb 29, 2400 00:00 UTC");
        assert_eq!(format_epoch(13_574_649_600), "Mar 01, 2400 00:00 UTC");
    }
}
