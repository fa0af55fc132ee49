//! Behaviour tests for every algorithm.
