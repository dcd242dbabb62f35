//! Shared harness for the integration tests: a real `amy-emperor` in a temp dir
//! with real Python workers, a raw uwsgi-protocol client, a plain HTTP client,
//! real nginx, and polling with deadlines. Everything started here is stopped by
//! PID on drop; a failing test prints the instance's log tail.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_amy-emperor");

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv the test apps run in (Django, uwsgi-tools): `AMY_TEST_PYTHON`'s, or
/// the one `scripts/setup-test-deps.sh` makes.
pub fn venv() -> PathBuf {
    if let Ok(p) = std::env::var("AMY_TEST_PYTHON") {
        let p = PathBuf::from(p);
        return p
            .parent()
            .and_then(|b| b.parent())
            .expect("python in a venv's bin/")
            .to_path_buf();
    }
    let v = repo().join(".venv-test");
    assert!(
        v.join("bin/python").exists(),
        "no test venv: run scripts/setup-test-deps.sh"
    );
    v
}

/// Polls `f` every 10 ms until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh directory under /tmp (short paths: unix sockets allow 107 bytes).
pub fn temp_dir(name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = PathBuf::from(format!("/tmp/amy-t-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `GET /sleep?s=SECS` on `sock` in a thread and returns once the
/// request has reached the app (the test apps create the `mark` file then),
/// so a stop or kill that follows really has a request in flight.
pub fn request_in_flight(
    sock: &Path,
    secs: f64,
) -> std::thread::JoinHandle<std::io::Result<Response>> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mark = std::env::temp_dir().join(format!("amy-inflight-{}-{n}", std::process::id()));
    let _ = std::fs::remove_file(&mark);
    let uri = format!("/sleep?s={secs}&mark={}", mark.display());
    let sock = sock.to_path_buf();
    let handle = std::thread::spawn(move || uwsgi_get(&sock, &uri));
    wait_for(
        "the request to reach the app",
        Duration::from_secs(30),
        || mark.exists().then_some(()),
    );
    let _ = std::fs::remove_file(&mark);
    handle
}

/// A free loopback TCP port for a server the test starts later.
///
/// Not one the kernel picks (`bind :0`): those come from the ephemeral range
/// that every outgoing connection of every test also draws from, so between
/// this probe and the server's own bind another test's client could take it
/// (seen in CI: `bind: Address already in use`). Ports below the ephemeral
/// range are only ever taken by this function; a per-process offset and
/// counter keep parallel tests and test binaries apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // below 32768, the start of Linux's default ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n * 7) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// A site folder like AMY's `amy_site`: an ini, `uwsgi_env`, the apps.
pub struct Site {
    pub dir: PathBuf,
    pub http_port: u16,
}

impl Site {
    /// A site serving `module` from tests/apps with `processes` workers, on
    /// `amy.sock` (uwsgi) and an http-socket. `extra` is appended to `[uwsgi]`.
    pub fn new(name: &str, module: &str, processes: u32, extra: &str) -> Site {
        let dir = temp_dir(name);
        let http_port = free_port();
        let site = Site { dir, http_port };
        site.write_ini(module, processes, extra);
        site.write_env("AMY_CANARY=canary-secret-7f3a9\nAMY_GREETING=hello\n");
        site
    }

    pub fn ini_text(&self, module: &str, processes: u32, extra: &str) -> String {
        format!(
            "[uwsgi]\nchdir = {apps}\nmodule = {module}\nhome = {venv}\nmaster = true\nprocesses = {processes}\n\
             socket = %damy.sock\nchmod-socket = 660\nhttp-socket = 127.0.0.1:{port}\nvacuum = true\n\
             pidfile = %damy.pid\nfor-readline = %duwsgi_env\n  env = %(_)\nendfor =\nlogto = %damy.log\n\
             worker-reload-mercy = 10\n{extra}\n",
            apps = repo().join("tests/apps").display(),
            venv = venv().display(),
            port = self.http_port,
        )
    }

    pub fn write_ini(&self, module: &str, processes: u32, extra: &str) {
        std::fs::write(self.ini(), self.ini_text(module, processes, extra)).unwrap();
    }

    pub fn write_env(&self, text: &str) {
        let path = self.dir.join("uwsgi_env");
        std::fs::write(&path, text).unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&path).unwrap().permissions(),
            0o600,
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    pub fn ini(&self) -> PathBuf {
        self.dir.join("amy_uwsgi.ini")
    }
    pub fn sock(&self) -> PathBuf {
        self.dir.join("amy.sock")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("amy.pid")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join("amy.log")
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs `amy-emperor ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    /// `amy-emperor start` in the foreground; returns once every worker answers.
    pub fn start(&self) -> Instance<'_> {
        let inst = self.spawn();
        inst.wait_ready();
        inst
    }

    /// `amy-emperor start` without waiting.
    pub fn spawn(&self) -> Instance<'_> {
        self.spawn_with(&[])
    }

    /// `amy-emperor start ARGS… INI` (e.g. `--allow-unsupported KEY`), waiting
    /// until every worker answers.
    pub fn start_with(&self, args: &[&str]) -> Instance<'_> {
        let inst = self.spawn_with(args);
        inst.wait_ready();
        inst
    }

    /// `amy-emperor start ARGS… INI` without waiting.
    pub fn spawn_with(&self, args: &[&str]) -> Instance<'_> {
        self.spawn_with_env(args, &[])
    }

    /// `amy-emperor start ARGS… INI` with `env` added to the master's
    /// environment, without waiting.
    pub fn spawn_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Instance<'_> {
        let child = Command::new(BIN)
            .arg("start")
            .args(args)
            .arg(self.ini())
            .envs(env.iter().copied())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(self.dir.join("stdout.txt")).unwrap(),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.join("stderr.txt")).unwrap(),
            ))
            .spawn()
            .unwrap();
        Instance {
            site: self,
            child: Some(child),
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json", self.ini().to_str().unwrap()]);
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

/// A running master started by a test.
pub struct Instance<'a> {
    pub site: &'a Site,
    pub child: Option<Child>,
}

impl Instance<'_> {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Waits until `status` says every worker of the current generation is ready.
    pub fn wait_ready(&self) {
        wait_for(
            "the first generation to be ready",
            Duration::from_secs(60),
            || {
                if let Some(status) = self.exited() {
                    panic!("master exited early with {status:?}\n{}", self.tail());
                }
                let s = self.site.status_json();
                (s["phase"] == "running").then_some(())
            },
        );
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        // try_wait needs &mut; peek through /proc instead.
        let pid = self.child.as_ref()?.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state == "Z").then(std::process::ExitStatus::default)
    }

    pub fn worker_pids(&self) -> Vec<i32> {
        let s = self.site.status_json();
        s["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|w| w["pid"].as_i64())
            .map(|p| p as i32)
            .collect()
    }

    /// Waits for the master to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("the master to exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        status.code().unwrap_or(-1)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling the child we started, by its pid.
        unsafe { libc_kill(self.pid(), sig) };
    }

    pub fn tail(&self) -> String {
        let log = self.site.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!(
            "--- log tail ({}) ---\n{}\n--- stderr ---\n{}",
            self.site.log().display(),
            lines[from..].join("\n"),
            std::fs::read_to_string(self.site.dir.join("stderr.txt")).unwrap_or_default()
        )
    }
}

impl Drop for Instance<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tail());
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: our own child, by pid.
            unsafe { libc_kill(child.id() as i32, 2) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn kill(pid: i32, sig: i32) -> bool {
    assert!(pid > 1);
    // SAFETY: plain kill(2) on a pid the test owns.
    unsafe { libc_kill(pid, sig) == 0 }
}

pub fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// A parsed HTTP response (from the uwsgi socket, the http-socket or nginx).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if response
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        response.body = dechunk(&response.body)?;
    }
    Some(response)
}

/// Decodes a chunked body (nginx chunks responses that carry no Content-Length).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Builds a uwsgi packet with nginx's default params for `method path`.
pub fn uwsgi_packet(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let cl = body.len().to_string();
    let mut vars: Vec<(String, String)> = vec![
        ("QUERY_STRING".into(), query.into()),
        ("REQUEST_METHOD".into(), method.into()),
        ("CONTENT_TYPE".into(), String::new()),
        (
            "CONTENT_LENGTH".into(),
            if body.is_empty() { String::new() } else { cl },
        ),
        ("REQUEST_URI".into(), uri.into()),
        ("PATH_INFO".into(), path.into()),
        ("DOCUMENT_ROOT".into(), "/usr/share/nginx/html".into()),
        ("SERVER_PROTOCOL".into(), "HTTP/1.1".into()),
        ("REQUEST_SCHEME".into(), "http".into()),
        ("REMOTE_ADDR".into(), "127.0.0.1".into()),
        ("REMOTE_PORT".into(), "40000".into()),
        ("SERVER_PORT".into(), "80".into()),
        ("SERVER_NAME".into(), "localhost".into()),
        ("HTTP_HOST".into(), "localhost".into()),
    ];
    for (k, v) in headers {
        vars.push((
            format!("HTTP_{}", k.to_uppercase().replace('-', "_")),
            v.to_string(),
        ));
    }
    let mut block = Vec::new();
    for (k, v) in &vars {
        block.extend_from_slice(&(k.len() as u16).to_le_bytes());
        block.extend_from_slice(k.as_bytes());
        block.extend_from_slice(&(v.len() as u16).to_le_bytes());
        block.extend_from_slice(v.as_bytes());
    }
    let mut packet = vec![0u8];
    packet.extend_from_slice(&(block.len() as u16).to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&block);
    packet.extend_from_slice(body);
    packet
}

/// Sends raw bytes to a unix socket and reads until EOF (10 s limit).
pub fn raw_unix(sock: &Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// One request over the uwsgi protocol, the way nginx sends it.
/// The generation in service (0 while status does not answer).
pub fn generation(site: &Site) -> u64 {
    site.status_json()["generation"].as_u64().unwrap_or(0)
}

/// Waits until generation `g` serves and no reload is in progress.
pub fn wait_generation(site: &Site, g: u64) {
    wait_for(
        &format!("generation {g} serving"),
        Duration::from_secs(30),
        || {
            let s = site.status_json();
            (s["generation"].as_u64() == Some(g)
                && s["reloading"] == false
                && s["phase"] == "running")
                .then_some(())
        },
    );
}

/// Waits (up to `timeout`) for an idle worker whose pid is not in `before`:
/// the replacement of a killed one, once it is ready.
pub fn ready_replacement(site: &Site, before: &[i32], timeout: Duration) -> i32 {
    wait_for("a ready replacement", timeout, || {
        let s = site.status_json();
        s["workers"].as_array()?.iter().find_map(|w| {
            let pid = w["pid"].as_i64()? as i32;
            (!before.contains(&pid) && w["state"] == "idle").then_some(pid)
        })
    })
}

/// Sends requests to the site's socket until worker `pid` answers one (its
/// `X-Worker-Pid`); another worker may take some meanwhile.
pub fn wait_answered_by(site: &Site, pid: i32) {
    wait_for("the replacement to answer", Duration::from_secs(10), || {
        let r = uwsgi_get(&site.sock(), "/").ok()?;
        (r.header("X-Worker-Pid")? == pid.to_string()).then_some(())
    });
}

pub fn uwsgi_get(sock: &Path, uri: &str) -> std::io::Result<Response> {
    let raw = raw_unix(sock, &uwsgi_packet("GET", uri, &[], b""))?;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&raw)))
    })
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(port: u16, method: &str, uri: &str, body: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {uri} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    parse_response(&out).ok_or_else(|| {
        std::io::Error::other(format!("bad response: {:?}", String::from_utf8_lossy(&out)))
    })
}

pub fn http_get(port: u16, uri: &str) -> std::io::Result<Response> {
    http(port, "GET", uri, b"")
}

/// Real nginx in the foreground on a loopback port, `uwsgi_pass` to `sock`.
pub struct Nginx {
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

pub fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is not installed: run scripts/setup-test-deps.sh");
}

impl Nginx {
    pub fn start(sock: &Path) -> Nginx {
        let dir = temp_dir("nginx");
        let port = free_port();
        let params = ["/etc/nginx/uwsgi_params"]
            .iter()
            .find(|p| Path::new(p).exists())
            .copied();
        let include = match params {
            Some(p) => format!("include {p};"),
            None => String::new(),
        };
        let conf = format!(
            "user root;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             client_max_body_size 20m;\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      {include}\n      uwsgi_pass unix:{sock};\n    }}\n  }}\n}}\n",
            dir = dir.display(),
            sock = sock.display(),
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("stderr.txt")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let nginx = Nginx { port, dir, child };
        wait_for("nginx to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        nginx
    }

    pub fn get(&self, uri: &str) -> std::io::Result<Response> {
        http_get(self.port, uri)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = kill(self.child.id() as i32, 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: usize,
    pub failed: Vec<String>,
    /// (elapsed since start, worker pid) of each success.
    pub pids: Vec<(Duration, i32)>,
}

/// Runs `threads` closed-loop clients doing `request` until `stop` is set or
/// `max` seconds pass (bounded in time and count).
pub fn load(
    threads: usize,
    max: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    request: impl Fn() -> std::io::Result<Response> + Send + Sync + 'static,
) -> std::thread::JoinHandle<LoadReport> {
    std::thread::spawn(move || {
        let request = std::sync::Arc::new(request);
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let request = request.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut r = LoadReport::default();
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) && start.elapsed() < max && n < 200_000 {
                        n += 1;
                        match request() {
                            Ok(resp) if resp.status == 200 => {
                                r.ok += 1;
                                if let Some(pid) =
                                    resp.header("X-Worker-Pid").and_then(|p| p.parse().ok())
                                {
                                    r.pids.push((start.elapsed(), pid));
                                }
                            }
                            Ok(resp) => {
                                r.failed
                                    .push(format!("status {} {}", resp.status, resp.text()))
                            }
                            Err(e) => r.failed.push(e.to_string()),
                        }
                    }
                    r
                })
            })
            .collect();
        let mut total = LoadReport::default();
        for h in handles {
            let r = h.join().unwrap();
            total.ok += r.ok;
            total.failed.extend(r.failed);
            total.pids.extend(r.pids);
        }
        total
    })
}

/// The processes whose parent is `parent`, from /proc (zombies included).
pub fn child_pids(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1))
            .and_then(|s| s.parse::<i32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// `ps`'s view of a process: its command line, spaces between the arguments.
pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

/// One IPv4 TCP socket of this network namespace, from /proc/net/tcp.
struct TcpSocket {
    local_port: u16,
    /// The kernel's state number: 0x01 established, 0x0A listening.
    state: u8,
    /// 0 for a connection still in a listener's accept queue: no process has
    /// accepted it yet, so it has no file.
    inode: u64,
}

fn tcp_sockets() -> Vec<TcpSocket> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let port = f.get(1)?.rsplit_once(':')?.1;
            Some(TcpSocket {
                local_port: u16::from_str_radix(port, 16).ok()?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// The connections a loopback TCP listener on `port` has taken in:
/// `(established, accepted)`, where accepted ones are out of the accept queue
/// and held by the server process.
pub fn connections_to(port: u16) -> (usize, usize) {
    let mine: Vec<TcpSocket> = tcp_sockets()
        .into_iter()
        .filter(|s| s.local_port == port && s.state == 0x01)
        .collect();
    let accepted = mine.iter().filter(|s| s.inode != 0).count();
    (mine.len(), accepted)
}

/// Whether process `pid` holds the listening TCP socket on `port` among its
/// file descriptors (false once it has closed it, or has exited).
pub fn holds_listener(pid: i32, port: u16) -> bool {
    let Some(listener) = tcp_sockets()
        .into_iter()
        .find(|s| s.local_port == port && s.state == 0x0A)
    else {
        return false;
    };
    let wanted = format!("socket:[{}]", listener.inode);
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == wanted.as_str())
    })
}

/// The secret `Site::new` puts in `uwsgi_env`: it must never show in stats,
/// status, logs or check output.
pub const CANARY: &str = "canary-secret-7f3a9";

/// Reads a stats socket until EOF, as uwsgitop does, and parses it; the
/// document must not carry the site's secret.
pub fn read_stats(path: &Path) -> serde_json::Value {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(!text.contains(CANARY), "secret in stats: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Workers of the serving generation (per `status --json`) whose state is
/// one of `states`.
pub fn serving_workers_in(status: &serde_json::Value, states: &[&str]) -> usize {
    let generation = status["generation"].as_u64();
    status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w["generation"].as_u64() == generation)
        .filter(|w| states.iter().any(|s| w["state"] == *s))
        .count()
}

/// `amy-emperor check INI` on the site: its exit code and what it printed
/// (stderr, then stdout).
pub fn check_site(site: &Site) -> (Option<i32>, String) {
    let out = site.cli(&["check", site.ini().to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code(), text)
}

/// `check` refuses the site's ini (exit 2), naming `path:line` and `needle`.
pub fn assert_check_refuses(site: &Site, needle: &str) {
    let (code, text) = check_site(site);
    assert_eq!(code, Some(2), "{needle}: {text}");
    assert!(
        text.contains("amy_uwsgi.ini:"),
        "{needle}: path:line in {text}"
    );
    assert!(text.contains(needle), "{needle}: {text}");
}
