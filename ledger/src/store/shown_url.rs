//! Database URLs as they may be shown in messages and logs.

/// `url` with any password replaced by `***`, so that an error naming the
/// database it could not open never prints a credential.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite:PATH` and other forms carry no user info.
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // A password written with an unescaped `/`, `?` or `#` ends the authority
    // early; then an `@` further on is taken as the end of the user info
    // too. That may hide more than a password (an `@` in the query of a URL
    // with a port), never less.
    let Some(at) = rest[..authority_end].rfind('@').or_else(|| rest.rfind('@')) else {
        return url.to_owned();
    };
    let (user_info, after) = (&rest[..at], &rest[at + 1..]);
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{after}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn passwords_are_hidden_and_nothing_else_changes() {
        let cases = [
            (
                "postgres://caracal:s3cret@db:5432/ledger",
                "postgres://caracal:***@db:5432/ledger",
            ),
            (
                "postgresql://u:p%40ss@h/d?sslmode=require",
                "postgresql://u:***@h/d?sslmode=require",
            ),
            // A password holding `@` (unescaped): the last `@` ends it.
            ("postgres://u:a@b@h/d", "postgres://u:***@h/d"),
            (
                "postgres://caracal@db/ledger",
                "postgres://caracal@db/ledger",
            ),
            ("postgres://db/ledger", "postgres://db/ledger"),
            // A password holding an unescaped `/`.
            ("postgres://u:pa/ss@h/d", "postgres://u:***@h/d"),
            // An `@` after the host is not user info...
            ("postgres://db/ledger?x=a@b", "postgres://db/ledger?x=a@b"),
            // ...but with a port before it, it may be: hidden, to be safe.
            ("postgres://db:5432/l?x=a@b", "postgres://db:***@b"),
            (
                "sqlite:/var/lib/caracal/ledger.db",
                "sqlite:/var/lib/caracal/ledger.db",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
        ];
        for (url, want) in cases {
            assert_eq!(shown_url(url), want, "{url}");
        }
    }
}
