//! Reading a config file (ini, include, env file) without trusting what the
//! path names: it is opened with `O_NONBLOCK` (a FIFO or a tty cannot hang a
//! reload), `fstat`ed before any read (a FIFO, a device or a directory is
//! refused), and read up to a documented size.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::{ConfigError, ErrorKind};

/// The largest ini amy-emperor reads: real ones are a few KiB; past this it is
/// a wrong path (a log, a dump), not a config.
pub const MAX_INI_SIZE: u64 = 4 * 1024 * 1024;

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them.
/// `what` names the file in messages ("ini file", "env file").
pub fn read_regular(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, ConfigError> {
    let err = |kind, message: String| ConfigError::new(kind, path, None, message);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| err(ErrorKind::Read, format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| err(ErrorKind::Read, format!("cannot read: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(err(
            ErrorKind::NotAFile,
            format!("is {}, not an {what}", kind_of(&meta.file_type())),
        ));
    }
    if meta.len() > limit {
        return Err(err(
            ErrorKind::TooLarge,
            format!(
                "{what} is {} bytes, larger than the {limit} bytes allowed",
                meta.len()
            ),
        ));
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    // A file that grows while we read is still bounded.
    file.take(limit + 1)
        .read_to_end(&mut raw)
        .map_err(|e| err(ErrorKind::Read, format!("cannot read: {e}")))?;
    if raw.len() as u64 > limit {
        return Err(err(
            ErrorKind::TooLarge,
            format!("{what} is larger than the {limit} bytes allowed"),
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("amy-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifo_directory_and_device_are_refused_without_blocking() {
        let d = dir("kinds");
        let fifo = d.join("x.ini");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_regular(&fifo, MAX_INI_SIZE, "ini file").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotAFile);
        assert_eq!(
            e.to_string(),
            format!("{}: is a FIFO, not an ini file", fifo.display())
        );
        let e = read_regular(&d, MAX_INI_SIZE, "ini file").unwrap_err();
        assert_eq!(e.message, "is a directory, not an ini file");
        let e = read_regular(Path::new("/dev/zero"), MAX_INI_SIZE, "ini file").unwrap_err();
        assert_eq!(e.message, "is a character device, not an ini file");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn size_limit_and_missing_file() {
        let d = dir("size");
        let f = d.join("big.ini");
        std::fs::write(&f, vec![b'#'; 11]).unwrap();
        let e = read_regular(&f, 10, "ini file").unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert_eq!(
            e.message,
            "ini file is 11 bytes, larger than the 10 bytes allowed"
        );
        assert_eq!(read_regular(&f, 11, "ini file").unwrap().len(), 11);
        let e = read_regular(&d.join("nope"), 10, "ini file").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Read);
        assert!(e.message.starts_with("cannot read: "), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
