//! The ini reader: any bytes, any section name taken from the input.
#![no_main]

use amy_emperor::config::ini;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ini::has_bom(data);
    let _ = ini::parse(data, "uwsgi");
    // A section name from the first line, as `--ini file:section` gives one.
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        if let Ok(section) = std::str::from_utf8(&data[..nl]) {
            let _ = ini::parse(&data[nl + 1..], section);
        }
    }
});
