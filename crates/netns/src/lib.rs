//! Network-namespace topologies (placeholder; being built).
