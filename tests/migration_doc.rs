//! docs/migrating-from-uwsgi.md cannot drift from the code: its key lists are
//! generated here from the key table (`src/config/key_classes.txt`, the one
//! `config` loads) and the emperor's own table (`emperor::config`), and this
//! test fails when the document says anything else. Regenerate with
//! `AMY_UPDATE_DOCS=1 cargo test --test migration_doc`.

use std::collections::BTreeMap;

use amy_emperor::emperor::config as emperor_keys;

const DOC: &str = "docs/migrating-from-uwsgi.md";
const TABLE: &str = include_str!("../src/config/key_classes.txt");

/// `- reason: `k1`, `k2`` lines, one per distinct reason, keys sorted.
fn grouped(entries: impl IntoIterator<Item = (String, String)>) -> String {
    let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, reason) in entries {
        by_reason.entry(reason).or_default().push(key);
    }
    let mut groups: Vec<(Vec<String>, String)> = by_reason
        .into_iter()
        .map(|(reason, mut keys)| {
            keys.sort();
            (keys, reason)
        })
        .collect();
    // In key order, as a reader looks a key up.
    groups.sort();
    let mut out = String::new();
    for (keys, reason) in groups {
        let keys: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        out += &format!("- {}: {reason}\n", keys.join(", "));
    }
    out
}

fn instance(class: &str) -> String {
    grouped(
        TABLE
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split('\t');
                let (key, c, reason) = (f.next()?, f.next()?, f.next()?);
                (c == class).then(|| (key.to_string(), reason.to_string()))
            }),
    )
}

fn blocks() -> Vec<(&'static str, String)> {
    vec![
        ("instance-honoured", instance("honoured")),
        ("instance-equivalent", instance("equivalent")),
        ("instance-tuning", instance("tuning")),
        ("instance-unsupported", instance("unsupported")),
        (
            "emperor-honoured",
            grouped(
                emperor_keys::HONOURED
                    .iter()
                    .map(|k| (k.to_string(), "honoured in an emperor ini".to_string())),
            ),
        ),
        (
            "emperor-equivalent",
            grouped(
                emperor_keys::EQUIVALENT
                    .iter()
                    .map(|(k, r)| (k.to_string(), r.to_string())),
            ),
        ),
        (
            "emperor-unsupported",
            grouped(
                emperor_keys::UNSUPPORTED
                    .iter()
                    .map(|(k, r)| (k.to_string(), r.to_string())),
            ),
        ),
    ]
}

/// Replaces the text between `<!-- keys:NAME -->` and `<!-- /keys:NAME -->`.
fn with_block(doc: &str, name: &str, body: &str) -> String {
    let open = format!("<!-- keys:{name} -->\n");
    let close = format!("<!-- /keys:{name} -->");
    let start = doc
        .find(&open)
        .unwrap_or_else(|| panic!("{DOC}: no {open}"))
        + open.len();
    let end = doc[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("{DOC}: no {close}"))
        + start;
    format!("{}{body}{}", &doc[..start], &doc[end..])
}

#[test]
fn the_migration_guide_lists_every_key_as_the_code_classes_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut want = doc.clone();
    for (name, body) in blocks() {
        want = with_block(&want, name, &body);
    }
    if std::env::var_os("AMY_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        doc == want,
        "{DOC} differs from the key tables; run AMY_UPDATE_DOCS=1 cargo test --test migration_doc"
    );
    // Every option of the table is in exactly one list.
    let listed = TABLE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let key = l.split('\t').next().unwrap();
            doc.contains(&format!("`{key}`"))
        })
        .count();
    let total = TABLE
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(listed, total);
}
