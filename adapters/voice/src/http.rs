//! Shared HTTP plumbing of the adapters (being written).
