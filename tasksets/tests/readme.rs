//! The spec examples in the project README load and have the sizes the text claims.

use taskdist_tasksets::{catalog, SpaceLen, Spec};

const README: &str = include_str!("../../README.md");

fn toml_blocks() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in README.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn readme_specs_load() {
    // The spec examples (other TOML blocks are pool and experiments files).
    let blocks: Vec<String> = toml_blocks()
        .into_iter()
        .filter(|b| b.contains("[[task]]"))
        .collect();
    assert_eq!(blocks.len(), 2);
    let first = Spec::from_toml_str(&blocks[0], "README").unwrap();
    assert_eq!(first.len(), SpaceLen::Finite(180));
    assert_eq!(first.name(), "pi-sweep");
    let second = Spec::from_toml_str(&blocks[1], "README").unwrap();
    assert_eq!(second.len(), SpaceLen::Finite(6));
    // The error example of the README.
    let bad = blocks[0].replace("priority = [10, 100]", "priority = [10, 200]");
    let e = Spec::from_toml_str(&bad, "pi-sweep.toml")
        .unwrap_err()
        .to_string();
    assert!(README.contains(&e), "README error example is stale: {e}");
}

#[test]
fn readme_lists_every_catalog_entry() {
    for e in catalog::entries() {
        let row = format!("| `{}` | {} |", e.name, e.description);
        assert!(README.contains(&row), "README lacks the catalog row {row}");
    }
}
