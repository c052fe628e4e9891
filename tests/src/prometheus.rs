//! A strict little parser of the Prometheus text exposition format (0.0.4),
//! enough to check that `/metrics` is well formed and to read its samples.

use std::collections::{BTreeMap, HashMap};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_total`/`_bucket`/`_sum`/`_count` suffix.
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Declared family types (`counter`, `gauge`, `histogram`, …) by family name.
    pub types: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample with this name and exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Like [`Exposition::get`] but panics with the name when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count", "_total", "_created"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| types.contains_key(*base))
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or_else(|| format!("bad labels {s:?}"))?;
        let key = key.trim_start_matches(',');
        if !valid_name(key) {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("dangling escape in {s:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated label value in {s:?}")),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("duplicate label {key:?}"));
        }
        rest = &after[end + 1..];
    }
    Ok(labels)
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses and checks an exposition: names and labels well formed, every
/// sample in a family whose `# TYPE` came first, no sample twice, histogram
/// buckets cumulative with `+Inf` equal to `_count`.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().ok_or_else(|| at("TYPE without name".into()))?;
                    let kind = words.next().ok_or_else(|| at("TYPE without type".into()))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("family declared twice".into()));
                    }
                }
                Some("HELP") => {}
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels =
                    labels.strip_suffix('}').ok_or_else(|| at("unclosed labels".into()))?;
                (name, parse_labels(labels).map_err(at)?)
            }
            None => (series, BTreeMap::new()),
        };
        if !valid_name(name) {
            return Err(at("bad metric name".into()));
        }
        if family_of(name, &out.types).is_none() {
            return Err(at("sample before its # TYPE".into()));
        }
        let sample =
            Sample { name: name.to_owned(), labels, value: parse_value(value).map_err(at)? };
        if out.samples.iter().any(|s| s.name == sample.name && s.labels == sample.labels) {
            return Err(at("duplicate series".into()));
        }
        out.samples.push(sample);
    }
    check_histograms(&out)?;
    Ok(out)
}

/// A series' labels other than `le`, sorted.
type Labels = Vec<(String, String)>;

fn check_histograms(exposition: &Exposition) -> Result<(), String> {
    for (family, kind) in &exposition.types {
        if kind != "histogram" {
            continue;
        }
        // Group buckets by their labels other than `le`.
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exposition.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let le = s.labels.get("le").ok_or(format!("{family}: bucket without le"))?;
            let key =
                s.labels.iter().filter(|(k, _)| *k != "le").map(|(k, v)| (k.clone(), v.clone()));
            series.entry(key.collect()).or_default().push((parse_value(le)?, s.value));
        }
        for (labels, buckets) in series {
            let ascending = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
            if !ascending {
                return Err(format!("{family}{labels:?}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = exposition.samples.iter().find(|s| {
                s.name == format!("{family}_count")
                    && s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
                        == labels
            });
            match (inf, count) {
                (Some(inf), Some(count)) if inf == count.value => {}
                _ => return Err(format!("{family}{labels:?}: +Inf bucket and _count disagree")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{code=\"1\\\"x\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
        let e = parse(good).expect("valid");
        assert_eq!(e.value("a_total", &[("code", "1\"x")]), 3.0);
        assert_eq!(e.value("h_count", &[]), 2.0);
        assert!(parse("x 1\n").is_err(), "no TYPE");
        assert!(parse("# TYPE x gauge\nx 1\nx 2\n").is_err(), "duplicate");
        assert!(
            parse("# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n")
                .is_err()
        );
    }
}
