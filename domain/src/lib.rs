//! The domain of the crm: validated values, customers and interactions, and the ports that
//! adapters implement.
//!
//! Rules of this crate:
//! - no I/O, no knowledge of diesel, axum, async-graphql, reqwest, lettre or casbin;
//! - values are parsed once, on the way in, into types that can only hold valid data
//!   ("parse, don't validate"); everything downstream trusts them;
//! - validation reports *every* failing field at once, each with a stable code, so that
//!   the API can name the fields to a client.

pub mod auth;
pub mod calling;
pub mod clock;
pub mod consent;
pub mod customer;
pub mod email;
pub mod error;
pub mod hex;
pub mod ids;
pub mod interaction;
pub mod lead;
pub mod report;
pub mod scoring;
pub mod similarity;
pub mod values;
pub mod voice;

pub use auth::{Credential, CustomerScope, Principal, Role};
pub use clock::{Clock, SystemClock};
pub use consent::{ConsentChannel, ConsentPurpose, ConsentRecord, ConsentSource, LawfulBasis};
pub use customer::{
    Change, Customer, CustomerDraft, CustomerPatch, CustomerPatchDraft, CustomerStatus, NewCustomer,
};
pub use email::{
    Attachment, EmailEvent, EmailEventKind, EmailSender, Mailbox, OutgoingEmail, SendError,
    SenderKind, SentEmail,
};
pub use error::{FieldError, ValidationErrors};
pub use ids::{
    ApiKeyId, CallId, CustomerId, IdError, InteractionId, JobId, RunId, ScoreId, StepId,
};
pub use interaction::{
    Direction, Interaction, InteractionDraft, InteractionKind, InteractionPatch,
    InteractionPatchDraft, NewInteraction,
};
pub use scoring::{Activity, LeadScore, NextAction, Priority, Reason, ScoringRules};
pub use values::{CountryCode, Email, Language, Phone, PhoneRegion, Tag, TimeZone};
pub use voice::{
    AgentSpec, CallDeletion, CallStatus, CallUpdate, Disposition, ProviderError, ProviderKind,
    ScriptedDelivery, Segment, Sentiment, SpeakerRole, StartCall, StartedCall, VoiceProvider,
    WebhookError, WebhookRequest,
};
