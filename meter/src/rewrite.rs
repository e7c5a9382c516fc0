//! Rewrites the module before instantiation so bulk memory operations report their size.
//!
//! wasmi charges `memory.copy` and `memory.fill` like any other instruction, whatever
//! their length. Each is replaced by a `call` to an import of module [`IMPORT_MODULE`]
//! with the same operands (`dst, src, len` / `dst, value, len`) and no result, which the
//! host carries out with the same bounds checks and counts. A `call` is one operator, as
//! the instruction it replaces was, so fuel is unchanged by the rewrite.
//!
//! The two imports are appended after the module's own imports, so every defined
//! function's index grows by two; the re-encoder renumbers calls, exports, element
//! segments and the start function. Custom sections (names, producers) are dropped:
//! nothing at run time reads them.

use std::collections::BTreeMap;

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{EntityType, Instruction, ValType};
use wasmparser::{Operator, Parser, Payload, TypeRef};

/// Import module of the counting functions (not part of the Proxy-Wasm or WASI ABIs).
pub const IMPORT_MODULE: &str = "meter";
pub const COPY: &str = "memory_copy";
pub const FILL: &str = "memory_fill";
/// Exported `i64` global counting executed operators (see [`rewrite_counting`]).
pub const COUNTER: &str = "meter_operators";
/// Imports of the profiling rewrite ([`rewrite_profiling`]): `enter(function index)` at the
/// start of every defined function, `leave()` after every call of one.
pub const ENTER: &str = "profile_enter";
pub const LEAVE: &str = "profile_leave";
/// Prefix of the exported per-function `i64` operator globals of [`rewrite_profiling`];
/// the suffix is the function's index in the original module.
pub const FUNCTION_COUNTER: &str = "meter_fn_";

/// What the rewrite adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Bulk operations only.
    Bulk,
    /// And the operator counter.
    Count,
    /// And a counter per defined function, and the enter / leave calls.
    Profile,
}

/// What the rewrite found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub wasm: Vec<u8>,
    /// `memory.copy` instructions replaced (static count in the code).
    pub copies: u32,
    /// `memory.fill` instructions replaced.
    pub fills: u32,
}

struct Bulk {
    mode: Mode,
    imported_funcs: u32,
    /// Index of the appended operator-counter global, when counting; the per-function
    /// globals follow it when profiling.
    counter: Option<u32>,
    /// Index of the type `(i32, i32, i32) -> ()` appended to the type section
    /// (`(i32) -> ()` and `() -> ()` follow it when profiling).
    ty: u32,
    /// Defined functions (when profiling), and the one being re-encoded.
    defined_funcs: u32,
    current: u32,
    copies: u32,
    fills: u32,
}

impl Bulk {
    fn copy_func(&self) -> u32 {
        self.imported_funcs
    }
    fn fill_func(&self) -> u32 {
        self.imported_funcs + 1
    }
    fn enter_func(&self) -> u32 {
        self.imported_funcs + 2
    }
    fn leave_func(&self) -> u32 {
        self.imported_funcs + 3
    }
    fn added_funcs(&self) -> u32 {
        if self.mode == Mode::Profile {
            4
        } else {
            2
        }
    }
}

impl Reencode for Bulk {
    type Error = String;

    fn function_index(&mut self, func: u32) -> u32 {
        if func < self.imported_funcs {
            func
        } else {
            func + self.added_funcs()
        }
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_type_section(self, types, section)?;
        types
            .ty()
            .function([ValType::I32, ValType::I32, ValType::I32], []);
        if self.mode == Mode::Profile {
            types.ty().function([ValType::I32], []);
            types.ty().function([], []);
        }
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut wasm_encoder::ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_import_section(self, imports, section)?;
        imports.import(IMPORT_MODULE, COPY, EntityType::Function(self.ty));
        imports.import(IMPORT_MODULE, FILL, EntityType::Function(self.ty));
        if self.mode == Mode::Profile {
            imports.import(IMPORT_MODULE, ENTER, EntityType::Function(self.ty + 1));
            imports.import(IMPORT_MODULE, LEAVE, EntityType::Function(self.ty + 2));
        }
        Ok(())
    }

    fn instruction<'a>(
        &mut self,
        op: Operator<'a>,
    ) -> Result<Instruction<'a>, reencode::Error<Self::Error>> {
        match op {
            Operator::MemoryCopy { dst_mem, src_mem } => {
                if dst_mem != 0 || src_mem != 0 {
                    return Err(reencode::Error::UserError(
                        "memory.copy between several memories is not metered".to_string(),
                    ));
                }
                self.copies += 1;
                Ok(Instruction::Call(self.copy_func()))
            }
            Operator::MemoryFill { mem } => {
                if mem != 0 {
                    return Err(reencode::Error::UserError(
                        "memory.fill of a second memory is not metered".to_string(),
                    ));
                }
                self.fills += 1;
                Ok(Instruction::Call(self.fill_func()))
            }
            other => reencode::utils::instruction(self, other),
        }
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        if self.counter.is_some() {
            let per_function = if self.mode == Mode::Profile {
                self.defined_funcs
            } else {
                0
            };
            for _ in 0..=per_function {
                globals.global(
                    wasm_encoder::GlobalType {
                        val_type: ValType::I64,
                        mutable: true,
                        shared: false,
                    },
                    &wasm_encoder::ConstExpr::i64_const(0),
                );
            }
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        if let Some(g) = self.counter {
            exports.export(COUNTER, wasm_encoder::ExportKind::Global, g);
            if self.mode == Mode::Profile {
                for k in 0..self.defined_funcs {
                    let name = format!("{FUNCTION_COUNTER}{}", self.imported_funcs + k);
                    exports.export(&name, wasm_encoder::ExportKind::Global, g + 1 + k);
                }
            }
        }
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let Some(counter) = self.counter else {
            return reencode::utils::parse_function_body(self, code, func);
        };
        let profile = self.mode == Mode::Profile;
        let own = counter + 1 + self.current;
        let index = self.imported_funcs + self.current;
        self.current += 1;
        let mut f = self.new_function_with_parsed_locals(&func)?;
        if profile {
            f.instruction(&Instruction::I32Const(index as i32))
                .instruction(&Instruction::Call(self.enter_func()));
        }
        let mut reader = func.get_operators_reader()?;
        // Operators of the current basic block, emitted after its counter increment once
        // the block ends (at a branch, or before a point execution can enter otherwise),
        // and how many of them are the module's (the profile's `leave` calls are not).
        let mut block: Vec<Instruction<'_>> = Vec::new();
        let mut ops = 0i64;
        let flush =
            |f: &mut wasm_encoder::Function, block: &mut Vec<Instruction<'_>>, ops: &mut i64| {
                if block.is_empty() {
                    return;
                }
                f.instruction(&Instruction::GlobalGet(counter))
                    .instruction(&Instruction::I64Const(*ops))
                    .instruction(&Instruction::I64Add)
                    .instruction(&Instruction::GlobalSet(counter));
                if profile {
                    f.instruction(&Instruction::GlobalGet(own))
                        .instruction(&Instruction::I64Const(*ops))
                        .instruction(&Instruction::I64Add)
                        .instruction(&Instruction::GlobalSet(own));
                }
                for i in block.drain(..) {
                    f.instruction(&i);
                }
                *ops = 0;
            };
        while !reader.eof() {
            let op = reader.read()?;
            // A call of a defined function (or through a table, which holds only defined
            // functions in the modules profiled) returns to a `leave`.
            let leave = profile
                && match op {
                    Operator::Call { function_index } => function_index >= self.imported_funcs,
                    Operator::CallIndirect { .. } => true,
                    Operator::ReturnCall { .. } | Operator::ReturnCallIndirect { .. } => {
                        return Err(reencode::Error::UserError(
                            "tail calls are not profiled".to_string(),
                        ))
                    }
                    _ => false,
                };
            let ends_block = matches!(
                op,
                Operator::Loop { .. }
                    | Operator::If { .. }
                    | Operator::Else
                    | Operator::End
                    | Operator::Br { .. }
                    | Operator::BrIf { .. }
                    | Operator::BrTable { .. }
                    | Operator::Return
                    | Operator::Unreachable
                    | Operator::ReturnCall { .. }
                    | Operator::ReturnCallIndirect { .. }
            );
            block.push(self.instruction(op)?);
            ops += 1;
            if leave {
                block.push(Instruction::Call(self.leave_func()));
            }
            if ends_block {
                flush(&mut f, &mut block, &mut ops);
            }
        }
        flush(&mut f, &mut block, &mut ops);
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        _module: &mut wasm_encoder::Module,
        _section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        Ok(())
    }
}

/// Counts imported functions and globals, types, globals and defined functions; the
/// rewrite needs the type, import, global and export sections to exist.
fn survey(wasm: &[u8]) -> Result<(u32, u32, u32, u32), String> {
    let mut defined = 0u32;
    let mut imported_funcs = None;
    let mut imported_globals = 0u32;
    let mut globals = None;
    let mut exports = false;
    let mut types = None;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| format!("cannot parse the module: {e}"))? {
            Payload::TypeSection(s) => types = Some(s.count()),
            Payload::ImportSection(s) => {
                let mut n = 0u32;
                for import in s {
                    let import = import.map_err(|e| format!("bad import: {e}"))?;
                    match import.ty {
                        TypeRef::Func(_) => n += 1,
                        TypeRef::Global(_) => imported_globals += 1,
                        _ => {}
                    }
                }
                imported_funcs = Some(n);
            }
            Payload::GlobalSection(s) => globals = Some(s.count()),
            Payload::ExportSection(_) => exports = true,
            Payload::FunctionSection(s) => defined = s.count(),
            _ => {}
        }
    }
    match (imported_funcs, types, globals, exports) {
        (Some(i), Some(t), Some(g), true) => Ok((i, t, imported_globals + g, defined)),
        _ => Err("the module lacks a type, import, global or export section".to_string()),
    }
}

/// Returns the module with every `memory.copy` / `memory.fill` routed through
/// [`IMPORT_MODULE`]'s counting imports.
pub fn rewrite(wasm: &[u8]) -> Result<Rewritten, String> {
    encode(wasm, Mode::Bulk)
}

/// [`rewrite`], and every basic block adds its operator count to the exported global
/// [`COUNTER`] when it is entered, so the global counts executed operators exactly
/// (a block is cut at each branch, `if`, `else`, `loop` and `end`; its operators are
/// counted when it starts; a trap in the middle of a block counts the rest). The
/// increments themselves are not counted, but do cost fuel: fuel of this module is not
/// the module's fuel.
pub fn rewrite_counting(wasm: &[u8]) -> Result<Rewritten, String> {
    encode(wasm, Mode::Count)
}

/// [`rewrite_counting`], and each defined function's blocks also add their operators to
/// that function's exported global (`meter_fn_<index in the original module>`), which so
/// counts the operators executed in its own body (exclusive). For inclusive counts every
/// defined function starts with a call of [`ENTER`] with its index, and every call of a
/// defined function (`call`, `call_indirect`) is followed by a call of [`LEAVE`]; the
/// host pairs them on a stack and reads [`COUNTER`]. These calls are not counted.
/// Tail calls are refused.
pub fn rewrite_profiling(wasm: &[u8]) -> Result<Rewritten, String> {
    encode(wasm, Mode::Profile)
}

fn encode(wasm: &[u8], mode: Mode) -> Result<Rewritten, String> {
    let (imported_funcs, ty, globals, defined_funcs) = survey(wasm)?;
    let mut bulk = Bulk {
        mode,
        imported_funcs,
        counter: (mode != Mode::Bulk).then_some(globals),
        ty,
        defined_funcs,
        current: 0,
        copies: 0,
        fills: 0,
    };
    let mut module = wasm_encoder::Module::new();
    bulk.parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(|e| format!("cannot rewrite the module: {e}"))?;
    Ok(Rewritten {
        wasm: module.finish(),
        copies: bulk.copies,
        fills: bulk.fills,
    })
}

/// Function names of the module's `name` section by function index, demangled.
pub fn function_names(wasm: &[u8]) -> Result<BTreeMap<u32, String>, String> {
    let mut out = BTreeMap::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Payload::CustomSection(c) =
            payload.map_err(|e| format!("cannot parse the module: {e}"))?
        else {
            continue;
        };
        let wasmparser::KnownCustom::Name(reader) = c.as_known() else {
            continue;
        };
        for name in reader {
            let Ok(wasmparser::Name::Function(map)) = name else {
                continue;
            };
            for naming in map.into_iter().flatten() {
                let name = format!("{:#}", rustc_demangle::demangle(naming.name));
                out.insert(naming.index, name);
            }
        }
    }
    Ok(out)
}

/// The module's imports as `(module, name)`, in order (for `--list-imports` and checks).
pub fn imports(wasm: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::ImportSection(s) =
            payload.map_err(|e| format!("cannot parse the module: {e}"))?
        {
            for import in s {
                let import = import.map_err(|e| format!("bad import: {e}"))?;
                out.push((import.module.to_string(), import.name.to_string()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::host::{self, Host};
    use wasm_encoder::{
        BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
        GlobalSection, GlobalType, ImportSection, Instruction as I, MemArg, MemorySection,
        MemoryType, Module, TypeSection,
    };
    use wasmi::{Linker, Store};

    /// `f(n)`: counts its argument down to 0 in a block and loop, then returns it; the
    /// tests of fuel (vm.rs) and of exact counting use the same body.
    pub(crate) fn countdown() -> Vec<I<'static>> {
        vec![
            I::Block(BlockType::Empty),
            I::Loop(BlockType::Empty),
            I::LocalGet(0),
            I::I32Eqz,
            I::BrIf(1),
            I::LocalGet(0),
            I::I32Const(1),
            I::I32Sub,
            I::LocalSet(0),
            I::Br(0),
            I::End,
            I::End,
            I::LocalGet(0),
            I::End,
        ]
    }

    /// Imports `env.proxy_done`; exports memory, `proxy_on_memory_allocate` (returns 0)
    /// and `f(len)`: fill [0, len) with 0xAB, copy it to [100, 100 + len), call the
    /// import, return the byte at 100 + len - 1.
    fn module() -> Vec<u8> {
        module_with(&[
            I::I32Const(0),
            I::I32Const(0xAB),
            I::LocalGet(0),
            I::MemoryFill(0),
            I::I32Const(100),
            I::I32Const(0),
            I::LocalGet(0),
            I::MemoryCopy {
                src_mem: 0,
                dst_mem: 0,
            },
            I::Call(0),
            I::Drop,
            I::LocalGet(0),
            I::I32Const(99),
            I::I32Add,
            I::I32Load8U(MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            }),
            I::End,
        ])
    }

    /// The module above with `body` as `f: (i32) -> i32`, and a global.
    fn module_with(body: &[I<'_>]) -> Vec<u8> {
        let mut types = TypeSection::new();
        types.ty().function([ValType::I32], [ValType::I32]);
        types.ty().function([], [ValType::I32]);
        let mut imports = ImportSection::new();
        imports.import("env", "proxy_done", EntityType::Function(1));
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        funcs.function(0);
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut exports = ExportSection::new();
        exports.export("memory", ExportKind::Memory, 0);
        exports.export("proxy_on_memory_allocate", ExportKind::Func, 1);
        exports.export("f", ExportKind::Func, 2);
        let mut code = CodeSection::new();
        let mut alloc = Function::new([]);
        alloc.instruction(&I::I32Const(0)).instruction(&I::End);
        code.function(&alloc);
        let mut f = Function::new([]);
        for i in body {
            f.instruction(i);
        }
        code.function(&f);
        let mut globals = GlobalSection::new();
        globals.global(
            GlobalType {
                val_type: ValType::I32,
                mutable: true,
                shared: false,
            },
            &ConstExpr::i32_const(0),
        );
        let mut m = Module::new();
        m.section(&types)
            .section(&imports)
            .section(&funcs)
            .section(&memories)
            .section(&globals)
            .section(&exports)
            .section(&code);
        m.finish()
    }

    fn run(wasm: &[u8], len: i32) -> Result<(i32, u64, Host), wasmi::Error> {
        run_counted(wasm, len).map(|(out, fuel, _, host)| (out, fuel, host))
    }

    /// Result, fuel, operator counter (if exported), host.
    fn run_counted(wasm: &[u8], len: i32) -> Result<(i32, u64, Option<i64>, Host), wasmi::Error> {
        let engine = crate::vm::engine();
        let module = wasmi::Module::new(&engine, wasm)?;
        let mut linker = Linker::new(&engine);
        host::define(&mut linker).map_err(wasmi::Error::new)?;
        let mut store = Store::new(&engine, Host::new(Vec::new()));
        store.set_fuel(1_000_000)?;
        let instance = linker.instantiate_and_start(&mut store, &module)?;
        let memory = instance
            .get_memory(&store, "memory")
            .ok_or_else(|| wasmi::Error::new("memory"))?;
        let alloc = instance.get_typed_func::<i32, i32>(&store, "proxy_on_memory_allocate")?;
        store.data_mut().attach(memory, alloc);
        let f = instance.get_typed_func::<i32, i32>(&store, "f")?;
        let out = f.call(&mut store, len)?;
        let fuel = 1_000_000 - store.get_fuel()?;
        let ops = instance
            .get_global(&store, COUNTER)
            .and_then(|g| g.get(&store).i64());
        Ok((out, fuel, ops, store.into_data()))
    }

    #[test]
    fn bulk_operations_become_counting_calls_with_the_same_fuel_and_effect() {
        let original = module();
        let r = rewrite(&original).unwrap();
        assert_eq!((r.copies, r.fills), (1, 1));
        assert_eq!(
            imports(&r.wasm).unwrap(),
            vec![
                ("env".to_string(), "proxy_done".to_string()),
                (IMPORT_MODULE.to_string(), COPY.to_string()),
                (IMPORT_MODULE.to_string(), FILL.to_string()),
            ]
        );
        let (out0, fuel0, host0) = run(&original, 300).unwrap();
        let (out1, fuel1, host1) = run(&r.wasm, 300).unwrap();
        assert_eq!((out0, out1), (0xAB, 0xAB));
        assert_eq!(fuel0, fuel1, "the rewrite must not change fuel");
        assert_eq!(host0.counts.bulk_bytes, 0);
        assert_eq!(host1.counts.bulk_bytes, 600);
        assert_eq!(host1.counts.bulk_ops, 2);
        // The renumbered call still reaches the module's own import; the counting
        // imports are not host calls.
        assert_eq!(host1.counts.calls.get("proxy_done"), Some(&1));
        assert_eq!(host1.counts.calls.len(), 1);
    }

    #[test]
    fn an_out_of_bounds_bulk_operation_still_traps() {
        let r = rewrite(&module()).unwrap();
        let err = run(&r.wasm, 70_000).err().unwrap();
        assert_eq!(err.as_trap_code(), Some(wasmi::TrapCode::MemoryOutOfBounds));
    }

    #[test]
    fn the_counting_module_counts_executed_operators_exactly() {
        // Counts the argument down to 0: block, loop (2); per check local.get, i32.eqz,
        // br_if (3, n + 1 times); per iteration local.get, i32.const, i32.sub,
        // local.set, br (5, n times); after the block local.get, end (2).
        let wasm = module_with(&countdown());
        let counted = rewrite_counting(&wasm).unwrap();
        for n in [0, 1, 3, 10] {
            let (_, _, ops, _) = run_counted(&counted.wasm, n).unwrap();
            assert_eq!(ops, Some(i64::from(8 * n + 7)), "n = {n}");
        }
        // The bulk rewrite is part of it: memory.copy / fill count 1 each.
        let counted = rewrite_counting(&module()).unwrap();
        let (out, _, ops, host) = run_counted(&counted.wasm, 300).unwrap();
        assert_eq!(out, 0xAB);
        assert_eq!(ops, Some(15));
        assert_eq!(host.counts.bulk_bytes, 600);
    }

    #[test]
    fn the_profiling_module_counts_operators_per_function() {
        // f (index 2): i32.const, call alloc (index 1: i32.const, end), drop,
        // local.get, end.
        let wasm = module_with(&[I::I32Const(5), I::Call(1), I::Drop, I::LocalGet(0), I::End]);
        let profiled = rewrite_profiling(&wasm).unwrap();
        let engine = crate::vm::engine();
        let module = wasmi::Module::new(&engine, &profiled.wasm).unwrap();
        let mut linker = Linker::new(&engine);
        host::define(&mut linker).unwrap();
        let mut store = Store::new(&engine, Host::new(Vec::new()));
        store.set_fuel(1_000_000).unwrap();
        let instance = linker.instantiate_and_start(&mut store, &module).unwrap();
        let counter = instance.get_global(&store, COUNTER).unwrap();
        store.data_mut().attach_profile(counter);
        let f = instance.get_typed_func::<i32, i32>(&store, "f").unwrap();
        assert_eq!(f.call(&mut store, 3).unwrap(), 3);
        let get = |store: &Store<Host>, name: &str| {
            instance.get_global(store, name).unwrap().get(store).i64()
        };
        assert_eq!(get(&store, COUNTER), Some(7));
        assert_eq!(get(&store, &format!("{FUNCTION_COUNTER}1")), Some(2));
        assert_eq!(get(&store, &format!("{FUNCTION_COUNTER}2")), Some(5));
        store.data_mut().profile.leave_all(7);
        let inclusive = &store.data().profile.inclusive;
        assert_eq!(inclusive.get(&1), Some(&2));
        assert_eq!(inclusive.get(&2), Some(&7));
    }
}
