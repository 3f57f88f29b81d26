//! Bulk inserts on PostgreSQL: one statement per table over `UNNEST` of one array parameter per
//! column, instead of multi-row `VALUES` lists.
//!
//! A `VALUES` list binds one parameter per cell (a 1,000-row customer insert binds 20,000 and
//! sends a new SQL text of that length, which PostgreSQL parses and plans each time), and the
//! protocol's limit of 65,535 parameters caps the rows per statement. With `UNNEST` the
//! statement text is fixed per table, its parameters are as many as the columns, and any
//! number of rows fits in one statement. SQLite has no arrays; it keeps the `VALUES` lists.

use chrono::NaiveDateTime;
use diesel::{
    pg::Pg,
    sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamp},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// One column's values, in row order. Text is borrowed from the rows: it is copied once, into
/// the statement's parameter.
pub(crate) enum Values<'a> {
    Text(Vec<&'a str>),
    OptText(Vec<Option<&'a str>>),
    Time(Vec<NaiveDateTime>),
    OptTime(Vec<Option<NaiveDateTime>>),
    Bool(Vec<bool>),
    Int(Vec<i32>),
    BigInt(Vec<i64>),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Text(v) => v.len(),
            Self::OptText(v) => v.len(),
            Self::Time(v) => v.len(),
            Self::OptTime(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Int(v) => v.len(),
            Self::BigInt(v) => v.len(),
        }
    }

    /// The PostgreSQL array type the parameter is cast to.
    fn cast(&self) -> &'static str {
        match self {
            Self::Text(_) | Self::OptText(_) => "text[]",
            Self::Time(_) | Self::OptTime(_) => "timestamp[]",
            Self::Bool(_) => "boolean[]",
            Self::Int(_) => "int4[]",
            Self::BigInt(_) => "int8[]",
        }
    }
}

/// The columns of the rows to insert into one table.
pub(crate) struct Columns<'a> {
    table: &'static str,
    columns: Vec<(&'static str, Values<'a>)>,
}

/// One column of `rows`, read with `f`.
pub(crate) fn col<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

impl<'a> Columns<'a> {
    /// No columns yet, for `table`.
    pub(crate) fn new(table: &'static str) -> Self {
        Self {
            table,
            columns: Vec::new(),
        }
    }

    /// Adds a column.
    pub(crate) fn with(mut self, name: &'static str, values: Values<'a>) -> Self {
        self.columns.push((name, values));
        self
    }

    /// Inserts the rows (none: no statement).
    pub(crate) async fn insert(self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
        let rows = self
            .columns
            .iter()
            .map(|(_, v)| v.len())
            .next()
            .unwrap_or(0);
        if rows == 0 {
            return Ok(());
        }
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        let arrays: Vec<String> = (1..)
            .zip(&self.columns)
            .map(|(i, (_, values))| format!("${i}::{}", values.cast()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({})",
            self.table,
            names.join(", "),
            arrays.join(", ")
        );
        let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
        for (_, values) in self.columns {
            query = match values {
                Values::Text(v) => query.bind::<Array<Text>, _>(v),
                Values::OptText(v) => query.bind::<Array<Nullable<Text>>, _>(v),
                Values::Time(v) => query.bind::<Array<Timestamp>, _>(v),
                Values::OptTime(v) => query.bind::<Array<Nullable<Timestamp>>, _>(v),
                Values::Bool(v) => query.bind::<Array<Bool>, _>(v),
                Values::Int(v) => query.bind::<Array<Integer>, _>(v),
                Values::BigInt(v) => query.bind::<Array<BigInt>, _>(v),
            };
        }
        query.execute(conn).await?;
        Ok(())
    }
}
