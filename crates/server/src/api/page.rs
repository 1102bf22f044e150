//! Pagination shared by every list endpoint: `page`, `page_size`, `total`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number.
    #[serde(default = "one")]
    pub page: usize,
    /// Items per page (1–1000).
    #[serde(default = "twenty")]
    pub page_size: usize,
}

fn one() -> usize {
    1
}
fn twenty() -> usize {
    20
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub total: usize,
    pub page: usize,
    pub page_size: usize,
    pub results: Vec<T>,
}

impl PageQuery {
    pub fn check(&self) -> ApiResult<()> {
        if self.page == 0 || self.page_size == 0 || self.page_size > 1000 {
            return Err(ApiError::bad_request(
                "page must be ≥ 1 and page_size between 1 and 1000",
            ));
        }
        Ok(())
    }

    pub fn apply<T>(&self, items: Vec<T>) -> Page<T> {
        let total = items.len();
        let results = items
            .into_iter()
            .skip((self.page - 1) * self.page_size)
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

/// Names of stored resources: what can safely be a store key segment.
pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "1–128 characters of letters, digits, `.`, `_` and `-`",
        ))
    }
}
