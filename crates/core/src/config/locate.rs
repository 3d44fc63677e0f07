//! Where each value of a YAML file sits, for error messages.
//!
//! serde_yaml reports positions only for syntax and type errors. The semantic checks
//! (unknown kind, missing input, cycle, unknown param) happen after deserialising, so
//! this module walks the same text once more with yaml-rust2's marked events and keeps
//! a map from a dotted path (`stages.train.inputs[1]`) to its line and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::Location;

/// (line, column) of a key (absent for sequence items) and of its value.
type Spot = (Option<(usize, usize)>, (usize, usize));

/// Positions of the keys and values of one YAML file.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    file: PathBuf,
    /// path -> (position of the key, position of the value); 1-based line, 1-based column.
    spots: HashMap<String, Spot>,
    /// Keys written twice in one mapping: (path, first key position, second one).
    pub duplicates: Vec<(String, Location, Location)>,
}

impl Locations {
    pub fn parse(file: &Path, text: &str) -> Locations {
        let mut recv = Receiver {
            stack: Vec::new(),
            spots: HashMap::new(),
            duplicates: Vec::new(),
        };
        // A syntax error is reported by serde_yaml with its own position; here we keep
        // whatever was indexed before it.
        let _ = Parser::new_from_str(text).load(&mut recv, false);
        let at = |(line, column): (usize, usize)| Location {
            file: file.to_path_buf(),
            line,
            column,
        };
        Locations {
            file: file.to_path_buf(),
            spots: recv.spots,
            duplicates: recv
                .duplicates
                .into_iter()
                .map(|(path, first, second)| (path, at(first), at(second)))
                .collect(),
        }
    }

    /// The position of the value at `path`, or of the closest enclosing value.
    pub fn value(&self, path: &str) -> Option<Location> {
        self.find(path, false)
    }

    /// The position of the key that introduces `path` (falls back to the value).
    pub fn key(&self, path: &str) -> Option<Location> {
        self.find(path, true)
    }

    fn find(&self, path: &str, want_key: bool) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            if let Some((key, value)) = self.spots.get(&p) {
                let (line, column) = if want_key { key.unwrap_or(*value) } else { *value };
                return Some(Location {
                    file: self.file.clone(),
                    line,
                    column,
                });
            }
            // Walk up one level: `a.b[2]` -> `a.b` -> `a`.
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    pub fn has(&self, path: &str) -> bool {
        self.spots.contains_key(path)
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<(String, (usize, usize))>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

struct Receiver {
    stack: Vec<Frame>,
    spots: HashMap<String, Spot>,
    /// (path, first key, second key) of keys written twice.
    duplicates: Vec<(String, LineCol, LineCol)>,
}

type LineCol = (usize, usize);

fn spot(mark: &Marker) -> (usize, usize) {
    (mark.line(), mark.col() + 1)
}

impl Receiver {
    /// Called for every node; returns the node's path when it is a value (not a key).
    fn node(&mut self, mark: &Marker, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // This node is a key.
                    *key = Some((scalar.unwrap_or("?").to_string(), spot(mark)));
                    None
                }
                Some((k, key_spot)) => {
                    let p = if path.is_empty() { k } else { format!("{path}.{k}") };
                    if let Some((Some(first), _)) = self.spots.insert(p.clone(), (Some(key_spot), spot(mark))) {
                        // The first one is where a reader looks; keep it for positions.
                        // Keys inside a duplicated mapping are not reported again.
                        let inside = |d: &String| p.strip_prefix(d.as_str()).is_some_and(|r| r.starts_with(['.', '[']));
                        if !self.duplicates.iter().any(|(d, ..)| inside(d)) {
                            self.duplicates.push((p.clone(), first, key_spot));
                        }
                        self.spots.insert(p.clone(), (Some(first), spot(mark)));
                    }
                    Some(p)
                }
            },
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.spots.insert(p.clone(), (None, spot(mark)));
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref s, ..) => {
                self.node(&mark, Some(s));
            }
            Event::Alias(_) => {
                self.node(&mark, None);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.node(&mark, None) {
                    if path.is_empty() {
                        self.spots.insert(path.clone(), (None, spot(&mark)));
                    }
                    self.stack.push(Frame::Map { path, key: None });
                } else {
                    // A complex key: index its insides under a placeholder.
                    self.stack.push(Frame::Map {
                        path: "?".into(),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.node(&mark, None).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_values_and_items() {
        let text = "name: x\nstages:\n  a:\n    kind: command\n    inputs: [b, c]\n    params:\n      lr: 0.1\n";
        let l = Locations::parse(Path::new("p.yaml"), text);
        let v = l.value("stages.a.kind").unwrap();
        assert_eq!((v.line, v.column), (4, 11));
        let k = l.key("stages.a.params.lr").unwrap();
        assert_eq!((k.line, k.column), (7, 7));
        let i = l.value("stages.a.inputs[1]").unwrap();
        assert_eq!((i.line, i.column), (5, 17));
        // Unknown paths fall back to the closest parent.
        let p = l.key("stages.a.params.nope").unwrap();
        assert_eq!((p.line, p.column), (6, 5));
        assert!(l.duplicates.is_empty());
    }

    #[test]
    fn finds_keys_written_twice() {
        // Keys inside the second `a` are not reported again; b's twice-set param is.
        let text = "stages:\n  a:\n    kind: x\n  a:\n    kind: y\n  b:\n    params: {r: 1, r: 2}\n";
        let l = Locations::parse(Path::new("p.yaml"), text);
        let d: Vec<_> = l
            .duplicates
            .iter()
            .map(|(p, a, b)| (p.as_str(), (a.line, a.column), (b.line, b.column)))
            .collect();
        assert_eq!(
            d,
            [("stages.a", (2, 3), (4, 3)), ("stages.b.params.r", (7, 14), (7, 20))]
        );
    }
}
