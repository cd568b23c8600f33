//! The answer file: model, loading with spans, cross-section rules, reports, schema.
//!
//! The files depend one way: `load` -> `shape` -> `rules` -> `report` -> `span`, and the
//! first three on `model`, which depends on none of them.

pub mod load;
pub mod model;
pub mod report;
pub mod rules;
pub mod schema;
pub mod shape;
pub mod span;

pub use load::{Loaded, load_file, load_str};
pub use model::Answers;
pub use report::{Problem, Report};
