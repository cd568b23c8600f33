//! The engine: facts, steps, apply, journal.
