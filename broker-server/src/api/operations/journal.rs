//! The operations file, `serve_operations.jsonl` in the broker directory: what a client polling an
//! operation reads after the server restarted.
//!
//! One JSON document per line, appended whenever an operation starts or ends; the last line of an
//! id wins. At start the file is read, an operation still `running` in it (the server stopped, or
//! was killed, before it ended) becomes `interrupted`, and the file is rewritten whole and
//! atomically with the operations kept; it is rewritten so again when it has grown to several times
//! that. A torn last line (a crash mid-append) is skipped. The file is a record for clients, not the
//! truth about hosts: that is the inventory, which a checkout writes first.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::http::StatusCode;
use broker_core::sync::lock;
use broker_core::{Error, Result};

use serde::Deserialize;

use super::{Asked, KEEP_FINISHED, Operation, OperationState};
use crate::problem::{FieldError, Problem};

/// The file's name in the broker directory.
pub(crate) const FILE: &str = "serve_operations.jsonl";

/// The appending side of the operations file.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    /// The file open for appending, and how many lines it has.
    file: Mutex<(Option<File>, usize)>,
}

impl Journal {
    /// Reads the file in `directory` (none yet: no operations), marks the operations that were
    /// running `interrupted`, rewrites it with the last [`KEEP_FINISHED`] and opens it to append.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be read or written.
    pub(crate) fn open(directory: &Path) -> Result<(Journal, Vec<Operation>)> {
        let path = directory.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("reading the operations file", &path, e)),
        };
        let mut operations = latest(&path, &text);
        for operation in &mut operations {
            if operation.state == OperationState::Running {
                interrupted(operation);
            }
        }
        let skip = operations.len().saturating_sub(KEEP_FINISHED);
        operations.drain(..skip);
        let journal = Journal {
            path,
            file: Mutex::new((None, 0)),
        };
        journal.rewrite(&operations)?;
        Ok((journal, operations))
    }

    /// Appends `operation` as it is now. A failure is logged, not returned: the hosts are in the
    /// inventory whatever becomes of their operation's record.
    pub(crate) fn record(&self, operation: &Operation) {
        let mut file = lock(&self.file);
        let (handle, lines) = &mut *file;
        let written = match (handle.as_mut(), serde_json::to_string(operation)) {
            (Some(handle), Ok(mut line)) => {
                line.push('\n');
                handle.write_all(line.as_bytes()).map_err(|e| e.to_string())
            }
            (None, _) => Err("it could not be opened".to_owned()),
            (_, Err(e)) => Err(e.to_string()),
        };
        match written {
            Ok(()) => *lines += 1,
            Err(e) => tracing::warn!(
                "cannot record operation {} in {}: {e}",
                operation.id,
                self.path.display()
            ),
        }
    }

    /// Whether the file has grown to several times what is kept, and is worth [`Journal::rewrite`].
    pub(crate) fn is_long(&self) -> bool {
        lock(&self.file).1 > 4 * KEEP_FINISHED
    }

    /// Replaces the file, atomically, with one line for each of `operations`, and goes on
    /// appending to the new file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be written or opened.
    pub(crate) fn rewrite(&self, operations: &[Operation]) -> Result<()> {
        let mut text = String::new();
        for operation in operations {
            if let Ok(line) = serde_json::to_string(operation) {
                text.push_str(&line);
                text.push('\n');
            }
        }
        let mut file = lock(&self.file);
        broker_core::files::replace_private(
            &self.path,
            text.as_bytes(),
            "writing the operations file",
        )?;
        let handle = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| Error::io("opening the operations file", &self.path, e))?;
        *file = (Some(handle), operations.len());
        Ok(())
    }
}

/// The last document of each id in `text`, in the order the ids first came.
fn latest(path: &Path, text: &str) -> Vec<Operation> {
    let mut order: Vec<Operation> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match read_operation(line) {
            Ok(operation) => match at.get(&operation.id) {
                Some(&index) => order[index] = operation,
                None => {
                    at.insert(operation.id.clone(), order.len());
                    order.push(operation);
                }
            },
            Err(e) => tracing::warn!(
                "skipping line {} of {}: {e} (a write cut short by a crash?)",
                number + 1,
                path.display()
            ),
        }
    }
    order
}

/// An operation as the file holds it (its `kind` and its error's `type` and `title` are not read
/// back: they follow from the rest).
#[derive(Deserialize)]
struct Stored {
    id: String,
    state: OperationState,
    request: Asked,
    created: i64,
    #[serde(default)]
    finished: Option<i64>,
    #[serde(default)]
    hosts: Vec<serde_json::Value>,
    #[serde(default)]
    error: Option<StoredProblem>,
}

/// A problem as the file holds it.
#[derive(Deserialize)]
struct StoredProblem {
    status: u16,
    detail: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

/// The operation of one line.
fn read_operation(line: &str) -> serde_json::Result<Operation> {
    let stored: Stored = serde_json::from_str(line)?;
    let error = stored.error.map(|problem| {
        let status =
            StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut shown = Problem::new(status, problem.detail);
        shown.errors = problem.errors;
        shown
    });
    Ok(Operation {
        id: stored.id,
        kind: "checkout",
        state: stored.state,
        request: stored.request,
        created: stored.created,
        finished: stored.finished,
        hosts: stored.hosts,
        error,
    })
}

/// `operation`, which was running when the server stopped, marked so.
fn interrupted(operation: &mut Operation) {
    operation.state = OperationState::Interrupted;
    operation.finished = operation.finished.or(Some(broker_core::time::now_epoch()));
    operation.error = Some(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server stopped before this checkout ended: what it had made was given back, or is \
         `pending` in the inventory for `broker recover`",
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operation(id: &str, state: OperationState) -> Operation {
        Operation {
            id: id.to_owned(),
            kind: "checkout",
            state,
            request: Asked {
                nick: Some("N".into()),
                count: 1,
                handoff: None,
            },
            created: 1,
            finished: None,
            hosts: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn the_last_line_of_an_id_wins_a_torn_line_is_skipped_and_running_ones_are_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let line = |op: &Operation| serde_json::to_string(op).unwrap();
        let text = [
            line(&operation("o1", OperationState::Running)),
            line(&operation("o2", OperationState::Running)),
            line(&operation("o1", OperationState::Succeeded)),
            "{\"id\": \"o3\", \"kin".to_owned(),
        ]
        .join("\n");
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let (journal, read) = Journal::open(dir.path()).unwrap();
        let states: Vec<(&str, OperationState)> =
            read.iter().map(|op| (op.id.as_str(), op.state)).collect();
        assert_eq!(
            states,
            [
                ("o1", OperationState::Succeeded),
                ("o2", OperationState::Interrupted)
            ]
        );
        assert_eq!(read[1].error.as_ref().unwrap().status, 503);
        assert_eq!(read[1].request.nick.as_deref(), Some("N"));
        // The file was rewritten with what was read; appends go after it.
        journal.record(&operation("o4", OperationState::Running));
        let (_, again) = Journal::open(dir.path()).unwrap();
        let ids: Vec<&str> = again.iter().map(|op| op.id.as_str()).collect();
        assert_eq!(ids, ["o1", "o2", "o4"]);
        assert_eq!(again[2].state, OperationState::Interrupted);
    }

    #[test]
    fn only_the_last_operations_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..KEEP_FINISHED + 5)
            .map(|n| {
                let op = operation(&format!("o{n}"), OperationState::Failed);
                serde_json::to_string(&op).unwrap() + "\n"
            })
            .collect();
        std::fs::write(dir.path().join(FILE), text).unwrap();
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(read.len(), KEEP_FINISHED);
        assert_eq!(read[0].id, "o5");
        let kept = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert_eq!(kept.lines().count(), KEEP_FINISHED);
    }
}
