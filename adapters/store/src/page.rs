//! Keyset pagination: opaque cursors and pages in the shape of a Relay connection.
//!
//! A cursor names the position of a row in one ordering: the ordering's key value plus the row
//! id as a tie-breaker. It is base64url text; clients must treat it as opaque.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, NaiveDateTime, Utc};

/// Which way to walk an ordering, and how far.
#[derive(Debug, Clone, PartialEq)]
pub enum Seek {
    /// The first `limit` rows after `after` (or from the start).
    Forward {
        /// Page size.
        limit: usize,
        /// Start after this position.
        after: Option<Cursor>,
    },
    /// The last `limit` rows before `before` (or up to the end).
    Backward {
        /// Page size.
        limit: usize,
        /// End before this position.
        before: Option<Cursor>,
    },
}

impl Seek {
    /// The page size.
    pub fn limit(&self) -> usize {
        match self {
            Self::Forward { limit, .. } | Self::Backward { limit, .. } => *limit,
        }
    }
}

/// The key value of a cursor.
#[derive(Debug, Clone, PartialEq)]
pub enum CursorKey {
    /// A timestamp ordering.
    Time(NaiveDateTime),
    /// A text ordering.
    Text(String),
}

/// A position in one ordering.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Which ordering the cursor belongs to (a short tag such as `c` for created-at).
    pub ordering: &'static str,
    /// The key value of the row.
    pub key: CursorKey,
    /// The row id (tie-breaker).
    pub id: String,
}

/// A cursor that cannot be decoded, or that belongs to another ordering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: {0}")]
pub struct CursorError(pub &'static str);

impl Cursor {
    /// Encodes the cursor as opaque text.
    pub fn encode(&self) -> String {
        let key = match &self.key {
            CursorKey::Time(at) => at.and_utc().timestamp_micros().to_string(),
            CursorKey::Text(text) => text.clone(),
        };
        URL_SAFE_NO_PAD.encode(format!("{}|{}|{key}", self.ordering, self.id))
    }

    /// Decodes a cursor, which must belong to `ordering` and use a key of the same kind as
    /// `time_key` says.
    pub fn decode(raw: &str, ordering: &'static str, time_key: bool) -> Result<Self, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(raw.trim())
            .map_err(|_| CursorError("not a cursor"))?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError("not a cursor"))?;
        let mut parts = text.splitn(3, '|');
        let (Some(tag), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CursorError("not a cursor"));
        };
        if tag != ordering {
            return Err(CursorError("the cursor belongs to another ordering"));
        }
        // Only what we encode is accepted: a UUID id, a timestamp PostgreSQL can hold, text
        // without control characters (a NUL would make PostgreSQL fail the query).
        if uuid::Uuid::try_parse(id).is_err() {
            return Err(CursorError("not a cursor"));
        }
        if key.chars().any(char::is_control) {
            return Err(CursorError("not a cursor"));
        }
        let key = if time_key {
            let micros: i64 = key.parse().map_err(|_| CursorError("not a cursor"))?;
            let at = DateTime::<Utc>::from_timestamp_micros(micros)
                .filter(|at| (1..=9999).contains(&chrono::Datelike::year(at)))
                .ok_or(CursorError("not a cursor"))?;
            CursorKey::Time(at.naive_utc())
        } else {
            CursorKey::Text(key.to_owned())
        };
        Ok(Self {
            ordering,
            key,
            id: id.to_owned(),
        })
    }
}

/// One page of rows with their cursors.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The rows in the requested order, each with its cursor.
    pub items: Vec<(String, T)>,
    /// More rows follow the last one.
    pub has_next_page: bool,
    /// More rows precede the first one.
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    /// Builds a forward page from rows fetched with `limit + 1` (the extra row only tells that
    /// more follow); `after_given` says whether the page started after a cursor.
    pub fn forward(mut items: Vec<(String, T)>, limit: usize, after_given: bool) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        Self {
            items,
            has_next_page: more,
            has_previous_page: after_given,
        }
    }

    /// Builds a page from rows fetched with `limit + 1` in seek direction: trims the probe row
    /// and restores the requested order.
    pub(crate) fn from_probe(mut rows: Vec<(String, T)>, seek: &Seek) -> Self {
        let limit = seek.limit();
        let more = rows.len() > limit;
        rows.truncate(limit);
        match seek {
            Seek::Forward { after, .. } => Self {
                items: rows,
                has_next_page: more,
                has_previous_page: after.is_some(),
            },
            Seek::Backward { before, .. } => {
                rows.reverse();
                Self {
                    items: rows,
                    has_next_page: before.is_some(),
                    has_previous_page: more,
                }
            }
        }
    }

    /// Maps the rows, keeping cursors and page info.
    pub fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        let mut f = f;
        let items = self
            .items
            .into_iter()
            .map(|(c, t)| f(t).map(|u| (c, u)))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_ones() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_764_000_000_123_456)
            .unwrap()
            .naive_utc();
        let id = "01a21343-0759-77de-bfba-e0e752bc02cf".to_owned();
        let c = Cursor {
            ordering: "c",
            key: CursorKey::Time(at),
            id: id.clone(),
        };
        assert_eq!(Cursor::decode(&c.encode(), "c", true).unwrap(), c);
        assert!(Cursor::decode(&c.encode(), "n", false).is_err());
        let n = Cursor {
            ordering: "n",
            key: CursorKey::Text("Ana | Đorđe".into()),
            id: id.clone(),
        };
        assert_eq!(Cursor::decode(&n.encode(), "n", false).unwrap(), n);
        assert!(Cursor::decode("!!!", "c", true).is_err());
        assert!(
            Cursor::decode(
                &URL_SAFE_NO_PAD.encode(format!("c|{id}|notanumber")),
                "c",
                true
            )
            .is_err()
        );
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("c|not-a-uuid|1"), "c", true).is_err());
        assert!(
            Cursor::decode(
                &URL_SAFE_NO_PAD.encode(format!("n|{id}|a\u{0}b")),
                "n",
                false
            )
            .is_err()
        );
        let far = format!("c|{id}|{}", -300_000_000_000_000_000_i64);
        assert!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode(far), "c", true).is_err(),
            "out of PostgreSQL's range"
        );
    }
}
