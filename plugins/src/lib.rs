//! The agents of the crm lead chain (`/import-lead`, `/qualify-lead`, `/voice-call`,
//! `/send-email`, `/follow-up`, `/nurture-email`, `/generate-report`) as durable jobs, with the
//! runner that drives them (DESIGN.md §4).
//!
//! Jobs are registered in one [`Registry`] by their stable kind; each handler is idempotent
//! (a retry after a lost lease must not repeat a side effect) and reaches providers only through
//! the ports in its context, never by naming a concrete adapter.

pub mod email;
pub mod follow_up;
pub mod gdpr;
pub mod import_file;
pub mod intake;
pub mod nurture;
pub mod pipeline;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod templates;
pub mod voice;

/// The job kinds this crate implements (the agents that exist so far).
pub const KINDS: &[&str] = &[
    intake::IMPORT_LEAD,
    import_file::IMPORT_FILE,
    pipeline::QUALIFY_LEAD,
    pipeline::RESCORE_LEAD,
    pipeline::RESCORE_LEADS,
    voice::VOICE_CALL,
    voice::VOICE_DIAL,
    voice::VOICE_DELIVER,
    voice::VOICE_FINISH,
    voice::VOICE_RECONCILE,
    email::SEND_EMAIL,
    follow_up::FOLLOW_UP,
    nurture::NURTURE_EMAIL,
    nurture::NURTURE_SEND,
    report::GENERATE_REPORT,
    gdpr::VOICE_DELETE,
    gdpr::GDPR_RETENTION,
];

pub use pipeline::{Pipeline, PipelineConfig};
pub use runner::{JobError, JobHandler, Registry, RetryPolicy, Runner, RunnerOptions};
pub use scheduler::{Schedule, Scheduler};
