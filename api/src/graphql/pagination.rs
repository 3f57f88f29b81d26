//! Relay pagination arguments (`first`/`after`, `last`/`before`) to a store [`Seek`], and the
//! shared `PageInfo` type.

use crate::error::{ApiResult, invalid};
use async_graphql::SimpleObject;
use crm_store::{Cursor, Page, Seek};

/// Default and largest page size (config `graphql.*_page_size`).
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// Used when neither `first` nor `last` is given.
    pub default: usize,
    /// Largest `first`/`last` accepted.
    pub max: usize,
}

/// `first` checked against the maximum, or the default page size when absent.
pub(crate) fn first_or_default(first: Option<i32>, limits: PageLimits) -> ApiResult<usize> {
    first.map_or(Ok(limits.default), |n| size("first", n, limits))
}

/// The arguments of a connection field.
#[derive(Debug, Default)]
pub(crate) struct PageArgs {
    pub(crate) first: Option<i32>,
    pub(crate) after: Option<String>,
    pub(crate) last: Option<i32>,
    pub(crate) before: Option<String>,
}

/// Checks a page size argument against the maximum.
pub(crate) fn size(field: &str, value: i32, limits: PageLimits) -> ApiResult<usize> {
    match usize::try_from(value) {
        Ok(n) if n <= limits.max => Ok(n),
        _ => Err(invalid(
            field,
            "out_of_range",
            format!(
                "{field} must be between 0 and {} (the maximum page size)",
                limits.max
            ),
        )),
    }
}

impl PageArgs {
    /// Validates the arguments against the limits and decodes the cursor for `ordering`.
    pub(crate) fn seek(
        self,
        limits: PageLimits,
        ordering: &'static str,
        time_key: bool,
    ) -> ApiResult<Seek> {
        let decode = |field: &str, raw: Option<String>| -> ApiResult<Option<Cursor>> {
            raw.map(|raw| {
                Cursor::decode(&raw, ordering, time_key)
                    .map_err(|e| invalid(field, "invalid_cursor", format!("{field}: {e}")))
            })
            .transpose()
        };
        match (self.first, self.last) {
            (Some(_), Some(_)) => Err(invalid(
                "last",
                "conflicting_arguments",
                "give either first or last, not both",
            )),
            (_, Some(last)) => {
                if self.after.is_some() {
                    return Err(invalid(
                        "after",
                        "conflicting_arguments",
                        "after goes with first, not last",
                    ));
                }
                Ok(Seek::Backward {
                    limit: size("last", last, limits)?,
                    before: decode("before", self.before)?,
                })
            }
            (first, None) => {
                if self.before.is_some() {
                    return Err(invalid(
                        "before",
                        "conflicting_arguments",
                        "before goes with last, not first",
                    ));
                }
                let limit = first
                    .map(|n| size("first", n, limits))
                    .transpose()?
                    .unwrap_or(limits.default);
                Ok(Seek::Forward {
                    limit,
                    after: decode("after", self.after)?,
                })
            }
        }
    }
}

/// Where a page sits in the whole list.
#[derive(Debug, SimpleObject)]
pub(crate) struct PageInfo {
    /// More items follow `endCursor`.
    has_next_page: bool,
    /// More items precede `startCursor`.
    has_previous_page: bool,
    /// Cursor of the first item of the page.
    start_cursor: Option<String>,
    /// Cursor of the last item of the page.
    end_cursor: Option<String>,
}

impl PageInfo {
    pub(crate) fn of<T>(page: &Page<T>) -> Self {
        Self {
            has_next_page: page.has_next_page,
            has_previous_page: page.has_previous_page,
            start_cursor: page.items.first().map(|(c, _)| c.clone()),
            end_cursor: page.items.last().map(|(c, _)| c.clone()),
        }
    }
}

/// Declares a Relay connection type and its edge type over a node wrapper.
macro_rules! connection {
    ($connection:ident, $edge:ident, $node:ty, $domain:ty) => {
        /// A page of results with cursors (Relay connection).
        pub(crate) struct $connection(pub(crate) crm_store::Page<$domain>);

        #[async_graphql::Object]
        impl $connection {
            /// The items of the page with their cursors.
            async fn edges(&self) -> Vec<$edge> {
                self.0
                    .items
                    .iter()
                    .map(|(cursor, node)| $edge {
                        cursor: cursor.clone(),
                        node: node.clone(),
                    })
                    .collect()
            }

            /// The items of the page.
            async fn nodes(&self) -> Vec<$node> {
                self.0
                    .items
                    .iter()
                    .map(|(_, node)| <$node>::from(node.clone()))
                    .collect()
            }

            /// Where the page sits.
            async fn page_info(&self) -> $crate::graphql::pagination::PageInfo {
                $crate::graphql::pagination::PageInfo::of(&self.0)
            }
        }

        /// One item with its cursor.
        pub(crate) struct $edge {
            cursor: String,
            node: $domain,
        }

        #[async_graphql::Object]
        impl $edge {
            /// Pass to `after`/`before` to page from here.
            async fn cursor(&self) -> &str {
                &self.cursor
            }

            /// The item.
            async fn node(&self) -> $node {
                <$node>::from(self.node.clone())
            }
        }
    };
}
pub(crate) use connection;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PageLimits = PageLimits {
        default: 20,
        max: 100,
    };

    #[test]
    fn page_arguments_are_checked() {
        let seek = PageArgs::default().seek(LIMITS, "c", true).unwrap();
        assert_eq!(
            seek,
            Seek::Forward {
                limit: 20,
                after: None
            }
        );
        let seek = PageArgs {
            last: Some(5),
            ..Default::default()
        }
        .seek(LIMITS, "c", true)
        .unwrap();
        assert_eq!(
            seek,
            Seek::Backward {
                limit: 5,
                before: None
            }
        );
        for args in [
            PageArgs {
                first: Some(101),
                ..Default::default()
            },
            PageArgs {
                first: Some(-1),
                ..Default::default()
            },
            PageArgs {
                first: Some(1),
                last: Some(1),
                ..Default::default()
            },
            PageArgs {
                after: Some("garbage".into()),
                ..Default::default()
            },
            PageArgs {
                first: Some(1),
                before: Some("x".into()),
                ..Default::default()
            },
        ] {
            assert!(args.seek(LIMITS, "c", true).is_err());
        }
    }
}
