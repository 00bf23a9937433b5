//! Shared helpers for fovea end-to-end tests.
