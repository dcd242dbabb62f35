//! `--show-config`: the resolved list in uWSGI's block format.
//!
//! The block is what `uwsgi --show-config --ini X` prints, so it starts with the
//! two command-line options uWSGI lists first (`show-config = true`, then
//! `ini = X`) and has every option in list order, immediate ones included.
//! `env` values are secrets: printed as `NAME=***` unless asked otherwise.

pub const BEGIN: &str = ";uWSGI instance configuration";
pub const END: &str = ";end of configuration";

pub fn render(resolved: &[(String, String)], show_secrets: bool) -> String {
    let mut out = format!("\n{BEGIN}\n[uwsgi]\n");
    // `show-config` is a command-line option: after the options taken from
    // `UWSGI_*` environment variables (which uWSGI parses first), just before
    // the `ini` the command line names.
    let command_line = resolved
        .iter()
        .position(|(key, _)| key == "ini")
        .unwrap_or(0);
    for (i, (key, value)) in resolved.iter().enumerate() {
        if i == command_line {
            out.push_str("show-config = true\n");
        }
        let shown = if key == "env" && !show_secrets {
            redact(value)
        } else {
            value.clone()
        };
        out.push_str(&format!("{key} = {shown}\n"));
    }
    if resolved.is_empty() {
        out.push_str("show-config = true\n");
    }
    out.push_str(END);
    out.push_str("\n\n");
    out
}

/// The resolved list with every secret redacted as [`render`] prints it by
/// default: what the worker's `uwsgi.opt` shows (an app or an APM agent may
/// log it whole). `putenv:` hook actions carry values too.
pub fn redacted(resolved: &[(String, String)]) -> Vec<(String, String)> {
    resolved
        .iter()
        .map(|(key, value)| {
            let shown = if key == "env" {
                redact(value)
            } else if let Some(rest) = value
                .strip_prefix("putenv:")
                .filter(|_| key.starts_with("hook-"))
            {
                format!("putenv:{}", redact(rest))
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

fn redact(value: &str) -> String {
    match value.split_once('=') {
        Some((name, _)) => format!("{name}=***"),
        None if value.is_empty() => String::new(),
        None => "***".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn block_matches_uwsgi_layout_and_redacts_env() {
        let r = vec![
            kv("ini", "a.ini"),
            kv("master", ""),
            kv("env", "SECRET_KEY=abc=d"),
            kv("env", ""),
        ];
        let out = render(&r, false);
        assert_eq!(
            out,
            "\n;uWSGI instance configuration\n[uwsgi]\nshow-config = true\nini = a.ini\nmaster = \nenv = SECRET_KEY=***\nenv = \n;end of configuration\n\n"
        );
        assert!(render(&r, true).contains("env = SECRET_KEY=abc=d\n"));
        assert!(!render(&[kv("env", "oops-no-equals")], false).contains("oops"));
    }

    #[test]
    fn redacted_hides_env_and_putenv_values_only() {
        let r = vec![
            kv("env", "SECRET_KEY=abc"),
            kv("hook-pre-app", "putenv:TOKEN=xyz"),
            kv("exec-pre-app", "putenv:NOT_A_HOOK_ACTION"),
            kv("module", "app"),
        ];
        assert_eq!(
            redacted(&r),
            vec![
                kv("env", "SECRET_KEY=***"),
                kv("hook-pre-app", "putenv:TOKEN=***"),
                kv("exec-pre-app", "putenv:NOT_A_HOOK_ACTION"),
                kv("module", "app"),
            ]
        );
    }
}
