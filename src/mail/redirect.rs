//! Where an emailed link may send the browser: `redirect_allowlist`, as GoTrue's
//! `URI_ALLOW_LIST` (exact URLs, `*` within a host label or path segment, `**` anything).

/// The checked list and the fallback.
pub struct Redirects {
    site: String,
    /// Scheme, host and port of `site_url`: another port or scheme on the same host is
    /// another origin (another server), so it is not trusted with tokens.
    site_origin: Option<url::Origin>,
    patterns: Vec<String>,
}

fn normalise(entry: &str) -> String {
    if entry.contains('*') {
        return entry.to_string();
    }
    url::Url::parse(entry)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| entry.to_string())
}

/// `*` matches any run of characters other than `.` and `/`; `**` matches anything.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    match pattern.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) if rest.first() == Some(&b'*') => {
            let rest = &rest[1..];
            (0..=s.len()).any(|i| glob(rest, &s[i..]))
        }
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                match s.get(i) {
                    Some(b'.') | Some(b'/') | None => return false,
                    Some(_) => i += 1,
                }
            }
        }
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

impl Redirects {
    /// From the site URL and the configured patterns.
    pub fn new(site: &str, patterns: &[String]) -> Self {
        Redirects {
            site: site.to_string(),
            site_origin: url::Url::parse(site)
                .ok()
                .map(|u| u.origin())
                .filter(url::Origin::is_tuple),
            patterns: patterns.iter().map(|p| normalise(p.trim())).collect(),
        }
    }

    /// Whether the browser may be sent to `url`.
    pub fn allowed(&self, url: &str) -> bool {
        let Ok(mut u) = url::Url::parse(url) else {
            return false;
        };
        u.set_fragment(None);
        if matches!(u.scheme(), "http" | "https") && self.site_origin.as_ref() == Some(&u.origin())
        {
            return true;
        }
        let s = u.to_string();
        self.patterns
            .iter()
            .any(|p| p == &s || glob(p.as_bytes(), s.as_bytes()))
    }

    /// `requested` when allowed, else the site URL (as GoTrue does).
    pub fn resolve(&self, requested: Option<&str>) -> String {
        match requested.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) if self.allowed(r) => r.to_string(),
            _ => self.site.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_work_as_in_gotrue() {
        let r = Redirects::new(
            "https://app.example.com",
            &[
                "https://*.example.org/**".into(),
                "http://localhost:3000".into(),
                "myapp://callback".into(),
            ],
        );
        assert!(r.allowed("https://app.example.com/welcome?x=1"));
        assert!(r.allowed("https://preview-1.example.org/a/b"));
        assert!(
            !r.allowed("https://a.b.example.org/x"),
            "* stays within one label"
        );
        assert!(!r.allowed("https://example.org.evil.com/"));
        assert!(r.allowed("http://localhost:3000"));
        assert!(r.allowed("http://localhost:3000/"));
        assert!(!r.allowed("http://localhost:3000/other"));
        assert!(r.allowed("myapp://callback"));
        assert!(!r.allowed("https://evil.com/"));
        assert!(!r.allowed("not a url"));
        assert_eq!(
            r.resolve(Some("https://evil.com")),
            "https://app.example.com"
        );
        assert_eq!(r.resolve(None), "https://app.example.com");
    }

    #[test]
    fn only_the_site_origin_itself_is_trusted() {
        let r = Redirects::new("http://127.0.0.1:3000", &[]);
        assert!(r.allowed("http://127.0.0.1:3000/welcome"));
        assert!(!r.allowed("http://127.0.0.1:9999/steal"), "another port");
        assert!(!r.allowed("https://127.0.0.1:3000/"), "another scheme");
        assert!(!r.allowed("http://127.0.0.1/"), "the default port");
        let r = Redirects::new("https://app.example.com", &[]);
        assert!(
            r.allowed("https://app.example.com:443/a"),
            "the explicit default port"
        );
        assert!(!r.allowed("http://app.example.com/a"));
        assert!(!r.allowed("https://app.example.com:8443/a"));
        assert!(!r.allowed("https://evil.app.example.com/a"));
    }
}
