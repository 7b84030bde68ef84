//! OpenSSH pattern lists: comma-separated patterns with `*` (any run of characters) and
//! `?` (one character), a leading `!` negating a pattern. Used by the `namespaces` option of
//! allowed signers and by the host names of `known_hosts`, with ssh's semantics: a negated
//! pattern that matches rejects the whole list, whatever else matches.

/// What a pattern list says about a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMatch {
    /// A positive pattern matches and no negated one does.
    Matched,
    /// No pattern matches.
    NotMatched,
    /// A negated pattern matches: rejected.
    Negated,
}

impl ListMatch {
    /// Whether the list accepts the string.
    pub fn is_match(self) -> bool {
        self == ListMatch::Matched
    }
}

/// Matches `s` against the comma-separated `list`. With `ignore_case`, ASCII letters are
/// compared case-insensitively (ssh does so for host names).
pub fn match_list(s: &str, list: &str, ignore_case: bool) -> ListMatch {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if !matches(s, pattern, ignore_case) {
            continue;
        }
        if negated {
            return ListMatch::Negated;
        }
        matched = true;
    }
    if matched {
        ListMatch::Matched
    } else {
        ListMatch::NotMatched
    }
}

/// Whether `s` matches one `pattern` (`*` and `?` wildcards). Greedy with one backtrack
/// point, so the cost is at most the product of the two lengths, never exponential.
pub fn matches(s: &str, pattern: &str, ignore_case: bool) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut si, mut pi) = (0, 0);
    // Where the last `*` was, and the position in `s` it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], s[si]))) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((star_pi, star_si)) = star {
            // Let the last `*` swallow one more character and try again.
            pi = star_pi + 1;
            si = star_si + 1;
            star = Some((star_pi, star_si + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_patterns() {
        let cases = [
            ("git", "git", true),
            ("git", "gi", false),
            ("git", "g*", true),
            ("git", "*", true),
            ("", "*", true),
            ("", "", true),
            ("git", "", false),
            ("git", "g?t", true),
            ("gt", "g?t", false),
            ("file", "*i*e", true),
            ("aaa", "a*a*a*a", false),
            ("a.example.net", "*.example.net", true),
            ("example.net", "*.example.net", false),
            ("[127.0.0.1]:2222", "[127.0.0.1]:2222", true),
            ("[127.0.0.1]:2222", "[127.0.0.1]:*", true),
        ];
        for (s, p, want) in cases {
            assert_eq!(matches(s, p, false), want, "{s:?} ~ {p:?}");
        }
        assert!(matches("Git.Example.NET", "git.example.net", true));
        assert!(!matches("Git", "git", false));
        // Long inputs with many stars stay cheap.
        let long = "a".repeat(2000);
        assert!(!matches(&long, &format!("{}b", "a*".repeat(50)), false));
    }

    #[test]
    fn lists_and_negation() {
        assert_eq!(match_list("git", "file,git", false), ListMatch::Matched);
        assert_eq!(match_list("git", "file", false), ListMatch::NotMatched);
        assert_eq!(match_list("git", "*,!git", false), ListMatch::Negated);
        assert_eq!(match_list("git", "!git,*", false), ListMatch::Negated);
        assert_eq!(match_list("file", "*,!git", false), ListMatch::Matched);
        // A negation alone never accepts.
        assert_eq!(match_list("file", "!git", false), ListMatch::NotMatched);
        assert!(!match_list("git", "", false).is_match());
    }
}
