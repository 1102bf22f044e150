//! Pagination shared by every list endpoint: `page`, `page_size`, `total`.

use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
pub use testbed_api::page::Page;
use testbed_core::keys;

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number.
    #[serde(default = "one")]
    #[param(minimum = 1, maximum = 1000000)]
    pub page: usize,
    /// Items per page (1–1000).
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: usize,
}

/// Highest page number accepted: enough for any list, and small enough that
/// the document can state it exactly.
pub const MAX_PAGE: usize = 1_000_000;

fn one() -> usize {
    1
}
fn twenty() -> usize {
    20
}

impl PageQuery {
    pub fn check(&self) -> ApiResult<()> {
        if self.page == 0 || self.page > MAX_PAGE || self.page_size == 0 || self.page_size > 1000 {
            return Err(ApiError::bad_request(
                "page must be between 1 and 1000000 and page_size between 1 and 1000",
            ));
        }
        Ok(())
    }

    /// A page gathered from items offered one at a time: it holds one
    /// page, however many items there are.
    pub fn collector<T>(&self) -> PageCollector<T> {
        PageCollector {
            skip: (self.page - 1).saturating_mul(self.page_size),
            query: self.clone(),
            total: 0,
            results: Vec::new(),
        }
    }

    pub fn apply<T>(&self, items: Vec<T>) -> Page<T> {
        let total = items.len();
        let results = items
            .into_iter()
            // Saturating: a page far past the end is empty, not an overflow.
            .skip((self.page - 1).saturating_mul(self.page_size))
            .take(self.page_size)
            .collect();
        Page {
            total,
            page: self.page,
            page_size: self.page_size,
            results,
        }
    }
}

/// See [`PageQuery::collector`].
pub struct PageCollector<T> {
    query: PageQuery,
    skip: usize,
    total: usize,
    results: Vec<T>,
}

impl<T> PageCollector<T> {
    /// Counts `item`, keeping it if it falls on the page.
    pub fn offer(&mut self, item: T) {
        if self.total >= self.skip && self.results.len() < self.query.page_size {
            self.results.push(item);
        }
        self.total += 1;
    }

    pub fn finish(self) -> Page<T> {
        Page {
            total: self.total,
            page: self.query.page,
            page_size: self.query.page_size,
            results: self.results,
        }
    }
}

/// Names of stored resources: what can safely be a store key segment and a
/// URL path segment (the rule is [`keys::is_valid_name`]).
pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if keys::is_valid_name(name, 128) {
        Ok(())
    } else {
        Err(ApiError::field(field, keys::name_rule(128)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The collector gives the page `apply` gives over the whole list.
    #[test]
    fn collector_pages_like_apply() {
        for n in [0usize, 1, 5, 20, 21, 57] {
            for page in [1usize, 2, 3, 10, MAX_PAGE] {
                for page_size in [1usize, 3, 20, 1000] {
                    let q = PageQuery { page, page_size };
                    let whole = q.apply((0..n).collect::<Vec<_>>());
                    let mut c = q.collector();
                    (0..n).for_each(|i| c.offer(i));
                    let streamed = c.finish();
                    assert_eq!(
                        streamed.total, whole.total,
                        "n={n} page={page} size={page_size}"
                    );
                    assert_eq!(
                        streamed.results, whole.results,
                        "n={n} page={page} size={page_size}"
                    );
                }
            }
        }
    }
}
