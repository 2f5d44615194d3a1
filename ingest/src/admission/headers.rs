//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers, draft 09 syntax):
//! `RateLimit-Policy: "device-fixes";q=200;w=1, "tenant-fixes";q=50000;w=1` says each
//! budget (q units per w seconds), `RateLimit: "device-fixes";r=180;t=1, ...` what is
//! left of it now (r units) and in how many seconds it is full again (t). Both are
//! structured-field lists of items: a quoted policy name with integer parameters.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// `RateLimit-Policy`.
pub const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// One budget as the headers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The policy name: `device-fixes`, `tenant-fixes`, `device-requests`, `tenant-requests`.
    pub name: &'static str,
    /// Units per second (the policy's `q`, with `w=1`). A burst lets a client spend more
    /// than `q` at once: `r` can be above `q`.
    pub per_sec: u64,
    /// Units left now (`r`).
    pub remaining: u64,
    /// Seconds until the budget is full again (`t`).
    pub reset_secs: u64,
}

/// The `RateLimit-Policy` value of `budgets`.
pub fn policy(budgets: &[Budget]) -> String {
    budgets
        .iter()
        .map(|b| format!("\"{}\";q={};w=1", b.name, b.per_sec))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `RateLimit` value of `budgets`.
pub fn remaining(budgets: &[Budget]) -> String {
    budgets
        .iter()
        .map(|b| format!("\"{}\";r={};t={}", b.name, b.remaining, b.reset_secs))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds both headers for `budgets` to `headers`.
pub fn insert(headers: &mut HeaderMap, budgets: &[Budget]) {
    if budgets.is_empty() {
        return;
    }
    // Names are static ASCII and the rest digits: always a valid header value.
    for (name, value) in [(POLICY, policy(budgets)), (RATELIMIT, remaining(budgets))] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A strict reader of the list syntax the draft uses: `"name";k=int;k=int, ...`.
    fn parse(value: &str) -> Vec<(String, Vec<(String, u64)>)> {
        value
            .split(", ")
            .map(|item| {
                let mut parts = item.split(';');
                let name = parts.next().unwrap();
                assert!(name.len() > 2 && name.starts_with('"') && name.ends_with('"'));
                let params = parts
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap();
                        assert!(k.chars().all(|c| c.is_ascii_lowercase()));
                        (k.to_owned(), v.parse().unwrap())
                    })
                    .collect();
                (name.trim_matches('"').to_owned(), params)
            })
            .collect()
    }

    #[test]
    fn the_headers_take_the_drafts_list_syntax() {
        let budgets = [
            Budget {
                name: "device-fixes",
                per_sec: 200,
                remaining: 180,
                reset_secs: 1,
            },
            Budget {
                name: "tenant-fixes",
                per_sec: 50_000,
                remaining: 199_980,
                reset_secs: 0,
            },
        ];
        assert_eq!(
            policy(&budgets),
            "\"device-fixes\";q=200;w=1, \"tenant-fixes\";q=50000;w=1"
        );
        assert_eq!(
            remaining(&budgets),
            "\"device-fixes\";r=180;t=1, \"tenant-fixes\";r=199980;t=0"
        );
        let mut headers = HeaderMap::new();
        insert(&mut headers, &budgets);
        assert_eq!(headers.len(), 2);
    }

    proptest! {
        #[test]
        fn every_budget_reads_back_from_its_headers(
            values in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 1..5),
        ) {
            let names = ["device-fixes", "tenant-fixes", "device-requests", "tenant-requests", "x"];
            let budgets: Vec<Budget> = values
                .iter()
                .zip(names)
                .map(|(&(q, r, t), name)| Budget { name, per_sec: q, remaining: r, reset_secs: t })
                .collect();
            let mut headers = HeaderMap::new();
            insert(&mut headers, &budgets);
            let p = parse(headers[POLICY].to_str().unwrap());
            let r = parse(headers[RATELIMIT].to_str().unwrap());
            for (i, b) in budgets.iter().enumerate() {
                prop_assert_eq!(&p[i].0, b.name);
                prop_assert_eq!(&p[i].1, &vec![("q".to_owned(), b.per_sec), ("w".to_owned(), 1)]);
                prop_assert_eq!(&r[i].1, &vec![("r".to_owned(), b.remaining), ("t".to_owned(), b.reset_secs)]);
            }
        }
    }
}
