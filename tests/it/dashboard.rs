//! Placeholder: filled by the #20 tests.
