//! Unit tests of the connection state machine over in-memory streams.
