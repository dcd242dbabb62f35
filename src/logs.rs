//! The master's log: one sink for the master's tracing events, the workers'
//! stdout/stderr and the request lines, written to `logto` or stderr.
//!
//! # Theory of operation
//! Workers share one pipe ([`log_pipe`]) as fd 1 and 2; a write of up to
//! `PIPE_BUF` bytes into a pipe is atomic, so their lines never interleave. One
//! plain thread ([`spawn_pump`]) moves complete lines from the pipe into the
//! [`LogSink`]; the master's tracing output reaches the same sink through
//! [`SinkWriter`], one whole event per write. The pump holds back a trailing
//! partial line until its end arrives, so a tracing event can never land in the
//! middle of a worker's line.
//!
//! The sink is a mutex around the open file. Rotation (`log-maxsize`) and reopen
//! (SIGUSR2, `log-reopen`) happen under that mutex at a line boundary; meanwhile
//! worker output waits in the pipe, so no line is split or lost.
//!
//! Writing never fails the caller: when the disk is full, lines are dropped and
//! counted, and the count is logged as soon as a write succeeds again
//! (a full log filesystem must cost log lines, never requests: a blocking or
//! failing log write in the app would). Nothing here logs through `tracing`: the sink is where
//! tracing writes, so that would deadlock.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::logging::{Encoder, LoggerKind, LoggerSpec, Logging};

/// How much the pump reads at once.
const CHUNK: usize = 64 * 1024;

/// A partial line waits this long for its end before it is written as is.
const PARTIAL_LINE_WAIT_MS: i32 = 1000;

/// uWSGI creates `logto` with this mode; the open mode is only ever narrowed by
/// the umask.
const LOG_MODE: u32 = 0o640;

/// Room in the pipe lets workers keep writing while the sink rotates.
const PIPE_SIZE: i32 = 1024 * 1024;

/// First byte of a request line when `req-logger` is set (python/amy_worker/reqlog.py
/// `MARK`): the pump sends such lines to the request loggers, without it.
pub const REQUEST_MARK: u8 = 0x1e;

pub mod date;
pub mod encode;
mod syslog;

pub use date::set_log_date;

pub struct LogSink {
    inner: Mutex<Inner>,
}

/// Where lines go: `outputs[0]` is `logto` (or stderr), uWSGI's `stdio`; `main`
/// receives every line, `req` (when `req-logger` is set) the request lines.
struct Inner {
    outputs: Vec<Output>,
    main: Vec<usize>,
    req: Option<Vec<usize>>,
    /// `log-encoder` (main lines, and request lines without a `req-logger`)
    /// and `log-req-encoder` (request lines a `req-logger` takes).
    encoders: Vec<Encoder>,
    req_encoders: Vec<Encoder>,
}

enum Target {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        size: u64,
    },
    Syslog(syslog::Syslog),
}

/// One destination, with its own rotation and its own count of lost lines.
struct Output {
    target: Target,
    /// `log-maxsize` (or the file logger's `maxsize=`) in bytes; 0 = never rotate.
    maxsize: u64,
    /// The file logger's `backupname=`: where a rotated file goes.
    backupname: Option<PathBuf>,
    dropped_lines: u64,
    dropped_bytes: u64,
    /// The last byte written was a newline (or nothing was written yet).
    at_line_start: bool,
}

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        let targets: Vec<String> = inner.outputs.iter().map(Output::describe).collect();
        f.debug_struct("LogSink")
            .field("targets", &targets)
            .finish()
    }
}

/// `data` (whole lines, or a partial one) with each line through the encoders;
/// borrowed as is when there are none.
fn encoded<'a>(encoders: &[Encoder], data: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
    if encoders.is_empty() {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() * 2);
    for line in data.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(&encode::encode(encoders, line));
    }
    std::borrow::Cow::Owned(out)
}

fn open_log(path: &Path) -> io::Result<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl LogSink {
    /// `logto` when given (created `O_APPEND`, mode 0640), else stderr.
    pub fn open(logto: Option<&Path>, maxsize: u64) -> io::Result<Arc<LogSink>> {
        Self::open_with(logto, maxsize, &Logging::default())
    }

    /// `logto` (or stderr) plus the `logger`/`req-logger` destinations. Every
    /// file is opened now, so a path that cannot be written fails the start.
    pub fn open_with(
        logto: Option<&Path>,
        maxsize: u64,
        logging: &Logging,
    ) -> io::Result<Arc<LogSink>> {
        let stdio = match logto {
            Some(path) => {
                let mut out = Output::file(path, maxsize, logging.backupname.clone())?;
                if logging.truncate {
                    out.truncate()?;
                }
                out
            }
            None => Output::new(Target::Stderr, 0, None),
        };
        let mut outputs = vec![stdio];
        let mut add = |spec: &LoggerSpec| -> io::Result<Option<usize>> {
            if spec.id.is_some() {
                // Only log-route would write there, and it is not implemented.
                return Ok(None);
            }
            let output = match &spec.kind {
                LoggerKind::Stdio => return Ok(Some(0)),
                LoggerKind::File {
                    path,
                    maxsize,
                    backupname,
                } => Output::file(path, *maxsize, backupname.clone())
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
                LoggerKind::Syslog { ident, facility } => Output::new(
                    Target::Syslog(syslog::Syslog::new(ident, *facility)),
                    0,
                    None,
                ),
            };
            outputs.push(output);
            Ok(Some(outputs.len() - 1))
        };
        let mut main = Vec::new();
        for spec in &logging.loggers {
            main.extend(add(spec)?);
        }
        let mut req = None;
        if !logging.req_loggers.is_empty() {
            let mut r = Vec::new();
            for spec in &logging.req_loggers {
                r.extend(add(spec)?);
            }
            req = Some(r);
        }
        // uWSGI: without an unnamed logger, lines go to logto/stderr.
        if main.is_empty() {
            main.push(0);
        }
        if let Some(r) = &mut req {
            if r.is_empty() {
                r.push(0);
            }
        }
        Ok(Arc::new(LogSink {
            inner: Mutex::new(Inner {
                outputs,
                main,
                req,
                encoders: logging.encoders.clone(),
                req_encoders: logging.req_encoders.clone(),
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not silence the log.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `data` to every main destination; on failure the bytes are
    /// counted as dropped (per destination).
    pub fn write_bytes(&self, data: &[u8]) {
        let mut inner = self.lock();
        let Inner {
            outputs,
            main,
            encoders,
            ..
        } = &mut *inner;
        let data = encoded(encoders, data);
        for &i in main.iter() {
            outputs[i].write(&data);
        }
    }

    /// Request lines: to the request loggers when set, else as [`Self::write_bytes`].
    pub fn write_request(&self, data: &[u8]) {
        let mut inner = self.lock();
        let Inner {
            outputs,
            main,
            req,
            encoders,
            req_encoders,
        } = &mut *inner;
        // uWSGI: request lines a req-logger takes go through the req encoders,
        // otherwise through the main ones with every other line.
        let data = encoded(
            if req.is_some() {
                req_encoders
            } else {
                encoders
            },
            data,
        );
        for &i in req.as_ref().unwrap_or(main).iter() {
            outputs[i].write(&data);
        }
    }

    /// Opens every file anew (logrotate moved them away). Stderr and syslog
    /// are left as they are. On failure that file's old descriptor stays in
    /// use; the first error is returned after all were tried.
    pub fn reopen(&self) -> io::Result<()> {
        let mut inner = self.lock();
        let mut first = None;
        for output in &mut inner.outputs {
            if let Err(e) = output.reopen() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// `logto2`, after the privilege drop: the file (created now, so owned by
    /// the user dropped to) takes the place of `logto`/stderr for every later
    /// line, with `log-maxsize`, `log-backupname` and `log-truncate` applying
    /// to it. uWSGI keeps rotating the `logto` path; here rotation and SIGUSR2
    /// follow the file actually written.
    pub fn replace_stdio(&self, path: &Path, maxsize: u64, logging: &Logging) -> io::Result<()> {
        let mut out = Output::file(path, maxsize, logging.backupname.clone())?;
        if logging.truncate {
            out.truncate()?;
        }
        self.lock().outputs[0] = out;
        Ok(())
    }

    /// The `logto` file, `None` for stderr.
    pub fn path(&self) -> Option<PathBuf> {
        match &self.lock().outputs[0].target {
            Target::File { path, .. } => Some(path.clone()),
            _ => None,
        }
    }

    /// Writes the "dropped N lines" notice now wherever lines were lost and the
    /// destination takes writes again; for a timer, so the count shows up even
    /// when nothing else is logged.
    pub fn report_dropped(&self) {
        for output in &mut self.lock().outputs {
            if output.dropped_lines > 0 {
                output.report_dropped();
            }
        }
    }

    /// Lines and bytes dropped since the last successful write, over all destinations.
    pub fn dropped(&self) -> (u64, u64) {
        let inner = self.lock();
        inner.outputs.iter().fold((0, 0), |(l, b), o| {
            (l + o.dropped_lines, b + o.dropped_bytes)
        })
    }
}

impl Output {
    fn new(target: Target, maxsize: u64, backupname: Option<PathBuf>) -> Output {
        Output {
            target,
            maxsize,
            backupname,
            dropped_lines: 0,
            dropped_bytes: 0,
            at_line_start: true,
        }
    }

    fn file(path: &Path, maxsize: u64, backupname: Option<PathBuf>) -> io::Result<Output> {
        let (file, size) = open_log(path)?;
        Ok(Output::new(
            Target::File {
                path: path.to_owned(),
                file,
                size,
            },
            maxsize,
            backupname,
        ))
    }

    /// `log-truncate`: empties the file once, when the instance starts
    /// (reopens and rotations append, so a reload keeps what was logged).
    fn truncate(&mut self) -> io::Result<()> {
        if let Target::File { file, size, .. } = &mut self.target {
            file.set_len(0)?;
            *size = 0;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stderr => "stderr".to_owned(),
            Target::File { path, .. } => path.display().to_string(),
            Target::Syslog(s) => s.describe(),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Target::File { path, file, size } = &mut self.target {
            let (new, new_size) = open_log(path)?;
            *file = new;
            *size = new_size;
            self.at_line_start = true;
        }
        Ok(())
    }

    fn write(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.dropped_lines > 0 && !self.report_dropped() {
            self.count_dropped(data);
            return;
        }
        let Target::File { size, .. } = &self.target else {
            self.write_raw(data);
            return;
        };
        let size = *size;
        if self.maxsize == 0 || size + data.len() as u64 <= self.maxsize {
            self.write_raw(data);
        } else if self.at_line_start && size > 0 {
            self.rotate();
            self.write_raw(data);
        } else if let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') {
            // Finish the current line in the old file, then rotate.
            self.write_raw(&data[..=last_nl]);
            self.rotate();
            self.write_raw(&data[last_nl + 1..]);
        } else {
            // No line boundary yet: rotating now would split a line.
            self.write_raw(data);
        }
    }

    /// Writes the "dropped" notice; true once it is out.
    fn report_dropped(&mut self) -> bool {
        let lead = if self.at_line_start { "" } else { "\n" };
        let notice = format!(
            "{lead}amy-emperor: log writes failed, dropped {} lines ({} bytes)\n",
            self.dropped_lines, self.dropped_bytes
        );
        let (lines, bytes) = (self.dropped_lines, self.dropped_bytes);
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
        if self.write_raw(notice.as_bytes()) {
            true
        } else {
            // The notice itself was counted; count the original loss instead.
            self.dropped_lines = lines;
            self.dropped_bytes = bytes;
            false
        }
    }

    fn count_dropped(&mut self, data: &[u8]) {
        let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
        self.dropped_lines += newlines.max(1);
        self.dropped_bytes += data.len() as u64;
    }

    /// Writes everything it can; returns false (and counts the rest as dropped)
    /// on error.
    fn write_raw(&mut self, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        let (written, failed) = match &mut self.target {
            Target::Stderr => write_counting(&mut io::stderr().lock(), data),
            Target::File { file, size, .. } => {
                let (n, failed) = write_counting(file, data);
                *size += n as u64;
                (n, failed)
            }
            Target::Syslog(s) => s.send(data),
        };
        if written > 0 {
            self.at_line_start = data[written - 1] == b'\n';
        }
        if failed {
            self.count_dropped(&data[written..]);
        }
        !failed
    }

    /// `log-maxsize`: `<file>` becomes `<file>.<unixtime>` (plus `.N` if that
    /// exists, as several rotations can happen within a second), or the file
    /// logger's `backupname`, and a new file is opened. Whatever fails, writing
    /// continues into some file.
    fn rotate(&mut self) {
        let Target::File { path, file, size } = &mut self.target else {
            return;
        };
        // Whatever happens next, the next attempt is a maxsize of bytes away.
        *size = 0;
        let backup = match &self.backupname {
            Some(b) => b.clone(),
            None => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let base = format!("{}.{stamp}", path.display());
                let mut backup = PathBuf::from(&base);
                let mut n = 1;
                while std::fs::symlink_metadata(&backup).is_ok() {
                    backup = PathBuf::from(format!("{base}.{n}"));
                    n += 1;
                }
                backup
            }
        };
        let problem = match std::fs::rename(&*path, &backup) {
            Err(e) => Some(format!("renaming to {}: {e}", backup.display())),
            Ok(()) => match open_log(path) {
                Ok((new, new_size)) => {
                    *file = new;
                    *size = new_size;
                    None
                }
                Err(e) => Some(format!("opening a new {}: {e}", path.display())),
            },
        };
        if let Some(problem) = problem {
            let notice = format!("amy-emperor: log rotation failed: {problem}\n");
            self.write_raw(notice.as_bytes());
        } else {
            self.at_line_start = true;
        }
    }
}

/// `write_all` that reports how far it got.
fn write_counting(w: &mut impl Write, data: &[u8]) -> (usize, bool) {
    let mut off = 0;
    while off < data.len() {
        match w.write(&data[off..]) {
            Ok(0) => return (off, true),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return (off, true),
        }
    }
    (off, false)
}

/// The master's tracing output into the sink: `fmt` writes one whole event per
/// `write` call.
#[derive(Clone, Debug)]
pub struct SinkWriter(pub Arc<LogSink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_bytes(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SinkWriter {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The workers' shared stdout/stderr.
#[derive(Debug)]
pub struct LogPipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

/// Both ends `CLOEXEC`: the spawner `dup2`s `write` onto fds 1 and 2.
pub fn log_pipe() -> io::Result<LogPipe> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // Best effort: an unprivileged process may be capped below this.
    let _ = nix::fcntl::fcntl(
        write.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
    );
    Ok(LogPipe { read, write })
}

/// Copies the pipe into the sink until every write end is closed.
pub fn spawn_pump(read: OwnedFd, sink: Arc<LogSink>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("log-pump".into())
        .spawn(move || pump(read, &sink))
        .expect("cannot start the log pump thread")
}

fn pump(read: OwnedFd, sink: &LogSink) {
    let mut buf = vec![0u8; CHUNK];
    // buf[..held] is the start of a line whose end has not arrived yet.
    let mut held = 0;
    let mut pipe = File::from(read);
    // The instance's request count for `req: a/b` (crate::reqcount).
    let mut requests = 0u64;
    let mut numbered = Vec::with_capacity(CHUNK);
    let mut routed = (Vec::new(), Vec::new());
    loop {
        if held > 0 && !readable_within(&pipe, PARTIAL_LINE_WAIT_MS) {
            sink.write_bytes(&buf[..held]);
            held = 0;
        }
        let n = match pipe.read(&mut buf[held..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let end = held + n;
        match buf[..end].iter().rposition(|&b| b == b'\n') {
            Some(last_nl) => {
                let lines = &buf[..=last_nl];
                if lines.contains(&REQUEST_MARK) {
                    route_marked(lines, sink, &mut requests, &mut numbered, &mut routed);
                } else {
                    crate::reqcount::number_lines(lines, &mut requests, &mut numbered);
                    sink.write_bytes(&numbered);
                }
                buf.copy_within(last_nl + 1..end, 0);
                held = end - last_nl - 1;
            }
            // A line longer than the buffer goes out in pieces.
            None if end == buf.len() => {
                sink.write_bytes(&buf[..end]);
                held = 0;
            }
            None => held = end,
        }
    }
    if held > 0 {
        sink.write_bytes(&buf[..held]);
    }
}

/// Whole lines some of which carry [`REQUEST_MARK`]: marked lines (mark
/// removed) to the request destinations, the rest to the main ones, each set
/// in one write. A mark inside a line means another process's partial line
/// came first: that part is ended with a newline and goes to the main log.
fn route_marked(
    lines: &[u8],
    sink: &LogSink,
    requests: &mut u64,
    numbered: &mut Vec<u8>,
    (main, req): &mut (Vec<u8>, Vec<u8>),
) {
    main.clear();
    req.clear();
    for line in lines.split_inclusive(|&b| b == b'\n') {
        match line.iter().position(|&b| b == REQUEST_MARK) {
            None => main.extend_from_slice(line),
            Some(at) => {
                if at > 0 {
                    main.extend_from_slice(&line[..at]);
                    main.push(b'\n');
                }
                req.extend_from_slice(&line[at + 1..]);
            }
        }
    }
    if !main.is_empty() {
        crate::reqcount::number_lines(main, requests, numbered);
        sink.write_bytes(numbered);
    }
    if !req.is_empty() {
        crate::reqcount::number_lines(req, requests, numbered);
        sink.write_request(numbered);
    }
}

/// True when the fd has data or EOF (or poll fails: then let `read` tell).
fn readable_within(fd: &impl AsFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return rc != 0;
    }
}

/// Sets up the process's tracing: `AMY_LOG` (EnvFilter syntax) or a level from
/// `-v`/`-q` (`verbosity` = count of `-v` minus count of `-q`), written to `writer`.
pub fn init_tracing<W>(writer: W, verbosity: i8)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let default = match verbosity {
        i8::MIN..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AMY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false)
        .with_timer(date::UwsgiTime)
        .with_writer(writer)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    use crate::testutil::TempDir;

    fn line(writer: usize, i: usize) -> String {
        // Varying lengths, so lines straddle the pump's reads.
        format!("w{writer} l{i} {}\n", "x".repeat((i * 37 + writer) % 300))
    }

    /// Every file starting with `app.log` in `dir`: each must end at a line
    /// boundary; returns the count of each line across all of them.
    fn all_lines(dir: &Path) -> (HashMap<String, usize>, usize) {
        let mut counts = HashMap::new();
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if !entry.file_name().to_string_lossy().starts_with("app.log") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "split line in {entry:?}"
            );
            for l in text.lines() {
                *counts.entry(format!("{l}\n")).or_insert(0) += 1;
            }
        }
        (counts, files)
    }

    /// `writers` threads write `per_writer` lines each into the pipe, one
    /// `write` per line, plus one thread writing through `SinkWriter` as the
    /// master's tracing does. Returns the expected lines.
    fn run_writers(sink: &Arc<LogSink>, writers: usize, per_writer: usize) -> Vec<String> {
        let pipe = log_pipe().unwrap();
        let pump = spawn_pump(pipe.read, sink.clone());
        let mut threads = Vec::new();
        for w in 0..writers {
            let fd = pipe.write.try_clone().unwrap();
            threads.push(std::thread::spawn(move || {
                for i in 0..per_writer {
                    let l = line(w, i);
                    assert_eq!(nix::unistd::write(&fd, l.as_bytes()).unwrap(), l.len());
                }
            }));
        }
        let tracing_like = {
            let mut writer = SinkWriter(sink.clone());
            std::thread::spawn(move || {
                for i in 0..per_writer {
                    writer.write_all(line(writers, i).as_bytes()).unwrap();
                }
            })
        };
        drop(pipe.write);
        for t in threads {
            t.join().unwrap();
        }
        tracing_like.join().unwrap();
        pump.join().unwrap();
        (0..=writers)
            .flat_map(|w| (0..per_writer).map(move |i| line(w, i)))
            .collect()
    }

    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap();
        u32::from_str_radix(field.trim(), 8).unwrap()
    }

    #[test]
    fn concurrent_writers_lines_arrive_intact_exactly_once() {
        let dir = TempDir::new("logs");
        let sink = LogSink::open(Some(&dir.0.join("app.log")), 0).unwrap();
        let expected = run_writers(&sink, 4, 3000);
        let (counts, files) = all_lines(&dir.0);
        assert_eq!(files, 1);
        assert_eq!(counts.len(), expected.len(), "lost, split or mangled lines");
        for l in &expected {
            assert_eq!(counts.get(l), Some(&1), "line {l:?}");
        }
    }

    #[test]
    fn rotation_keeps_every_line() {
        let dir = TempDir::new("logs");
        let sink = LogSink::open(Some(&dir.0.join("app.log")), 16 * 1024).unwrap();
        let expected = run_writers(&sink, 3, 1500);
        let (counts, files) = all_lines(&dir.0);
        assert!(files > 3, "expected several rotations, got {files} files");
        assert_eq!(counts.len(), expected.len());
        for l in &expected {
            assert_eq!(counts.get(l), Some(&1), "line {l:?}");
        }
    }

    #[test]
    fn rotation_happens_at_line_boundaries() {
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        let sink = LogSink::open(Some(&path), 100).unwrap();
        for i in 0..10 {
            sink.write_bytes(format!("line {i:02} {}\n", "a".repeat(20)).as_bytes());
        }
        // 30-byte lines under a 100-byte cap: 3 lines per file.
        let (counts, files) = all_lines(&dir.0);
        assert_eq!(files, 4);
        assert_eq!(counts.len(), 10);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

        // A chunk that starts mid-line finishes the line in the old file.
        sink.write_bytes(b"partial ");
        sink.write_bytes(&[b'p'; 100]);
        sink.write_bytes(b" end\nnext");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next");
        let finished = format!("partial {} end\n", "p".repeat(100));
        let holders: Vec<_> = std::fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .filter(|text| text.ends_with(&finished))
            .collect();
        assert_eq!(holders.len(), 1);
    }

    #[test]
    fn reopen_after_rename_writes_to_the_new_file() {
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        let moved = dir.0.join("app.log.1");
        let sink = LogSink::open(Some(&path), 0).unwrap();
        sink.write_bytes(b"one\n");
        std::fs::rename(&path, &moved).unwrap();
        sink.write_bytes(b"two\n");
        sink.reopen().unwrap();
        sink.write_bytes(b"three\n");
        assert_eq!(std::fs::read_to_string(&moved).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
    }

    #[test]
    fn log_file_is_created_0640_at_most() {
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        let _sink = LogSink::open(Some(&path), 0).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640 & !umask());
        assert_eq!(mode & 0o007, 0);
    }

    #[test]
    fn existing_log_is_appended_to() {
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        std::fs::write(&path, "old\n").unwrap();
        let sink = LogSink::open(Some(&path), 0).unwrap();
        sink.write_bytes(b"new\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\nnew\n");
    }

    #[test]
    fn full_disk_drops_and_counts_then_reports() {
        // A missing /dev/full (every Linux has one) fails, never passes unexercised.
        assert!(Path::new("/dev/full").exists(), "this test needs /dev/full");
        let dir = TempDir::new("logs");
        let sink = LogSink::open(Some(Path::new("/dev/full")), 0).unwrap();
        sink.write_bytes(b"a\nb\n");
        sink.write_bytes(b"c\n");
        assert_eq!(sink.dropped(), (3, 6));

        // Space comes back: here, the path now leads to a real file.
        let path = dir.0.join("app.log");
        if let Target::File { path: p, .. } = &mut sink.lock().outputs[0].target {
            *p = path.clone();
        }
        sink.reopen().unwrap();
        sink.report_dropped();
        sink.write_bytes(b"d\n");
        assert_eq!(sink.dropped(), (0, 0));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "amy-emperor: log writes failed, dropped 3 lines (6 bytes)\nd\n"
        );
    }

    #[test]
    fn full_disk_never_blocks_the_writers() {
        // A missing /dev/full (every Linux has one) fails, never passes unexercised.
        assert!(Path::new("/dev/full").exists(), "this test needs /dev/full");
        let sink = LogSink::open(Some(Path::new("/dev/full")), 0).unwrap();
        // Far more than the pipe holds: the writers only finish if the pump
        // keeps draining while every write to the disk fails.
        let expected = run_writers(&sink, 2, 5000);
        let (lines, bytes) = sink.dropped();
        assert_eq!(lines as usize, expected.len());
        assert_eq!(
            bytes as usize,
            expected.iter().map(String::len).sum::<usize>()
        );
    }

    #[test]
    fn a_partial_line_is_flushed_after_a_while() {
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        let sink = LogSink::open(Some(&path), 0).unwrap();
        let pipe = log_pipe().unwrap();
        let pump = spawn_pump(pipe.read, sink.clone());
        nix::unistd::write(&pipe.write, b"no newline").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap() != "no newline" {
            assert!(
                std::time::Instant::now() < deadline,
                "partial line never written"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(pipe.write);
        pump.join().unwrap();
    }

    #[test]
    fn pipe_ends_are_cloexec() {
        let pipe = log_pipe().unwrap();
        for fd in [&pipe.read, &pipe.write] {
            let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_GETFD).unwrap();
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }

    #[test]
    fn tracing_events_go_through_the_sink() {
        use tracing_subscriber::fmt::MakeWriter;
        let dir = TempDir::new("logs");
        let path = dir.0.join("app.log");
        let sink = LogSink::open(Some(&path), 0).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(SinkWriter(sink.clone()))
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(worker = 3, "worker ready");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("worker ready") && text.contains("worker=3"),
            "{text}"
        );
        // make_writer hands out writers to the same sink.
        SinkWriter(sink.clone())
            .make_writer()
            .write_all(b"x\n")
            .unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("x\n"));
    }
}
