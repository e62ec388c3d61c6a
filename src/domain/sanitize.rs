//! Sanitization at the append boundary (SPEC 7).
