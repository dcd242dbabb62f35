//! Reading one ini into the option list: the main ini, `ini =` and `include =`
//! (`file`, `file:section`, `:section` of the last file read), magic variables
//! substituted over the raw text first, as uWSGI does.

use std::path::PathBuf;

use super::{absolute, AddAs, Expander, Origin};
use crate::config::magic::MagicTable;
use crate::config::{envfile, ini, source, ConfigError, ErrorKind, Warning};

/// Includes nested deeper than this are a loop (uWSGI would recurse until it dies).
const MAX_INCLUDE_DEPTH: usize = 32;

impl Expander<'_> {
    /// Reads one ini (`file`, `file:section` or `:section`) and adds its lines.
    pub(super) fn load_ini(&mut self, given: &str, from: &Origin) -> Result<(), ConfigError> {
        if let Some(scheme) = super::uwsgi_scheme(given) {
            return Err(from.error(
                ErrorKind::Unsupported,
                format!("ini = {given}: config from {scheme}:// is not supported: read a file"),
            ));
        }
        if given == "-" {
            return Err(from.error(
                ErrorKind::Unsupported,
                "ini = -: config from stdin is not supported: read a file",
            ));
        }
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(from.error(
                ErrorKind::Syntax,
                format!("ini = {given}: includes nested too deep (a loop?)"),
            ));
        }
        let (file_part, section) = match given.rfind(':') {
            Some(i) => (
                &given[..i],
                if i + 1 < given.len() {
                    &given[i + 1..]
                } else {
                    "uwsgi"
                },
            ),
            None => (given, "uwsgi"),
        };
        let file = if file_part.is_empty() {
            match &self.last_file {
                Some(f) => f.clone(),
                None => {
                    return Err(from.error(
                        ErrorKind::Syntax,
                        format!("ini = {given}: no ini was loaded before"),
                    ))
                }
            }
        } else {
            file_part.to_string()
        };
        let path = self.cwd().join(&file);
        let top = from.line.is_none();
        // The main ini's errors name it as given; an include's name the line
        // that included it.
        let located = |e: ConfigError| {
            if top {
                ConfigError::new(e.kind, PathBuf::from(&file), None, e.message)
            } else {
                let message = match e.message.strip_prefix("cannot read: ") {
                    Some(rest) => format!("ini = {given}: cannot read {file}: {rest}"),
                    None => format!("ini = {given}: {file} {}", e.message),
                };
                from.error(e.kind, message)
            }
        };
        let cwd = self.cwd().to_path_buf();
        self.magic.fill_for_file(given, &cwd).map_err(|e| {
            located(ConfigError::new(
                ErrorKind::Read,
                &path,
                None,
                format!("cannot read: {e}"),
            ))
        })?;
        let raw = source::read_regular(&path, source::MAX_INI_SIZE, "ini file").map_err(located)?;
        self.warnings.extend(
            envfile::check_writable(&path, "ini file", self.root)
                .map_err(|e| located(ConfigError::new(e.kind, &path, None, e.message)))?
                .into_iter()
                .map(|w| Warning {
                    path: PathBuf::from(&file),
                    ..w
                }),
        );
        self.last_file = Some(file.clone());
        self.inis_read.push(absolute(&path));
        // The main ini is named as given; an included one by its full path, so
        // a message about it never depends on the reader knowing the cwd.
        let display = if top {
            PathBuf::from(&file)
        } else {
            absolute(&path)
        };
        let body: &[u8] = if ini::has_bom(&raw) {
            self.warnings.push(Warning {
                path: display.clone(),
                line: Some(1),
                message:
                    "UTF-8 byte-order mark skipped (uWSGI would ignore the whole first section)"
                        .into(),
            });
            &raw[3..]
        } else {
            &raw
        };
        // The read, and the magic substitution sized before it is built (a
        // `%d` is a whole directory path: 2 bytes can become 4 KiB).
        let substituted = magic_len(&self.magic, body);
        self.charge(raw.len() + substituted, from)?;
        let text = self.magic.substitute(body);
        let parsed = ini::parse(&text, section);
        if top && body.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::new(
                ErrorKind::Empty,
                display,
                None,
                "the ini file is empty",
            ));
        }
        if !parsed.found {
            // uWSGI warns and starts with nothing from the file: for the main
            // ini that is a site with no config at all.
            if top {
                return Err(ConfigError::new(
                    ErrorKind::Empty,
                    display,
                    None,
                    format!(
                        "no [{section}] section: uWSGI would start with nothing from this file"
                    ),
                ));
            }
            self.warnings.push(Warning {
                path: display.clone(),
                line: None,
                message: format!("section [{section}] not found"),
            });
        }
        self.depth += 1;
        let result = (|| {
            for entry in parsed.entries {
                let origin = Origin {
                    path: display.clone(),
                    line: Some(entry.line),
                    env_line: None,
                };
                self.add_option(entry.key, entry.value, origin, AddAs::Option)?;
            }
            Ok(())
        })();
        self.depth -= 1;
        result
    }
}

/// The length `MagicTable::substitute(text)` will have, without building it.
fn magic_len(magic: &MagicTable, text: &[u8]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' && i + 1 < text.len() {
            len += magic.get(text[i + 1]).len();
            i += 2;
        } else {
            len += 1;
            i += 1;
        }
    }
    len
}

#[cfg(test)]
mod tests {
    use super::super::testing::{dir, kv, run, write};
    use super::super::ExecPolicy;
    use crate::config::ErrorKind;

    #[test]
    fn an_include_is_spliced_in_place_and_colon_section_reads_the_last_file() {
        let d = dir("splice");
        write(
            &d,
            "a.ini",
            "[uwsgi]\nbefore = 1\nini = b.ini:one\nini = :two\nafter = 1\n",
        );
        write(&d, "b.ini", "[one]\nx = 1\n[two]\ny = 2\n");
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        assert_eq!(
            kv(&r),
            vec![
                ("before", "1"),
                ("ini", "b.ini:one"),
                ("x", "1"),
                ("ini", ":two"),
                ("y", "2"),
                ("after", "1")
            ]
        );
    }

    #[test]
    fn include_takes_only_ini_files_and_names_the_including_line() {
        let d = dir("include");
        write(&d, "a.ini", "[uwsgi]\ninclude = b.yaml\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(
            e.to_string(),
            "a.ini:2: include = b.yaml: only .ini files can be included"
        );
        write(&d, "a.ini", "[uwsgi]\n\nini = gone.ini\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Read);
        assert_eq!(
            e.to_string(),
            "a.ini:3: ini = gone.ini: cannot read gone.ini: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn an_include_from_a_uwsgi_scheme_is_refused_by_name() {
        let d = dir("scheme");
        write(&d, "a.ini", "[uwsgi]\nini = exec://cat b.ini\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Run).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(
            e.to_string(),
            "a.ini:2: ini = exec://cat b.ini: config from exec:// is not supported: read a file"
        );
        write(&d, "a.ini", "[uwsgi]\nx = @(data://aGk=)\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Run).err().unwrap();
        assert_eq!(
            e.to_string(),
            "a.ini:2: @(data://aGk=): only files and exec:// are read by @(), not data://"
        );
    }

    #[test]
    fn an_include_loop_is_an_error_not_a_stack_overflow() {
        let d = dir("loop");
        write(&d, "a.ini", "[uwsgi]\nini = a.ini\n");
        let e = run(&d, "a.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(e.kind, ErrorKind::Syntax);
        assert!(
            e.message.ends_with("includes nested too deep (a loop?)"),
            "{e}"
        );
    }

    #[test]
    fn the_main_ini_must_hold_the_section_an_include_need_not() {
        let d = dir("section");
        write(&d, "empty.ini", " \n\n");
        let e = run(&d, "empty.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(
            (e.kind, e.to_string().as_str()),
            (ErrorKind::Empty, "empty.ini: the ini file is empty")
        );
        write(&d, "other.ini", "[app]\nx = 1\n");
        let e = run(&d, "other.ini", &[], ExecPolicy::Refuse).err().unwrap();
        assert_eq!(
            e.to_string(),
            "other.ini: no [uwsgi] section: uWSGI would start with nothing from this file"
        );
        write(&d, "a.ini", "[uwsgi]\nini = other.ini\n");
        let r = run(&d, "a.ini", &[], ExecPolicy::Refuse).unwrap();
        assert!(r
            .warnings
            .iter()
            .any(|w| w.message == "section [uwsgi] not found"));
    }
}
