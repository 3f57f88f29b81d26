//! The agents of the crm lead chain (`/import-lead`, `/qualify-lead`, `/voice-call`,
//! `/send-email`, `/follow-up`, `/nurture-email`, `/generate-report`) as durable jobs, with the
//! runner and the scheduler that drive them (DESIGN.md §4).
//!
//! Jobs are small serde structs with a stable name, idempotent, registered in one list; they
//! reach providers only through the `Arc<dyn Port>`s of their context, never by naming a
//! concrete adapter. The job queue and the pipeline arrive with the pipeline issue.
