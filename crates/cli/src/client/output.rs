//! How the client subcommands print answers: pretty JSON, or a table.

use anyhow::{Context as _, Result};
use serde_json::Value;

/// Prints a JSON value, pretty.
pub(super) fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A JSON value as a table cell: strings bare, arrays comma-joined, null as `-`.
pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A table cell on one line (whitespace runs collapsed), at most 80 characters.
fn clip(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(79) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Prints a JSON array as a table, one column per entry of `cols` (the first key present wins).
pub(super) fn print_table(head: &[&str], cols: &[&[&str]], rows: &Value, what: &str) -> Result<()> {
    let rows = rows
        .as_array()
        .context("the server did not answer with a list")?;
    if rows.is_empty() {
        println!("(no {what})");
        return Ok(());
    }
    let body: Vec<Vec<String>> = (rows.iter())
        .map(|r| {
            cols.iter()
                .map(|keys| {
                    clip(&cell(
                        keys.iter().find_map(|k| r.get(*k)).unwrap_or(&Value::Null),
                    ))
                })
                .collect()
        })
        .collect();
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&head).chain(&body) {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_cells_are_clipped() {
        assert_eq!(clip("a\n  b"), "a b");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), 80);
        assert_eq!(cell(&json!(["a", 1, null])), "a,1,-");
    }
}
