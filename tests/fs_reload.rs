//! `fs-reload` (core/fsmon.c): a graceful reload when the watched file
//! changes, or, for a directory, when an entry directly in it is created,
//! modified or deleted (uWSGI's non-recursive inotify watch on it).

mod common;

use common::*;

#[test]
fn fs_reload_reloads_on_a_file_change_and_on_entries_of_a_directory() {
    // A directory apart from the site's: its log and pidfile change all the time.
    let code = temp_dir("fs-reload-code");
    let flag = temp_dir("fs-reload-flag").join("deployed");
    std::fs::write(&flag, "1\n").unwrap();
    let extra = format!(
        "fs-reload = {}\nfs-reload = {}\n",
        code.display(),
        flag.display()
    );
    let site = Site::new("fs-reload", "hello", 1, &extra);
    let _inst = site.start();
    wait_generation(&site, 1);

    let entry = code.join("views.py");
    std::fs::write(&entry, "x = 1\n").unwrap(); // created
    wait_generation(&site, 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&entry)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"y = 2\n"))
        .unwrap(); // modified
    wait_generation(&site, 3);
    std::fs::remove_file(&entry).unwrap(); // deleted
    wait_generation(&site, 4);
    std::fs::write(&flag, "2\n").unwrap(); // the watched file itself
    wait_generation(&site, 5);
    assert_eq!(
        site.log_text().matches("reload requested").count(),
        4,
        "{}",
        site.log_text()
    );
    assert_eq!(generation(&site), 5);
    let _ = std::fs::remove_dir_all(&code);
    let _ = std::fs::remove_dir_all(flag.parent().unwrap());
}
