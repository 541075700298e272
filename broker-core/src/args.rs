//! Checkout arguments as data: layering (the command line or library call over the args file over the
//! nick) and provider labels (`k1=v1,k2=v2`). Reading arguments from a command line or a file is the
//! CLI's, in [`crate::cli_support`].

use serde_yaml::{Mapping, Value};

/// Parses `-l/--provider-labels`: `k1=v1,k2=v2,k3=v3=z4`; a bare key gets an empty value.
pub fn parse_labels(text: &str) -> Mapping {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (Value::from(k.trim()), Value::from(v.trim())),
            None => (Value::from(pair), Value::from("")),
        })
        .collect()
}

/// `over` on top of `base`: keys of `over` win.
pub fn layer(base: Mapping, over: Mapping) -> Mapping {
    let mut out = base;
    for (k, v) in over {
        out.insert(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_like_upstream() {
        let labels = parse_labels("k1=v1,k2=v2,k3=v3=z4,bare");
        assert_eq!(labels.get("k3").and_then(Value::as_str), Some("v3=z4"));
        assert_eq!(labels.get("bare").and_then(Value::as_str), Some(""));
        assert_eq!(labels.len(), 4);
    }
}
