//! Email senders of the crm: SMTP (lettre, rustls), SendGrid (v3 mail-send API) and the local
//! outbox (`.eml` files, the embedded default), each behind the `EmailSender` port of
//! `crm-domain`, chosen by `[email] kind` in configuration.
//!
//! The senders arrive with the email issue; this crate exists now so that the dependency rules
//! of `.ci/run` hold from the first commit (it may depend on `crm-domain` only).
