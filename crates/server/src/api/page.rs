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

/// Names of stored resources: what can safely be a store key segment and a
/// URL path segment (the rule is [`keys::is_valid_name`]).
pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    if keys::is_valid_name(name, 128) {
        Ok(())
    } else {
        Err(ApiError::field(field, keys::name_rule(128)))
    }
}
