//! The kinds a pipeline may use. The engine never names a kind: a binary builds a
//! [`Registry`] from the engine's built-in kinds and its domain's, and config resolves
//! `kind:` against it.

use std::marker::PhantomData;

use crate::stage::{Kind, KindOf};

/// Kinds by name, in the order `pipe kinds` lists them.
#[derive(Clone)]
pub struct Registry {
    kinds: Vec<&'static dyn Kind>,
}

/// The kinds every domain gets: `command` (any program as a stage).
pub static BUILTIN: &[&dyn Kind] = &[&KindOf::<crate::command::Command>(PhantomData)];

impl Registry {
    /// `domain` kinds followed by the built-in ones.
    pub fn new(domain: &[&'static dyn Kind]) -> Registry {
        let mut kinds: Vec<&'static dyn Kind> = domain.to_vec();
        for k in BUILTIN {
            if !kinds.iter().any(|d| d.name() == k.name()) {
                kinds.push(*k);
            }
        }
        Registry { kinds }
    }

    /// The kind users write as `kind: name`.
    pub fn get(&self, name: &str) -> Option<&'static dyn Kind> {
        self.kinds.iter().copied().find(|k| k.name() == name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static dyn Kind> + '_ {
        self.kinds.iter().copied()
    }
}

/// One param of a kind as `pipe kinds` shows it, read from the params' JSON Schema
/// (so from the same type, defaults and doc comments that validation uses).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParamDoc {
    /// `epochs`, or `fields.study_time` for a field of a nested mapping.
    pub name: String,
    /// `integer`, `string | null`, `list of string`, `png | jpeg`, `mapping`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The value validation fills in when the param is left out (JSON).
    pub default: Option<serde_json::Value>,
    pub required: bool,
    pub about: String,
}

/// Every param of `kind`, nested mappings' fields after their parent.
pub fn params_of(kind: &dyn Kind) -> Vec<ParamDoc> {
    let schema = kind.params_schema();
    let mut out = Vec::new();
    object_params(&schema, &schema, "", &mut out);
    out
}

fn object_params(root: &serde_json::Value, obj: &serde_json::Value, prefix: &str, out: &mut Vec<ParamDoc>) {
    let required: Vec<&str> = obj["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = obj["properties"].as_object() else {
        return;
    };
    for (name, prop) in props {
        let target = resolve(root, prop);
        let full = format!("{prefix}{name}");
        let nested = target.get("properties").is_some();
        out.push(ParamDoc {
            name: full.clone(),
            ty: type_name(root, prop),
            // A mapping's fields show their own defaults below it.
            default: if nested {
                None
            } else {
                prop.get("default").or_else(|| target.get("default")).cloned()
            },
            required: required.contains(&name.as_str()),
            about: about(prop).or_else(|| about(target)).unwrap_or_default(),
        });
        if nested {
            object_params(root, target, &format!("{full}."), out);
        }
    }
}

/// The schema a `$ref` (or an `allOf` of one, as schemars writes a documented field of
/// a named type) points to; the schema itself otherwise.
fn resolve<'a>(root: &'a serde_json::Value, s: &'a serde_json::Value) -> &'a serde_json::Value {
    let r = s["$ref"].as_str().or_else(|| {
        s["allOf"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|f| f["$ref"].as_str())
    });
    match r.and_then(|r| r.strip_prefix("#/")) {
        Some(path) => path.split('/').fold(root, |v, k| &v[k]),
        None => s,
    }
}

fn about(s: &serde_json::Value) -> Option<String> {
    let d = s["description"].as_str()?;
    // Doc comments are rustdoc: "[`TTA`]" reads "`TTA`" on a terminal.
    let d = d.replace("[`", "`").replace("`]", "`");
    Some(d.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn type_name(root: &serde_json::Value, s: &serde_json::Value) -> String {
    let s = resolve(root, s);
    if let Some(values) = s["enum"].as_array() {
        return values.iter().map(plain).collect::<Vec<_>>().join(" | ");
    }
    if let Some(c) = s.get("const") {
        return plain(c);
    }
    for alt in ["oneOf", "anyOf"] {
        if let Some(alts) = s[alt].as_array() {
            return alts.iter().map(|a| type_name(root, a)).collect::<Vec<_>>().join(" | ");
        }
    }
    let one = |t: &str| match t {
        "array" => format!(
            "list of {}",
            s.get("items").map_or_else(|| "any".into(), |i| type_name(root, i))
        ),
        "object" if s.get("properties").is_some() => "mapping".into(),
        "object" => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("mapping to {}", type_name(root, v)),
            _ => "mapping".into(),
        },
        "boolean" => "bool".into(),
        other => other.into(),
    };
    match &s["type"] {
        serde_json::Value::String(t) => one(t),
        serde_json::Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .map(one)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}

/// A JSON value as YAML would show it: strings without quotes.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
