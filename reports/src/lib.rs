//! Renders reports.
