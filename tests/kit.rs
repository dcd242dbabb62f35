//! The deployment kit in `examples/`, run as written: the upstart jobs' `exec`
//! lines, the systemd units' `ExecStart`/`ExecReload` with `Type=notify`
//! readiness over a real `NOTIFY_SOCKET` datagram socket, the logrotate
//! `postrotate` script, the nginx site (`nginx -t`, then serving through it),
//! and the container's `ENTRYPOINT` as PID 1 of a new pid namespace (no
//! container engine can pull a base image here) with the Kubernetes probes.
//!
//! Each test lays the examples out under a fake root, rewriting only absolute
//! prefixes (`/etc/uwsgi` → `ROOT/etc/uwsgi`, …), the binary's path, and the
//! users (`amy`/`www-data` → `nobody`/`nogroup`): the command lines themselves
//! are the files' own.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
#[path = "common/vassals.rs"]
mod vassals;

use common::{alive, free_port, kill, repo, request_in_flight, temp_dir, uwsgi_get, wait_for, BIN};
use vassals::{KeptOnFailure, Running, READY};

/// A fake filesystem root holding the amy_site layout.
struct Root {
    dir: PathBuf,
    _kept: KeptOnFailure,
}

fn example(path: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(path)).unwrap()
}

impl Root {
    fn new(name: &str) -> Root {
        let dir = temp_dir(&format!("kit-{name}"));
        let root = Root {
            _kept: KeptOnFailure(dir.clone()),
            dir,
        };
        std::fs::set_permissions(
            &root.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        root
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    /// The example's text with absolute paths moved under the root.
    fn subst(&self, text: &str) -> String {
        let mut t = text.replace("/usr/local/bin/amy-emperor", BIN);
        for prefix in [
            "/etc/uwsgi",
            "/etc/amy-emperor",
            "/etc/letsencrypt",
            "/srv/amy_site",
            "/run/",
            "/var/www/letsencrypt",
        ] {
            t = t.replace(prefix, &self.path(prefix).to_string_lossy());
        }
        t.replace("amy:www-data", "nobody:nogroup")
            .replace("uid = amy", "uid = nobody")
            .replace("gid = amy", "gid = nogroup")
    }

    fn install(&self, example_path: &str, dest: &str) -> PathBuf {
        let to = self.path(dest);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(&to, self.subst(&example(example_path))).unwrap();
        to
    }

    /// /srv/amy_site as the examples expect it: the app (`config.wsgi`), a venv
    /// the unprivileged master can read, `uwsgi_env`, the ini, the static files.
    fn make_site(&self) {
        let site = self.path("/srv/amy_site");
        let config = site.join("amy/config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("__init__.py"), "").unwrap();
        std::fs::copy(
            repo().join("tests/apps/vassal_app.py"),
            config.join("wsgi.py"),
        )
        .unwrap();
        std::fs::create_dir_all(site.join("static_html")).unwrap();
        std::fs::write(site.join("static_html/app.css"), "body { color: teal }\n").unwrap();
        std::fs::write(
            site.join("maintenance.html"),
            example("nginx/maintenance.html"),
        )
        .unwrap();
        // The test venv's interpreter lives under /root (pyenv), which nobody
        // cannot enter; a site's venv is readable by its user.
        let made = Command::new("/usr/bin/python3")
            .args(["-m", "venv", "--without-pip"])
            .arg(site.join("venv"))
            .status()
            .unwrap();
        assert!(made.success(), "this test needs Debian's python3");
        let env = site.join("uwsgi_env");
        std::fs::write(&env, "AMY_CANARY=kit-secret-5e1d\n").unwrap();
        std::os::unix::fs::chown(&env, Some(0), Some(65534)).unwrap();
        std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        self.install("amy_site/amy_uwsgi.ini", "/srv/amy_site/amy_uwsgi.ini");
        // The master runs as nobody after binding: it vacuums its socket and pidfile.
        std::os::unix::fs::chown(&site, Some(65534), Some(65534)).unwrap();
        std::fs::create_dir_all(self.path("/run")).unwrap();
    }

    /// /etc/uwsgi: the emperor ini and AMY's ini linked in as the vassal.
    fn make_emperor(&self) {
        self.install("emperor/emperor.ini", "/etc/uwsgi/emperor.ini");
        let vassals = self.path("/etc/uwsgi/vassals");
        std::fs::create_dir_all(&vassals).unwrap();
        std::os::unix::fs::symlink(
            self.path("/srv/amy_site/amy_uwsgi.ini"),
            vassals.join("amy_uwsgi.ini"),
        )
        .unwrap();
    }

    fn sock(&self) -> PathBuf {
        self.path("/srv/amy_site/amy.sock")
    }

    fn serves(&self) -> Option<()> {
        let r = uwsgi_get(&self.sock(), "/").ok()?;
        (r.status == 200 && r.body == b"Hello, World!\n").then_some(())
    }

    fn log(&self, abs: &str) -> String {
        std::fs::read_to_string(self.path(abs)).unwrap_or_default()
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN).args(args).output().unwrap()
    }

    /// A process started from a kit command line, its output beside the fake
    /// root (kept with it if the test fails).
    fn spawn(&self, what: &str, cmd: Command) -> Running {
        let stem: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Running::spawn(what, cmd, &self.dir, &stem)
    }
}

/// The value of `Key=` in a systemd unit (first occurrence).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// The lines of an upstart job that are not comments.
fn stanzas(job: &str) -> Vec<&str> {
    job.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn command(line: &str) -> Command {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut cmd = Command::new(words[0]);
    cmd.args(&words[1..]);
    cmd
}

#[test]
fn upstart_jobs_run_as_written_and_stop_gracefully_on_their_kill_signal() {
    for (job_file, emperor) in [
        ("upstart/uwsgi-emperor.conf", true),
        ("upstart/amy-emperor.conf", false),
    ] {
        let root = Root::new("upstart");
        root.make_site();
        if emperor {
            root.make_emperor();
        }
        let job = root.subst(&example(job_file));
        let lines = stanzas(&job);
        for stanza in ["start on runlevel [2345]", "respawn", "kill signal TERM"] {
            assert!(lines.contains(&stanza), "{job_file}: no `{stanza}`");
        }
        // Foreground: upstart must track the process it started.
        assert!(!lines.iter().any(|l| l.starts_with("expect")), "{job_file}");
        let timeout: u64 = lines
            .iter()
            .find_map(|l| l.strip_prefix("kill timeout "))
            .expect("kill timeout")
            .parse()
            .unwrap();
        assert!(
            timeout > 60,
            "{job_file}: kill timeout must exceed worker-reload-mercy"
        );
        let exec = lines.iter().find(|l| l.starts_with("exec ")).expect("exec");
        let chdir = lines.iter().find_map(|l| l.strip_prefix("chdir "));
        // Upstart runs `exec` lines with sh when they hold shell syntax; sh's
        // `exec` keeps the pid, as upstart's tracking needs.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(exec);
        if let Some(dir) = chdir {
            cmd.current_dir(dir);
        }
        let mut job_proc = root.spawn(job_file, cmd);
        wait_for(&format!("{job_file}: the site to serve"), READY, || {
            root.serves()
        });
        if emperor {
            assert!(root
                .log("/etc/uwsgi/emperor.log")
                .contains("emperor started"));
            let ini = root.path("/etc/uwsgi/emperor.ini");
            // It serves before its master has seen every worker ready ("booting").
            wait_for("status to show the vassal running", READY, || {
                let st = root.cli(&["status", ini.to_str().unwrap()]);
                (st.status.success()
                    && String::from_utf8_lossy(&st.stdout).contains("amy_uwsgi.ini: running"))
                .then_some(())
            });
        }
        // A slow request in flight when the job is stopped completes.
        let slow = request_in_flight(&root.sock(), 2.0);
        kill(job_proc.pid(), libc::SIGTERM);
        let answer = slow.join().unwrap().expect("the in-flight request");
        assert_eq!(answer.status, 200, "{job_file}");
        assert_eq!(
            job_proc.wait_exit(Duration::from_secs(timeout)),
            Some(0),
            "{job_file}"
        );
        assert!(
            !root.sock().exists(),
            "{job_file}: the socket was not vacuumed"
        );
        let log = root.log("/srv/amy_site/amy.log");
        assert!(!log.contains("kit-secret-5e1d"), "a secret reached the log");
    }
}

/// Receives `sd_notify` datagrams until one has `want` as a line.
fn wait_notify(sock: &UnixDatagram, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {want} on NOTIFY_SOCKET within {timeout:?}"
        );
        sock.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| l == want) {
                return text;
            }
        }
    }
}

#[test]
fn systemd_units_run_as_written_with_notify_readiness_reload_and_stop() {
    for (unit_file, emperor) in [
        ("systemd/uwsgi-emperor.service", true),
        ("systemd/amy-emperor.service", false),
    ] {
        let root = Root::new("systemd");
        root.make_site();
        if emperor {
            root.make_emperor();
        }
        let unit = root.subst(&example(unit_file));
        assert_eq!(unit_value(&unit, "Type"), "notify", "{unit_file}");
        assert_eq!(unit_value(&unit, "NotifyAccess"), "main", "{unit_file}");
        assert_eq!(unit_value(&unit, "KillMode"), "mixed", "{unit_file}");
        assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM", "{unit_file}");
        let notify_path = root.dir.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        // As systemd's /run/systemd/notify: the master sends READY=1 after it
        // dropped to the ini's uid.
        std::fs::set_permissions(
            &notify_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let mut cmd = command(unit_value(&unit, "ExecStart"));
        if let Some(dir) = unit
            .lines()
            .find_map(|l| l.strip_prefix("WorkingDirectory="))
        {
            cmd.current_dir(dir);
        }
        cmd.env("NOTIFY_SOCKET", &notify_path);
        let mut service = root.spawn(unit_file, cmd);
        wait_notify(&notify, "READY=1", READY);
        // READY=1 means the site answers now, not "the process started".
        assert_eq!(
            root.serves(),
            Some(()),
            "{unit_file}: READY=1 before the site served"
        );

        let reload = command(unit_value(&unit, "ExecReload")).output().unwrap();
        assert!(
            reload.status.success(),
            "{unit_file}: ExecReload: {}{}",
            String::from_utf8_lossy(&reload.stdout),
            String::from_utf8_lossy(&reload.stderr)
        );
        assert!(String::from_utf8_lossy(&reload.stdout).contains("serving"));
        assert_eq!(root.serves(), Some(()));

        kill(service.pid(), libc::SIGTERM);
        wait_notify(&notify, "STOPPING=1", Duration::from_secs(10));
        assert_eq!(
            service.wait_exit(Duration::from_secs(60)),
            Some(0),
            "{unit_file}"
        );
        assert!(!root.sock().exists());
    }
}

#[test]
fn logrotate_postrotate_reopens_the_emperor_and_vassal_logs() {
    let root = Root::new("logrotate");
    root.make_site();
    root.make_emperor();
    let conf = root.subst(&example("logrotate/amy-emperor"));
    let emperor_log = root.path("/etc/uwsgi/emperor.log");
    let amy_log = root.path("/srv/amy_site/amy.log");
    assert!(conf.contains(&format!(
        "{} {} {{",
        emperor_log.display(),
        amy_log.display()
    )));
    let script: String = conf
        .split("postrotate")
        .nth(1)
        .and_then(|s| s.split("endscript").next())
        .expect("a postrotate script")
        .to_string();
    let mut cmd = command(&format!(
        "{BIN} start {}",
        root.path("/etc/uwsgi/emperor.ini").display()
    ));
    cmd.current_dir(&root.dir);
    let _emperor = root.spawn("emperor", cmd);
    wait_for("the site to serve", READY, || root.serves());
    // What logrotate does before postrotate: the files move away.
    std::fs::rename(&emperor_log, root.dir.join("emperor.log.1")).unwrap();
    std::fs::rename(&amy_log, root.dir.join("amy.log.1")).unwrap();
    let ran = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(ran.success());
    wait_for("both logs reopened", Duration::from_secs(10), || {
        (emperor_log.exists() && amy_log.exists()).then_some(())
    });
    uwsgi_get(&root.sock(), "/").unwrap();
    wait_for(
        "a request line in the new amy.log",
        Duration::from_secs(10),
        || {
            root.log("/srv/amy_site/amy.log")
                .contains("GET /")
                .then_some(())
        },
    );
}

#[test]
fn the_nginx_site_passes_nginx_t_and_serves_static_app_and_maintenance() {
    let root = Root::new("nginx");
    root.make_site();
    let (http, https) = (free_port(), free_port());
    let site = root
        .subst(&example("nginx/amy.conf"))
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen [::]:80;", "")
        .replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{https} ssl http2;"),
        )
        .replace("listen [::]:443 ssl http2;", "");
    let live = root.path("/etc/letsencrypt/live/amy.example.org");
    std::fs::create_dir_all(&live).unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=amy.example.org",
        ])
        .arg("-keyout")
        .arg(live.join("privkey.pem"))
        .arg("-out")
        .arg(live.join("fullchain.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let conf_dir = root.dir.join("nginx");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("amy.conf"), site).unwrap();
    std::fs::copy("/etc/nginx/uwsgi_params", conf_dir.join("uwsgi_params")).unwrap();
    let d = conf_dir.display();
    std::fs::write(
        conf_dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
             events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/amy.conf;\n}}\n"
        ),
    )
    .unwrap();
    let nginx = common::nginx_binary();
    let t = Command::new(&nginx)
        .arg("-t")
        .arg("-c")
        .arg(conf_dir.join("nginx.conf"))
        .arg("-p")
        .arg(&conf_dir)
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );

    let mut cmd = Command::new(&nginx);
    cmd.arg("-c")
        .arg(conf_dir.join("nginx.conf"))
        .arg("-p")
        .arg(&conf_dir);
    let _nginx = root.spawn("nginx", cmd);
    wait_for("nginx", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", https)).ok()
    });
    let curl = |path: &str| -> (String, String) {
        let out = Command::new("curl")
            .args(["-sk", "-i", "--resolve"])
            .arg(format!("amy.example.org:{https}:127.0.0.1"))
            .arg(format!("https://amy.example.org:{https}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
        (status, text)
    };
    // Down: the maintenance page, not cached.
    let (status, text) = curl("/");
    assert_eq!(status, "502", "{text}");
    assert!(
        text.contains("no-store") && text.to_lowercase().contains("maintenance"),
        "{text}"
    );
    // Static files come from static_html, without the app.
    let (status, text) = curl("/static/app.css");
    assert_eq!(status, "200", "{text}");
    assert!(text.contains("color: teal"));
    // Plain HTTP redirects to HTTPS.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://127.0.0.1:{http}/x"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("301 https://"));
    // Up: the app answers over uwsgi_pass, as the unprivileged nginx worker.
    let mut cmd = command(&format!(
        "{BIN} start {}",
        root.path("/srv/amy_site/amy_uwsgi.ini").display()
    ));
    cmd.current_dir(&root.dir);
    let _app = root.spawn("app", cmd);
    wait_for("the site to serve", READY, || root.serves());
    let (status, text) = curl("/");
    assert_eq!(status, "200", "{text}");
    assert!(text.contains("Hello, World!"));
}

#[test]
fn the_container_entrypoint_runs_as_pid_1_and_the_kubernetes_probes_use_its_state() {
    let root = Root::new("container");
    root.make_site();
    let dockerfile = example("container/Dockerfile");
    // Every file the image copies from examples/ goes where the Dockerfile says.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY examples/"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let from = words[1].trim_start_matches("examples/");
        root.install(from, words[2]);
    }
    let port = free_port();
    let container_ini = root.path("/etc/amy-emperor/container.ini");
    let text = std::fs::read_to_string(&container_ini).unwrap();
    assert!(text.contains("socket = 0.0.0.0:3031"));
    std::fs::write(
        &container_ini,
        text.replace("0.0.0.0:3031", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let vassals = root.path("/etc/amy-emperor/vassals");
    std::fs::create_dir_all(&vassals).unwrap();
    std::os::unix::fs::symlink(
        root.path("/srv/amy_site/amy_uwsgi.ini"),
        vassals.join("amy_uwsgi.ini"),
    )
    .unwrap();
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
    let entrypoint = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&root.subst(entrypoint)).unwrap();
    // PID 1 of its own pid namespace (and /proc), as in a container.
    let mut cmd = Command::new("unshare");
    // --kill-child: if the test dies, so does the "container".
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .args(&argv);
    let k8s = root.subst(&example("kubernetes/amy.yaml"));
    let probe = |name: &str| -> Vec<String> {
        let block = k8s.split(name).nth(1).expect(name);
        let line = block.lines().find(|l| l.contains("command:")).unwrap();
        serde_json::from_str(line.split_once("command:").unwrap().1.trim()).unwrap()
    };
    // The probes must be able to fail: nothing runs yet.
    for name in ["readinessProbe", "livenessProbe"] {
        let argv = probe(name);
        let ran = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!ran.success(), "{name} passed with nothing running");
    }
    let mut container = root.spawn("container", cmd);
    let serving = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        use std::io::{Read, Write};
        s.write_all(&common::uwsgi_packet("GET", "/", &[], b""))
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).ok()?;
        String::from_utf8_lossy(&out)
            .contains("Hello, World!")
            .then_some(())
    };
    wait_for("the container to serve on TCP", READY, serving);
    assert_eq!(root.serves(), Some(()), "amy.sock serves too");
    // The emperor: the only child of unshare, pid 1 inside.
    let emperor = wait_for("the emperor's host pid", Duration::from_secs(10), || {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", container.pid()))
            .ok()?;
        kids.split_whitespace().next()?.parse::<i32>().ok()
    });
    let nspid = std::fs::read_to_string(format!("/proc/{emperor}/status")).unwrap();
    assert!(
        nspid
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "{nspid}"
    );

    // The probes, run inside the container as the kubelet's exec does.
    // The kubelet retries a probe every periodSeconds: the app may still be
    // booting its last workers when it first serves.
    for name in ["readinessProbe", "livenessProbe"] {
        let argv = probe(name);
        wait_for(name, Duration::from_secs(30), || {
            Command::new("nsenter")
                .args(["-t", &emperor.to_string(), "-p", "-m", "--"])
                .args(&argv)
                .status()
                .unwrap()
                .success()
                .then_some(())
        });
    }
    assert!(k8s.contains("kind: Service") && k8s.contains("terminationGracePeriodSeconds: 75"));

    // docker stop: SIGTERM to PID 1; the in-flight request completes, exit 0.
    let slow = request_in_flight(&root.sock(), 2.0);
    kill(emperor, libc::SIGTERM);
    assert_eq!(slow.join().unwrap().expect("in-flight").status, 200);
    assert_eq!(container.wait_exit(Duration::from_secs(75)), Some(0));
    assert!(!alive(emperor));
}

/// What PID 1 does in the container, observed outside one: with
/// `emperor-subreaper`, an orphan of the app is re-parented to the emperor,
/// which reaps it when it exits.
#[test]
fn the_emperor_reaps_orphans_of_the_apps_it_runs() {
    let root = Root::new("reaper");
    root.make_site();
    root.make_emperor();
    let ini = root.path("/etc/uwsgi/emperor.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, text + "emperor-subreaper = true\n").unwrap();
    let cmd = command(&format!("{BIN} start {}", ini.display()));
    let emperor = root.spawn("emperor", cmd);
    wait_for("the site to serve", READY, || root.serves());
    let orphan: i32 = uwsgi_get(&root.sock(), "/orphan")
        .unwrap()
        .text()
        .trim()
        .parse()
        .unwrap();
    let ppid = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    // The nearest subreaper adopts it: the vassal's master (a subreaper for
    // preload's forked workers) — or the emperor, for an orphan of a master.
    let ours = |pid: i32| {
        pid == emperor.pid()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(11).any(|w| w == b"amy-emperor"))
    };
    wait_for(
        "the orphan to be re-parented to its vassal's master or the emperor",
        Duration::from_secs(5),
        || ppid(orphan).filter(|&p| ours(p)).map(|_| ()),
    );
    wait_for(
        "the orphan to be reaped (no zombie)",
        Duration::from_secs(10),
        || (!Path::new(&format!("/proc/{orphan}")).exists()).then_some(()),
    );
    assert_eq!(root.serves(), Some(()));
}

/// What a package installs beside the binary: shell completions and the man
/// page, both generated from the clap definitions. Bash's script is run the
/// way bash's programmable completion calls it.
#[test]
fn completions_complete_subcommands_and_their_options_and_the_man_page_renders() {
    let dir = temp_dir("kit-completions");
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = dir.join("amy-emperor.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // `complete -p` names the function bash would call for `amy-emperor`.
    let driver = r#"source "$1"
f=$(complete -p amy-emperor | sed -E 's/.* -F ([^ ]+) .*/\1/')
complete_line() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
  read -r -a COMP_WORDS <<< "$COMP_LINE"
  [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
  COMPREPLY=()
  "$f" amy-emperor "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  echo "$1 => ${COMPREPLY[*]}"
}
complete_line "amy-emperor st"
complete_line "amy-emperor stop --"
complete_line "amy-emperor status --"
complete_line "amy-emperor start --emp"
"#;
    let ran = Command::new("bash")
        .arg("-c")
        .arg(driver)
        .arg("bash")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ran.stdout);
    let line = |prefix: &str| -> Vec<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{prefix} => ")))
            .unwrap_or_else(|| panic!("no answer for {prefix}: {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        line("amy-emperor st"),
        ["start", "stop", "status"],
        "{text}"
    );
    // A subcommand's own options (what clap_complete#6421 loses for a
    // hyphenated binary name).
    for (prefix, option) in [
        ("amy-emperor stop --", "--now"),
        ("amy-emperor stop --", "--pidfile"),
        ("amy-emperor status --", "--json"),
        ("amy-emperor start --emp", "--emperor"),
    ] {
        assert!(
            line(prefix).iter().any(|o| o == option),
            "{prefix}: no {option}: {text}"
        );
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && s.contains("pidfile"), "{shell}");
    }

    // The man page: man(1) formats it without a warning, with every
    // subcommand, the options and the exit codes and signals clap does not know.
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = dir.join("amy-emperor.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let man = Command::new("man")
        .args(["--warnings=all", "-l"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let (shown, warnings) = (
        String::from_utf8_lossy(&man.stdout),
        String::from_utf8_lossy(&man.stderr),
    );
    assert!(man.status.success() && warnings.is_empty(), "{warnings}");
    for needle in [
        "START",
        "STOP",
        "RELOAD",
        "STATUS",
        "CHECK",
        "COMPLETIONS",
        "EXIT STATUS",
        "SIGNALS",
        "--emperor",
        "--pidfile",
        "SIGUSR2",
    ] {
        assert!(shown.contains(needle), "the man page has no {needle}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
