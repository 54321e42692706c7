//! Every relative link in README.md, ARCHITECTURE.md and docs/*.md reaches a file that
//! exists and, with a `#fragment`, a heading of that file (as GitHub makes anchors), so
//! moving a section cannot leave dead links behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// GitHub's anchor for a heading: lower-case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text outside fenced code blocks.
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose(markdown)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' '))
        .map(anchor)
        .collect()
}

/// The targets of `](target)` links in the prose.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(markdown) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Broken relative links of the file at `path`, as `file: link (why)`.
fn broken_links(root: &Path, path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(root).unwrap().display().to_string();
    let mut broken = Vec::new();
    for link in links(&text) {
        if link.contains("://") || link.starts_with("mailto:") {
            continue;
        }
        let (file, fragment) = link.split_once('#').unwrap_or((&link, ""));
        let target: PathBuf = if file.is_empty() {
            path.to_path_buf()
        } else {
            path.parent().unwrap().join(file)
        };
        if !target.exists() {
            broken.push(format!("{name}: {link} (no such file)"));
            continue;
        }
        if !fragment.is_empty() && target.extension().is_some_and(|e| e == "md") {
            let headings = anchors(&std::fs::read_to_string(&target).unwrap());
            if !headings.contains(fragment) {
                broken.push(format!("{name}: {link} (no such heading)"));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_reaches_its_file_and_heading() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    assert!(files.len() > 10, "{} files", files.len());
    let broken: Vec<String> = files.iter().flat_map(|f| broken_links(root, f)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    assert_eq!(
        anchor("Sign-in (`/auth/v1`, Supabase-compatible)"),
        "sign-in-authv1-supabase-compatible"
    );
    assert_eq!(
        anchor("`/v1` envelope and error codes"),
        "v1-envelope-and-error-codes"
    );
    let md = "# A\n```sh\n# not a heading\n```\nsee [b](x.md#b) and [c](#a)\n";
    assert_eq!(anchors(md).into_iter().collect::<Vec<_>>(), ["a"]);
    assert_eq!(links(md), ["x.md#b", "#a"]);
}
