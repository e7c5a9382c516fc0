//! The module under wasmi with fuel metering, and the Proxy-Wasm callbacks Envoy makes.
//!
//! # What one unit of fuel is
//!
//! Every Wasm operator of the module costs exactly 1 (wasmi's defaults make `nop`,
//! `drop`, `block`, `loop`, `end`, `else`, `return` and `unreachable` free; here they
//! cost 1 like the rest). wasmi charges fuel per *fuel frame*, not per operator as it
//! executes: entering a function body, one iteration of a `loop`, or a taken `if`/`else`
//! arm charges the operators of that region (nested `loop`/`if`/`else` regions excluded,
//! plain `block`s included) all at once, plus 1 for the frame itself (wasmi's fixed base
//! cost of its fuel instruction). So
//!
//! `fuel = Σ over frames entered (1 + operators in the frame's region)`,
//!
//! which counts executed operators exactly for frames that run to their end, and counts
//! the rest of a frame too when it is left early (`br`, `br_if`, `br_table`, `return` out
//! of the middle). wasmi's dynamic costs (copying call arguments and register spans,
//! `memory.grow`, translation) are set to 0 and functions are compiled eagerly, so no fuel
//! is spent outside the module's own code. `memory.copy` / `memory.fill` cost 1 each
//! whatever their length (they are `call`s after the rewrite, also 1); their bytes are
//! counted apart as bulk bytes. The tests below pin these rules.

use std::collections::BTreeMap;

use wasmi::{
    CompilationMode, Config, CustomFuelCosts, Engine, Instance, Linker, Memory, Module,
    OperatorCost, Store,
};

use crate::host::{self, Host};
use crate::rewrite;

/// Fuel given to a store; far more than any run uses.
const FUEL: u64 = 1 << 60;

/// The operator costs described in the module documentation.
pub fn operator_cost() -> OperatorCost {
    OperatorCost {
        nop: 1,
        drop: 1,
        block: 1,
        loop_: 1,
        end: 1,
        else_: 1,
        return_: 1,
        unreachable: 1,
        ..OperatorCost::default()
    }
}

pub fn engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .operator_cost(operator_cost())
        .fuel_cost(CustomFuelCosts {
            // `len / u32::MAX` is 0 for every copy a 4 GiB memory can hold.
            bytes_copied_per_fuel: u32::MAX,
            fuel_per_bytes_translated: 0,
            fuel_per_bytes_validated: 0,
        });
    Engine::new(&config)
}

#[derive(Clone, Copy)]
enum Rewrite {
    Bulk,
    Counting,
    Profiling,
}

/// The compiled, rewritten module and a linker with the recording host.
pub struct Meter {
    engine: Engine,
    module: Module,
    linker: Linker<Host>,
    /// Size of the module as built (before the rewrite).
    pub module_bytes: usize,
    /// `memory.copy` / `memory.fill` instructions in the code.
    pub static_copies: u32,
    pub static_fills: u32,
    /// The module's imports, `(module, name)`.
    pub imports: Vec<(String, String)>,
}

impl Meter {
    pub fn new(wasm: &[u8]) -> Result<Meter, String> {
        Meter::build(wasm, Rewrite::Bulk)
    }

    /// A meter of the module with exact operator counting (see
    /// [`rewrite::rewrite_counting`]); its fuel includes the counting code.
    pub fn counting(wasm: &[u8]) -> Result<Meter, String> {
        Meter::build(wasm, Rewrite::Counting)
    }

    /// A meter of the module with exact operator counting per function (see
    /// [`rewrite::rewrite_profiling`]); a diagnostic, not for budgets.
    pub fn profiling(wasm: &[u8]) -> Result<Meter, String> {
        Meter::build(wasm, Rewrite::Profiling)
    }

    fn build(wasm: &[u8], kind: Rewrite) -> Result<Meter, String> {
        let imports = rewrite::imports(wasm)?;
        let provided = host::provided();
        let missing: Vec<String> = imports
            .iter()
            .filter(|(m, n)| !provided.iter().any(|(pm, pn)| pm == m && pn == n))
            .map(|(m, n)| format!("{m}.{n}"))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the module imports what the meter's host does not provide: {}",
                missing.join(", ")
            ));
        }
        let rewritten = match kind {
            Rewrite::Bulk => rewrite::rewrite(wasm)?,
            Rewrite::Counting => rewrite::rewrite_counting(wasm)?,
            Rewrite::Profiling => rewrite::rewrite_profiling(wasm)?,
        };
        let engine = engine();
        let module = Module::new(&engine, &rewritten.wasm)
            .map_err(|e| format!("wasmi cannot load the module: {e}"))?;
        let mut linker = Linker::new(&engine);
        host::define(&mut linker)?;
        Ok(Meter {
            engine,
            module,
            linker,
            module_bytes: wasm.len(),
            static_copies: rewritten.copies,
            static_fills: rewritten.fills,
            imports,
        })
    }

    /// A fresh VM (Envoy creates one per worker thread) with `host` as its host.
    pub fn instantiate(&self, host: Host) -> Result<Vm, String> {
        let mut store = Store::new(&self.engine, host);
        store
            .set_fuel(FUEL)
            .map_err(|e| format!("cannot set fuel: {e}"))?;
        let instance = self
            .linker
            .instantiate_and_start(&mut store, &self.module)
            .map_err(|e| format!("cannot instantiate the module: {e}"))?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or("the module exports no memory")?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&store, "proxy_on_memory_allocate")
            .map_err(|e| format!("proxy_on_memory_allocate: {e}"))?;
        store.data_mut().attach(memory, alloc);
        let mut functions = Vec::new();
        for export in instance.exports(&store) {
            let Some(index) = export.name().strip_prefix(rewrite::FUNCTION_COUNTER) else {
                continue;
            };
            let index: u32 = index
                .parse()
                .map_err(|_| format!("bad profile export {}", export.name()))?;
            if let Some(g) = export.into_global() {
                functions.push((index, g));
            }
        }
        if !functions.is_empty() {
            let counter = instance
                .get_global(&store, rewrite::COUNTER)
                .ok_or("the profiling module exports no operator counter")?;
            store.data_mut().attach_profile(counter);
        }
        Ok(Vm {
            functions,
            mark: Vec::new(),
            inclusive_mark: BTreeMap::new(),
            callbacks: Vec::new(),
            store,
            instance,
            memory,
            root_id: 1,
            next_id: 2,
        })
    }
}

/// Proxy-Wasm `Action`.
pub const CONTINUE: i32 = 0;
pub const PAUSE: i32 = 1;

/// One callback into the module and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub name: String,
    pub fuel: u64,
    /// Operators executed, on a [`Meter::counting`] module.
    pub operators: Option<u64>,
    /// Index in [`Host::calls`] of its first host call, and how many it made.
    pub first_call: usize,
    pub host_calls: usize,
}

pub struct Vm {
    /// Per-function operator globals of a profiling module, by original function index.
    functions: Vec<(u32, wasmi::Global)>,
    /// Their values, and the inclusive counts, at [`Vm::mark_profile`].
    mark: Vec<u64>,
    inclusive_mark: BTreeMap<u32, u64>,
    callbacks: Vec<Callback>,
    store: Store<Host>,
    instance: Instance,
    memory: Memory,
    pub root_id: u32,
    next_id: u32,
}

impl Vm {
    pub fn host(&self) -> &Host {
        self.store.data()
    }

    pub fn host_mut(&mut self) -> &mut Host {
        self.store.data_mut()
    }

    /// Operators executed so far, on a [`Meter::counting`] module.
    pub fn operators(&self) -> Option<u64> {
        let g = self.instance.get_global(&self.store, rewrite::COUNTER)?;
        match g.get(&self.store) {
            wasmi::Val::I64(n) => Some(n as u64),
            _ => None,
        }
    }

    fn function_counts(&self) -> Vec<u64> {
        self.functions
            .iter()
            .map(|(_, g)| g.get(&self.store).i64().map_or(0, |n| n as u64))
            .collect()
    }

    /// Starts a profiled span (nothing on a module that is not profiling).
    pub fn mark_profile(&mut self) {
        if self.functions.is_empty() {
            return;
        }
        self.mark = self.function_counts();
        self.inclusive_mark = self.host().profile.inclusive.clone();
    }

    /// Per function executed since [`Vm::mark_profile`]: (index in the original module,
    /// exclusive operators, inclusive operators), for functions that ran.
    pub fn profile_since_mark(&self) -> Vec<(u32, u64, u64)> {
        let now = self.function_counts();
        let inclusive = &self.host().profile.inclusive;
        self.functions
            .iter()
            .zip(now)
            .enumerate()
            .filter_map(|(k, ((f, _), n))| {
                let exclusive = n.saturating_sub(self.mark.get(k).copied().unwrap_or(0));
                let all = inclusive.get(f).copied().unwrap_or(0);
                let all = all.saturating_sub(self.inclusive_mark.get(f).copied().unwrap_or(0));
                (exclusive > 0 || all > 0).then_some((*f, exclusive, all))
            })
            .collect()
    }

    /// Fuel left in the store; differences are the fuel spent.
    pub fn fuel_left(&self) -> u64 {
        self.store.get_fuel().unwrap_or(0)
    }

    pub fn memory_bytes(&self) -> u64 {
        self.memory.data_size(&self.store) as u64
    }

    fn call<P, R>(&mut self, name: &str, params: P) -> Result<R, String>
    where
        P: wasmi::WasmParams,
        R: wasmi::WasmResults,
    {
        let f = self
            .instance
            .get_typed_func::<P, R>(&self.store, name)
            .map_err(|e| format!("{name}: {e}"))?;
        let before = self.fuel_left();
        let ops_before = self.operators();
        let calls_before = self.host().calls.len();
        let out = f
            .call(&mut self.store, params)
            .map_err(|e| format!("{name} trapped: {e}"))?;
        if !self.functions.is_empty() {
            let now = self.operators().unwrap_or(0);
            self.store.data_mut().profile.leave_all(now);
        }
        let fuel = before.saturating_sub(self.fuel_left());
        let operators = match (ops_before, self.operators()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        let host_calls = self.host().calls.len().saturating_sub(calls_before);
        self.callbacks.push(Callback {
            name: name.to_string(),
            fuel,
            operators,
            first_call: calls_before,
            host_calls,
        });
        Ok(out)
    }

    /// The callbacks made since the last [`Vm::take_callbacks`], with their fuel.
    pub fn take_callbacks(&mut self) -> Vec<Callback> {
        std::mem::take(&mut self.callbacks)
    }

    /// What Envoy does when it loads the VM: the reactor's `_initialize` (static
    /// constructors, where the SDK's `main!` runs), then the root context is created and
    /// started with the (empty) VM configuration.
    pub fn start(&mut self) -> Result<bool, String> {
        if self.instance.get_func(&self.store, "_initialize").is_some() {
            self.call::<(), ()>("_initialize", ())?;
        }
        let root = self.root_id;
        self.host_mut().live_contexts.insert(root);
        self.call::<(i32, i32), ()>("proxy_on_context_create", (root as i32, 0))?;
        let size = self.vm_configuration_size();
        let ok = self.call::<(i32, i32), i32>("proxy_on_vm_start", (root as i32, size))?;
        Ok(ok != 0)
    }

    fn vm_configuration_size(&self) -> i32 {
        self.host().buffers[host::VM_CONFIGURATION]
            .as_ref()
            .map_or(0, |b| b.len() as i32)
    }

    /// A configuration push: `proxy_on_configure` with the plugin configuration's size.
    pub fn configure(&mut self) -> Result<bool, String> {
        let size = self.host().buffers[host::PLUGIN_CONFIGURATION]
            .as_ref()
            .map_or(0, |b| b.len() as i32);
        let ok = self.call::<(i32, i32), i32>("proxy_on_configure", (self.root_id as i32, size))?;
        Ok(ok != 0)
    }

    /// A new HTTP stream's context id (Envoy numbers contexts in one sequence).
    pub fn new_context(&mut self) -> Result<u32, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.host_mut().live_contexts.insert(id);
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, self.root_id as i32))?;
        Ok(id)
    }

    pub fn on_request_headers(
        &mut self,
        id: u32,
        headers: usize,
        eos: bool,
    ) -> Result<i32, String> {
        self.call(
            "proxy_on_request_headers",
            (id as i32, headers as i32, eos as i32),
        )
    }

    pub fn on_request_body(&mut self, id: u32, size: usize, eos: bool) -> Result<i32, String> {
        self.call(
            "proxy_on_request_body",
            (id as i32, size as i32, eos as i32),
        )
    }

    pub fn on_response_headers(
        &mut self,
        id: u32,
        headers: usize,
        eos: bool,
    ) -> Result<i32, String> {
        self.call(
            "proxy_on_response_headers",
            (id as i32, headers as i32, eos as i32),
        )
    }

    pub fn on_response_body(&mut self, id: u32, size: usize, eos: bool) -> Result<i32, String> {
        self.call(
            "proxy_on_response_body",
            (id as i32, size as i32, eos as i32),
        )
    }

    pub fn on_log(&mut self, id: u32) -> Result<(), String> {
        self.call("proxy_on_log", id as i32)
    }

    pub fn on_done(&mut self, id: u32) -> Result<bool, String> {
        self.call::<i32, i32>("proxy_on_done", id as i32)
            .map(|r| r != 0)
    }

    pub fn on_delete(&mut self, id: u32) -> Result<(), String> {
        self.call::<i32, ()>("proxy_on_delete", id as i32)?;
        self.host_mut().live_contexts.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder::{
        BlockType, CodeSection, ExportKind, ExportSection, Function, FunctionSection,
        Instruction as I, Module as Enc, TypeSection, ValType,
    };
    use wasmi::{Linker, Module, Store};

    /// A module exporting `f: (i32) -> i32` with `body` (locals: none).
    fn module(body: &[I<'_>]) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        let mut exports = ExportSection::new();
        exports.export("f", ExportKind::Func, 0);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        for i in body {
            f.instruction(i);
        }
        code.function(&f);
        let mut m = Enc::new();
        m.section(&types)
            .section(&funcs)
            .section(&exports)
            .section(&code);
        m.finish()
    }

    fn fuel_of(wasm: &[u8], arg: i32) -> u64 {
        let engine = engine();
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_fuel(1_000_000).unwrap();
        let instance = Linker::new(&engine)
            .instantiate_and_start(&mut store, &module)
            .unwrap();
        let f = instance.get_typed_func::<i32, i32>(&store, "f").unwrap();
        f.call(&mut store, arg).unwrap();
        1_000_000 - store.get_fuel().unwrap()
    }

    #[test]
    fn straight_line_code_costs_one_per_operator() {
        // The function frame (1) + local.get, i32.const, i32.add, end.
        let wasm = module(&[I::LocalGet(0), I::I32Const(1), I::I32Add, I::End]);
        assert_eq!(fuel_of(&wasm, 0), 1 + 4);
        // nop and drop cost 1 as well.
        let wasm = module(&[I::Nop, I::LocalGet(0), I::Drop, I::LocalGet(0), I::End]);
        assert_eq!(fuel_of(&wasm, 0), 1 + 5);
    }

    #[test]
    fn a_loop_charges_its_whole_body_per_iteration_even_when_left_early() {
        // Counts the argument down to 0. Function frame: 1 + block, loop, end(block),
        // local.get, end(func) = 6; loop frame: 1 + 9 operators, charged on each entry,
        // including the last one that leaves at br_if after 3.
        let wasm = module(&crate::rewrite::tests::countdown());
        assert_eq!(fuel_of(&wasm, 0), 6 + 10);
        assert_eq!(fuel_of(&wasm, 3), 6 + 4 * 10);
    }

    #[test]
    fn an_if_arm_is_charged_only_when_taken() {
        // Function frame: 1 + local.get, if, local.get, end = 5; then arm: 1 + i32.const,
        // local.set, else = 4; else arm: 1 + i32.const, local.set, end(if) = 4.
        let wasm = module(&[
            I::LocalGet(0),
            I::If(BlockType::Empty),
            I::I32Const(7),
            I::LocalSet(0),
            I::Else,
            I::I32Const(9),
            I::LocalSet(0),
            I::End,
            I::LocalGet(0),
            I::End,
        ]);
        let then = fuel_of(&wasm, 1);
        let other = fuel_of(&wasm, 0);
        assert_eq!(then, 5 + 4);
        assert_eq!(other, 5 + 4);
    }
}
