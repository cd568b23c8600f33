//! The answer file: model, loading with spans, cross-section rules, reports, schema.

pub mod load;
pub mod model;
pub mod report;
pub mod rules;
pub mod schema;
pub mod shape;

pub use load::{Loaded, load_file, load_str};
pub use model::Answers;
pub use report::{Problem, Report};
