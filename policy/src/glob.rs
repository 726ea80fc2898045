//! Glob matching for allowlists: `*` matches any run of characters
//! (including none), `?` exactly one; everything else matches itself.
//!
//! Written as an iterative two-pointer match so a hostile pattern such as
//! `*a*a*a*b` cannot make evaluation take exponential time.

/// Whether `text` matches `pattern`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and where in `text` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) && p[pi] != b'*' {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether any pattern in `patterns` matches `text`. `None` means the list
/// does not restrict anything.
pub fn allowed_by(patterns: Option<&[String]>, text: &str) -> bool {
    match patterns {
        None => true,
        Some(list) => list.iter().any(|p| glob_matches(p, text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let cases = [
            ("*", "", true),
            ("*", "gpt-4o", true),
            ("gpt-4o", "gpt-4o", true),
            ("gpt-4o", "gpt-4o-mini", false),
            ("gpt-4o*", "gpt-4o-mini", true),
            ("gpt-*-mini", "gpt-4o-mini", true),
            ("gpt-*-mini", "gpt-4o", false),
            ("claude-?-5", "claude-4-5", true),
            ("claude-?-5", "claude-45", false),
            ("*sonnet*", "claude-sonnet-4-5", true),
            (
                "a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
            ("", "", true),
            ("", "x", false),
            ("x*", "", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_matches(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn absent_list_allows_and_empty_list_denies() {
        assert!(allowed_by(None, "anything"));
        assert!(!allowed_by(Some(&[]), "anything"));
        assert!(allowed_by(Some(&["a*".to_string()]), "abc"));
    }
}
