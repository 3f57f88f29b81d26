//! Typed identifiers. Ids are UUIDv7 (time-ordered), so new rows append to indexes.

use std::{fmt, str::FromStr};
use uuid::Uuid;

/// A string that is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid id (expected a UUID)")]
pub struct IdError(pub String);

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s.trim()).map(Self).map_err(|_| IdError(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lower case: the one form stored and returned.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }
    };
}

id_type!(
    /// Identifies a customer (a lead is a customer with status `lead`).
    CustomerId
);
id_type!(
    /// Identifies an interaction.
    InteractionId
);
id_type!(
    /// Identifies an API key (not the secret key itself).
    ApiKeyId
);
id_type!(
    /// Identifies a job of the durable queue.
    JobId
);

id_type!(
    /// Identifies a pipeline run (one pass of a lead through the chain).
    RunId
);
id_type!(
    /// Identifies a step of a pipeline run.
    StepId
);
id_type!(
    /// Identifies one scoring of a lead.
    ScoreId
);
id_type!(
    /// Identifies one call attempt (ours, not the provider's).
    CallId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = CustomerId::new();
        assert_eq!(id.to_string().parse::<CustomerId>().unwrap(), id);
        assert!("not-a-uuid".parse::<CustomerId>().is_err());
        assert!("".parse::<InteractionId>().is_err());
        let upper = "0191F8B2-5B7A-7C3D-9E2F-1A2B3C4D5E6F";
        assert_eq!(
            upper.parse::<CustomerId>().unwrap().to_string(),
            upper.to_lowercase()
        );
    }

    #[test]
    fn new_ids_are_time_ordered() {
        let a = CustomerId::new();
        let b = CustomerId::new();
        assert!(a < b);
    }
}
