//! "Did you mean" hints: which known name a mistyped one stands for. Used for provider arguments
//! ([`crate::ProviderKind::check_arguments`]), discovery flags and settings keys
//! ([`crate::settings::ProviderSettings`]). Depends on nothing else in broker-core.
//!
//! Names are compared with dashes and underscores alike and in any case, as the command line and
//! the settings file treat them.

/// The candidate closest to `given` by edit distance, for "did you mean" hints (`None` only when
/// there are no candidates).
///
/// ```
/// use broker_core::spelling::closest;
/// assert_eq!(closest("comand", &["entrypoint", "command", "name"]), Some("command"));
/// ```
pub fn closest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given = normalized(given);
    candidates
        .iter()
        .min_by_key(|c| edit_distance(&given, &normalized(c)))
        .copied()
}

/// The candidate `given` is a misspelling of, if any: the same name in another case or with dashes
/// for underscores, or one letter off (two in names of five letters or more). A name that is
/// exactly a candidate is no misspelling. For providers that take any argument but act on a few:
/// a near miss of one of those is a typo that would otherwise be silently ignored.
///
/// ```
/// use broker_core::spelling::misspelling_of;
/// let own = ["fail_checkout", "hang"];
/// assert_eq!(misspelling_of("fail_chekout", &own), Some("fail_checkout"));
/// assert_eq!(misspelling_of("Fail-Checkout", &own), Some("fail_checkout"));
/// assert_eq!(misspelling_of("hang", &own), None);
/// assert_eq!(misspelling_of("tag", &own), None);
/// ```
pub fn misspelling_of<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if candidates.contains(&given) {
        return None;
    }
    let near = closest(given, candidates)?;
    let allowed = if near.chars().count() >= 5 { 2 } else { 1 };
    (edit_distance(&normalized(given), &normalized(near)) <= allowed).then_some(near)
}

fn normalized(name: &str) -> String {
    name.replace('-', "_").to_ascii_lowercase()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_compares_dashes_and_case_alike() {
        assert_eq!(
            closest("comand", &["entrypoint", "command", "name"]),
            Some("command")
        );
        assert_eq!(
            closest("Extend-Duraton", &["new_expire_time", "extend_duration"]),
            Some("extend_duration")
        );
        assert_eq!(closest("x", &[]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn a_misspelling_is_a_near_miss_never_the_name_itself_or_a_far_one() {
        let own = [
            "fail_checkout",
            "fail_checkin",
            "delay",
            "checkin_delay",
            "hang",
        ];
        for (given, meant) in [
            ("fail_chekout", "fail_checkout"),
            ("fail-checkout", "fail_checkout"),
            ("FAIL_CHECKIN", "fail_checkin"),
            ("dealy", "delay"),
            ("checkin_dealy", "checkin_delay"),
            ("hangs", "hang"),
        ] {
            assert_eq!(misspelling_of(given, &own), Some(meant), "{given}");
        }
        // Names of their own, as tests and nicks pass them on to be recorded.
        for other in [
            "hang", "delay", "tag", "arg1", "arg2", "a", "notes", "hostname", "name", "count",
        ] {
            assert_eq!(misspelling_of(other, &own), None, "{other}");
        }
        assert_eq!(misspelling_of("anything", &[]), None);
    }
}
