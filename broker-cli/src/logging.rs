//! Logging for the `broker` binary: stderr plus a size-rotated file in the broker directory.
//!
//! Only the binary installs a subscriber; the libraries only emit `tracing` events.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Rotate the log file past this size.
const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
/// Keep this many rotated files (`broker.log.1` …).
const KEEP_ROTATED: u32 = 3;

/// A level name from the settings or the command line.
pub fn level(name: &str) -> LevelFilter {
    match name.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::ERROR,
        "warning" | "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        "silent" | "off" => LevelFilter::OFF,
        _ => LevelFilter::INFO,
    }
}

/// Installs the subscriber: `console` level to stderr, `file` level to `log_path`.
pub fn init(console: LevelFilter, file: LevelFilter, log_path: &Path) {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(Redacting(io::stderr))
        .with_target(false)
        .without_time()
        .with_ansi(colors_wanted())
        .with_filter(console);
    let file_layer = tracing_subscriber::fmt::layer()
        .with_writer(Redacting(RotatingFile::new(log_path.to_path_buf())))
        .with_ansi(false)
        .with_filter(file);
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .with(crate::report::layer())
        .try_init();
}

/// Writes log lines with the credentials of URLs in them redacted (`https://***@host/`): whatever
/// an event carries, a password written into a URL reaches neither the terminal nor the log file.
pub struct Redacting<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

/// One write of [`Redacting`]: the formatter writes each event whole, so a URL is never split.
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let redacted = std::str::from_utf8(buf)
            .ok()
            .filter(|text| broker_core::redact::has_url_credentials(text))
            .map(broker_core::redact::url);
        match redacted {
            Some(text) => {
                self.0.write_all(text.as_bytes())?;
                Ok(buf.len())
            }
            None => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Colors on stderr: only on a terminal (or when a supervising `broker` shows stderr on one), and never
/// when `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
fn colors_wanted() -> bool {
    (std::io::IsTerminal::is_terminal(&io::stderr()) || crate::supervise::relayed())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A log file opened on first write and rotated by size.
pub struct RotatingFile {
    path: PathBuf,
    state: Mutex<Option<(File, u64)>>,
}

impl RotatingFile {
    fn new(path: PathBuf) -> Self {
        RotatingFile {
            path,
            state: Mutex::new(None),
        }
    }

    fn rotate(&self) {
        for n in (1..KEEP_ROTATED).rev() {
            let _ = std::fs::rename(self.numbered(n), self.numbered(n + 1));
        }
        let _ = std::fs::rename(&self.path, self.numbered(1));
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }
}

/// One write to the log file, holding its lock.
pub struct RotatingWriter<'a> {
    owner: &'a RotatingFile,
    state: MutexGuard<'a, Option<(File, u64)>>,
}

impl Write for RotatingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .state
            .as_ref()
            .is_some_and(|(_, len)| *len >= MAX_LOG_BYTES)
        {
            *self.state = None;
            self.owner.rotate();
        }
        if self.state.is_none() {
            *self.state = Some(self.owner.open()?);
        }
        match self.state.as_mut() {
            Some((file, len)) => {
                let n = file.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.state.as_mut() {
            Some((file, _)) => file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RotatingWriter {
            owner: self,
            state: broker_core::sync::lock(&self.state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_never_carry_url_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.log");
        let log = Redacting(RotatingFile::new(path.clone()));
        log.make_writer()
            .write_all(b"cannot reach `https://alice:hunter2@tower.example.com/api/`\n")
            .unwrap();
        log.make_writer().write_all(b"plain line\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "cannot reach `https://***@tower.example.com/api/`\nplain line\n"
        );
    }

    #[test]
    fn log_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/broker.log");
        let file = RotatingFile::new(path.clone());
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..25 {
            file.make_writer().write_all(&chunk).unwrap();
        }
        assert!(path.exists());
        assert!(file.numbered(1).exists());
        assert!(file.numbered(2).exists());
        assert!(!file.numbered(4).exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_LOG_BYTES);
    }
}
