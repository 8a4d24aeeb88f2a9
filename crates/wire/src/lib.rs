//! Packet views and emitters (being written).
