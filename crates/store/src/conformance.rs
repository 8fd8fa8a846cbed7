//! Backend-agnostic conformance suite (being written).
