//! Beaker jobs as the provider sees them, and the pure rules over them: the job XML it submits
//! (tagged with the intent record's id in its whiteboard), the results XML it polls, and what
//! those results mean — still waiting, a host, or a failure naming the failing task.

use super::xmlrpc::escape;

/// The text put in a job's whiteboard to tie it to the intent record that asked for it: a job of
/// a checkout that never finished is found by it (`jobs.filter` with `whiteboard`).
pub(crate) fn record_marker(record_id: &str) -> String {
    format!("[broker {record_id}]")
}

/// `xml` with `marker` appended to the job's whiteboard (one is added when there is none).
///
/// # Errors
/// The job XML is not XML, or its root is not `<job>`: what is wrong.
pub(crate) fn tag_whiteboard(xml: &str, marker: &str) -> Result<String, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("it is not XML: {e}"))?;
    let job = doc.root_element();
    if !job.has_tag_name("job") {
        return Err(format!(
            "its root element is <{}>, not <job>",
            job.tag_name().name()
        ));
    }
    if let Some(wb) = job.children().find(|n| n.has_tag_name("whiteboard")) {
        let old = wb.text().unwrap_or_default().trim();
        let text = if old.is_empty() {
            marker.to_owned()
        } else {
            format!("{old} {marker}")
        };
        let range = wb.range();
        return Ok(format!(
            "{}<whiteboard>{}</whiteboard>{}",
            &xml[..range.start],
            escape(&text),
            &xml[range.end..]
        ));
    }
    let at = job
        .children()
        .find(roxmltree::Node::is_element)
        .map(|first| first.range().start)
        .ok_or("its <job> has no recipe sets")?;
    Ok(format!(
        "{}<whiteboard>{}</whiteboard>{}",
        &xml[..at],
        escape(marker),
        &xml[at..]
    ))
}

/// A job's results, as `taskactions.to_xml` gives them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobResults {
    pub id: String,
    pub status: String,
    pub result: String,
    pub whiteboard: String,
    pub recipes: Vec<RecipeResults>,
}

/// One recipe's part of [`JobResults`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RecipeResults {
    pub id: String,
    pub status: String,
    pub result: String,
    pub system: Option<String>,
    pub distro: Option<String>,
    /// The seconds `<reservesys duration=…>` asks the system to be kept for.
    pub reserve_seconds: Option<u64>,
    pub tasks: Vec<TaskResults>,
}

/// One task of a recipe.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TaskResults {
    pub id: String,
    pub name: String,
    pub status: String,
    pub result: String,
}

/// What a job's results say.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Not yet finished.
    Waiting,
    /// Passed: its systems are the user's (reserved), or the job completed with `Pass`.
    Ready,
    /// Failed (`Warn`, `Fail`, `Panic`) or ended otherwise (cancelled, aborted): why.
    Failed(String),
}

/// Results that mean a failure, whatever the job's status.
fn is_bad(result: &str) -> bool {
    matches!(result, "Warn" | "Fail" | "Panic")
}

impl JobResults {
    /// Reads results XML.
    ///
    /// # Errors
    /// Not XML, or no `<job>` with an `id`: what is wrong.
    pub(crate) fn parse(xml: &str) -> Result<JobResults, String> {
        let doc = roxmltree::Document::parse(xml.trim()).map_err(|e| e.to_string())?;
        let job = doc.root_element();
        if !job.has_tag_name("job") {
            return Err(format!("<{}> instead of <job>", job.tag_name().name()));
        }
        let attr = |n: roxmltree::Node<'_, '_>, name: &str| {
            n.attribute(name).unwrap_or_default().to_owned()
        };
        let recipes =
            job.descendants()
                .filter(|n| n.has_tag_name("recipe"))
                .map(|r| RecipeResults {
                    id: attr(r, "id"),
                    status: attr(r, "status"),
                    result: attr(r, "result"),
                    system: r.attribute("system").map(str::to_owned),
                    distro: r.attribute("distro").map(str::to_owned),
                    reserve_seconds: r.children().find(|n| n.has_tag_name("reservesys")).map(
                        |rs| {
                            rs.attribute("duration")
                                .and_then(|d| d.parse().ok())
                                .unwrap_or(86_400)
                        },
                    ),
                    tasks: r
                        .children()
                        .filter(|n| n.has_tag_name("task"))
                        .map(|t| TaskResults {
                            id: attr(t, "id"),
                            name: attr(t, "name"),
                            status: attr(t, "status"),
                            result: attr(t, "result"),
                        })
                        .collect(),
                })
                .collect();
        let whiteboard = job
            .children()
            .find(|n| n.has_tag_name("whiteboard"))
            .and_then(|n| n.text())
            .unwrap_or_default()
            .trim()
            .to_owned();
        let results = JobResults {
            id: attr(job, "id"),
            status: attr(job, "status"),
            result: attr(job, "result"),
            whiteboard,
            recipes,
        };
        if results.id.is_empty() {
            return Err("a <job> without an id (not results XML)".into());
        }
        Ok(results)
    }

    /// `J:<id>`
    pub(crate) fn t_id(&self) -> String {
        format!("J:{}", self.id)
    }

    /// What the results mean. The job's own result and status decide, never a task's alone: a
    /// job that failed with one passing task has failed (the Python broker took it for a host).
    pub(crate) fn verdict(&self) -> Verdict {
        if is_bad(&self.result) {
            return Verdict::Failed(self.failure());
        }
        match self.status.as_str() {
            "Cancelled" | "Aborted" => Verdict::Failed(self.failure()),
            "Completed" if self.result == "Pass" => Verdict::Ready,
            "Completed" => Verdict::Failed(self.failure()),
            _ if !self.recipes.is_empty()
                && self.recipes.iter().all(|r| r.status == "Reserved")
                && self.result == "Pass" =>
            {
                Verdict::Ready
            }
            _ => Verdict::Waiting,
        }
    }

    /// Why the job failed: its status and result, then the first failing task of each recipe
    /// that has one (or the recipe's own end).
    fn failure(&self) -> String {
        let mut parts = vec![format!(
            "Beaker job {} ended {} with result {}",
            self.t_id(),
            self.status,
            self.result
        )];
        for r in &self.recipes {
            let on = r
                .system
                .as_deref()
                .map(|s| format!(" on {s}"))
                .unwrap_or_default();
            let worst = ["Panic", "Fail", "Warn"]
                .iter()
                .find_map(|bad| r.tasks.iter().find(|t| t.result == *bad));
            if let Some(t) = worst {
                parts.push(format!(
                    "task {} (T:{}) of recipe R:{}{on}: {} ({})",
                    t.name, t.id, r.id, t.result, t.status
                ));
            } else if matches!(r.status.as_str(), "Cancelled" | "Aborted") || is_bad(&r.result) {
                parts.push(format!(
                    "recipe R:{}{on}: {} ({})",
                    r.id, r.status, r.result
                ));
            }
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recipe's status, result and tasks (name, result).
    type Recipe<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn results(job: (&str, &str), recipes: &[Recipe<'_>]) -> String {
        let mut xml = format!(
            "<job id=\"7\" status=\"{}\" result=\"{}\"><whiteboard>wb [broker r1]</whiteboard><recipeSet id=\"1\">",
            job.0, job.1
        );
        for (i, (status, result, tasks)) in recipes.iter().enumerate() {
            xml.push_str(&format!(
                "<recipe id=\"{}\" status=\"{status}\" result=\"{result}\" system=\"sys{i}\" distro=\"RHEL-9\"><reservesys duration=\"3600\"/>",
                10 + i
            ));
            for (j, (name, result)) in tasks.iter().enumerate() {
                xml.push_str(&format!(
                    "<task id=\"{}\" name=\"{name}\" status=\"Completed\" result=\"{result}\"/>",
                    100 + j
                ));
            }
            xml.push_str("</recipe>");
        }
        xml + "</recipeSet></job>"
    }

    #[test]
    fn a_job_fails_on_its_own_result_even_with_a_passing_task() {
        let xml = results(
            ("Completed", "Fail"),
            &[(
                "Completed",
                "Fail",
                &[("/install", "Pass"), ("/smoke", "Fail")],
            )],
        );
        let r = JobResults::parse(&xml).unwrap();
        assert_eq!(
            r.verdict(),
            Verdict::Failed(
                "Beaker job J:7 ended Completed with result Fail; task /smoke (T:101) of recipe R:10 on sys0: Fail (Completed)"
                    .into()
            )
        );
    }

    #[test]
    fn verdicts_follow_status_and_result() {
        let pass: &[(&str, &str)] = &[("/install", "Pass")];
        let cases = [
            (("Running", "New"), vec![("Running", "New", pass)], Verdict::Waiting),
            (("Reserved", "Pass"), vec![("Reserved", "Pass", pass)], Verdict::Ready),
            // One recipe reserved, the other still running: not yet.
            (
                ("Running", "Pass"),
                vec![("Reserved", "Pass", pass), ("Running", "Pass", pass)],
                Verdict::Waiting,
            ),
            (("Completed", "Pass"), vec![("Completed", "Pass", pass)], Verdict::Ready),
            // A Warn is a failure, also while other tasks still run.
            (
                ("Running", "Warn"),
                vec![("Running", "Warn", &[("/install", "Warn")][..])],
                Verdict::Failed(
                    "Beaker job J:7 ended Running with result Warn; task /install (T:100) of recipe R:10 on sys0: Warn (Completed)".into(),
                ),
            ),
            (
                ("Aborted", "New"),
                vec![("Aborted", "New", &[][..])],
                Verdict::Failed(
                    "Beaker job J:7 ended Aborted with result New; recipe R:10 on sys0: Aborted (New)".into(),
                ),
            ),
        ];
        for (job, recipes, want) in cases {
            let r = JobResults::parse(&results(job, &recipes)).unwrap();
            assert_eq!(r.verdict(), want, "{job:?}");
        }
    }

    #[test]
    fn results_are_read_with_every_recipe() {
        let pass: &[(&str, &str)] = &[("/install", "Pass")];
        let r = JobResults::parse(&results(
            ("Reserved", "Pass"),
            &[("Reserved", "Pass", pass), ("Reserved", "Pass", pass)],
        ))
        .unwrap();
        assert_eq!(r.whiteboard, "wb [broker r1]");
        let systems: Vec<_> = r
            .recipes
            .iter()
            .map(|x| x.system.clone().unwrap())
            .collect();
        assert_eq!(systems, ["sys0", "sys1"]);
        assert_eq!(r.recipes[1].reserve_seconds, Some(3600));
        assert_eq!(r.recipes[1].distro.as_deref(), Some("RHEL-9"));
    }

    #[test]
    fn the_record_marker_is_added_to_the_whiteboard_or_as_one() {
        let marker = record_marker("abc");
        assert_eq!(
            tag_whiteboard(
                "<job><whiteboard> mine &amp; yours </whiteboard><recipeSet/></job>",
                &marker
            )
            .unwrap(),
            "<job><whiteboard>mine &amp; yours [broker abc]</whiteboard><recipeSet/></job>"
        );
        assert_eq!(
            tag_whiteboard(
                "<job retention_tag=\"scratch\">\n  <recipeSet/></job>",
                &marker
            )
            .unwrap(),
            "<job retention_tag=\"scratch\">\n  <whiteboard>[broker abc]</whiteboard><recipeSet/></job>"
        );
        assert!(
            tag_whiteboard("<recipe/>", &marker)
                .unwrap_err()
                .contains("not <job>")
        );
        assert!(
            tag_whiteboard("<job", &marker)
                .unwrap_err()
                .contains("not XML")
        );
    }
}
