//! Reason codes and the operator next-step registry (SPEC 8).
