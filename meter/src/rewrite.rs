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

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{EntityType, Instruction, ValType};
use wasmparser::{Operator, Parser, Payload, TypeRef};

/// Import module of the counting functions (not part of the Proxy-Wasm or WASI ABIs).
pub const IMPORT_MODULE: &str = "meter";
pub const COPY: &str = "memory_copy";
pub const FILL: &str = "memory_fill";
/// Exported `i64` global counting executed operators (see [`rewrite_counting`]).
pub const COUNTER: &str = "meter_operators";

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
    imported_funcs: u32,
    /// Index of the appended operator-counter global, when counting.
    counter: Option<u32>,
    /// Index of the type `(i32, i32, i32) -> ()` appended to the type section.
    ty: u32,
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
}

impl Reencode for Bulk {
    type Error = String;

    fn function_index(&mut self, func: u32) -> u32 {
        if func < self.imported_funcs {
            func
        } else {
            func + 2
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
            globals.global(
                wasm_encoder::GlobalType {
                    val_type: ValType::I64,
                    mutable: true,
                    shared: false,
                },
                &wasm_encoder::ConstExpr::i64_const(0),
            );
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
        let mut f = self.new_function_with_parsed_locals(&func)?;
        let mut reader = func.get_operators_reader()?;
        // Operators of the current basic block, emitted after its counter increment once
        // the block ends (at a branch, or before a point execution can enter otherwise).
        let mut block: Vec<Instruction<'_>> = Vec::new();
        let flush = |f: &mut wasm_encoder::Function, block: &mut Vec<Instruction<'_>>| {
            if block.is_empty() {
                return;
            }
            f.instruction(&Instruction::GlobalGet(counter))
                .instruction(&Instruction::I64Const(block.len() as i64))
                .instruction(&Instruction::I64Add)
                .instruction(&Instruction::GlobalSet(counter));
            for i in block.drain(..) {
                f.instruction(&i);
            }
        };
        while !reader.eof() {
            let op = reader.read()?;
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
            if ends_block {
                flush(&mut f, &mut block);
            }
        }
        flush(&mut f, &mut block);
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

/// Counts imported functions and globals, types and globals; the rewrite needs the
/// type, import, global and export sections to exist.
fn survey(wasm: &[u8]) -> Result<(u32, u32, u32), String> {
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
            _ => {}
        }
    }
    match (imported_funcs, types, globals, exports) {
        (Some(i), Some(t), Some(g), true) => Ok((i, t, imported_globals + g)),
        _ => Err("the module lacks a type, import, global or export section".to_string()),
    }
}

/// Returns the module with every `memory.copy` / `memory.fill` routed through
/// [`IMPORT_MODULE`]'s counting imports.
pub fn rewrite(wasm: &[u8]) -> Result<Rewritten, String> {
    encode(wasm, false)
}

/// [`rewrite`], and every basic block adds its operator count to the exported global
/// [`COUNTER`] when it is entered, so the global counts executed operators exactly
/// (a block is cut at each branch, `if`, `else`, `loop` and `end`; its operators are
/// counted when it starts; a trap in the middle of a block counts the rest). The
/// increments themselves are not counted, but do cost fuel: fuel of this module is not
/// the module's fuel.
pub fn rewrite_counting(wasm: &[u8]) -> Result<Rewritten, String> {
    encode(wasm, true)
}

fn encode(wasm: &[u8], count: bool) -> Result<Rewritten, String> {
    let (imported_funcs, ty, globals) = survey(wasm)?;
    let mut bulk = Bulk {
        imported_funcs,
        counter: count.then_some(globals),
        ty,
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
mod tests {
    use super::*;
    use crate::host::{self, Host};
    use wasm_encoder::{
        BlockType, CodeSection, ConstExpr, ExportKind, ExportSection, Function, FunctionSection,
        GlobalSection, GlobalType, ImportSection, Instruction as I, MemArg, MemorySection,
        MemoryType, Module, TypeSection,
    };
    use wasmi::{Linker, Store};

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
        let wasm = module_with(&[
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
        ]);
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
}
