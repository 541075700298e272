//! Printing: tables, JSON and YAML on stdout, progress on stderr, and the `--output-file` JSON.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use broker_core::cli_support::{FieldSpec, broker_columns};
use broker_core::{Error, HostRecord, Result};

use crate::cli::Format;

/// `eprintln!` that never panics: a message stderr cannot take (`2>/dev/full`) is dropped.
macro_rules! note {
    ($($arg:tt)*) => {
        let _ = $crate::output::write_stderr(&format!($($arg)*));
    };
}
pub(crate) use note;

/// Writes one line to stderr; `false` when stderr cannot take it.
pub fn write_stderr(text: &str) -> bool {
    let mut err = std::io::stderr().lock();
    writeln!(err, "{text}").and_then(|()| err.flush()).is_ok()
}

/// Collects results for `--output-file`: one JSON object, written when the command ends.
#[derive(Debug, Default)]
pub struct Emitter {
    path: Option<PathBuf>,
    doc: serde_json::Map<String, serde_json::Value>,
}

impl Emitter {
    /// An emitter writing to `path` (or nowhere). The file is created (emptied) now, as the Python
    /// broker does, so a path that cannot be written fails before the command does any work.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created or written.
    pub fn new(path: Option<PathBuf>) -> Result<Self> {
        if let Some(path) = &path {
            write_private(path, "")
                .map_err(|e| Error::io("cannot write the --output-file", path, e))?;
        }
        Ok(Emitter {
            path,
            doc: serde_json::Map::new(),
        })
    }

    /// Records a key, secrets masked.
    pub fn emit(&mut self, key: &str, value: impl serde::Serialize) {
        if self.path.is_some() {
            let mut value = broker_core::value::to_json(&value);
            broker_core::redact::mask_json(&mut value);
            self.doc.insert(key.to_owned(), value);
        }
    }

    /// Leaves the file to the child process that runs the command for this one
    /// ([`crate::supervise`]): this process no longer writes it.
    pub fn hand_over(&mut self) {
        self.path = None;
    }

    /// Writes the file with the return code (and error message).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn finish(mut self, code: i32, error: Option<&str>) -> Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        // What broker-core and the providers reported on the way (`provider`, `ui_url`, …).
        for (key, mut value) in crate::report::reported() {
            if !self.doc.contains_key(&key) {
                broker_core::redact::mask_json(&mut value);
                self.doc.insert(key, value);
            }
        }
        self.doc.insert("return_code".into(), code.into());
        if let Some(message) = error {
            self.doc.insert("error_message".into(), message.into());
        }
        let text = serde_json::to_string_pretty(&self.doc).unwrap_or_else(|_| "{}".into());
        write_private(&path, &(text + "\n"))
            .map_err(|e| Error::io("cannot write the --output-file", path, e))
    }
}

/// Writes a file that only its owner may read (a new file is created `0600`; an existing one keeps
/// its mode).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// Prints a value as JSON or YAML, secrets masked.
pub fn print_value(value: &impl serde::Serialize, format: Format) -> Result<()> {
    let value = serde_yaml::to_value(value)
        .map_err(|e| Error::user(format!("cannot show the result: {e}")))?;
    let value = if broker_core::redact::has_secrets(&value) {
        broker_core::redact::mask(&value)
    } else {
        value
    };
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&value)
            .map(|s| s + "\n")
            .map_err(|e| Error::user(format!("cannot show the result as JSON: {e}")))?,
        Format::Yaml | Format::Table => serde_yaml::to_string(&value)
            .map_err(|e| Error::user(format!("cannot show the result as YAML: {e}")))?,
    };
    write_stdout(&text)
}

/// Writes to stdout, treating a closed pipe (`broker inventory | head`) as done.
pub fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io_without_path("writing to standard output", e)),
    }
}

/// The width tables must fit: `COLUMNS` when set (also through a pipe), else the width of the
/// terminal stdout is — known even when the terminal reports no height, as some emulators and
/// `script` do.
pub(crate) fn output_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(columns);
    }
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&stdout)
        .ok()
        .map(|size| usize::from(size.ws_col))
        .filter(|w| *w > 0)
}

/// A plain table: a header, a rule, one line per row, columns two spaces apart. On a terminal (or
/// with `COLUMNS` set) the widest columns are cut (with `…`) until the table fits.
pub fn table(headers: Vec<String>, rows: Vec<Vec<String>>) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(total) = output_width() {
        let gaps = 2 * columns.saturating_sub(1);
        while widths.iter().sum::<usize>() + gaps > total {
            let Some((widest, w)) = widths.iter().copied().enumerate().max_by_key(|(_, w)| *w)
            else {
                break;
            };
            if w <= 8 {
                break;
            }
            widths[widest] = w - 1;
        }
    }
    let mut out =
        String::with_capacity((rows.len() + 2) * (widths.iter().sum::<usize>() + 2 * columns + 1));
    push_row(&mut out, &headers, &widths);
    let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    push_row(&mut out, &rule, &widths);
    for row in &rows {
        push_row(&mut out, row, &widths);
    }
    out
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let line_start = out.len();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            out.push_str("  ");
        }
        let length = cell.chars().count();
        if length > *width {
            out.extend(cell.chars().take(width.saturating_sub(1)));
            out.push('…');
        } else {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', width - length));
        }
    }
    let trimmed = out[line_start..].trim_end().len();
    out.truncate(line_start + trimmed);
    out.push('\n');
}

/// A provider's answer as a table: a list of mappings as one row each (columns in order of first
/// appearance), a list of other values as one `Value` column, a mapping as `Key`/`Value` rows;
/// nested values inline as JSON, secrets masked.
pub fn value_table(value: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    let value = broker_core::redact::mask(value);
    let cell = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        other => broker_core::value::scalar_text(other)
            .unwrap_or_else(|| serde_json::to_string(other).unwrap_or_default()),
    };
    match &value {
        Value::Sequence(items) if items.iter().all(Value::is_mapping) && !items.is_empty() => {
            let mut headers: Vec<String> = Vec::new();
            for item in items.iter().filter_map(Value::as_mapping) {
                for key in item.keys() {
                    let key = cell(key);
                    if !headers.contains(&key) {
                        headers.push(key);
                    }
                }
            }
            let rows = items
                .iter()
                .filter_map(Value::as_mapping)
                .map(|m| {
                    headers
                        .iter()
                        .map(|h| m.get(h.as_str()).map(cell).unwrap_or_else(|| "-".into()))
                        .collect()
                })
                .collect();
            table(headers, rows)
        }
        Value::Sequence(items) => table(
            vec!["Value".into()],
            items.iter().map(|v| vec![cell(v)]).collect(),
        ),
        Value::Mapping(map) => table(
            vec!["Key".into(), "Value".into()],
            map.iter().map(|(k, v)| vec![cell(k), cell(v)]).collect(),
        ),
        other => format!("{}\n", cell(other)),
    }
}

/// The inventory table: `Id` (given with each record), the configured columns, then state, age and
/// lease.
pub fn inventory_table(
    records: &[(String, HostRecord)],
    fields: &[(String, String)],
    action_keys: &[&str],
) -> String {
    let specs: Vec<FieldSpec> = fields
        .iter()
        .map(|(_, spec)| FieldSpec::parse(spec))
        .collect();
    let mut headers = vec!["Id".to_owned()];
    headers.extend(fields.iter().map(|(title, _)| title.clone()));
    headers.extend(["State", "Age", "Lease"].map(str::to_owned));
    let now = broker_core::time::now_epoch();
    let rows = records
        .iter()
        .map(|(id, record)| {
            let record = record.masked();
            let mut row = vec![id.clone()];
            row.extend(specs.iter().map(|s| s.render(&record, action_keys)));
            row.extend(broker_columns(&record, now));
            row
        })
        .collect();
    table(headers, rows)
}

/// Whether someone watches stderr: it is a terminal, or a supervising `broker` shows it on one.
fn stderr_watched() -> bool {
    std::io::stderr().is_terminal() || crate::supervise::relayed()
}

/// A spinner on stderr while long work runs, when someone watches stderr.
pub struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Progress {
    /// Starts showing `message` with the elapsed time.
    pub fn start(message: String) -> Self {
        if !stderr_watched() {
            return Progress { stop: None };
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(120));
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tick.tick() => {
                        // Someone is asking the user something: don't draw over the question. Nor
                        // when nobody watches any more (the supervisor left the checkout running
                        // in the background), lest the output file fill with frames.
                        if crate::terminal::asking() || !stderr_watched() {
                            continue;
                        }
                        eprint!("\r{} {message} {}s ", frames[n % frames.len()], started.elapsed().as_secs());
                        n += 1;
                    }
                }
            }
            eprint!("\r\x1b[2K");
        });
        Progress { stop: Some(tx) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_trims_lines() {
        let text = table(
            vec!["Id".into(), "Host".into()],
            vec![
                vec!["0".into(), "a.example.com".into()],
                vec!["10".into(), "b".into()],
            ],
        );
        assert_eq!(
            text,
            "Id  Host\n──  ─────────────\n0   a.example.com\n10  b\n"
        );
    }
}
