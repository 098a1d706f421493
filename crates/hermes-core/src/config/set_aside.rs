//! Setting a value aside: deserializing stops at the first value that does not parse,
//! so the loader empties that value's line (every other line keeps its number) and
//! reads the file again, to report every problem at once.

use super::ConfigIssue;

/// The text with the issue's line emptied, when that line holds the failing key and
/// its whole value (`key: value`, or `- value` for a list item); None otherwise.
pub(super) fn blank_value_line(text: &str, issue: &ConfigIssue) -> Option<String> {
    let index = usize::try_from(issue.line.checked_sub(1)?).ok()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let content = lines.get(index)?.trim();
    let value = if issue.path.ends_with(']') {
        content.strip_prefix("- ")?
    } else {
        let key = issue.path.rsplit('.').next()?;
        content.strip_prefix(key)?.strip_prefix(':')?
    };
    let value = value.trim();
    // A nested block, a block scalar or an item with more keys continues on the next
    // lines: leave it.
    let indent = |line: &str| line.len() - line.trim_start().len();
    let continues = lines[index + 1..]
        .iter()
        .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .is_some_and(|next| indent(next) > indent(lines[index]));
    if value.is_empty() || value.starts_with('|') || value.starts_with('>') || continues {
        return None;
    }
    Some(without_line(&lines, index))
}

/// The text with the line of the issue's (now empty) section key emptied: the nearest
/// `key:` line at or above the issue's line.
pub(super) fn blank_section_line(text: &str, issue: &ConfigIssue) -> Option<String> {
    let last = usize::try_from(issue.line.checked_sub(1)?).ok()?;
    let key = issue.path.rsplit('.').next()?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let index = (0..=last.min(lines.len().checked_sub(1)?))
        .rev()
        .find(|&i| lines[i].trim().strip_prefix(key) == Some(":"))?;
    Some(without_line(&lines, index))
}

fn without_line(lines: &[&str], index: usize) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len()).sum());
    for (i, line) in lines.iter().enumerate() {
        if i == index {
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
        } else {
            out.push_str(line);
        }
    }
    out
}
