//! Text within a byte budget. Kubernetes bounds what tidemark writes (annotations share
//! 256 KiB per object, an Event's note 1 KiB) and a child process may print megabytes:
//! text is cut at a character boundary, and the cut is marked.

/// What marks a cut.
const MARK: &str = "[...]";

/// `text` cut to its first `limit` bytes at a character boundary, followed by ` [...]` when
/// anything was cut. The result is at most `limit + 6` bytes.
pub fn head(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} {MARK}", &text[..cut])
}

/// `text` cut to its last `limit` bytes at a character boundary, preceded by `[...] ` when
/// anything was cut. The result is at most `limit + 6` bytes.
pub fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut cut = text.len() - limit;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("{MARK} {}", &text[cut..])
}

/// `text` cut to at most `limit` bytes in all, mark included (for hard limits such as an
/// Event's note).
pub fn within(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    head(text, limit.saturating_sub(MARK.len() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_at_character_boundaries_and_marks_the_cut() {
        assert_eq!(head("short", 10), "short");
        assert_eq!(tail("short", 10), "short");
        let text = "é".repeat(10); // 20 bytes
        assert_eq!(head(&text, 5), "éé [...]");
        assert_eq!(tail(&text, 5), "[...] éé");
        let hard = within(&"x".repeat(2000), 1024);
        assert_eq!(hard.len(), 1024);
        assert!(hard.ends_with(" [...]"));
        let hard = within(&"é".repeat(1000), 1024);
        assert!(hard.len() <= 1024, "{}", hard.len());
    }
}
