//! The limits, in envoyproxy/ratelimit's configuration format (YAML, one domain a file):
//!
//! ```yaml
//! domain: ai-gateway
//! descriptors:
//!   - key: kind
//!     value: tokens                 # optional: without it, any value matches
//!     descriptors:
//!       - key: tenant
//!         rate_limit: { unit: minute, requests_per_unit: 2000000 }
//! ```
//!
//! Matching follows envoyproxy/ratelimit: a request descriptor's entries are walked level
//! by level, at each level the entry's (key, value) is tried before its key alone, and the
//! limit is the `rate_limit` of the node the last entry reaches. A descriptor whose walk
//! leaves the tree (more entries than levels, or an entry matching nothing), or ends on a
//! node without `rate_limit`, has no limit. Keys of that format that change decisions and that this service does not
//! implement (`shadow_mode`, `quota_mode`, `replaces`, `share_threshold`, `metadata`,
//! wildcard values) are refused rather than ignored; the metrics-only keys
//! (`detailed_metric`, `value_to_metric`) are accepted and have no effect.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::window::Unit;

/// What a descriptor's configured `rate_limit` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `requests_per_unit` hits per window of `unit`.
    Limited {
        requests_per_unit: u32,
        unit: Unit,
        /// The `rate_limit.name` given, echoed in `current_limit.name`.
        name: String,
    },
    /// `unlimited: true`: always OK, nothing stored.
    Unlimited,
}

#[derive(Debug, Default)]
struct Node {
    limit: Option<Limit>,
    /// Children by key, then by value (`None`: the key with no value, matching any).
    children: HashMap<String, Children>,
}

#[derive(Debug, Default)]
struct Children {
    by_value: HashMap<String, Node>,
    any_value: Option<Box<Node>>,
}

/// Every domain's descriptor tree.
#[derive(Debug, Default)]
pub struct Config {
    domains: HashMap<String, Node>,
}

impl Config {
    /// Parses one YAML file's text (one domain) and adds it. `origin` names the file in
    /// errors; an error names the field, like `f.yaml: descriptors[0].rate_limit.unit: …`.
    pub fn add_yaml(&mut self, origin: &str, text: &str) -> Result<String, String> {
        let file: FileRoot = serde_saphyr::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        let domain = file.domain.clone();
        if domain.is_empty() {
            return Err(format!("{origin}: domain: must not be empty"));
        }
        if self.domains.contains_key(&domain) {
            return Err(format!(
                "{origin}: domain {domain:?} is already configured by another file"
            ));
        }
        let mut root = Node::default();
        load_level(&mut root, &file.descriptors, "descriptors")
            .map_err(|e| format!("{origin}: {e}"))?;
        self.domains.insert(domain.clone(), root);
        Ok(domain)
    }

    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    pub fn domains(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.domains.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The limit of a descriptor given as (key, value) entries, or None (no limit).
    pub fn find<'a, I>(&self, domain: &str, entries: I) -> Option<&Limit>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut node = self.domains.get(domain)?;
        let mut reached = false;
        for (key, value) in entries {
            let children = node.children.get(key)?;
            node = children
                .by_value
                .get(value)
                .or(children.any_value.as_deref())?;
            reached = true;
        }
        if reached {
            node.limit.as_ref()
        } else {
            None
        }
    }
}

fn load_level(parent: &mut Node, list: &[FileDescriptor], path: &str) -> Result<(), String> {
    for (i, d) in list.iter().enumerate() {
        let here = format!("{path}[{i}]");
        if d.key.is_empty() {
            return Err(format!("{here}.key: must not be empty"));
        }
        refuse_unsupported(d, &here)?;
        let mut node = Node {
            limit: d
                .rate_limit
                .as_ref()
                .map(|r| load_limit(r, &here))
                .transpose()?,
            children: HashMap::new(),
        };
        load_level(&mut node, &d.descriptors, &format!("{here}.descriptors"))?;
        let children = parent.children.entry(d.key.clone()).or_default();
        // An empty value is no value, as in envoyproxy/ratelimit.
        let duplicate = match d.value.as_deref().filter(|v| !v.is_empty()) {
            Some(value) => children.by_value.insert(value.to_string(), node).is_some(),
            None => children.any_value.replace(Box::new(node)).is_some(),
        };
        if duplicate {
            return Err(format!(
                "{here}: a descriptor with this key and value is already defined at this level"
            ));
        }
    }
    Ok(())
}

fn refuse_unsupported(d: &FileDescriptor, here: &str) -> Result<(), String> {
    let unsupported = [
        ("shadow_mode", d.shadow_mode == Some(true)),
        ("quota_mode", d.quota_mode == Some(true)),
        ("share_threshold", d.share_threshold == Some(true)),
        ("metadata", d.metadata.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(format!("{here}.{field}: not supported by this service"));
    }
    if d.value.as_deref().is_some_and(|v| v.contains('*')) {
        return Err(format!(
            "{here}.value: wildcard values are not supported by this service"
        ));
    }
    Ok(())
}

fn load_limit(r: &FileRateLimit, here: &str) -> Result<Limit, String> {
    let here = format!("{here}.rate_limit");
    if r.replaces.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(format!("{here}.replaces: not supported by this service"));
    }
    if r.unlimited == Some(true) {
        if r.unit.is_some() || r.requests_per_unit.is_some() {
            return Err(format!(
                "{here}: an unlimited rate limit has no unit or requests_per_unit"
            ));
        }
        return Ok(Limit::Unlimited);
    }
    let unit = r
        .unit
        .as_deref()
        .ok_or_else(|| format!("{here}.unit: required (second, minute, hour, day or month)"))?;
    let unit = Unit::parse(unit).ok_or_else(|| {
        format!("{here}.unit: {unit:?} is not one of second, minute, hour, day, month")
    })?;
    let requests_per_unit = r
        .requests_per_unit
        .ok_or_else(|| format!("{here}.requests_per_unit: required"))?;
    Ok(Limit::Limited {
        requests_per_unit,
        unit,
        name: r.name.clone().unwrap_or_default(),
    })
}

// --- the file format ------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    domain: String,
    #[serde(default)]
    descriptors: Vec<FileDescriptor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDescriptor {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    rate_limit: Option<FileRateLimit>,
    #[serde(default)]
    descriptors: Vec<FileDescriptor>,
    #[serde(default)]
    shadow_mode: Option<bool>,
    #[serde(default)]
    quota_mode: Option<bool>,
    #[serde(default)]
    share_threshold: Option<bool>,
    #[serde(default)]
    metadata: Option<IgnoredAny>,
    // Metrics only: accepted, no effect (this service exports no per-descriptor metrics).
    #[serde(default, rename = "detailed_metric")]
    _detailed_metric: Option<bool>,
    #[serde(default, rename = "value_to_metric")]
    _value_to_metric: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRateLimit {
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    requests_per_unit: Option<u32>,
    #[serde(default)]
    unlimited: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    replaces: Option<Vec<IgnoredAny>>,
}

#[cfg(test)]
mod tests;
