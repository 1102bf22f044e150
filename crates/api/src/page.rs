//! The envelope of every paged list: `total`, `page`, `page_size`, `results`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub total: usize,
    pub page: usize,
    pub page_size: usize,
    pub results: Vec<T>,
}
