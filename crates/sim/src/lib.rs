//! Deterministic simulated network (being written).
