//! JSON Schema of the answer file, for editors and for `groundwork schema`.

use super::model::Answers;

/// The schema as pretty JSON, ending with a newline (the form kept in `wizard/answer.schema.json`).
pub fn json() -> String {
    let schema = schemars::schema_for!(Answers);
    let mut s = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    s.push('\n');
    s
}
