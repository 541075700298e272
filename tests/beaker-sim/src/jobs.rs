//! Beaker jobs as the hub keeps them: read from job XML (`jobs.upload`), written back as job XML —
//! the clone form (`taskactions.to_xml(id, True)`: what a new job needs) or the results form
//! (ids, statuses, results, systems) — and their statuses and results rolled up as Beaker does.

use crate::xmlrpc::escape;

/// Statuses a recipe passes through, least advanced first (Beaker's `TaskStatus` order).
pub const STATUSES: [&str; 7] = [
    "New",
    "Queued",
    "Running",
    "Reserved",
    "Completed",
    "Cancelled",
    "Aborted",
];

/// Results, least severe first.
pub const RESULTS: [&str; 5] = ["New", "Pass", "Warn", "Fail", "Panic"];

/// Whether a status is final.
pub fn is_finished(status: &str) -> bool {
    matches!(status, "Completed" | "Cancelled" | "Aborted")
}

/// The more severe of two results.
pub fn worse<'a>(a: &'a str, b: &'a str) -> &'a str {
    let rank = |r: &str| RESULTS.iter().position(|x| *x == r).unwrap_or(0);
    if rank(b) > rank(a) { b } else { a }
}

/// A job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    /// The user name of its owner.
    pub owner: String,
    pub owner_email: String,
    pub whiteboard: String,
    pub retention_tag: String,
    pub group: Option<String>,
    pub product: Option<String>,
    pub cc: Vec<String>,
    pub recipe_sets: Vec<RecipeSet>,
}

/// A recipe set: recipes scheduled together.
#[derive(Debug, Clone)]
pub struct RecipeSet {
    pub id: u64,
    pub priority: String,
    pub recipes: Vec<Recipe>,
}

/// A recipe: one system's part of a job.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub id: u64,
    pub whiteboard: String,
    pub role: String,
    pub ks_meta: String,
    pub kernel_options: String,
    pub kernel_options_post: String,
    /// The distro asked for (`distroRequires/distro_name`).
    pub distro: String,
    pub arch: String,
    /// The system asked for (`hostRequires/hostname`, or `hostRequires force=`).
    pub wanted_system: Option<String>,
    /// `<distroRequires>`, `<hostRequires>`, `<partitions>` as submitted.
    pub requires: Vec<String>,
    pub tasks: Vec<Task>,
    pub reservesys: Option<ReserveSys>,
    pub status: String,
    /// The system it runs on, once scheduled.
    pub system: Option<String>,
    pub start_time: Option<String>,
    pub finish_time: Option<String>,
    /// Reads of the job since the recipe last changed status.
    pub reads: u32,
}

/// A task of a recipe.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: u64,
    pub name: String,
    pub role: String,
    pub params: Vec<(String, String)>,
    pub status: String,
    pub result: String,
}

/// `<reservesys>`: keep the system after the tasks (`when`: `always`, `onfail`, `onwarn`,
/// `onabort`), for `duration` seconds.
#[derive(Debug, Clone)]
pub struct ReserveSys {
    pub duration: u64,
    pub when: String,
}

impl Task {
    /// The result the simulated lab gives this task: its `SIM_RESULT` parameter, else `Pass`.
    pub fn planned_result(&self) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == "SIM_RESULT")
            .map_or("Pass", |(_, v)| v.as_str())
    }
}

impl Recipe {
    /// The worst result of its finished tasks (`New` while none has finished).
    pub fn result(&self) -> &str {
        self.tasks
            .iter()
            .filter(|t| t.result != "New")
            .fold("New", |acc, t| worse(acc, &t.result))
    }

    /// Whether the reservation it asked for applies to how its tasks ended.
    pub fn reserves(&self) -> bool {
        let Some(r) = &self.reservesys else {
            return false;
        };
        let result = self.result();
        let aborted = self.tasks.iter().any(|t| t.status == "Aborted");
        match r.when.as_str() {
            "onabort" => aborted,
            "onfail" => aborted || matches!(result, "Fail" | "Panic"),
            "onwarn" => aborted || matches!(result, "Warn" | "Fail" | "Panic"),
            _ => true,
        }
    }
}

impl Job {
    /// Every recipe, in order.
    pub fn recipes(&self) -> impl Iterator<Item = &Recipe> {
        self.recipe_sets.iter().flat_map(|rs| rs.recipes.iter())
    }

    /// Every recipe, to change.
    pub fn recipes_mut(&mut self) -> impl Iterator<Item = &mut Recipe> {
        self.recipe_sets
            .iter_mut()
            .flat_map(|rs| rs.recipes.iter_mut())
    }

    /// The job's status: the least advanced of its unfinished recipes, else `Aborted` when one
    /// was, `Cancelled` when one was, else `Completed`.
    pub fn status(&self) -> &'static str {
        status_of(self.recipes())
    }

    /// The worst result of its recipes.
    pub fn result(&self) -> &str {
        self.recipes().fold("New", |acc, r| worse(acc, r.result()))
    }

    /// `J:<id>`
    pub fn t_id(&self) -> String {
        format!("J:{}", self.id)
    }
}

/// The rolled-up status of some recipes.
pub fn status_of<'a>(recipes: impl Iterator<Item = &'a Recipe>) -> &'static str {
    let statuses: Vec<&str> = recipes.map(|r| r.status.as_str()).collect();
    let unfinished = STATUSES[..4].iter().find(|s| statuses.contains(s)).copied();
    unfinished.unwrap_or(if statuses.contains(&"Aborted") {
        "Aborted"
    } else if statuses.contains(&"Cancelled") {
        "Cancelled"
    } else {
        "Completed"
    })
}

/// Where new ids come from (one sequence per table, as Beaker's database has).
#[derive(Debug, Default)]
pub struct Ids {
    pub job: u64,
    pub recipe_set: u64,
    pub recipe: u64,
    pub task: u64,
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

fn elements<'a, 'i>(
    node: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    node.children().filter(move |n| n.has_tag_name(name))
}

fn attr(node: roxmltree::Node<'_, '_>, name: &str, default: &str) -> String {
    node.attribute(name).unwrap_or(default).to_owned()
}

/// The `value` of the first element named `name` under `node`.
fn required_value(node: Option<roxmltree::Node<'_, '_>>, name: &str) -> Option<String> {
    node?
        .descendants()
        .find(|n| n.has_tag_name(name))
        .and_then(|n| n.attribute("value"))
        .map(str::to_owned)
}

/// Reads submitted job XML into a new job of `owner`; the error is the hub's complaint.
pub fn read_job(xml: &str, owner: (&str, &str), ids: &mut Ids) -> Result<Job, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("Invalid job XML: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("job") {
        return Err("Invalid job XML: the root element is not <job>".into());
    }
    let mut recipe_sets = Vec::new();
    for rs in elements(root, "recipeSet") {
        let mut recipes = Vec::new();
        for recipe in elements(rs, "recipe") {
            recipes.push(read_recipe(xml, recipe, ids)?);
        }
        if recipes.is_empty() {
            return Err("No Recipes! You can not have a recipeSet with no recipes!".into());
        }
        recipe_sets.push(RecipeSet {
            id: next(&mut ids.recipe_set),
            priority: attr(rs, "priority", "Normal"),
            recipes,
        });
    }
    if recipe_sets.is_empty() {
        return Err("No RecipeSets! You can not have a Job with no recipeSets!".into());
    }
    let text_of = |name| {
        elements(root, name)
            .next()
            .and_then(|n| n.text())
            .unwrap_or("")
            .to_owned()
    };
    Ok(Job {
        id: next(&mut ids.job),
        owner: owner.0.to_owned(),
        owner_email: owner.1.to_owned(),
        whiteboard: text_of("whiteboard"),
        retention_tag: attr(root, "retention_tag", "scratch"),
        group: root.attribute("group").map(str::to_owned),
        product: root.attribute("product").map(str::to_owned),
        cc: elements(root, "notify")
            .flat_map(|n| elements(n, "cc"))
            .filter_map(|c| c.text().map(str::to_owned))
            .collect(),
        recipe_sets,
    })
}

fn read_recipe(
    xml: &str,
    recipe: roxmltree::Node<'_, '_>,
    ids: &mut Ids,
) -> Result<Recipe, String> {
    let part = |name| elements(recipe, name).next();
    let mut tasks = Vec::new();
    for task in elements(recipe, "task") {
        tasks.push(Task {
            id: next(&mut ids.task),
            name: attr(task, "name", ""),
            role: attr(task, "role", "STANDALONE"),
            params: elements(task, "params")
                .flat_map(|p| elements(p, "param"))
                .map(|p| (attr(p, "name", ""), attr(p, "value", "")))
                .collect(),
            status: "New".into(),
            result: "New".into(),
        });
    }
    if tasks.is_empty() {
        return Err("Recipe has no tasks: every recipe needs at least one <task>".into());
    }
    let host_requires = part("hostRequires");
    let wanted_system = host_requires
        .and_then(|h| h.attribute("force").map(str::to_owned))
        .or_else(|| required_value(host_requires, "hostname"));
    Ok(Recipe {
        id: next(&mut ids.recipe),
        whiteboard: attr(recipe, "whiteboard", ""),
        role: attr(recipe, "role", "RECIPE_MEMBERS"),
        ks_meta: attr(recipe, "ks_meta", ""),
        kernel_options: attr(recipe, "kernel_options", ""),
        kernel_options_post: attr(recipe, "kernel_options_post", ""),
        distro: required_value(part("distroRequires"), "distro_name")
            .unwrap_or_else(|| "RHEL-9.4.0".into()),
        arch: required_value(part("distroRequires"), "distro_arch")
            .unwrap_or_else(|| "x86_64".into()),
        wanted_system,
        requires: ["distroRequires", "hostRequires", "partitions"]
            .iter()
            .map(|name| {
                part(name).map_or_else(|| format!("<{name}/>"), |n| xml[n.range()].to_owned())
            })
            .collect(),
        tasks,
        reservesys: part("reservesys").map(|r| ReserveSys {
            duration: r
                .attribute("duration")
                .and_then(|d| d.parse().ok())
                .unwrap_or(86_400),
            when: attr(r, "when", "always"),
        }),
        status: "New".into(),
        system: None,
        start_time: None,
        finish_time: None,
        reads: 0,
    })
}

/// ` name="value"` pairs, escaped.
fn attrs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!(" {k}=\"{}\"", escape(v)))
        .collect()
}

/// The job as XML: the clone form when `clone` (what `bkr job-clone` submits again), else the
/// results form.
pub fn job_xml(job: &Job, clone: bool) -> String {
    let mut out = String::new();
    out.push_str(&job_open(job, clone));
    for rs in &job.recipe_sets {
        out.push_str(&recipe_set_xml(rs, clone));
    }
    out.push_str("</job>");
    out
}

/// One recipe set inside its job's element (`taskactions.to_xml('RS:…')`).
pub fn recipe_set_in_job(job: &Job, rs: &RecipeSet, clone: bool) -> String {
    format!(
        "{}{}</job>",
        job_open(job, clone),
        recipe_set_xml(rs, clone)
    )
}

fn job_open(job: &Job, clone: bool) -> String {
    let id = job.id.to_string();
    let mut pairs = Vec::new();
    if !clone {
        pairs.extend([
            ("id", id.as_str()),
            ("owner", job.owner_email.as_str()),
            ("result", job.result()),
            ("status", job.status()),
        ]);
    }
    pairs.push(("retention_tag", &job.retention_tag));
    if let Some(g) = &job.group {
        pairs.push(("group", g));
    }
    if let Some(p) = &job.product {
        pairs.push(("product", p));
    }
    let mut out = format!("<job{}>", attrs(&pairs));
    if !job.cc.is_empty() {
        out.push_str("<notify>");
        for cc in &job.cc {
            out.push_str(&format!("<cc>{}</cc>", escape(cc)));
        }
        out.push_str("</notify>");
    }
    out.push_str(&format!(
        "<whiteboard>{}</whiteboard>",
        escape(&job.whiteboard)
    ));
    out
}

fn recipe_set_xml(rs: &RecipeSet, clone: bool) -> String {
    let id = rs.id.to_string();
    let mut pairs = vec![("priority", rs.priority.as_str())];
    if !clone {
        pairs.extend([("response", "ack"), ("id", id.as_str())]);
    }
    let mut out = format!("<recipeSet{}>", attrs(&pairs));
    for r in &rs.recipes {
        out.push_str(&recipe_xml(r, rs.id, clone));
    }
    out.push_str("</recipeSet>");
    out
}

fn recipe_xml(r: &Recipe, rs_id: u64, clone: bool) -> String {
    let (id, rs) = (r.id.to_string(), rs_id.to_string());
    let mut pairs = vec![
        ("whiteboard", r.whiteboard.as_str()),
        ("role", r.role.as_str()),
        ("ks_meta", r.ks_meta.as_str()),
        ("kernel_options", r.kernel_options.as_str()),
        ("kernel_options_post", r.kernel_options_post.as_str()),
    ];
    if !clone {
        pairs.extend([
            ("id", id.as_str()),
            ("recipe_set_id", rs.as_str()),
            ("result", r.result()),
            ("status", r.status.as_str()),
            ("distro", r.distro.as_str()),
            ("arch", r.arch.as_str()),
            ("variant", "BaseOS"),
        ]);
        for (key, value) in [
            ("system", &r.system),
            ("start_time", &r.start_time),
            ("finish_time", &r.finish_time),
        ] {
            if let Some(v) = value {
                pairs.push((key, v));
            }
        }
    }
    let mut out = format!(
        "<recipe{}><autopick random=\"false\"/><watchdog panic=\"ignore\"/>",
        attrs(&pairs)
    );
    out.push_str("<packages/><ks_appends/><repos/>");
    r.requires.iter().for_each(|x| out.push_str(x));
    for t in &r.tasks {
        out.push_str(&task_xml(t, clone));
    }
    if let Some(rs) = &r.reservesys {
        let duration = rs.duration.to_string();
        out.push_str(&format!(
            "<reservesys{}/>",
            attrs(&[("duration", &duration), ("when", &rs.when)])
        ));
    }
    out.push_str("</recipe>");
    out
}

fn task_xml(t: &Task, clone: bool) -> String {
    let id = t.id.to_string();
    let mut pairs = vec![("name", t.name.as_str()), ("role", t.role.as_str())];
    if !clone {
        pairs.extend([
            ("id", id.as_str()),
            ("result", t.result.as_str()),
            ("status", t.status.as_str()),
        ]);
    }
    let mut out = format!("<task{}>", attrs(&pairs));
    if !t.params.is_empty() {
        out.push_str("<params>");
        for (k, v) in &t.params {
            out.push_str(&format!("<param{}/>", attrs(&[("name", k), ("value", v)])));
        }
        out.push_str("</params>");
    }
    if !clone && t.result != "New" {
        out.push_str(&format!(
            "<results><result{}>(none)</result></results>",
            attrs(&[
                ("path", &t.name),
                ("result", &t.result),
                ("score", "0"),
                ("id", &id)
            ])
        ));
    }
    out.push_str("</task>");
    out
}
