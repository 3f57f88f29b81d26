//! Interactions: every call, email, meeting and note with a customer.

use crate::{
    customer::Change,
    error::{FieldError, ValidationErrors},
    ids::{CustomerId, InteractionId},
    values::{optional_text, text_change},
};
use chrono::{DateTime, Utc};
use std::{fmt, str::FromStr};

/// Longest subject accepted.
pub const SUBJECT_MAX_LEN: usize = 500;
/// Longest body accepted (a call transcript fits).
pub const BODY_MAX_LEN: usize = 100_000;
/// Longest outcome and author accepted.
pub const OUTCOME_MAX_LEN: usize = 200;
/// Longest duration accepted, in seconds (one day).
pub const MAX_DURATION_SECONDS: i32 = 86_400;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $field:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stored, lower-case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = FieldError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
                    FieldError::new($field, concat!("invalid_", $field), format!("`{s}` is not a valid {}", $field))
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use string_enum;

string_enum!(
    /// What kind of contact an interaction was.
    InteractionKind, "kind" {
        /// A phone call (by a person or a voice agent).
        Call = "call",
        /// An email.
        Email = "email",
        /// A meeting.
        Meeting = "meeting",
        /// A note.
        Note = "note",
    }
);

string_enum!(
    /// Who started the contact.
    Direction, "direction" {
        /// The customer contacted us.
        Inbound = "inbound",
        /// We contacted the customer.
        Outbound = "outbound",
    }
);

/// A stored interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    /// Identity.
    pub id: InteractionId,
    /// The customer it belongs to.
    pub customer_id: CustomerId,
    /// Call, email, meeting or note.
    pub kind: InteractionKind,
    /// Inbound or outbound, when it applies.
    pub direction: Option<Direction>,
    /// Subject line or title.
    pub subject: Option<String>,
    /// Body, transcript or note text.
    pub body: Option<String>,
    /// Outcome (`interested`, `no_answer`, `appointment`, …).
    pub outcome: Option<String>,
    /// When it happened (or will happen, for a planned meeting).
    pub occurred_at: DateTime<Utc>,
    /// How long it took, in seconds.
    pub duration_seconds: Option<i32>,
    /// Who logged it: a user, or an agent such as `voice-agent:de`.
    pub author: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The raw fields of a new interaction.
#[derive(Debug, Clone)]
pub struct InteractionDraft {
    /// The customer.
    pub customer_id: CustomerId,
    /// Kind.
    pub kind: InteractionKind,
    /// Direction.
    pub direction: Option<Direction>,
    /// Subject.
    pub subject: Option<String>,
    /// Body.
    pub body: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// When it happened; now when absent.
    pub occurred_at: Option<DateTime<Utc>>,
    /// Duration in seconds.
    pub duration_seconds: Option<i32>,
    /// Author.
    pub author: Option<String>,
}

fn duration(seconds: i32) -> Result<i32, FieldError> {
    if (0..=MAX_DURATION_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(FieldError::new(
            "duration_seconds",
            "out_of_range",
            format!("duration_seconds must be between 0 and {MAX_DURATION_SECONDS}"),
        ))
    }
}

/// A validated interaction, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInteraction(pub Interaction);

impl NewInteraction {
    /// Validates a draft, reporting every failing field.
    pub fn parse(draft: InteractionDraft, now: DateTime<Utc>) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let subject = errors.check(optional_text(
            "subject",
            draft.subject.as_deref(),
            SUBJECT_MAX_LEN,
        ));
        let body = errors.check(optional_text("body", draft.body.as_deref(), BODY_MAX_LEN));
        let outcome = errors.check(optional_text(
            "outcome",
            draft.outcome.as_deref(),
            OUTCOME_MAX_LEN,
        ));
        let duration_seconds = errors.check(draft.duration_seconds.map(duration).transpose());
        let author = errors.check(optional_text(
            "author",
            draft.author.as_deref(),
            OUTCOME_MAX_LEN,
        ));
        let (Some(subject), Some(body), Some(outcome), Some(duration_seconds), Some(author)) =
            (subject, body, outcome, duration_seconds, author)
        else {
            return Err(errors);
        };
        Ok(Self(Interaction {
            id: InteractionId::new(),
            customer_id: draft.customer_id,
            kind: draft.kind,
            direction: draft.direction,
            subject,
            body,
            outcome,
            occurred_at: draft.occurred_at.unwrap_or(now),
            duration_seconds,
            author,
            created_at: now,
            updated_at: now,
        }))
    }
}

/// The raw fields of a partial update of an interaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionPatchDraft {
    /// Kind (cannot be cleared).
    pub kind: Option<InteractionKind>,
    /// Direction.
    pub direction: Change<Direction>,
    /// Subject.
    pub subject: Change<String>,
    /// Body.
    pub body: Change<String>,
    /// Outcome.
    pub outcome: Change<String>,
    /// When it happened (cannot be cleared).
    pub occurred_at: Option<DateTime<Utc>>,
    /// Duration.
    pub duration_seconds: Change<i32>,
    /// Author.
    pub author: Change<String>,
}

/// A validated partial update of an interaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InteractionPatch(InteractionPatchDraft);

impl InteractionPatch {
    /// Validates a partial update, reporting every failing field.
    pub fn parse(draft: InteractionPatchDraft) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let patch = InteractionPatchDraft {
            kind: draft.kind,
            direction: draft.direction,
            subject: errors
                .check(text_change("subject", draft.subject, SUBJECT_MAX_LEN))
                .unwrap_or_default(),
            body: errors
                .check(text_change("body", draft.body, BODY_MAX_LEN))
                .unwrap_or_default(),
            outcome: errors
                .check(text_change("outcome", draft.outcome, OUTCOME_MAX_LEN))
                .unwrap_or_default(),
            occurred_at: draft.occurred_at,
            duration_seconds: errors
                .check(draft.duration_seconds.try_map(duration))
                .unwrap_or_default(),
            author: errors
                .check(text_change("author", draft.author, OUTCOME_MAX_LEN))
                .unwrap_or_default(),
        };
        errors.into_result(|| Self(patch))
    }
}

impl Interaction {
    /// Applies a validated patch, stamping `updated_at` when something changed.
    pub fn apply(&mut self, patch: InteractionPatch, now: DateTime<Utc>) {
        let InteractionPatch(p) = patch;
        let before = self.clone();
        if let Some(kind) = p.kind {
            self.kind = kind;
        }
        p.direction.apply(&mut self.direction);
        p.subject.apply(&mut self.subject);
        p.body.apply(&mut self.body);
        p.outcome.apply(&mut self.outcome);
        if let Some(at) = p.occurred_at {
            self.occurred_at = at;
        }
        p.duration_seconds.apply(&mut self.duration_seconds);
        p.author.apply(&mut self.author);
        if *self != before {
            self.updated_at = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> InteractionDraft {
        InteractionDraft {
            customer_id: CustomerId::new(),
            kind: InteractionKind::Call,
            direction: Some(Direction::Outbound),
            subject: Some("  Erstgespräch ".into()),
            body: None,
            outcome: Some("interested".into()),
            occurred_at: None,
            duration_seconds: Some(120),
            author: None,
        }
    }

    #[test]
    fn kinds_parse_case_insensitively() {
        assert_eq!(
            "CALL".parse::<InteractionKind>().unwrap(),
            InteractionKind::Call
        );
        assert_eq!(
            "fax".parse::<InteractionKind>().unwrap_err().code,
            "invalid_kind"
        );
        assert_eq!(
            "sideways".parse::<Direction>().unwrap_err().code,
            "invalid_direction"
        );
    }

    #[test]
    fn a_draft_defaults_occurred_at_to_now() {
        let now = Utc::now();
        let NewInteraction(i) = NewInteraction::parse(draft(), now).unwrap();
        assert_eq!(i.occurred_at, now);
        assert_eq!(i.subject.as_deref(), Some("Erstgespräch"));
    }

    #[test]
    fn bad_fields_are_reported() {
        let bad = InteractionDraft {
            duration_seconds: Some(-1),
            subject: Some("x".repeat(501)),
            ..draft()
        };
        let errors = NewInteraction::parse(bad, Utc::now()).unwrap_err();
        let codes: Vec<_> = errors
            .errors()
            .iter()
            .map(|e| (e.field.as_str(), e.code))
            .collect();
        assert_eq!(
            codes,
            [
                ("subject", "too_long"),
                ("duration_seconds", "out_of_range")
            ]
        );
    }

    #[test]
    fn a_patch_applies() {
        let now = Utc::now();
        let NewInteraction(mut i) = NewInteraction::parse(draft(), now).unwrap();
        let patch = InteractionPatch::parse(InteractionPatchDraft {
            outcome: Change::Set("appointment".into()),
            subject: Change::Clear,
            ..Default::default()
        })
        .unwrap();
        let later = now + chrono::Duration::seconds(1);
        i.apply(patch, later);
        assert_eq!(i.outcome.as_deref(), Some("appointment"));
        assert_eq!(i.subject, None);
        assert_eq!(i.updated_at, later);
    }
}
