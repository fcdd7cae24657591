//! Structural validation of a positioned JSON document against a JSON Schema generated from
//! the manifest types, reporting every error with its place.
//!
//! The schema is the single description of a manifest's shape: the same document is checked
//! in, printed by `bkt schema`, and interpreted here. Only the keywords that schemars emits
//! for our types are understood (`$ref`, `type`, `enum`, `minimum`, `maximum`, `properties`,
//! `required`, `additionalProperties`, `items`, `anyOf`/`oneOf` of object forms); anything
//! else in the schema is ignored, and a test guards that the types emit nothing more.

use std::fmt;

use serde_json::Value as Schema;

use super::json::{Member, Node, Pos, Value};

/// One problem in a manifest, at a JSON path and, when known, a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Option<Pos>,
    pub path: JsonPath,
    pub message: String,
}

/// A path into a JSON document, displayed as `vms.win11.iso_sources[0].url`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl JsonPath {
    pub fn key(&self, key: &str) -> JsonPath {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    pub fn index(&self, index: usize) -> JsonPath {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn starts_with(&self, prefix: &JsonPath) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The node at this path in `root`, if there is one.
    pub fn find<'a>(&self, root: &'a Node) -> Option<&'a Node> {
        self.0
            .iter()
            .try_fold(root, |node, segment| match (segment, &node.value) {
                (Segment::Key(k), Value::Object(_)) => node.get(k).map(|m| &m.value),
                (Segment::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if is_identifier(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => write!(f, "[{}]", serde_json::Value::from(k.as_str()))?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Diagnostic {
    pub fn new(pos: Option<Pos>, path: JsonPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            pos,
            path,
            message: message.into(),
        }
    }
}

/// Checks `node` against `root` (a schema with its `$defs`), returning every violation.
pub fn check(root: &Schema, node: &Node) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    Checker {
        root,
        out: &mut out,
    }
    .value(root, node, &JsonPath::default());
    out
}

struct Checker<'a> {
    root: &'a Schema,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Checker<'a> {
    fn resolve(&self, mut schema: &'a Schema) -> &'a Schema {
        // Bounded: our schemas never chain more than one reference.
        for _ in 0..8 {
            let Some(target) = schema.get("$ref").and_then(Schema::as_str) else {
                break;
            };
            let pointer = target.strip_prefix('#').unwrap_or(target);
            match self.root.pointer(pointer) {
                Some(next) => schema = next,
                None => break,
            }
        }
        schema
    }

    fn report(&mut self, pos: Pos, path: &JsonPath, message: impl Into<String>) {
        self.out
            .push(Diagnostic::new(Some(pos), path.clone(), message));
    }

    fn value(&mut self, schema: &'a Schema, node: &Node, path: &JsonPath) {
        let schema = self.resolve(schema);
        if let Some(forms) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Schema::as_array)
        {
            return self.one_of(forms, node, path);
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Schema::String(t) => vec![t.as_str()],
                Schema::Array(ts) => ts.iter().filter_map(Schema::as_str).collect(),
                _ => vec![],
            };
            if !types.is_empty() && !types.iter().any(|t| has_type(node, t)) {
                let wanted: Vec<&str> = types.iter().map(|t| type_phrase(t)).collect();
                let found = match &node.value {
                    Value::Number(n) if types.contains(&"integer") => format!("the number {n}"),
                    other => other.type_name().to_string(),
                };
                return self.report(
                    node.pos,
                    path,
                    format!("expected {}, found {found}", wanted.join(" or ")),
                );
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Schema::as_array) {
            let actual = node.to_serde();
            if !allowed.contains(&actual) {
                let listed: Vec<String> = allowed.iter().map(Schema::to_string).collect();
                let mut message = format!("must be one of {}", listed.join(", "));
                if let Some(text) = actual.as_str() {
                    let names: Vec<&str> = allowed.iter().filter_map(Schema::as_str).collect();
                    if let Some(close) = suggest(text, &names) {
                        message = format!("{message} (did you mean \"{close}\"?)");
                    }
                }
                self.report(node.pos, path, message);
            }
        }
        if let Value::Number(text) = &node.value {
            self.bounds(schema, text, node.pos, path);
        }
        match &node.value {
            Value::Object(members) => self.object(schema, node.pos, members, path, None),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.value(item_schema, item, &path.index(i));
                    }
                }
            }
            _ => {}
        }
    }

    fn bounds(&mut self, schema: &Schema, text: &str, pos: Pos, path: &JsonPath) {
        let Ok(value) = text.parse::<f64>() else {
            return;
        };
        if let Some(min) = schema.get("minimum").and_then(Schema::as_f64)
            && value < min
        {
            self.report(pos, path, format!("must be >= {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Schema::as_f64)
            && value > max
        {
            self.report(pos, path, format!("must be <= {max}"));
        }
    }

    /// Checks an object's members. `form` is set when the object is one form of a `oneOf`:
    /// keys of the other forms are then reported as not combinable with this one.
    fn object(
        &mut self,
        schema: &'a Schema,
        pos: Pos,
        members: &[Member],
        path: &JsonPath,
        form: Option<(&str, &[&str])>,
    ) {
        let properties = schema.get("properties").and_then(Schema::as_object);
        let known: Vec<&str> = properties
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let closed = schema.get("additionalProperties") == Some(&Schema::Bool(false));
        let extra = schema.get("additionalProperties").filter(|s| s.is_object());
        for member in members {
            let member_path = path.key(&member.key);
            if let Some(sub) = properties.and_then(|p| p.get(&member.key)) {
                self.value(sub, &member.value, &member_path);
            } else if let Some(sub) = extra {
                self.value(sub, &member.value, &member_path);
            } else if let Some((chosen, others)) = form
                && others.contains(&member.key.as_str())
            {
                self.report(
                    member.key_pos,
                    &member_path,
                    format!("\"{}\" cannot be combined with \"{chosen}\"", member.key),
                );
            } else if closed && form.is_none() {
                self.report(
                    member.key_pos,
                    &member_path,
                    unknown_field(&member.key, &known),
                );
            }
        }
        // A misspelt required field is one mistake, reported once (as the unknown field).
        let misspelt: Vec<&str> = members
            .iter()
            .filter(|m| !known.contains(&m.key.as_str()))
            .filter_map(|m| suggest(&m.key, &known))
            .collect();
        for required in schema
            .get("required")
            .and_then(Schema::as_array)
            .into_iter()
            .flatten()
            .filter_map(Schema::as_str)
        {
            if !members.iter().any(|m| m.key == required) && !misspelt.contains(&required) {
                self.report(pos, path, format!("missing required field \"{required}\""));
            }
        }
    }

    /// `oneOf`/`anyOf` whose forms are objects told apart by their required keys (an ISO
    /// source has either `path` or `url`). Picking the form by its key gives messages about
    /// the form the author meant instead of "matches none of the alternatives".
    fn one_of(&mut self, forms: &'a [Schema], node: &Node, path: &JsonPath) {
        let forms: Vec<&'a Schema> = forms.iter().map(|f| self.resolve(f)).collect();
        let keys_of = |schema: &Schema, field: &str| -> Vec<String> {
            match schema.get(field) {
                Some(Schema::Array(a)) => a
                    .iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect(),
                Some(Schema::Object(o)) => o.keys().cloned().collect(),
                _ => vec![],
            }
        };
        let leading: Vec<String> = forms
            .iter()
            .filter_map(|f| keys_of(f, "required").into_iter().next())
            .collect();
        let choice = leading
            .iter()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        let Value::Object(members) = &node.value else {
            return self.report(
                node.pos,
                path,
                format!(
                    "expected an object with {choice}, found {}",
                    node.value.type_name()
                ),
            );
        };
        let all_keys: Vec<String> = forms
            .iter()
            .flat_map(|f| keys_of(f, "properties"))
            .collect();
        let all_refs: Vec<&str> = all_keys.iter().map(String::as_str).collect();
        for member in members {
            if !all_refs.contains(&member.key.as_str()) {
                self.report(
                    member.key_pos,
                    &path.key(&member.key),
                    unknown_field(&member.key, &all_refs),
                );
            }
        }
        let present = |k: &String| members.iter().any(|m| &m.key == k);
        let matching: Vec<usize> = (0..forms.len())
            .filter(|&i| {
                let required = keys_of(forms[i], "required");
                !required.is_empty() && required.iter().all(present)
            })
            .collect();
        match matching.as_slice() {
            [i] => {
                let own = keys_of(forms[*i], "properties");
                let others: Vec<&str> = all_refs
                    .iter()
                    .copied()
                    .filter(|k| !own.iter().any(|o| o == k))
                    .collect();
                self.object(
                    forms[*i],
                    node.pos,
                    members,
                    path,
                    Some((&leading[*i], &others)),
                );
            }
            [] => self.report(node.pos, path, format!("must have {choice}")),
            _ => self.report(
                node.pos,
                path,
                format!("must have exactly one of {choice}, not both"),
            ),
        }
    }
}

fn has_type(node: &Node, t: &str) -> bool {
    match (&node.value, t) {
        (Value::Null, "null") | (Value::Bool(_), "boolean") | (Value::String(_), "string") => true,
        (Value::Array(_), "array") | (Value::Object(_), "object") => true,
        (Value::Number(_), "number") => true,
        (Value::Number(n), "integer") => !n.contains(['.', 'e', 'E']),
        _ => false,
    }
}

fn type_phrase(t: &str) -> &str {
    match t {
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "boolean" => "a boolean (true or false)",
        "object" => "an object",
        "array" => "an array",
        "null" => "null",
        other => other,
    }
}

fn unknown_field(key: &str, known: &[&str]) -> String {
    match suggest(key, known) {
        Some(close) => format!("unknown field \"{key}\" (did you mean \"{close}\"?)"),
        None if known.is_empty() => format!("unknown field \"{key}\""),
        None => format!(
            "unknown field \"{key}\" (expected one of: {})",
            known.join(", ")
        ),
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= 1.max(c.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Damerau-Levenshtein distance (optimal string alignment), so that a swap of two
/// neighbouring letters (`memroy`) counts as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_the_manifest() {
        let p = JsonPath::default()
            .key("vms")
            .key("win11")
            .key("iso_sources")
            .index(1)
            .key("url");
        assert_eq!(p.to_string(), "vms.win11.iso_sources[1].url");
        let odd = JsonPath::default().key("vms").key("my.vm").key("vcpus");
        assert_eq!(odd.to_string(), "vms[\"my.vm\"].vcpus");
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let fields = ["memory_gb", "vcpus", "disk_path", "disk_size_gb"];
        assert_eq!(suggest("memroy_gb", &fields), Some("memory_gb"));
        assert_eq!(suggest("vcpu", &fields), Some("vcpus"));
        assert_eq!(suggest("Disk_Path", &fields), Some("disk_path"));
        assert_eq!(suggest("colour", &fields), None);
        assert_eq!(suggest("UEFI", &["uefi", "bios"]), Some("uefi"));
    }
}
