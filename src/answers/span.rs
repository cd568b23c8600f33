//! Where each key and value of an answer file sits, by dotted path: what lets every problem,
//! whichever pass found it, point at its line. Built once from the parsed document; reads
//! nothing else of the answers module, so the loader and the report both depend on it and it
//! on neither.

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where each key and value of a document sits, by dotted path (`network.dhcp-range[0].start`).
#[derive(Debug, Default, Clone)]
pub struct SpanIndex {
    entries: Vec<SpanEntry>,
    by_path: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
struct SpanEntry {
    path: String,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

impl SpanIndex {
    pub fn build(root: &Spanned<DeTable<'_>>) -> Self {
        let mut index = SpanIndex::default();
        index.add(String::new(), None, root.span());
        index.walk_table("", root.get_ref());
        index
    }

    fn add(&mut self, path: String, key: Option<Range<usize>>, value: Range<usize>) {
        self.by_path.entry(path.clone()).or_insert(self.entries.len());
        self.entries.push(SpanEntry { path, key, value });
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table.iter() {
            let path =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            self.add(path.clone(), Some(key.span()), value.span());
            self.walk_value(&path, value.get_ref());
        }
    }

    fn walk_value(&mut self, path: &str, value: &DeValue<'_>) {
        match value {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    self.add(p.clone(), None, item.span());
                    self.walk_value(&p, item.get_ref());
                }
            }
            _ => {}
        }
    }

    fn entry(&self, path: &str) -> Option<&SpanEntry> {
        self.by_path.get(path).map(|i| &self.entries[*i])
    }

    /// The span of the value at exactly `path`, if the file has it.
    pub fn exact_value_span(&self, path: &str) -> Option<Range<usize>> {
        self.entry(path).map(|e| e.value.clone())
    }

    /// The span of the value at `path`, or of its nearest ancestor that exists in the file.
    pub fn value_span(&self, path: &str) -> Range<usize> {
        let mut p = path;
        loop {
            if let Some(e) = self.entry(p) {
                return e.value.clone();
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return 0..0,
            }
        }
    }

    /// The span of the key at `path` (falls back to the value's span).
    pub fn key_span(&self, path: &str) -> Range<usize> {
        self.entry(path).and_then(|e| e.key.clone()).unwrap_or_else(|| self.value_span(path))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// The innermost path whose key is `span` or whose value contains it.
    pub fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        if let Some(e) = self.entries.iter().find(|e| e.key.as_ref() == Some(span)) {
            return Some(&e.path);
        }
        self.entries
            .iter()
            .filter(|e| e.value.start <= span.start && span.end <= e.value.end)
            // Tables span their header only, so `host` and `host[0]` can tie: take the deeper.
            .min_by_key(|e| (e.value.end - e.value.start, std::cmp::Reverse(e.path.len())))
            .map(|e| e.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> SpanIndex {
        SpanIndex::build(&DeTable::parse(text).unwrap())
    }

    #[test]
    fn paths_map_to_spans_and_back() {
        let text = "[network]\nsubnet = \"10.0.0.0/24\"\n\n[[host]]\nname = \"a\"\nroles = [\"dns\"]\n";
        let ix = index(text);
        let at = |r: Range<usize>| &text[r];
        assert_eq!(at(ix.value_span("network.subnet")), "\"10.0.0.0/24\"");
        assert_eq!(at(ix.key_span("network.subnet")), "subnet");
        assert_eq!(at(ix.value_span("host[0].roles[0]")), "\"dns\"");
        // A path the file lacks falls back to its nearest ancestor; only exact lookups say so.
        assert_eq!(ix.value_span("host[0].address"), ix.value_span("host[0]"));
        assert_eq!(ix.exact_value_span("host[0].address"), None);
        assert!(ix.contains("host[0].name") && !ix.contains("host[1]"));
        let roles = text.find("\"dns\"").unwrap();
        assert_eq!(ix.path_at(&(roles..roles + 5)), Some("host[0].roles[0]"));
        let key = text.find("name").unwrap();
        assert_eq!(ix.path_at(&(key..key + 4)), Some("host[0].name"));
    }
}
