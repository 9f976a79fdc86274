//! The object tree of a checkpoint: nested dicts and lists whose leaves are tensors, scalars or
//! opaque objects, and the rules that turn it into a flat list of named tensors.

use serde_json::Value as Json;

/// One node of a checkpoint's object tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Index into the reader's raw tensor list.
    Tensor(usize),
    Dict(Vec<(String, Node)>),
    /// Lists and tuples.
    List(Vec<Node>),
    /// None, bool, int, float or str.
    Scalar(Json),
    /// An object of a class we do not interpret (`argparse.Namespace`, a pickled `nn.Module`, ...):
    /// its class name and the state it was rebuilt from (`__dict__` or call arguments), which may
    /// itself hold tensors.
    Opaque {
        class: String,
        state: Option<Box<Node>>,
    },
}

impl Node {
    /// Number of tensors reachable from this node.
    pub fn tensor_count(&self) -> usize {
        match self {
            Node::Tensor(_) => 1,
            Node::Dict(d) => d.iter().map(|(_, n)| n.tensor_count()).sum(),
            Node::List(l) => l.iter().map(Node::tensor_count).sum(),
            Node::Opaque { state, .. } => state.as_ref().map_or(0, |s| s.tensor_count()),
            Node::Scalar(_) => 0,
        }
    }

    /// A short human description: `dict (152 tensors)`, `int`, `argparse.Namespace`.
    pub fn describe(&self) -> String {
        match self {
            Node::Tensor(_) => "tensor".into(),
            Node::Dict(d) => format!(
                "dict ({} entries, {} tensors)",
                d.len(),
                self.tensor_count()
            ),
            Node::List(l) => format!("list ({} items, {} tensors)", l.len(), self.tensor_count()),
            Node::Scalar(Json::Null) => "None".into(),
            Node::Scalar(Json::Bool(_)) => "bool".into(),
            Node::Scalar(Json::Number(n)) if n.is_f64() => "float".into(),
            Node::Scalar(Json::Number(_)) => "int".into(),
            Node::Scalar(Json::String(_)) => "str".into(),
            Node::Scalar(_) => "value".into(),
            Node::Opaque { class, .. } => class.clone(),
        }
    }

    /// The node as JSON; tensors appear as `"<tensor>"`.
    pub fn to_json(&self) -> Json {
        match self {
            Node::Tensor(_) => Json::String("<tensor>".into()),
            Node::Dict(d) => {
                Json::Object(d.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            Node::List(l) => Json::Array(l.iter().map(Node::to_json).collect()),
            Node::Scalar(s) => s.clone(),
            Node::Opaque { class, state } => match state {
                Some(s) => s.to_json(),
                None => Json::String(format!("<{class}>")),
            },
        }
    }

    fn child(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Dict(d) => d.iter().rev().find(|(k, _)| k == key).map(|(_, n)| n),
            Node::List(l) => key.parse::<usize>().ok().and_then(|i| l.get(i)),
            Node::Opaque { state: Some(s), .. } => s.child(key),
            _ => None,
        }
    }

    /// Follows a dotted path (`model`, `state.model`); keys containing dots are tried whole first.
    pub fn at_path(&self, path: &str) -> Option<&Node> {
        if path.is_empty() {
            return Some(self);
        }
        if let Some(n) = self.child(path) {
            return Some(n);
        }
        let mut cut = path.len();
        while let Some(i) = path[..cut].rfind('.') {
            if let Some(n) = self.child(&path[..i]) {
                return n.at_path(&path[i + 1..]);
            }
            cut = i;
        }
        None
    }
}

/// Where the tensors of a checkpoint were taken from.
#[derive(Debug, Clone, PartialEq)]
pub enum RootChoice {
    /// The whole object tree.
    Whole,
    /// The entry the user asked for with `--key`.
    Requested(String),
    /// An entry chosen automatically (`model`, `state_dict`, `module`), with the reason.
    Automatic { key: String, why: String },
}

impl RootChoice {
    /// `'model': all 152 tensors live under 'model'`; `None` for the whole tree.
    pub fn describe(&self) -> Option<String> {
        match self {
            RootChoice::Whole => None,
            RootChoice::Requested(k) => Some(format!("'{k}' (as asked)")),
            RootChoice::Automatic { key, why } => Some(format!("'{key}': {why}")),
        }
    }

    pub fn key(&self) -> Option<&str> {
        match self {
            RootChoice::Whole => None,
            RootChoice::Requested(k) | RootChoice::Automatic { key: k, .. } => Some(k),
        }
    }
}

/// Why the tensors of a tree could not be chosen or named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// The entry asked for (`--key`) is not in the tree; `top_level` lists the entries that are
    /// (or says what the root is when it is not a dict).
    #[error("no entry '{key}' in the checkpoint (top-level entries: {top_level})")]
    NoEntry { key: String, top_level: String },
    /// The dotted names of all entries together would take more than `max_bytes`.
    #[error(
        "the dotted names of the checkpoint's entries take more than {} MiB",
        .max_bytes >> 20
    )]
    NamesTooLarge { max_bytes: usize },
}

/// Keys that hold the model's state dict in training checkpoints, in order of preference.
pub const STATE_DICT_KEYS: [&str; 3] = ["model", "state_dict", "module"];

/// Decides which part of the tree holds the tensors to use.
///
/// With no `requested` key: if the root is a dict whose tensors all live under one of
/// [`STATE_DICT_KEYS`], that entry; else if the root is a dict holding no tensors directly and one
/// of those keys holds tensors (a training checkpoint with an optimizer or an EMA copy beside the
/// model), that entry, and the rest is reported by the caller; else the whole tree.
pub fn choose_root(root: &Node, requested: Option<&str>) -> Result<RootChoice, TreeError> {
    if let Some(k) = requested {
        if k.is_empty() {
            return Ok(RootChoice::Whole);
        }
        return match root.at_path(k) {
            Some(_) => Ok(RootChoice::Requested(k.to_string())),
            None => Err(TreeError::NoEntry {
                key: k.to_string(),
                top_level: top_level_keys(root),
            }),
        };
    }
    let Node::Dict(entries) = root else {
        return Ok(RootChoice::Whole);
    };
    let total = root.tensor_count();
    if total == 0 {
        return Ok(RootChoice::Whole);
    }
    for key in STATE_DICT_KEYS {
        if let Some(n) = root.child(key) {
            if n.tensor_count() == total && matches!(n, Node::Dict(_)) {
                return Ok(RootChoice::Automatic {
                    key: key.into(),
                    why: format!("all {total} tensors live under '{key}'"),
                });
            }
        }
    }
    let direct_tensors = entries.iter().any(|(_, n)| matches!(n, Node::Tensor(_)));
    if !direct_tensors {
        for key in STATE_DICT_KEYS {
            if let Some(n @ Node::Dict(_)) = root.child(key) {
                let inside = n.tensor_count();
                if inside > 0 {
                    return Ok(RootChoice::Automatic {
                        key: key.into(),
                        why: format!(
                            "'{key}' holds {inside} of the {total} tensors; the others are not converted (another entry can be chosen)"
                        ),
                    });
                }
            }
        }
    }
    Ok(RootChoice::Whole)
}

fn top_level_keys(root: &Node) -> String {
    match root {
        Node::Dict(d) if !d.is_empty() => d
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("none: the root is a {}", root.describe()),
    }
}

/// A leaf reached while flattening.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    Tensor { name: String, index: usize },
    Other { name: String, node: &'a Node },
}

/// Bytes all the dotted names of one tree may take together. A name repeats the keys of every
/// level above it, so a deep tree with long keys and many leaves could otherwise produce names far
/// larger than the tree itself.
pub const MAX_NAMES_BYTES: usize = 64 << 20;

/// Flattens `node` into dotted names (`blocks.0.attn.qkv.weight`), in the tree's order; refuses a
/// tree whose names would take more than [`MAX_NAMES_BYTES`].
pub fn flatten(node: &Node) -> Result<Vec<Leaf<'_>>, TreeError> {
    let mut out = Vec::new();
    let mut held = 0usize;
    flatten_into(node, String::new(), &mut out, &mut held)?;
    Ok(out)
}

fn flatten_into<'a>(
    node: &'a Node,
    prefix: String,
    out: &mut Vec<Leaf<'a>>,
    held: &mut usize,
) -> Result<(), TreeError> {
    *held = held.saturating_add(prefix.len() + std::mem::size_of::<Leaf>());
    if *held > MAX_NAMES_BYTES {
        return Err(TreeError::NamesTooLarge {
            max_bytes: MAX_NAMES_BYTES,
        });
    }
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match node {
        Node::Tensor(i) => out.push(Leaf::Tensor {
            name: if prefix.is_empty() {
                "tensor".into()
            } else {
                prefix
            },
            index: *i,
        }),
        Node::Dict(d) if d.is_empty() => out.push(Leaf::Other { name: prefix, node }),
        Node::Dict(d) => {
            for (k, v) in d {
                flatten_into(v, join(k), out, held)?;
            }
        }
        Node::List(l) if l.iter().all(|n| n.tensor_count() == 0) => {
            out.push(Leaf::Other { name: prefix, node })
        }
        Node::List(l) => {
            for (i, v) in l.iter().enumerate() {
                flatten_into(v, join(&i.to_string()), out, held)?;
            }
        }
        Node::Opaque { state: Some(s), .. } if s.tensor_count() > 0 => {
            return flatten_into(s, prefix, out, held)
        }
        Node::Scalar(_) | Node::Opaque { .. } => out.push(Leaf::Other { name: prefix, node }),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(items: Vec<(&str, Node)>) -> Node {
        Node::Dict(items.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[test]
    fn training_checkpoint_picks_model_and_reports_the_rest() {
        let ckpt = dict(vec![
            (
                "model",
                dict(vec![("w", Node::Tensor(0)), ("b", Node::Tensor(1))]),
            ),
            (
                "optimizer",
                dict(vec![("state", Node::List(vec![Node::Tensor(2)]))]),
            ),
            ("epoch", Node::Scalar(299.into())),
        ]);
        let choice = choose_root(&ckpt, None).unwrap();
        assert_eq!(choice.key(), Some("model"));
        let only_model = dict(vec![
            ("model", dict(vec![("w", Node::Tensor(0))])),
            ("epoch", Node::Scalar(1.into())),
        ]);
        match choose_root(&only_model, None).unwrap() {
            RootChoice::Automatic { why, .. } => assert!(why.contains("all 1 tensors")),
            other => panic!("{other:?}"),
        }
        let flat = dict(vec![
            ("w", Node::Tensor(0)),
            ("model", dict(vec![("x", Node::Tensor(1))])),
        ]);
        assert_eq!(choose_root(&flat, None).unwrap(), RootChoice::Whole);
        let e = choose_root(&flat, Some("nope")).unwrap_err();
        assert_eq!(
            e,
            TreeError::NoEntry {
                key: "nope".into(),
                top_level: "w, model".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "no entry 'nope' in the checkpoint (top-level entries: w, model)"
        );
    }

    #[test]
    fn flatten_names_nested_entries_with_dots() {
        let t = dict(vec![
            ("a", dict(vec![("b", Node::Tensor(0))])),
            ("l", Node::List(vec![Node::Tensor(1), Node::Tensor(2)])),
            ("n", Node::Scalar(3.into())),
        ]);
        let names: Vec<String> = flatten(&t)
            .unwrap()
            .into_iter()
            .map(|l| match l {
                Leaf::Tensor { name, .. } | Leaf::Other { name, .. } => name,
            })
            .collect();
        assert_eq!(names, ["a.b", "l.0", "l.1", "n"]);
        assert_eq!(t.at_path("a.b"), Some(&Node::Tensor(0)));
        assert_eq!(t.at_path("l.1"), Some(&Node::Tensor(2)));
    }
}
