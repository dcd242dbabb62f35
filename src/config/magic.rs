//! Magic variables (`%d`, `%n`, `%p`, …): uWSGI's byte table, substituted over the
//! raw text of each ini file before it is split into lines.
//!
//! Every one of the 256 entries exists; those uWSGI does not define are the empty
//! string, so an unknown `%Y` silently disappears. `%%` gives `%`, and `%(` is kept
//! so placeholders survive to the later `%(name)` pass.

use std::path::{Path, PathBuf};

/// What the table needs from the process, fixed once per load.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    /// `%v`: the start-up cwd.
    pub cwd: PathBuf,
    pub hostname: String,
    pub cpus: u32,
    pub uid: u32,
    pub user: Option<String>,
    pub gid: u32,
    pub group: Option<String>,
    pub unix_time: u64,
    pub unix_micros: u64,
}

impl ProcessFacts {
    pub fn current(cwd: &Path) -> ProcessFacts {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        ProcessFacts {
            cwd: cwd.to_path_buf(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            uid: uid.as_raw(),
            user: nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map(|u| u.name),
            gid: gid.as_raw(),
            group: nix::unistd::Group::from_gid(gid)
                .ok()
                .flatten()
                .map(|g| g.name),
            unix_time: now.as_secs(),
            unix_micros: now.as_micros() as u64,
        }
    }
}

/// uWSGI's `magic_table`: one string per byte value.
#[derive(Debug, Clone)]
pub struct MagicTable {
    entries: Vec<String>,
    /// The upper-case copies (`%O %D …`) are taken from the first file only.
    first_round_done: bool,
}

impl MagicTable {
    pub fn new(facts: &ProcessFacts) -> MagicTable {
        let mut entries = vec![String::new(); 256];
        entries[b'%' as usize] = "%".into();
        entries[b'(' as usize] = "%(".into();
        entries[b'v' as usize] = facts.cwd.to_string_lossy().into_owned();
        entries[b'h' as usize] = facts.hostname.clone();
        entries[b't' as usize] = facts.unix_time.to_string();
        entries[b'T' as usize] = facts.unix_micros.to_string();
        entries[b'V' as usize] = env!("CARGO_PKG_VERSION").into();
        entries[b'k' as usize] = facts.cpus.to_string();
        entries[b'[' as usize] = "\x1b".into();
        entries[b'u' as usize] = facts.uid.to_string();
        entries[b'U' as usize] = facts.user.clone().unwrap_or_else(|| facts.uid.to_string());
        entries[b'g' as usize] = facts.gid.to_string();
        entries[b'G' as usize] = facts.group.clone().unwrap_or_else(|| facts.gid.to_string());
        if let Ok(exe) = std::env::current_exe() {
            entries[b'b' as usize] = exe.to_string_lossy().into_owned();
        }
        MagicTable {
            entries,
            first_round_done: false,
        }
    }

    pub fn get(&self, c: u8) -> &str {
        &self.entries[c as usize]
    }

    fn set(&mut self, c: u8, v: impl Into<String>) {
        self.entries[c as usize] = v.into();
    }

    /// `config_magic_table_fill`: the per-file entries for `given` (as written,
    /// `file:section` allowed). `cwd` is where relative names resolve. Fails when
    /// the file does not exist (uWSGI's `realpath` failure, exit 1).
    pub fn fill_for_file(&mut self, given: &str, cwd: &Path) -> Result<(), std::io::Error> {
        let (file, section) = match given.rfind(':') {
            Some(i) => (&given[..i], Some(&given[i + 1..])),
            None => (given, None),
        };
        // uWSGI cuts the `:section` off while it reads, so %o is the file part.
        self.set(b'o', file);
        if !file.is_empty() {
            let joined = cwd.join(file);
            let is_link = std::fs::symlink_metadata(&joined)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            // A symlink is not resolved: %d is the link's directory [uwsgi.md 1.6].
            let full = if is_link {
                if file.starts_with('/') {
                    file.to_string()
                } else {
                    format!("{}/{}", cwd.display(), file)
                }
            } else {
                std::fs::canonicalize(&joined)?
                    .to_string_lossy()
                    .into_owned()
            };
            self.set(b'j', djb33x_hex(full.as_bytes()));
            if let Ok(meta) = std::fs::symlink_metadata(&full) {
                use std::os::unix::fs::MetadataExt;
                self.set(b'i', meta.ino().to_string());
            }
            let slash = full.rfind('/').map_or(0, |i| i + 1);
            let name = full[slash..].to_string();
            let dir = full[..slash].to_string();
            let dir_trimmed = dir.strip_suffix('/').unwrap_or(&dir);
            let c = match dir_trimmed.rfind('/') {
                Some(i) => dir_trimmed[i + 1..].to_string(),
                None => String::new(),
            };
            for d in b'0'..=b'9' {
                self.set(d, "");
            }
            for (i, part) in dir_trimmed
                .split('/')
                .filter(|p| !p.is_empty())
                .take(10)
                .enumerate()
            {
                self.set(b'0' + i as u8, part);
            }
            let (n, e) = match name.rfind('.') {
                Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
                None => (name.clone(), String::new()),
            };
            self.set(b'p', full.clone());
            self.set(b's', name);
            self.set(b'd', dir);
            self.set(b'c', c);
            self.set(b'n', n);
            self.set(b'e', e);
        }
        self.set(b'x', section.unwrap_or(""));
        if !self.first_round_done {
            for (upper, lower) in [
                (b'O', b'o'),
                (b'D', b'd'),
                (b'S', b's'),
                (b'P', b'p'),
                (b'C', b'c'),
                (b'E', b'e'),
                (b'N', b'n'),
                (b'X', b'x'),
                (b'I', b'i'),
                (b'J', b'j'),
            ] {
                let v = self.get(lower).to_string();
                self.set(upper, v);
            }
            self.first_round_done = true;
        }
        Ok(())
    }

    /// `magic_sub`: one left-to-right pass; `%X` becomes the entry for `X`.
    pub fn substitute(&self, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            if text[i] == b'%' && i + 1 < text.len() {
                out.extend_from_slice(self.get(text[i + 1]).as_bytes());
                i += 2;
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        out
    }
}

/// `%j`: uWSGI's djb33x hash of `%p`, its four bytes in memory order as hex.
fn djb33x_hex(key: &[u8]) -> String {
    let mut hash: u32 = 5381;
    for &b in key {
        // uWSGI hashes `char`, signed on x86: sign-extend like C does.
        hash = (hash.wrapping_shl(5).wrapping_add(hash)) ^ (b as i8 as i32 as u32);
    }
    hash.to_ne_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cwd: &Path) -> ProcessFacts {
        ProcessFacts {
            cwd: cwd.to_path_buf(),
            hostname: "host1".into(),
            cpus: 4,
            uid: 0,
            user: Some("root".into()),
            gid: 0,
            group: Some("root".into()),
            unix_time: 1,
            unix_micros: 2,
        }
    }

    #[test]
    fn file_entries_follow_uwsgi() {
        let dir = tempdir();
        let site = dir.join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("amy_uwsgi.ini"), "").unwrap();
        let mut t = MagicTable::new(&facts(&dir));
        t.fill_for_file("site/amy_uwsgi.ini", &dir).unwrap();
        let real = std::fs::canonicalize(site.join("amy_uwsgi.ini")).unwrap();
        assert_eq!(t.get(b'p'), real.to_str().unwrap());
        assert!(t.get(b'd').ends_with("/site/"));
        assert_eq!(t.get(b's'), "amy_uwsgi.ini");
        assert_eq!(t.get(b'n'), "amy_uwsgi");
        assert_eq!(t.get(b'e'), "ini");
        assert_eq!(t.get(b'c'), "site");
        assert_eq!(t.get(b'o'), "site/amy_uwsgi.ini");
        assert_eq!(t.get(b'x'), "");
        assert_eq!(t.get(b'h'), "host1");
        assert_eq!(t.get(b'k'), "4");
        assert_eq!(t.get(b'D'), t.get(b'd'));
    }

    #[test]
    fn section_suffix_sets_x_and_missing_file_fails() {
        let dir = tempdir();
        std::fs::write(dir.join("a.ini"), "").unwrap();
        let mut t = MagicTable::new(&facts(&dir));
        t.fill_for_file("a.ini:app1", &dir).unwrap();
        assert_eq!(t.get(b'x'), "app1");
        assert_eq!(t.get(b'o'), "a.ini");
        t.fill_for_file(":app2", &dir).unwrap();
        assert_eq!(t.get(b'x'), "app2");
        assert!(t.get(b'p').ends_with("/a.ini"));
        assert!(t.fill_for_file("nope.ini", &dir).is_err());
    }

    #[test]
    fn symlinked_ini_keeps_the_link_directory() {
        let dir = tempdir();
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::create_dir_all(dir.join("vassals")).unwrap();
        std::fs::write(dir.join("real/app.ini"), "").unwrap();
        std::os::unix::fs::symlink(dir.join("real/app.ini"), dir.join("vassals/app.ini")).unwrap();
        let mut t = MagicTable::new(&facts(&dir));
        t.fill_for_file("vassals/app.ini", &dir).unwrap();
        assert!(t.get(b'd').ends_with("/vassals/"), "{}", t.get(b'd'));
    }

    #[test]
    fn substitution_empties_unknown_and_keeps_percent_paren() {
        let dir = tempdir();
        let t = MagicTable::new(&facts(&dir));
        let out = t.substitute(b"a%Yb %% %(x) %h %");
        assert_eq!(String::from_utf8(out).unwrap(), "ab % %(x) host1 %");
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "amy-magic-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
