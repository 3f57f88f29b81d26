//! Voice providers end to end through HTTP (being written).
