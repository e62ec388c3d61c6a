//! Projections of the opledger log (Monitoring, audit trail, notifications).
