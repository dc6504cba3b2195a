//! The page: `docs/benchmarks.md` from a template of prose (`benches/report.md`)
//! and the figures each subcommand printed, plus a table of the aims
//! with what was measured and whether it was met, each line written by the
//! figure that measured it.

use anyhow::Context;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The file in the results folder the aims' lines are appended to.
pub const AIMS_FILE: &str = "aims.tsv";

/// Where a figure appends its aims' lines (nowhere if not asked).
pub struct Aims(Option<PathBuf>);

impl Aims {
    /// Appends to `path`, if given.
    pub fn open(path: Option<PathBuf>) -> Self {
        Self(path)
    }

    /// One aim: what it says, what was measured, whether it was met.
    pub fn add(&mut self, aim: &str, measured: String, met: bool) -> anyhow::Result<()> {
        eprintln!(
            "aim: {aim}: {measured} ({})",
            if met { "met" } else { "not met" }
        );
        let Some(path) = &self.0 else {
            return Ok(());
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        writeln!(
            file,
            "{}\t{}\t{}",
            clean(aim),
            clean(&measured),
            if met { "met" } else { "not met" }
        )?;
        Ok(())
    }
}

/// Writes `out` from `template`: each `@include NAME` line becomes the
/// file `results/NAME`, and the `@aims` line the table of aims.
pub fn write(template: &Path, results: &Path, out: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let mut page = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@include ") {
            let path = results.join(name.trim());
            let figure = std::fs::read_to_string(&path)
                .with_context(|| format!("no results in {}", path.display()))?;
            page.push_str(figure.trim_end());
            page.push('\n');
        } else if line.trim() == "@aims" {
            page.push_str(&aims_table(&results.join(AIMS_FILE))?);
        } else {
            page.push_str(line);
            page.push('\n');
        }
    }
    std::fs::write(out, page).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Merges the reports of repeated runs of one benchmark that prints one
/// table (the queue benchmark): table rows that differ only in their numbers
/// get each number as `median (min–max)` over the runs; other lines are
/// taken from the first run.
pub fn merge(runs: &[String]) -> String {
    let Some(first) = runs.first() else {
        return String::new();
    };
    let mut out = String::new();
    for (i, line) in first.lines().enumerate() {
        let same: Vec<&str> = runs.iter().filter_map(|r| r.lines().nth(i)).collect();
        let merged = if line.starts_with('|') && same.len() == runs.len() {
            merge_line(&same).unwrap_or_else(|| line.to_owned())
        } else {
            line.to_owned()
        };
        out.push_str(&merged);
        out.push('\n');
    }
    out
}

/// A line split into its text and its numbers (digits with an optional
/// decimal point), in order.
fn split_numbers(line: &str) -> (Vec<String>, Vec<String>) {
    let mut text = vec![String::new()];
    let mut numbers = Vec::new();
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || (chars[i] == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)))
            {
                i += 1;
            }
            numbers.push(chars[start..i].iter().collect());
            text.push(String::new());
        } else {
            if let Some(last) = text.last_mut() {
                last.push(chars[i]);
            }
            i += 1;
        }
    }
    (text, numbers)
}

fn merge_line(lines: &[&str]) -> Option<String> {
    let split: Vec<_> = lines.iter().map(|l| split_numbers(l)).collect();
    let (text, first_numbers) = &split[0];
    if split
        .iter()
        .any(|(t, n)| t != text || n.len() != first_numbers.len())
    {
        return None;
    }
    let mut out = text[0].clone();
    for (k, number) in first_numbers.iter().enumerate() {
        let values: Vec<f64> = split
            .iter()
            .filter_map(|(_, n)| n[k].parse().ok())
            .collect();
        let digits = number.split_once('.').map_or(0, |(_, d)| d.len());
        let (min, median, max) = crate::stats::min_median_max(&values);
        if (max - min).abs() < f64::EPSILON {
            out.push_str(number);
        } else {
            let _ = write!(out, "{median:.digits$} ({min:.digits$}–{max:.digits$})");
        }
        out.push_str(&text[k + 1]);
    }
    Some(out)
}

fn aims_table(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("no aims in {}", path.display()))?;
    let mut table = String::from("| aim | measured | |\n|---|---|---|\n");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [aim, measured, verdict] = fields[..] {
            let verdict = if verdict == "met" {
                "met"
            } else {
                "**not met**"
            };
            let _ = writeln!(table, "| {aim} | {measured} | {verdict} |");
        }
    }
    Ok(table)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_page_takes_figures_and_aims_from_the_results() {
        let dir = std::env::temp_dir().join(format!("weft-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.md"), "| x |\n").unwrap();
        let mut aims = Aims::open(Some(dir.join(AIMS_FILE)));
        aims.add("fast", "2×".into(), true).unwrap();
        aims.add("small", "5 GiB".into(), false).unwrap();
        let template = dir.join("t.md");
        std::fs::write(&template, "# Page\n@aims\n## A\n@include a.md\nend\n").unwrap();
        let out = dir.join("out.md");
        write(&template, &dir, &out).unwrap();
        let page = std::fs::read_to_string(&out).unwrap();
        assert!(page.contains("| fast | 2× | met |"), "{page}");
        assert!(page.contains("| small | 5 GiB | **not met** |"), "{page}");
        assert!(page.contains("## A\n| x |\nend"), "{page}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn repeated_tables_merge_into_median_min_max() {
        let runs = [
            "load 1.5\n| a | 100 | 0.10 × x | 0.28 ms / 0.48 ms |\n| b | 1000 | — |\n".to_owned(),
            "load 0.5\n| a | 300 | 0.30 × x | 0.20 ms / 0.50 ms |\n| b | 1000 | — |\n".to_owned(),
            "load 9.0\n| a | 200 | 0.20 × x | 0.26 ms / 0.49 ms |\n| b | 1000 | — |\n".to_owned(),
        ];
        let merged = merge(&runs);
        assert_eq!(
            merged,
            "load 1.5\n| a | 200 (100–300) | 0.20 (0.10–0.30) × x | 0.26 (0.20–0.28) ms / 0.49 (0.48–0.50) ms |\n| b | 1000 | — |\n"
        );
    }
}
