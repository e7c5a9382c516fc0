//! The report (human table and JSON) and the budget check.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::exchange::Usage;

/// `--json` output: `{"exchanges": {name: usage}, "module_bytes": n}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub exchanges: BTreeMap<String, Usage>,
    pub module_bytes: u64,
}

/// Upper bounds per exchange; `meter --check` fails when a count exceeds one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub host_calls_total: u64,
    pub fuel: u64,
    pub instructions: u64,
    pub bulk_bytes: u64,
    pub peak_memory_bytes: u64,
    pub bytes_to_host: u64,
    pub bytes_from_host: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    pub exchanges: BTreeMap<String, Budget>,
}

impl Budget {
    fn of(u: &Usage) -> Budget {
        Budget {
            host_calls_total: u.host_calls_total,
            fuel: u.fuel,
            instructions: u.instructions,
            bulk_bytes: u.bulk_bytes,
            peak_memory_bytes: u.peak_memory_bytes,
            bytes_to_host: u.bytes_to_host,
            bytes_from_host: u.bytes_from_host,
        }
    }

    fn pairs(&self) -> [(&'static str, u64); 7] {
        [
            ("host_calls_total", self.host_calls_total),
            ("fuel", self.fuel),
            ("instructions", self.instructions),
            ("bulk_bytes", self.bulk_bytes),
            ("peak_memory_bytes", self.peak_memory_bytes),
            ("bytes_to_host", self.bytes_to_host),
            ("bytes_from_host", self.bytes_from_host),
        ]
    }
}

/// Budgets equal to today's counts.
pub fn budgets_of(report: &Report) -> Budgets {
    Budgets {
        exchanges: report
            .exchanges
            .iter()
            .map(|(k, u)| (k.clone(), Budget::of(u)))
            .collect(),
    }
}

/// What `--check` found: failures (a count above its budget, a missing budget or
/// measurement) and notes (counts below budget, worth an `--update-budgets`).
#[derive(Debug, Default)]
pub struct Check {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
}

pub fn check(report: &Report, budgets: &Budgets) -> Check {
    let mut out = Check::default();
    for (name, usage) in &report.exchanges {
        let Some(budget) = budgets.exchanges.get(name) else {
            out.failures
                .push(format!("{name}: no budget (run meter --update-budgets)"));
            continue;
        };
        let measured = Budget::of(usage);
        for ((metric, got), (_, max)) in measured.pairs().iter().zip(budget.pairs()) {
            if *got > max {
                out.failures.push(format!(
                    "{name}: {metric} {got} exceeds its budget {max} (+{})",
                    got - max
                ));
            } else if *got < max {
                out.notes.push(format!(
                    "{name}: {metric} {got} is below its budget {max} (-{})",
                    max - got
                ));
            }
        }
    }
    for name in budgets.exchanges.keys() {
        if !report.exchanges.contains_key(name) {
            out.failures
                .push(format!("{name}: has a budget but was not measured"));
        }
    }
    out
}

fn order<'a>(report: &'a Report, names: &[&str]) -> Vec<(&'a str, &'a Usage)> {
    let mut out: Vec<(&str, &Usage)> = names
        .iter()
        .filter_map(|n| report.exchanges.get_key_value(*n))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    for (k, v) in &report.exchanges {
        if !names.contains(&k.as_str()) {
            out.push((k, v));
        }
    }
    out
}

/// The summary table, then host calls by kind (one column per exchange).
pub fn table(report: &Report, names: &[&str]) -> String {
    let rows = order(report, names);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<17} {:>6} {:>9} {:>9} {:>11} {:>11} {:>9} {:>10} {:>5}",
        "exchange", "calls", "to host", "from host", "fuel", "instrs", "bulk", "peak mem", "pages"
    );
    for (name, u) in &rows {
        let _ = writeln!(
            s,
            "{:<17} {:>6} {:>9} {:>9} {:>11} {:>11} {:>9} {:>10} {:>5}",
            name,
            u.host_calls_total,
            u.bytes_to_host,
            u.bytes_from_host,
            u.fuel,
            u.instructions,
            u.bulk_bytes,
            u.peak_memory_bytes,
            u.peak_memory_bytes / 65536
        );
    }
    let _ = writeln!(
        s,
        "(bytes, except calls, fuel and instrs: wasmi fuel and exact Wasm operators executed, \
         see meter/README.md; module {} bytes)",
        report.module_bytes
    );
    let mut kinds: Vec<&str> = rows
        .iter()
        .flat_map(|(_, u)| u.host_calls.keys().map(String::as_str))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let _ = writeln!(s, "\nhost calls by kind");
    let _ = write!(s, "{:<35}", "");
    for (i, _) in rows.iter().enumerate() {
        let _ = write!(s, " {:>4}", format!("[{}]", i + 1));
    }
    let _ = writeln!(s);
    for kind in kinds {
        let _ = write!(s, "{kind:<35}");
        for (_, u) in &rows {
            match u.host_calls.get(kind) {
                Some(n) => {
                    let _ = write!(s, " {n:>4}");
                }
                None => {
                    let _ = write!(s, " {:>4}", ".");
                }
            }
        }
        let _ = writeln!(s);
    }
    let legend: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (n, _))| format!("[{}] {n}", i + 1))
        .collect();
    let _ = writeln!(s, "{}", legend.join("  "));
    s
}

/// The `top` (default 40) functions of `profile` by exclusive operators: exclusive count
/// and share of the exchange's operators, inclusive count and share.
pub fn profile_table(name: &str, profile: &crate::Profile, top: Option<usize>) -> String {
    use std::fmt::Write as _;
    let total = profile.total.max(1) as f64;
    let share = |n: u64| 100.0 * n as f64 / total;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{name}: {} operators in {} functions; top {} by exclusive operators",
        profile.total,
        profile.functions.len(),
        top.unwrap_or(40).min(profile.functions.len())
    );
    let _ = writeln!(
        s,
        "{:>4} {:>10} {:>6} {:>10} {:>6}  function",
        "#", "exclusive", "%", "inclusive", "%"
    );
    for (i, (f, fname, exclusive, inclusive)) in
        profile.functions.iter().take(top.unwrap_or(40)).enumerate()
    {
        let _ = writeln!(
            s,
            "{:>4} {:>10} {:>5.1}% {:>10} {:>5.1}%  {fname} [{f}]",
            i + 1,
            exclusive,
            share(*exclusive),
            inclusive,
            share(*inclusive)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(fuel: u64) -> Usage {
        Usage {
            host_calls: [("proxy_log".to_string(), 2)].into_iter().collect(),
            host_calls_total: 2,
            bytes_to_host: 10,
            bytes_from_host: 20,
            fuel,
            instructions: fuel / 2,
            bulk_bytes: 30,
            peak_memory_bytes: 65536,
        }
    }

    fn report(fuel: u64) -> Report {
        Report {
            exchanges: [("chat_1k".to_string(), usage(fuel))].into_iter().collect(),
            module_bytes: 1,
        }
    }

    #[test]
    fn budgets_of_today_pass_and_growth_fails_naming_exchange_and_metric() {
        let budgets = budgets_of(&report(1000));
        let same = check(&report(1000), &budgets);
        assert!(same.failures.is_empty() && same.notes.is_empty());
        let grown = check(&report(1001), &budgets);
        assert_eq!(
            grown.failures,
            ["chat_1k: fuel 1001 exceeds its budget 1000 (+1)",]
        );
        let shrunk = check(&report(998), &budgets);
        assert!(shrunk.failures.is_empty());
        assert_eq!(shrunk.notes.len(), 2, "{:?}", shrunk.notes);
    }

    #[test]
    fn a_missing_budget_or_measurement_fails() {
        let mut budgets = budgets_of(&report(1000));
        budgets
            .exchanges
            .insert("gone".to_string(), Budget::default());
        let r = check(&report(1000), &budgets);
        assert_eq!(r.failures, ["gone: has a budget but was not measured"]);
        let r = check(&report(1000), &Budgets::default());
        assert_eq!(
            r.failures,
            ["chat_1k: no budget (run meter --update-budgets)"]
        );
    }

    #[test]
    fn the_committed_budgets_cover_every_exchange() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/budgets.json");
        let text = std::fs::read_to_string(path).unwrap();
        let budgets: Budgets = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = budgets.exchanges.keys().map(String::as_str).collect();
        let mut expected = crate::exchange::NAMES.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
    }
}
