//! Layout helpers: list markers and numbering of teacher texts, sentence stops, and the
//! merged layout (`Findings: ...`, then the impression).

use super::Provenance;

/// A sentence without a leading list marker (`1.`, `2)`, `-`, `*`, `•`) or section header
/// (`Findings:`; up to four words before a colon).
pub(super) fn clean(sentence: &str) -> &str {
    let mut s = sentence.trim();
    if let Some(digits) = item_number(s) {
        s = s[digits + 1..].trim_start();
    }
    for marker in ["- ", "* ", "• "] {
        if let Some(rest) = s.strip_prefix(marker) {
            s = rest.trim_start();
        }
    }
    if let Some(i) = s.find(':') {
        let head = &s[..i];
        if head.split_whitespace().count() <= 4 && !s[i + 1..].trim().is_empty() {
            s = s[i + 1..].trim_start();
        }
    }
    s
}

/// The number of digits of the item number `s` starts with (`12.` or `12)`), if it does.
pub(super) fn item_number(s: &str) -> Option<usize> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0 && matches!(s.as_bytes().get(digits), Some(b'.' | b')'))).then_some(digits)
}

/// The list marker a sentence starts with: `#` for a numbered item (`1.`, `2)`), the bullet
/// with its space (`- `, `* `, `• `), or `""`.
pub(super) fn list_marker(sentence: &str) -> &'static str {
    let s = sentence.trim_start();
    if item_number(s).is_some() {
        return "#";
    }
    ["- ", "* ", "• "]
        .into_iter()
        .find(|m| s.starts_with(m))
        .unwrap_or("")
}

/// Numbers the numbered lines of `text` 1, 2, 3, ... in order.
pub(super) fn renumber(text: &str) -> String {
    let mut n = 0;
    text.split('\n')
        .map(|line| {
            let body = line.trim_start();
            if let Some(digits) = item_number(body) {
                n += 1;
                let indent = &line[..line.len() - body.len()];
                format!("{indent}{n}{}", &body[digits..])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `sentence` ending in a full stop (or its own `!`/`?`).
pub(super) fn with_stop(sentence: &str) -> String {
    if sentence.ends_with(['.', '!', '?']) {
        sentence.to_owned()
    } else {
        format!("{sentence}.")
    }
}

pub(super) fn compose(sentences: &[Provenance], impression: Option<&str>) -> String {
    let mut out = String::from("Findings:");
    for s in sentences {
        out.push(' ');
        out.push_str(&s.text);
        if !s.text.ends_with(['.', '!', '?']) {
            out.push('.');
        }
    }
    if let Some(i) = impression {
        out.push('\n');
        out.push_str(i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{list_marker, renumber};

    #[test]
    fn list_markers_and_renumbering() {
        assert_eq!(list_marker("3. No pneumothorax."), "#");
        assert_eq!(list_marker("12) Edema."), "#");
        assert_eq!(list_marker("- Edema."), "- ");
        assert_eq!(list_marker("• Edema."), "• ");
        assert_eq!(list_marker("Findings: edema."), "");
        assert_eq!(list_marker("2 ribs are fractured."), "");
        assert_eq!(
            renumber("Findings:\n1. A.\n3. B.\n0. C.\nDone. 7. not a line start"),
            "Findings:\n1. A.\n2. B.\n3. C.\nDone. 7. not a line start"
        );
    }
}
