//! Nurture enrollments: a lead's place in the nurture sequence, and why it left.

use crate::{
    Db, StoreResult,
    db::with_conn,
    effects::{Effect, WriteEffects},
    rows::{from_db_time, to_db_time},
    schema::nurture_enrollments,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

/// A lead's enrollment.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = nurture_enrollments)]
pub struct Enrollment {
    /// The lead.
    pub customer_id: String,
    /// The pipeline run that enrolled it.
    pub run_id: String,
    /// The next step's index in the sequence.
    pub position: i32,
    /// `active`, `completed`, `exited`.
    pub status: String,
    /// Why it left.
    pub exit_reason: Option<String>,
    /// When the next step is due.
    pub next_at: Option<NaiveDateTime>,
    /// Enrolled.
    pub enrolled_at: NaiveDateTime,
    /// Last changed.
    pub updated_at: NaiveDateTime,
}

impl Enrollment {
    /// Enrolled (UTC).
    pub fn enrolled(&self) -> DateTime<Utc> {
        from_db_time(self.enrolled_at)
    }
}

/// Enrolls a lead (once per run) with `effects` (its first step's job); false if the run had
/// enrolled it already.
pub async fn enroll(
    db: &Db,
    customer_id: &str,
    run_id: &str,
    next_at: DateTime<Utc>,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let at = to_db_time(now);
    let fresh = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let fresh = diesel::insert_into(nurture_enrollments::table)
                .values((
                    nurture_enrollments::customer_id.eq(customer_id),
                    nurture_enrollments::run_id.eq(run_id),
                    nurture_enrollments::position.eq(0),
                    nurture_enrollments::status.eq("active"),
                    nurture_enrollments::next_at.eq(Some(to_db_time(next_at))),
                    nurture_enrollments::enrolled_at.eq(at),
                    nurture_enrollments::updated_at.eq(at),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if fresh == 1 {
                conn.apply_effects(effects, now).await?;
            }
            Ok::<_, crate::StoreError>(fresh == 1)
        })
        .await
    })?;
    if fresh {
        db.committed_all(effects, false);
    }
    Ok(fresh)
}

/// The enrollment of a run.
pub async fn get(db: &Db, customer_id: &str, run_id: &str) -> StoreResult<Option<Enrollment>> {
    Ok(with_conn!(db, |conn| {
        nurture_enrollments::table
            .find((customer_id, run_id))
            .select(Enrollment::as_select())
            .first(conn)
            .await
            .optional()
    })?)
}

/// Where an enrollment moves.
#[derive(Debug, Clone, Copy)]
pub enum Move<'a> {
    /// To the next step, due then.
    Next(DateTime<Utc>),
    /// Through the last step.
    Completed,
    /// Out of the sequence, for this reason.
    Exited(&'a str),
}

/// Moves the active enrollment `(customer_id, run_id)` on from `position` (with `effects`, the
/// next step's job). False if it moved meanwhile.
pub async fn advance(
    db: &Db,
    (customer_id, run_id): (&str, &str),
    position: i32,
    to: Move<'_>,
    effects: &[Effect],
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let at = to_db_time(now);
    let (status, reason, next) = match to {
        Move::Next(at) => ("active", None, Some(at)),
        Move::Completed => ("completed", None, None),
        Move::Exited(reason) => ("exited", Some(reason), None),
    };
    let moved = with_conn!(db, |conn| {
        conn.transaction(async |conn| {
            let moved = diesel::update(
                nurture_enrollments::table
                    .find((customer_id, run_id))
                    .filter(nurture_enrollments::status.eq("active"))
                    .filter(nurture_enrollments::position.eq(position)),
            )
            .set((
                nurture_enrollments::position.eq(position + 1),
                nurture_enrollments::status.eq(status),
                nurture_enrollments::exit_reason.eq(reason),
                nurture_enrollments::next_at.eq(next.map(to_db_time)),
                nurture_enrollments::updated_at.eq(at),
            ))
            .execute(conn)
            .await?;
            if moved == 1 {
                conn.apply_effects(effects, now).await?;
            }
            Ok::<_, crate::StoreError>(moved == 1)
        })
        .await
    })?;
    if moved {
        db.committed_all(effects, false);
    }
    Ok(moved)
}

/// The lead's newest enrollment, if it was ever enrolled.
pub async fn latest_of(db: &Db, customer_id: &str) -> StoreResult<Option<Enrollment>> {
    Ok(with_conn!(db, |conn| {
        nurture_enrollments::table
            .filter(nurture_enrollments::customer_id.eq(customer_id))
            .order_by(nurture_enrollments::enrolled_at.desc())
            .select(Enrollment::as_select())
            .first(conn)
            .await
            .optional()
    })?)
}
