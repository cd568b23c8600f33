//! A small YAML emitter for `serde_json::Value`: block style, maps in insertion order
//! (serde_json's `preserve_order`), and every string value double-quoted with escapes, so no
//! value can change the structure of the document it lands in (quoting happens here, at the
//! sink, whatever the value went through before).
//!
//! The escapes are JSON's (`\"`, `\\`, `\n`, `\uXXXX`), which a YAML double-quoted scalar reads
//! the same, plus every character YAML does not allow raw or reads as a line break (NEL, LS, PS,
//! C1 controls, DEL, the BOM): Kubernetes parses YAML 1.1, where those break a line.
//! Keys are written plain only when they are a plain word YAML 1.1 cannot read as anything but
//! a string (not `on`, `yes`, `null`...); any other key is double-quoted too.

use serde_json::Value;

/// One document, without the `---` marker, ending with a newline.
pub fn document(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => seq(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// Several documents, each introduced by `---`.
pub fn documents<'a>(docs: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&document(d));
    }
    out
}

/// A string as a YAML double-quoted scalar.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if printable(c) => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// What YAML allows raw in a double-quoted scalar and reads as itself (no line breaks beyond
/// `\n` and `\r`, which are escaped anyway).
fn printable(c: char) -> bool {
    matches!(u32::from(c),
        0x20..=0x7e
        | 0xa0..=0x2027
        | 0x202a..=0xd7ff
        | 0xe000..=0xfefe
        | 0xff00..=0xfffd
        | 0x10000..=0x10ffff)
}

/// Words YAML 1.1 reads as booleans or null when they stand plain.
const SPECIAL_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on",
    "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !SPECIAL_WORDS.contains(&k);
    if plain { k.to_string() } else { quote(k) }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => unreachable!("collections are written in block style"),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

fn indent(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn map(m: &serde_json::Map<String, Value>, depth: usize, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        // The first key of a map in a sequence item follows its `- `.
        if i > 0 || !out.ends_with("- ") {
            indent(depth, out);
        }
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map(inner, depth + 2, out);
            }
            Value::Array(items) if !items.is_empty() => {
                // Sequences in a map are indented like kubectl writes them.
                out.push('\n');
                seq(items, depth + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn seq(items: &[Value], depth: usize, out: &mut String) {
    for v in items {
        indent(depth, out);
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => map(m, depth + 2, out),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(inner, depth + 2, out);
            }
            other => {
                debug_assert!(!is_block(other));
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What a YAML parser (libyaml, as strict as Kubernetes' YAML 1.1) reads back.
    fn parse(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    const HOSTILE: &[&str] = &[
        "plain",
        "",
        "a: b",
        "key: value\nother: x",
        "# comment",
        "x # not a comment",
        "{a: 1}",
        "[1, 2]",
        "- item",
        "-",
        "*alias",
        "&anchor x",
        "!!binary aGk=",
        "%YAML 1.2",
        "---",
        "...",
        "|\n  block",
        ">folded",
        "'single'",
        "\"double\"",
        "back\\slash",
        " leading and trailing ",
        "tab\there",
        "cr\rlf\r\n",
        "nul\0byte",
        "bell\x07 del\x7f",
        "nel\u{85}ls\u{2028}ps\u{2029}",
        "bom\u{feff}",
        "c1\u{9b}",
        "héllo wörld ☃ 日本 🦀",
        "true",
        "no",
        "on",
        "null",
        "~",
        "0x1F",
        "1e3",
        "0777",
        "2026-01-01",
        "@at",
        "`tick`",
        "?question",
        "a\n---\nkind: Secret",
        "${site_internal_domain}",
    ];

    #[test]
    fn hostile_strings_stay_strings() {
        for s in HOSTILE {
            let v = json!({ "data": { "k": s }, "list": [s, { "v": s }] });
            let text = document(&v);
            assert_eq!(parse(&text), v, "{s:?} came back different from:\n{text}");
            // One key per line: nothing a value holds starts a new line.
            assert_eq!(text.lines().count(), 5, "{s:?}:\n{text}");
        }
    }

    #[test]
    fn hostile_keys_stay_keys() {
        for s in HOSTILE.iter().filter(|s| !s.is_empty()) {
            let v = json!({ *s: "value", "after": 1 });
            let text = document(&v);
            assert_eq!(parse(&text), v, "{s:?}:\n{text}");
        }
        assert_eq!(
            document(&json!({"on": 1, "app.kubernetes.io/name": "x"})),
            "\"on\": 1\napp.kubernetes.io/name: \"x\"\n"
        );
    }

    #[test]
    fn block_style_in_insertion_order() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "site", "labels": { "b": "2", "a": "1" } },
            "spec": { "list": ["x", { "k": "v", "num": 2 }, []], "empty": {}, "flag": true, "none": null },
        });
        let want = r#"apiVersion: "v1"
kind: "ConfigMap"
metadata:
  name: "site"
  labels:
    b: "2"
    a: "1"
spec:
  list:
    - "x"
    - k: "v"
      num: 2
    - []
  empty: {}
  flag: true
  none: null
"#;
        assert_eq!(document(&v), want);
        assert_eq!(parse(want), v);
    }

    #[test]
    fn several_documents() {
        let (a, b) = (json!({"a": "x\n---\nb: y"}), json!({"b": ["---"]}));
        let text = documents([&a, &b]);
        let back: Vec<Value> =
            serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
        assert_eq!(back, vec![a, b]);
        assert_eq!(text.matches("---\n").count(), 2, "{text}");
    }

    #[test]
    fn escapes_are_yaml_escapes() {
        assert_eq!(quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(quote("\u{85}\u{2028}\u{feff}\u{1}"), r#""\u0085\u2028\ufeff\u0001""#);
        assert_eq!(quote("ü🦀"), "\"ü🦀\"");
    }
}
