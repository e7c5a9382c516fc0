//! Deterministic cost meter of the built filter module: runs it under wasmi with fuel
//! metering and a recording Proxy-Wasm host, drives canonical exchanges through the real
//! callbacks, and counts host calls, bytes crossing the boundary, Wasm operators, bytes
//! moved by bulk memory operations and linear memory. The same machinery drives the
//! host-call sequence tests in `tests/module.rs`. See meter/README.md.

pub mod exchange;
pub mod host;
pub mod report;
pub mod rewrite;
pub mod vm;

use std::path::PathBuf;

use exchange::NAMES;
use report::Report;
use vm::Meter;

/// The module `make build` writes, or `$METER_WASM`.
pub fn default_wasm_path() -> PathBuf {
    if let Some(p) = std::env::var_os("METER_WASM") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target
        .join("wasm32-wasip1")
        .join("release")
        .join("ai_gateway_filter.wasm")
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the module {}: {e} (run `make build` first)",
            path.display()
        )
    })
}

/// Loads the built module (a missing module is an error that says how to build it).
pub fn load(path: &std::path::Path) -> Result<Meter, String> {
    Meter::new(&read(path)?)
}

/// Loads the built module with exact operator counting ([`Meter::counting`]).
pub fn load_counting(path: &std::path::Path) -> Result<Meter, String> {
    Meter::counting(&read(path)?)
}

/// One exchange's operators per function (see [`report::profile_table`]).
#[derive(Debug, Clone)]
pub struct Profile {
    /// `(function index, name, exclusive, inclusive)`, most exclusive first.
    pub functions: Vec<(u32, String, u64, u64)>,
    /// Operators of the exchange (the `instructions` the counting module measures).
    pub total: u64,
}

/// Profiles the measured span of exchange `name` on a [`Meter::profiling`] module of
/// `wasm`; its host calls, bytes, memory and operator total must be those of `counting`.
pub fn profile(wasm: &[u8], counting: &Meter, name: &str) -> Result<Profile, String> {
    let profiling = Meter::profiling(wasm)?;
    let names = rewrite::function_names(wasm)?;
    let (vm, outcome) = exchange::run_in(&profiling, name)?;
    let counted = exchange::run(counting, name)?.usage;
    let same = exchange::Usage {
        fuel: counted.fuel,
        ..outcome.usage.clone()
    };
    if same != counted {
        return Err(format!(
            "{name}: the profiling module behaved differently: {same:?} vs {counted:?}"
        ));
    }
    let mut functions: Vec<(u32, String, u64, u64)> = vm
        .profile_since_mark()
        .into_iter()
        .map(|(f, exclusive, inclusive)| {
            let name = names
                .get(&f)
                .cloned()
                .unwrap_or_else(|| format!("func[{f}]"));
            (f, name, exclusive, inclusive)
        })
        .collect();
    let sum: u64 = functions.iter().map(|f| f.2).sum();
    if sum != counted.instructions {
        return Err(format!(
            "{name}: per-function operators add up to {sum}, not {}",
            counted.instructions
        ));
    }
    functions.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
    Ok(Profile {
        functions,
        total: counted.instructions,
    })
}

/// Meters every exchange of [`NAMES`]: fuel and everything else from `meter`, the exact
/// operator count from the same exchange on `counting`, whose host calls, bytes and
/// memory must be identical (the counting code does not touch them).
pub fn measure(meter: &Meter, counting: &Meter) -> Result<Report, String> {
    let mut report = Report {
        module_bytes: meter.module_bytes as u64,
        ..Report::default()
    };
    for name in NAMES {
        let mut usage = exchange::run(meter, name)
            .map_err(|e| format!("{name}: {e}"))?
            .usage;
        let counted = exchange::run(counting, name)
            .map_err(|e| format!("{name} (counting module): {e}"))?
            .usage;
        let same = exchange::Usage {
            fuel: usage.fuel,
            instructions: 0,
            ..counted.clone()
        };
        if same != usage {
            return Err(format!(
                "{name}: the operator-counting module behaved differently: {usage:?} vs {counted:?}"
            ));
        }
        usage.instructions = counted.instructions;
        report.exchanges.insert(name.to_string(), usage);
    }
    Ok(report)
}
