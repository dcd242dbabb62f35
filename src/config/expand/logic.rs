//! Config logic (`uwsgi_logic_opt_*`): an open `for*`/`if-*` block re-emits
//! each captured option once per item, or drops it.

use std::path::Path;

use super::{absolute, AddAs, EnvLine, Expander, Logic, Origin};
use crate::config::keys::{self, LogicKind};
use crate::config::{envfile, ConfigError, ErrorKind};

impl Expander<'_> {
    /// Runs the open logic block on one captured option (`uwsgi_logic_opt_*`).
    pub(super) fn run_logic(
        &mut self,
        logic: &Logic,
        key: &str,
        value: &str,
        origin: &Origin,
    ) -> Result<(), ConfigError> {
        let data = logic.arg.as_str();
        let emit = |this: &mut Self, with: &str, env_line: Option<EnvLine>| {
            // Accounted for before it is built: a long body times many items.
            let built = value.len() + value.matches("%(_)").count() * with.len();
            this.charge(built, origin)?;
            let origin = Origin {
                env_line,
                ..origin.clone()
            };
            this.add_option(
                key.to_string(),
                value.replace("%(_)", with),
                origin,
                AddAs::Option,
            )
        };
        let (name, expected) = match data.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (data, None),
        };
        match logic.kind {
            LogicKind::For => {
                for item in data.split(' ').filter(|s| !s.is_empty()) {
                    emit(self, item, None)?;
                }
            }
            LogicKind::ForTimes => {
                for i in 1..=keys::atoi(data).max(0) {
                    emit(self, &i.to_string(), None)?;
                }
            }
            LogicKind::ForGlob => {
                for item in glob(data, self.cwd()) {
                    emit(self, &item, None)?;
                }
            }
            LogicKind::ForReadline => {
                let path = self.cwd().join(data);
                // uWSGI skips the loop and carries on: so do we, so that the
                // option list (`--show-config`) stays uWSGI's, but the load fails.
                let lines = match self.read_env_file_for_loop(&path, &logic.origin) {
                    Ok(lines) => lines,
                    Err(e) => {
                        self.deferred.get_or_insert(e);
                        Vec::new()
                    }
                };
                for (i, line) in lines.into_iter().enumerate() {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let env_line = EnvLine {
                        path: path.clone(),
                        line: i + 1,
                        raw: line,
                    };
                    emit(self, &text, Some(env_line))?;
                }
            }
            LogicKind::IfEnv | LogicKind::IfNotEnv => {
                let found = self.getenv(name);
                let matches = match (&found, expected) {
                    (Some(v), Some(e)) => v == e,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if matches == (logic.kind == LogicKind::IfEnv) {
                    match found {
                        Some(v) => emit(self, &v, None)?,
                        None => self.add_option(
                            key.into(),
                            value.into(),
                            origin.clone(),
                            AddAs::Option,
                        )?,
                    }
                }
            }
            LogicKind::IfOpt | LogicKind::IfNotOpt => {
                let found = self.first_value(name);
                let matches = match (&found, expected) {
                    (Some(v), Some(e)) => v == e,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if matches == (logic.kind == LogicKind::IfOpt) {
                    match found {
                        Some(v) => emit(self, &v, None)?,
                        None => self.add_option(
                            key.into(),
                            value.into(),
                            origin.clone(),
                            AddAs::Option,
                        )?,
                    }
                }
            }
            LogicKind::IfExists | LogicKind::IfNotExists => {
                let exists = readable(&self.cwd().join(data));
                if exists == (logic.kind == LogicKind::IfExists) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfFile | LogicKind::IfNotFile => {
                let is = std::fs::metadata(self.cwd().join(data))
                    .map(|m| m.is_file())
                    .unwrap_or(false);
                if is == (logic.kind == LogicKind::IfFile) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfDir | LogicKind::IfNotDir => {
                let is = std::fs::metadata(self.cwd().join(data))
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if is == (logic.kind == LogicKind::IfDir) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfPlugin | LogicKind::IfNotPlugin => {
                if keys::plugin_is_embedded(data) == (logic.kind == LogicKind::IfPlugin) {
                    emit(self, data, None)?;
                }
            }
            LogicKind::IfHostname | LogicKind::IfNotHostname => {
                if (self.facts.hostname == data) == (logic.kind == LogicKind::IfHostname) {
                    emit(self, data, None)?;
                }
            }
            // A load is never a uWSGI re-exec.
            LogicKind::IfReload => {}
            LogicKind::IfNotReload => {
                self.add_option(key.into(), value.into(), origin.clone(), AddAs::Option)?
            }
        }
        Ok(())
    }

    /// The lines `for-readline` iterates over. A file that cannot be opened is
    /// an error: uWSGI logs it, drops the loop body and starts anyway, and the
    /// app then runs without its secrets (a Django site up without SECRET_KEY or
    /// its database password is worse than one that refuses to start).
    fn read_env_file_for_loop(
        &mut self,
        path: &Path,
        opener: &Origin,
    ) -> Result<Vec<Vec<u8>>, ConfigError> {
        let raw = envfile::read_bytes(path).map_err(|e| {
            let shown = path
                .strip_prefix(self.cwd())
                .unwrap_or(path)
                .display()
                .to_string();
            let reason = e.message.strip_prefix("cannot read: ").unwrap_or(&e.message);
            let mut message = format!(
                "for-readline = {shown}: cannot open: {reason}; uWSGI would skip the loop and start without these variables"
            );
            if shown.contains("%(") || shown.contains("$(") || shown.contains("@(") {
                message.push_str(
                    "; placeholders, $(VAR) and @(file) are not expanded in for-readline paths: use %d or an absolute path",
                );
            }
            opener.error(e.kind, message)
        })?;
        let items = envfile::readline_items(&raw);
        let vars = items
            .iter()
            .filter(|l| {
                let t = l.trim_ascii_start();
                !t.starts_with(b"#") && t.contains(&b'=')
            })
            .count();
        if vars > envfile::MAX_VARS {
            return Err(opener.error(
                ErrorKind::TooLarge,
                format!(
                    "for-readline = {}: more than {} variables in one env file",
                    path.display(),
                    envfile::MAX_VARS
                ),
            ));
        }
        let abs = absolute(path);
        if self.checked_env_files.insert(abs.clone()) {
            self.warnings
                .extend(envfile::check_permissions(&abs, self.root)?);
            self.env_files_read.push(abs);
        }
        Ok(items)
    }
}

/// `access(path, R_OK)`, what uWSGI's `if-exists` asks.
fn readable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::R_OK).is_ok()
}

/// `glob(pattern, GLOB_MARK | GLOB_NOCHECK)`, relative patterns against `cwd`.
fn glob(pattern: &str, cwd: &Path) -> Vec<String> {
    let (full, prefix) = if pattern.starts_with('/') {
        (pattern.to_string(), None)
    } else {
        let prefix = format!("{}/", cwd.display());
        (format!("{prefix}{pattern}"), Some(prefix))
    };
    let Ok(c_pattern) = std::ffi::CString::new(full) else {
        return vec![pattern.to_string()];
    };
    let mut results = Vec::new();
    // SAFETY: `glob_t` is plain data that glob() fills in; zeroed is its documented
    // initial state. The pattern is a valid NUL-terminated string, and globfree
    // releases what glob allocated exactly once.
    unsafe {
        let mut g: libc::glob_t = std::mem::zeroed();
        let rc = libc::glob(
            c_pattern.as_ptr(),
            libc::GLOB_MARK | libc::GLOB_NOCHECK,
            None,
            &mut g,
        );
        if rc == 0 {
            for k in 0..g.gl_pathc {
                let p = *g.gl_pathv.add(k);
                if !p.is_null() {
                    let s = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
                    results.push(match &prefix {
                        Some(pre) => s
                            .strip_prefix(pre.as_str())
                            .map(str::to_string)
                            .unwrap_or(s),
                        None => s,
                    });
                }
            }
        }
        libc::globfree(&mut g);
    }
    results
}

#[cfg(test)]
mod tests {
    use super::super::testing::{dir, kv, run, write};
    use super::super::ExecPolicy;
    use crate::config::ErrorKind;

    #[test]
    fn loops_re_emit_each_captured_option_per_item() {
        let d = dir("loops");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nfor = a  b\nx = %(_)\nendfor\nfor-times = 2\ny = %(_)\nend-for =\n",
        );
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        assert_eq!(
            kv(&r),
            vec![
                ("for", "a  b"),
                ("x", "a"),
                ("x", "b"),
                ("endfor", ""),
                ("for-times", "2"),
                ("y", "1"),
                ("y", "2"),
                ("end-for", "")
            ]
        );
    }

    #[test]
    fn conditions_keep_or_drop_the_block() {
        let d = dir("ifs");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nif-env = MODE=prod\np = %(_)\nendif\nif-env = MODE=dev\nd = 1\nendif\nif-not-exists = nofile\nm = %(_)\nendif\n",
        );
        let r = run(&d, "a.ini", &[("MODE", "prod")], ExecPolicy::Refuse).unwrap();
        let kv = kv(&r);
        assert!(kv.contains(&("p", "prod")));
        assert!(!kv.iter().any(|(k, _)| *k == "d"));
        assert!(kv.contains(&("m", "nofile")));
    }

    #[test]
    fn a_missing_for_readline_file_keeps_uwsgis_list_but_is_deferred_as_an_error() {
        let d = dir("readline");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nfor-readline = nope_env\nenv = %(_)\nendfor =\nz = 1\n",
        );
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        assert_eq!(
            kv(&r),
            vec![("for-readline", "nope_env"), ("endfor", ""), ("z", "1")]
        );
        let e = r.deferred.unwrap();
        assert_eq!(e.kind, ErrorKind::Read);
        assert_eq!(
            e.to_string(),
            "a.ini:2: for-readline = nope_env: cannot open: No such file or directory (os error 2); uWSGI would skip the loop and start without these variables"
        );
    }

    #[test]
    fn an_env_file_with_too_many_variables_is_refused_before_any_spawn() {
        let d = dir("toomany");
        let text: String = (0..=crate::config::envfile::MAX_VARS)
            .map(|i| format!("V{i}=1\n"))
            .collect();
        write(&d, "env", &text);
        write(
            &d,
            "a.ini",
            "[uwsgi]\nfor-readline = env\nenv = %(_)\nendfor =\n",
        );
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        let e = r.deferred.unwrap();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(
            e.message
                .ends_with("more than 4096 variables in one env file"),
            "{e}"
        );
    }

    #[test]
    fn logic_cannot_nest() {
        let d = dir("nest");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nfor = a\nif-env = HOME\nx = 1\nendif\n",
        );
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(
            e.to_string(),
            "a.ini:3: recursive logic in options is not supported (option = if-env)"
        );
    }
}
