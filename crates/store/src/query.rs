//! A listing of entity rows: filters, order and a page, as `GET /api/v1/Contact` asks for
//! them. Columns are named as the entity's table names them; the store refuses any other.

use crate::entity::Ticks;

/// One condition on a row (conditions of a [`RowQuery`] all hold).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowFilter {
    /// The text column starts with the prefix, letters compared without regard to case.
    Begins {
        /// A text column.
        column: &'static str,
        /// The prefix.
        prefix: String,
    },
    /// The date column is later than the instant.
    After {
        /// A date column.
        column: &'static str,
        /// The instant.
        at: Ticks,
    },
    /// The integer column is greater than the value.
    Greater {
        /// An integer column.
        column: &'static str,
        /// The value.
        than: i64,
    },
}

/// Filters, order and page of a listing. Soft-deleted rows are never listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowQuery {
    /// Conditions that all hold.
    pub filters: Vec<RowFilter>,
    /// Sort keys in order: a column and whether it sorts descending. The primary key always
    /// follows, ascending, so that pages do not overlap.
    pub order: Vec<(&'static str, bool)>,
    /// Rows to skip.
    pub skip: i64,
    /// Rows to return at most.
    pub top: i64,
}
