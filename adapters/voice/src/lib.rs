//! Voice providers of the crm: Vapi, Retell, Bland and the built-in simulator, each behind the
//! `VoiceProvider` port of `crm-domain`, chosen per voice agent by `kind` in configuration.
//!
//! Every provider module will have the same files (DESIGN.md §5): `config` (serde,
//! `deny_unknown_fields`), `client` (the port, speaking the provider's real HTTP API with a
//! configurable base URL), `webhook` (signature verification over the raw body and parsing into
//! domain events) and tests against a local fake of the provider. The adapters arrive with the
//! voice-call issue; this crate exists now so that the dependency rules of `.ci/run` hold from
//! the first commit (it may depend on `crm-domain` only, never on storage or GraphQL).
