//! `meter [--wasm PATH] [--json PATH] [--check BUDGETS] [--update-budgets BUDGETS]
//! [--list-imports] [--trace EXCHANGE] [--profile EXCHANGE [--top N]]`: prints the cost table of the built module's canonical exchanges.

use std::path::PathBuf;
use std::process::ExitCode;

use meter::exchange::NAMES;
use meter::report::{self, Budgets};

const USAGE: &str = "usage: meter [--wasm PATH] [--json PATH] [--check BUDGETS.json] \
[--update-budgets BUDGETS.json] [--list-imports] [--trace EXCHANGE] [--profile EXCHANGE [--top N]] [--quiet]";

#[derive(Default)]
struct Args {
    wasm: Option<PathBuf>,
    json: Option<PathBuf>,
    check: Option<PathBuf>,
    update: Option<PathBuf>,
    list_imports: bool,
    trace: Option<String>,
    profile: Option<String>,
    top: Option<usize>,
    quiet: bool,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--wasm" => args.wasm = Some(value("--wasm")?.into()),
            "--json" => args.json = Some(value("--json")?.into()),
            "--check" => args.check = Some(value("--check")?.into()),
            "--update-budgets" => args.update = Some(value("--update-budgets")?.into()),
            "--list-imports" => args.list_imports = true,
            "--trace" => args.trace = Some(value("--trace")?),
            "--profile" => args.profile = Some(value("--profile")?),
            "--top" => {
                args.top = Some(
                    value("--top")?
                        .parse()
                        .map_err(|_| "--top needs a number".to_string())?,
                )
            }
            "--quiet" => args.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn run(args: Args) -> Result<bool, String> {
    let path = args.wasm.unwrap_or_else(meter::default_wasm_path);
    let m = meter::load(&path)?;
    if args.list_imports {
        for (module, name) in &m.imports {
            println!("{module}.{name}");
        }
        println!(
            "({} imports; memory.copy x{}, memory.fill x{} in the code)",
            m.imports.len(),
            m.static_copies,
            m.static_fills
        );
        return Ok(true);
    }
    let counting = meter::load_counting(&path)?;
    if let Some(name) = &args.profile {
        let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p = meter::profile(&wasm, &counting, name)?;
        print!("{}", report::profile_table(name, &p, args.top));
        return Ok(true);
    }
    if let Some(name) = &args.trace {
        print!("{}", trace(&m, &counting, name)?);
        return Ok(true);
    }
    let report = meter::measure(&m, &counting)?;
    if !args.quiet {
        print!("{}", report::table(&report, &NAMES));
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.update {
        let text = serde_json::to_string_pretty(&report::budgets_of(&report))
            .map_err(|e| e.to_string())?;
        std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
        println!("meter: budgets written to {}", p.display());
    }
    let mut ok = true;
    if let Some(p) = &args.check {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let budgets: Budgets =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let result = report::check(&report, &budgets);
        for n in &result.notes {
            println!("meter: note: {n}");
        }
        for f in &result.failures {
            eprintln!("meter: over budget: {f}");
        }
        if result.failures.is_empty() {
            println!(
                "meter: every count is within {} ({} exchanges)",
                p.display(),
                budgets.exchanges.len()
            );
        } else {
            eprintln!(
                "meter: {} count(s) over budget; if the growth is intended, run \
                 `make meter-budgets` and commit meter/budgets.json",
                result.failures.len()
            );
            ok = false;
        }
    }
    Ok(ok)
}

/// Every callback of the measured exchange with its fuel, and the host calls in order.
fn trace(m: &meter::vm::Meter, counting: &meter::vm::Meter, name: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    let out = meter::exchange::run(m, name)?;
    let counted = meter::exchange::run(counting, name)?;
    let mut s = String::new();
    let _ = writeln!(s, "{name}: callbacks (fuel, instructions, host calls)");
    for (cb, op) in out.callbacks.iter().zip(&counted.callbacks) {
        let _ = writeln!(
            s,
            "  {:<28} {:>10} {:>10} {:>4}",
            cb.name,
            cb.fuel,
            op.operators.unwrap_or(0),
            cb.host_calls
        );
    }
    let _ = writeln!(s, "{name}: host calls");
    for c in &out.calls {
        let data: Vec<String> = c
            .data
            .iter()
            .map(|d| {
                let t = String::from_utf8_lossy(d).replace('\0', "|");
                if t.chars().count() > 60 {
                    let head: String = t.chars().take(60).collect();
                    format!("{head:?}..({} bytes)", d.len())
                } else {
                    format!("{t:?}")
                }
            })
            .collect();
        let _ = writeln!(
            s,
            "  {:<36} {:?} {} -> {:?}",
            c.name,
            c.args,
            data.join(" "),
            c.status
        );
    }
    Ok(s)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("meter: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("meter: {e}");
            ExitCode::from(1)
        }
    }
}
