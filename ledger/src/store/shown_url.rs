//! Database URLs as they may be shown in messages and logs.

/// `url` with any password replaced by `***`, so that an error naming the
/// database it could not open never prints a credential.
pub fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // `sqlite:PATH` and other forms carry no user info.
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
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
            // An `@` after the host is not user info.
            ("postgres://db/ledger?x=a@b", "postgres://db/ledger?x=a@b"),
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
