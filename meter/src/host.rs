//! A deterministic, recording Proxy-Wasm host (ABI 0.2.1) with the WASI calls Rust's std
//! makes, answering as Envoy 1.40 does for the calls this filter makes.
//!
//! Every import call is appended to [`Host::calls`] with its scalar arguments and the byte
//! strings it read from the module's memory. Bytes are counted both ways: everything the
//! host reads from linear memory (`bytes_to_host`: keys, values, log lines, paths, iovecs)
//! and everything it writes there (`bytes_from_host`: returned data and the 4- or 8-byte
//! out-parameters). Data returned to the module is placed in memory obtained from the
//! module's exported `proxy_on_memory_allocate`, as Envoy does; an empty value is returned
//! as a null pointer and size 0 without an allocation (Envoy's `copyToPointerSize`).
//!
//! Nothing depends on the real world: the clock starts at [`EPOCH_NS`] and advances by
//! [`CLOCK_STEP_NS`] on every read (Proxy-Wasm or WASI), `random_get` returns a fixed
//! SplitMix64 stream, the environment is fixed, and every map is ordered.
//!
//! A pointer outside linear memory traps (Envoy would return `InvalidMemoryAccess`): the
//! filter never passes one, and a trap makes such a bug loud.

use std::collections::{BTreeMap, BTreeSet};

use wasmi::{Caller, Error, Global, Linker, Memory, TrapCode, TypedFunc};

use crate::rewrite;

// Proxy-Wasm statuses.
pub const OK: u32 = 0;
pub const NOT_FOUND: u32 = 1;
pub const BAD_ARGUMENT: u32 = 2;
pub const EMPTY: u32 = 7;
pub const CAS_MISMATCH: u32 = 8;

// Header map types.
pub const REQUEST_HEADERS: usize = 0;
pub const RESPONSE_HEADERS: usize = 2;
const MAP_TYPES: usize = 8;

// Buffer types.
pub const REQUEST_BODY: usize = 0;
pub const RESPONSE_BODY: usize = 1;
pub const VM_CONFIGURATION: usize = 6;
pub const PLUGIN_CONFIGURATION: usize = 7;
const BUFFER_TYPES: usize = 9;

// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_INVAL: i32 = 28;
const ERRNO_SPIPE: i32 = 70;

/// 2024-01-01T00:00:00Z.
pub const EPOCH_NS: u64 = 1_704_067_200_000_000_000;
/// Every clock read returns the current time, then advances it by this much (1 ms).
pub const CLOCK_STEP_NS: u64 = 1_000_000;
/// Seed of the `random_get` stream.
pub const RANDOM_SEED: u64 = 0x6d65_7465_725f_7365;
/// The environment the VM sees. `filters/demo.json` sets its salt inline, so the filter
/// does not read it; a configuration using `fingerprint_salt_env` finds it here.
pub const SALT_ENV: (&str, &str) = (
    "AI_GATEWAY_FINGERPRINT_SALT",
    "meter-salt-0123456789abcdef0123456789",
);

/// Envoy's `xds.cluster_name`, `upstream.address` and friends, as the path the filter
/// asks for with segments joined by `.`.
pub type Properties = BTreeMap<String, Vec<u8>>;

/// One import call as the module made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The import's name (`proxy_log`, `fd_write`); Proxy-Wasm's come from module `env`,
    /// WASI's from `wasi_snapshot_preview1`.
    pub name: &'static str,
    /// Scalar arguments (map and buffer types, ids, statuses, sizes), in ABI order.
    pub args: Vec<i64>,
    /// Byte strings read from the module's memory, in ABI order.
    pub data: Vec<Vec<u8>>,
    /// Returned Proxy-Wasm status or WASI errno (`None` for calls without one).
    pub status: Option<i64>,
}

impl Call {
    pub fn text(&self, i: usize) -> String {
        self.data
            .get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub grpc_status: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub kind: u32,
    pub name: String,
    /// Counter / gauge value.
    pub value: i64,
    /// Values recorded into a histogram, in order.
    pub records: Vec<u64>,
}

/// Counts of one measured span (reset by [`Host::reset_counts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: BTreeMap<&'static str, u64>,
    pub bytes_to_host: u64,
    pub bytes_from_host: u64,
    /// Bytes copied by `memory.copy` plus bytes written by `memory.fill`.
    pub bulk_bytes: u64,
    pub bulk_ops: u64,
}

#[derive(Clone)]
pub struct Host {
    env: Vec<(String, String)>,
    clock_ns: u64,
    rng: u64,
    pub buffers: [Option<Vec<u8>>; BUFFER_TYPES],
    pub maps: [Vec<(String, String)>; MAP_TYPES],
    pub properties: Properties,
    /// `proxy_set_property` writes in order (Envoy filter state `wasm.<path>`).
    pub filter_state: Vec<(String, Vec<u8>)>,
    pub shared_data: BTreeMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
    queues: BTreeMap<String, (u32, Vec<Vec<u8>>)>,
    /// Metric id - 1 indexes this.
    pub metrics: Vec<Metric>,
    /// Set by `proxy_send_local_response`; the driver delivers it after the callback
    /// returns, as Envoy does.
    pub local_response: Option<LocalResponse>,
    pub tick_period_ms: u32,
    pub effective_context: u32,
    pub live_contexts: BTreeSet<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub calls: Vec<Call>,
    pub counts: Counts,
    memory: Option<Memory>,
    alloc: Option<TypedFunc<i32, i32>>,
    /// Inclusive operator counts of a profiling module ([`rewrite::rewrite_profiling`]).
    pub profile: Profile,
}

/// The call stack of a profiling module as its `enter` / `leave` calls report it, and the
/// operators executed per function including its callees (a function on the stack more
/// than once is counted for its outermost activation only).
#[derive(Debug, Default, Clone)]
pub struct Profile {
    counter: Option<Global>,
    /// Function index and [`rewrite::COUNTER`] at entry.
    stack: Vec<(u32, u64)>,
    pub inclusive: BTreeMap<u32, u64>,
}

impl Profile {
    /// The innermost activation returned with the operator counter at `now`.
    fn leave(&mut self, now: u64) {
        if let Some((f, at)) = self.stack.pop() {
            if !self.stack.iter().any(|(g, _)| *g == f) {
                *self.inclusive.entry(f).or_default() += now.saturating_sub(at);
            }
        }
    }

    /// Every activation returned: the callback called by the host is over.
    pub(crate) fn leave_all(&mut self, now: u64) {
        while !self.stack.is_empty() {
            self.leave(now);
        }
    }
}

fn operators(c: &C<'_>) -> u64 {
    c.data()
        .profile
        .counter
        .and_then(|g| g.get(c).i64())
        .map_or(0, |n| n as u64)
}

impl Host {
    /// A host with the plugin configuration Envoy would pass (`configuration` of the Wasm
    /// filter) and an empty VM configuration.
    pub fn new(plugin_configuration: Vec<u8>) -> Host {
        let mut buffers: [Option<Vec<u8>>; BUFFER_TYPES] = Default::default();
        buffers[VM_CONFIGURATION] = Some(Vec::new());
        buffers[PLUGIN_CONFIGURATION] = Some(plugin_configuration);
        Host {
            env: vec![(SALT_ENV.0.to_string(), SALT_ENV.1.to_string())],
            clock_ns: EPOCH_NS,
            rng: RANDOM_SEED,
            buffers,
            maps: Default::default(),
            properties: Properties::new(),
            filter_state: Vec::new(),
            shared_data: BTreeMap::new(),
            next_cas: 1,
            queues: BTreeMap::new(),
            metrics: Vec::new(),
            local_response: None,
            tick_period_ms: 0,
            effective_context: 0,
            live_contexts: BTreeSet::new(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            calls: Vec::new(),
            counts: Counts::default(),
            memory: None,
            alloc: None,
            profile: Profile::default(),
        }
    }

    pub(crate) fn attach(&mut self, memory: Memory, alloc: TypedFunc<i32, i32>) {
        self.memory = Some(memory);
        self.alloc = Some(alloc);
    }

    /// The operator counter of a profiling module.
    pub(crate) fn attach_profile(&mut self, counter: Global) {
        self.profile.counter = Some(counter);
    }

    /// The next configuration push reads this.
    pub fn set_plugin_configuration(&mut self, bytes: Vec<u8>) {
        self.buffers[PLUGIN_CONFIGURATION] = Some(bytes);
    }

    pub fn reset_counts(&mut self) {
        self.counts = Counts::default();
        self.calls.clear();
    }

    /// Per-stream state Envoy keeps for one HTTP stream (headers, bodies, properties).
    pub fn begin_stream(&mut self) {
        for m in &mut self.maps {
            m.clear();
        }
        for b in self.buffers.iter_mut().take(VM_CONFIGURATION) {
            *b = None;
        }
        self.properties.clear();
        self.filter_state.clear();
        self.local_response = None;
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    pub fn now_ns(&self) -> u64 {
        self.clock_ns
    }

    fn tick(&mut self) -> u64 {
        let t = self.clock_ns;
        self.clock_ns = self.clock_ns.saturating_add(CLOCK_STEP_NS);
        t
    }

    /// SplitMix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn begin(&mut self, name: &'static str, args: &[i64]) {
        *self.counts.calls.entry(name).or_insert(0) += 1;
        self.calls.push(Call {
            name,
            args: args.to_vec(),
            data: Vec::new(),
            status: None,
        });
    }

    fn last(&mut self) -> Option<&mut Call> {
        self.calls.last_mut()
    }
}

/// Proxy-Wasm header map wire format, as the filter itself encodes it (`src/wire.rs`).
pub fn serialize_map(map: &[(String, String)]) -> Vec<u8> {
    let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ai_gateway_filter::wire::serialize_map(&pairs)
}

pub use ai_gateway_filter::wire::deserialize_map;

/// `a\0b` → `a.b`.
pub fn property_key(path: &[u8]) -> String {
    path.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(".")
}

type C<'a> = Caller<'a, Host>;

fn oob() -> Error {
    Error::from(TrapCode::MemoryOutOfBounds)
}

fn memory(c: &C<'_>) -> Result<Memory, Error> {
    c.data()
        .memory
        .ok_or_else(|| Error::new("the module exports no memory"))
}

fn range(ptr: i32, len: i32, size: usize) -> Result<std::ops::Range<usize>, Error> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize).ok_or_else(oob)?;
    if end > size {
        return Err(oob());
    }
    Ok(start..end)
}

/// Reads `len` bytes at `ptr`, records them on the current call and counts them.
fn read(c: &mut C<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Error> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let r = range(ptr, len, data.len())?;
    let bytes = data[r].to_vec();
    let host = c.data_mut();
    host.counts.bytes_to_host += bytes.len() as u64;
    if let Some(call) = host.last() {
        call.data.push(bytes.clone());
    }
    Ok(bytes)
}

/// Reads scalars (iovecs) without recording them as call data.
fn read_raw(c: &mut C<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Error> {
    let mem = memory(c)?;
    let data = mem.data(&*c);
    let r = range(ptr, len, data.len())?;
    let bytes = data[r].to_vec();
    c.data_mut().counts.bytes_to_host += bytes.len() as u64;
    Ok(bytes)
}

fn write(c: &mut C<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Error> {
    let mem = memory(c)?;
    let data = mem.data_mut(&mut *c);
    let r = range(ptr, bytes.len() as i32, data.len())?;
    data[r].copy_from_slice(bytes);
    c.data_mut().counts.bytes_from_host += bytes.len() as u64;
    Ok(())
}

fn write_u32(c: &mut C<'_>, ptr: i32, v: u32) -> Result<(), Error> {
    write(c, ptr, &v.to_le_bytes())
}

fn write_u64(c: &mut C<'_>, ptr: i32, v: u64) -> Result<(), Error> {
    write(c, ptr, &v.to_le_bytes())
}

/// Returns `bytes` to the module: memory from `proxy_on_memory_allocate`, then the
/// pointer and size into the out-parameters. Empty: null and 0, no allocation.
fn give(c: &mut C<'_>, bytes: &[u8], ptr_ptr: i32, size_ptr: i32) -> Result<(), Error> {
    let mut ptr = 0u32;
    if !bytes.is_empty() {
        let alloc = c
            .data()
            .alloc
            .ok_or_else(|| Error::new("the module exports no proxy_on_memory_allocate"))?;
        ptr = alloc.call(&mut *c, bytes.len() as i32)? as u32;
        // A profiling module's allocator returns to the host, not to a `leave`.
        if c.data().profile.counter.is_some() {
            let now = operators(c);
            c.data_mut().profile.leave(now);
        }
        if ptr == 0 {
            return Err(Error::new("proxy_on_memory_allocate returned null"));
        }
        write(c, ptr as i32, bytes)?;
    }
    write_u32(c, ptr_ptr, ptr)?;
    write_u32(c, size_ptr, bytes.len() as u32)
}

fn status(c: &mut C<'_>, s: u32) -> Result<i32, Error> {
    if let Some(call) = c.data_mut().last() {
        call.status = Some(i64::from(s));
    }
    Ok(s as i32)
}

fn errno(c: &mut C<'_>, e: i32) -> Result<i32, Error> {
    if let Some(call) = c.data_mut().last() {
        call.status = Some(i64::from(e));
    }
    Ok(e)
}

fn map_index(kind: i32) -> Option<usize> {
    usize::try_from(kind).ok().filter(|k| *k < MAP_TYPES)
}

fn buffer_index(kind: i32) -> Option<usize> {
    usize::try_from(kind).ok().filter(|k| *k < BUFFER_TYPES)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const ENV: &str = "env";
const WASI: &str = "wasi_snapshot_preview1";

/// Every import this host provides, as `(module, name)`.
pub fn provided() -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<(&str, &str)> = PROXY.iter().map(|n| (ENV, *n)).collect();
    v.extend(WASI_CALLS.iter().map(|n| (WASI, *n)));
    v.push((rewrite::IMPORT_MODULE, rewrite::COPY));
    v.push((rewrite::IMPORT_MODULE, rewrite::FILL));
    v
}

const PROXY: [&str; 37] = [
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_call_foreign_function",
    "proxy_done",
    "proxy_define_metric",
    "proxy_get_metric",
    "proxy_record_metric",
    "proxy_increment_metric",
];

const WASI_CALLS: [&str; 14] = [
    "random_get",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "fd_write",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "proc_exit",
    "clock_time_get",
    "clock_res_get",
    "sched_yield",
    "poll_oneoff",
];

fn link_err(e: wasmi::errors::LinkerError) -> String {
    format!("cannot define a host function: {e}")
}

/// Defines every provided import in `linker`.
pub fn define(linker: &mut Linker<Host>) -> Result<(), String> {
    define_proxy(linker).map_err(link_err)?;
    define_wasi(linker).map_err(link_err)?;
    define_bulk(linker).map_err(link_err)?;
    define_profile(linker).map_err(link_err)?;
    Ok(())
}

fn define_proxy(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        ENV,
        "proxy_log",
        |mut c: C<'_>, level: i32, ptr: i32, len: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_log", &[level.into()]);
            read(&mut c, ptr, len)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_log_level",
        |mut c: C<'_>, out: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_get_log_level", &[]);
            // Envoy's default `wasm` component level: info.
            write_u32(&mut c, out, 2)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, out: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_get_current_time_nanoseconds", &[]);
            let t = c.data_mut().tick();
            write_u64(&mut c, out, t)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, period: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_set_tick_period_milliseconds", &[period.into()]);
            c.data_mut().tick_period_ms = period as u32;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         max: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32, Error> {
            c.data_mut().begin(
                "proxy_get_buffer_bytes",
                &[kind.into(), (start as u32).into(), (max as u32).into()],
            );
            let Some(buf) = buffer_index(kind).and_then(|k| c.data().buffers[k].clone()) else {
                return status(&mut c, NOT_FOUND);
            };
            // Envoy clamps the length to the buffer and returns OK with nothing when
            // there is nothing to return.
            let start = start as u32 as usize;
            let max = max as u32 as usize;
            let end = start.saturating_add(max).min(buf.len());
            if start < end {
                give(&mut c, &buf[start..end], ptr_ptr, size_ptr)?;
            }
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> Result<i32, Error> {
            c.data_mut().begin(
                "proxy_set_buffer_bytes",
                &[kind.into(), (start as u32).into(), (size as u32).into()],
            );
            let data = read(&mut c, ptr, len)?;
            let Some(k) = buffer_index(kind) else {
                return status(&mut c, NOT_FOUND);
            };
            let Some(buf) = c.data_mut().buffers[k].as_mut() else {
                return status(&mut c, NOT_FOUND);
            };
            // Envoy: start 0 drains `size` bytes and prepends; start at or past the end
            // appends; anything else is refused.
            let start = start as u32 as usize;
            let size = size as u32 as usize;
            if start == 0 {
                let drained = size.min(buf.len());
                let mut next = data;
                next.extend_from_slice(&buf[drained..]);
                *buf = next;
            } else if start >= buf.len() {
                buf.extend_from_slice(&data);
            } else {
                return status(&mut c, BAD_ARGUMENT);
            }
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, kind: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_get_header_map_pairs", &[kind.into()]);
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            let bytes = serialize_map(&c.data().maps[k]);
            give(&mut c, &bytes, ptr_ptr, size_ptr)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, kind: i32, ptr: i32, len: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_set_header_map_pairs", &[kind.into()]);
            let bytes = read(&mut c, ptr, len)?;
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            c.data_mut().maps[k] = deserialize_map(&bytes);
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         kind: i32,
         kp: i32,
         ks: i32,
         ptr_ptr: i32,
         size_ptr: i32|
         -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_get_header_map_value", &[kind.into()]);
            let key = text(&read(&mut c, kp, ks)?);
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            // Envoy joins repeated headers with a comma.
            let values: Vec<String> = c.data().maps[k]
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v.clone())
                .collect();
            if values.is_empty() {
                return status(&mut c, NOT_FOUND);
            }
            give(&mut c, values.join(",").as_bytes(), ptr_ptr, size_ptr)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_replace_header_map_value", &[kind.into()]);
            let key = text(&read(&mut c, kp, ks)?).to_ascii_lowercase();
            let value = text(&read(&mut c, vp, vs)?);
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            let map = &mut c.data_mut().maps[k];
            match map.iter().position(|(n, _)| *n == key) {
                Some(i) => {
                    map[i].1 = value;
                    let mut j = i + 1;
                    while j < map.len() {
                        if map[j].0 == key {
                            map.remove(j);
                        } else {
                            j += 1;
                        }
                    }
                }
                None => map.push((key, value)),
            }
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, ks: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_remove_header_map_value", &[kind.into()]);
            let key = text(&read(&mut c, kp, ks)?);
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            c.data_mut().maps[k].retain(|(n, _)| !n.eq_ignore_ascii_case(&key));
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        |mut c: C<'_>, kind: i32, kp: i32, ks: i32, vp: i32, vs: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_add_header_map_value", &[kind.into()]);
            let key = text(&read(&mut c, kp, ks)?).to_ascii_lowercase();
            let value = text(&read(&mut c, vp, vs)?);
            let Some(k) = map_index(kind) else {
                return status(&mut c, BAD_ARGUMENT);
            };
            c.data_mut().maps[k].push((key, value));
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_property",
        |mut c: C<'_>, pp: i32, ps: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_get_property", &[]);
            let key = property_key(&read(&mut c, pp, ps)?);
            let Some(value) = c.data().properties.get(&key).cloned() else {
                return status(&mut c, NOT_FOUND);
            };
            give(&mut c, &value, ptr_ptr, size_ptr)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_property",
        |mut c: C<'_>, pp: i32, ps: i32, vp: i32, vs: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_set_property", &[]);
            let key = property_key(&read(&mut c, pp, ps)?);
            let value = read(&mut c, vp, vs)?;
            c.data_mut().filter_state.push((key, value));
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kp: i32,
         ks: i32,
         ptr_ptr: i32,
         size_ptr: i32,
         cas_ptr: i32|
         -> Result<i32, Error> {
            c.data_mut().begin("proxy_get_shared_data", &[]);
            let key = text(&read(&mut c, kp, ks)?);
            let Some((value, cas)) = c.data().shared_data.get(&key).cloned() else {
                return status(&mut c, NOT_FOUND);
            };
            give(&mut c, &value, ptr_ptr, size_ptr)?;
            write_u32(&mut c, cas_ptr, cas)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut c: C<'_>, kp: i32, ks: i32, vp: i32, vs: i32, cas: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_set_shared_data", &[(cas as u32).into()]);
            let key = text(&read(&mut c, kp, ks)?);
            let value = read(&mut c, vp, vs)?;
            let host = c.data_mut();
            // Envoy's SharedData: a non-zero CAS must match the entry's current one.
            if let Some((_, current)) = host.shared_data.get(&key) {
                if cas != 0 && cas as u32 != *current {
                    return status(&mut c, CAS_MISMATCH);
                }
            }
            let next = host.next_cas;
            host.next_cas = host.next_cas.wrapping_add(1).max(1);
            host.shared_data.insert(key, (value, next));
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, ns: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_register_shared_queue", &[]);
            let name = text(&read(&mut c, np, ns)?);
            let host = c.data_mut();
            let next = host.queues.len() as u32 + 1;
            let id = host.queues.entry(name).or_insert((next, Vec::new())).0;
            write_u32(&mut c, out, id)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vs: i32, np: i32, ns: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_resolve_shared_queue", &[]);
            read(&mut c, vp, vs)?;
            let name = text(&read(&mut c, np, ns)?);
            let Some(id) = c.data().queues.get(&name).map(|q| q.0) else {
                return status(&mut c, NOT_FOUND);
            };
            write_u32(&mut c, out, id)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_dequeue_shared_queue", &[id.into()]);
            let Some(q) = c.data_mut().queues.values_mut().find(|q| q.0 == id as u32) else {
                return status(&mut c, NOT_FOUND);
            };
            if q.1.is_empty() {
                return status(&mut c, EMPTY);
            }
            let item = q.1.remove(0);
            give(&mut c, &item, ptr_ptr, size_ptr)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut c: C<'_>, id: i32, ptr: i32, len: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_enqueue_shared_queue", &[id.into()]);
            let item = read(&mut c, ptr, len)?;
            let Some(q) = c.data_mut().queues.values_mut().find(|q| q.0 == id as u32) else {
                return status(&mut c, NOT_FOUND);
            };
            q.1.push(item);
            status(&mut c, OK)
        },
    )?;
    for name in ["proxy_continue_stream", "proxy_close_stream"] {
        l.func_wrap(
            ENV,
            name,
            move |mut c: C<'_>, stream: i32| -> Result<i32, Error> {
                c.data_mut().begin(name, &[stream.into()]);
                status(&mut c, OK)
            },
        )?;
    }
    l.func_wrap(
        ENV,
        "proxy_send_local_response",
        |mut c: C<'_>,
         code: i32,
         dp: i32,
         ds: i32,
         bp: i32,
         bs: i32,
         hp: i32,
         hs: i32,
         grpc: i32|
         -> Result<i32, Error> {
            c.data_mut().begin(
                "proxy_send_local_response",
                &[(code as u32).into(), grpc.into()],
            );
            let details = text(&read(&mut c, dp, ds)?);
            let body = read(&mut c, bp, bs)?;
            let headers = deserialize_map(&read(&mut c, hp, hs)?);
            c.data_mut().local_response = Some(LocalResponse {
                status: code as u32,
                details,
                body,
                headers,
                grpc_status: grpc,
            });
            status(&mut c, OK)
        },
    )?;
    // No cluster is configured for callouts: Envoy refuses an unknown cluster.
    l.func_wrap(
        ENV,
        "proxy_http_call",
        |mut c: C<'_>,
         up: i32,
         us: i32,
         hp: i32,
         hs: i32,
         bp: i32,
         bs: i32,
         tp: i32,
         ts: i32,
         timeout: i32,
         _out: i32|
         -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_http_call", &[(timeout as u32).into()]);
            for (p, s) in [(up, us), (hp, hs), (bp, bs), (tp, ts)] {
                read(&mut c, p, s)?;
            }
            status(&mut c, BAD_ARGUMENT)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_call",
        |mut c: C<'_>,
         up: i32,
         us: i32,
         sp: i32,
         ss: i32,
         mp: i32,
         ms: i32,
         ip: i32,
         is: i32,
         gp: i32,
         gs: i32,
         timeout: i32,
         _out: i32|
         -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_grpc_call", &[(timeout as u32).into()]);
            for (p, s) in [(up, us), (sp, ss), (mp, ms), (ip, is), (gp, gs)] {
                read(&mut c, p, s)?;
            }
            status(&mut c, BAD_ARGUMENT)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_stream",
        |mut c: C<'_>,
         up: i32,
         us: i32,
         sp: i32,
         ss: i32,
         mp: i32,
         ms: i32,
         ip: i32,
         is: i32,
         _out: i32|
         -> Result<i32, Error> {
            c.data_mut().begin("proxy_grpc_stream", &[]);
            for (p, s) in [(up, us), (sp, ss), (mp, ms), (ip, is)] {
                read(&mut c, p, s)?;
            }
            status(&mut c, BAD_ARGUMENT)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_grpc_send",
        |mut c: C<'_>, token: i32, ptr: i32, len: i32, end: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_grpc_send", &[token.into(), end.into()]);
            read(&mut c, ptr, len)?;
            status(&mut c, NOT_FOUND)
        },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        l.func_wrap(
            ENV,
            name,
            move |mut c: C<'_>, token: i32| -> Result<i32, Error> {
                c.data_mut().begin(name, &[token.into()]);
                status(&mut c, NOT_FOUND)
            },
        )?;
    }
    l.func_wrap(
        ENV,
        "proxy_get_status",
        |mut c: C<'_>, code_ptr: i32, ptr_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_get_status", &[]);
            write_u32(&mut c, code_ptr, 0)?;
            give(&mut c, &[], ptr_ptr, size_ptr)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_set_effective_context", &[id.into()]);
            if !c.data().live_contexts.contains(&(id as u32)) {
                return status(&mut c, BAD_ARGUMENT);
            }
            c.data_mut().effective_context = id as u32;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        |mut c: C<'_>,
         np: i32,
         ns: i32,
         ap: i32,
         as_: i32,
         _ptr_ptr: i32,
         _size_ptr: i32|
         -> Result<i32, Error> {
            c.data_mut().begin("proxy_call_foreign_function", &[]);
            let name = text(&read(&mut c, np, ns)?);
            read(&mut c, ap, as_)?;
            // Envoy registers `clear_route_cache`, which returns no data.
            if name == "clear_route_cache" {
                status(&mut c, OK)
            } else {
                status(&mut c, NOT_FOUND)
            }
        },
    )?;
    l.func_wrap(ENV, "proxy_done", |mut c: C<'_>| -> Result<i32, Error> {
        c.data_mut().begin("proxy_done", &[]);
        status(&mut c, OK)
    })?;
    l.func_wrap(
        ENV,
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, ns: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_define_metric", &[kind.into()]);
            let name = text(&read(&mut c, np, ns)?);
            let host = c.data_mut();
            let id = match host
                .metrics
                .iter()
                .position(|m| m.name == name && m.kind == kind as u32)
            {
                Some(i) => i + 1,
                None => {
                    host.metrics.push(Metric {
                        kind: kind as u32,
                        name,
                        value: 0,
                        records: Vec::new(),
                    });
                    host.metrics.len()
                }
            };
            write_u32(&mut c, out, id as u32)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin("proxy_get_metric", &[id.into()]);
            let Some(v) = metric_mut(c.data_mut(), id).map(|m| m.value) else {
                return status(&mut c, NOT_FOUND);
            };
            write_u64(&mut c, out, v as u64)?;
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_record_metric",
        |mut c: C<'_>, id: i32, value: i64| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_record_metric", &[id.into(), value]);
            let Some(m) = metric_mut(c.data_mut(), id) else {
                return status(&mut c, NOT_FOUND);
            };
            // Histograms record; counters and gauges take the value.
            if m.kind == 2 {
                m.records.push(value as u64);
            } else {
                m.value = value;
            }
            status(&mut c, OK)
        },
    )?;
    l.func_wrap(
        ENV,
        "proxy_increment_metric",
        |mut c: C<'_>, id: i32, offset: i64| -> Result<i32, Error> {
            c.data_mut()
                .begin("proxy_increment_metric", &[id.into(), offset]);
            let Some(m) = metric_mut(c.data_mut(), id) else {
                return status(&mut c, NOT_FOUND);
            };
            m.value = m.value.saturating_add(offset);
            status(&mut c, OK)
        },
    )?;
    Ok(())
}

fn metric_mut(host: &mut Host, id: i32) -> Option<&mut Metric> {
    let i = usize::try_from(id).ok()?.checked_sub(1)?;
    host.metrics.get_mut(i)
}

const W_RANDOM: &str = "random_get";
const W_ENVIRON: &str = "environ_get";
const W_ENVIRON_SIZES: &str = "environ_sizes_get";
const W_ARGS: &str = "args_get";
const W_ARGS_SIZES: &str = "args_sizes_get";
const W_FD_WRITE: &str = "fd_write";
const W_FD_CLOSE: &str = "fd_close";
const W_FD_SEEK: &str = "fd_seek";
const W_FD_FDSTAT: &str = "fd_fdstat_get";
const W_PROC_EXIT: &str = "proc_exit";
const W_CLOCK: &str = "clock_time_get";
const W_CLOCK_RES: &str = "clock_res_get";
const W_YIELD: &str = "sched_yield";
const W_POLL: &str = "poll_oneoff";

fn define_wasi(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        WASI,
        "random_get",
        |mut c: C<'_>, ptr: i32, len: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_RANDOM, &[(len as u32).into()]);
            let mut bytes = Vec::with_capacity(len as u32 as usize);
            while bytes.len() < len as u32 as usize {
                bytes.extend_from_slice(&c.data_mut().next_random().to_le_bytes());
            }
            bytes.truncate(len as u32 as usize);
            write(&mut c, ptr, &bytes)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: C<'_>, count_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_ENVIRON_SIZES, &[]);
            let env = &c.data().env;
            let count = env.len() as u32;
            let size: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            write_u32(&mut c, count_ptr, count)?;
            write_u32(&mut c, size_ptr, size as u32)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "environ_get",
        |mut c: C<'_>, ptrs: i32, buf: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_ENVIRON, &[]);
            let env = c.data().env.clone();
            let mut at = buf as u32;
            for (i, (k, v)) in env.iter().enumerate() {
                let entry = format!("{k}={v}\0");
                write_u32(&mut c, ptrs + 4 * i as i32, at)?;
                write(&mut c, at as i32, entry.as_bytes())?;
                at += entry.len() as u32;
            }
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: C<'_>, count_ptr: i32, size_ptr: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_ARGS_SIZES, &[]);
            write_u32(&mut c, count_ptr, 0)?;
            write_u32(&mut c, size_ptr, 0)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "args_get",
        |mut c: C<'_>, _ptrs: i32, _buf: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_ARGS, &[]);
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, nwritten: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_FD_WRITE, &[fd.into()]);
            if fd != 1 && fd != 2 {
                return errno(&mut c, ERRNO_BADF);
            }
            let vec = read_raw(&mut c, iovs, n.saturating_mul(8))?;
            let mut out = Vec::new();
            for iov in vec.chunks_exact(8) {
                let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                out.extend(read(&mut c, ptr, len)?);
            }
            write_u32(&mut c, nwritten, out.len() as u32)?;
            let host = c.data_mut();
            if fd == 1 {
                host.stdout.extend(out);
            } else {
                host.stderr.extend(out);
            }
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_close",
        |mut c: C<'_>, fd: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_FD_CLOSE, &[fd.into()]);
            errno(&mut c, ERRNO_BADF)
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_seek",
        |mut c: C<'_>, fd: i32, _offset: i64, _whence: i32, _out: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_FD_SEEK, &[fd.into()]);
            errno(&mut c, if fd <= 2 { ERRNO_SPIPE } else { ERRNO_BADF })
        },
    )?;
    l.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_FD_FDSTAT, &[fd.into()]);
            if !(0..=2).contains(&fd) {
                return errno(&mut c, ERRNO_BADF);
            }
            // filetype character_device, no flags, every right.
            let mut stat = [0u8; 24];
            stat[0] = 2;
            stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            stat[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
            write(&mut c, out, &stat)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "proc_exit",
        |mut c: C<'_>, code: i32| -> Result<(), Error> {
            c.data_mut().begin(W_PROC_EXIT, &[code.into()]);
            Err(Error::i32_exit(code))
        },
    )?;
    l.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, out: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_CLOCK, &[id.into()]);
            // Realtime and monotonic clocks both read the stepped clock.
            let t = c.data_mut().tick();
            write_u64(&mut c, out, t)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: C<'_>, id: i32, out: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_CLOCK_RES, &[id.into()]);
            write_u64(&mut c, out, CLOCK_STEP_NS)?;
            errno(&mut c, ERRNO_SUCCESS)
        },
    )?;
    l.func_wrap(WASI, "sched_yield", |mut c: C<'_>| -> Result<i32, Error> {
        c.data_mut().begin(W_YIELD, &[]);
        errno(&mut c, ERRNO_SUCCESS)
    })?;
    l.func_wrap(
        WASI,
        "poll_oneoff",
        |mut c: C<'_>, _in: i32, _out: i32, n: i32, _nevents: i32| -> Result<i32, Error> {
            c.data_mut().begin(W_POLL, &[n.into()]);
            errno(&mut c, ERRNO_INVAL)
        },
    )?;
    Ok(())
}

/// The counting imports that replace `memory.copy` and `memory.fill` (see `rewrite`).
/// They perform the operation with the instruction's bounds checks and trap code; they
/// are not host calls of the filter and are not recorded as such.
fn define_bulk(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        rewrite::IMPORT_MODULE,
        rewrite::COPY,
        |mut c: C<'_>, dst: i32, src: i32, len: i32| -> Result<(), Error> {
            let mem = memory(&c)?;
            let data = mem.data_mut(&mut c);
            let s = range(src, len, data.len())?;
            let d = range(dst, len, data.len())?;
            data.copy_within(s, d.start);
            let counts = &mut c.data_mut().counts;
            counts.bulk_bytes += u64::from(len as u32);
            counts.bulk_ops += 1;
            Ok(())
        },
    )?;
    l.func_wrap(
        rewrite::IMPORT_MODULE,
        rewrite::FILL,
        |mut c: C<'_>, dst: i32, value: i32, len: i32| -> Result<(), Error> {
            let mem = memory(&c)?;
            let data = mem.data_mut(&mut c);
            let d = range(dst, len, data.len())?;
            data[d].fill(value as u8);
            let counts = &mut c.data_mut().counts;
            counts.bulk_bytes += u64::from(len as u32);
            counts.bulk_ops += 1;
            Ok(())
        },
    )?;
    Ok(())
}

fn define_profile(l: &mut Linker<Host>) -> Result<(), wasmi::errors::LinkerError> {
    l.func_wrap(
        rewrite::IMPORT_MODULE,
        rewrite::ENTER,
        |mut c: C<'_>, f: i32| {
            let now = operators(&c);
            c.data_mut().profile.stack.push((f as u32, now));
        },
    )?;
    l.func_wrap(rewrite::IMPORT_MODULE, rewrite::LEAVE, |mut c: C<'_>| {
        let now = operators(&c);
        c.data_mut().profile.leave(now);
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_maps_round_trip_in_the_proxy_wasm_format() {
        let map = vec![
            (":path".to_string(), "/v1/models".to_string()),
            ("empty".to_string(), String::new()),
        ];
        let bytes = serialize_map(&map);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(bytes.len(), 4 + 2 * 8 + (5 + 1 + 10 + 1) + (5 + 1 + 1));
        assert_eq!(deserialize_map(&bytes), map);
        assert_eq!(deserialize_map(&bytes[..10]), vec![]);
    }

    #[test]
    fn property_paths_join_segments_with_dots() {
        assert_eq!(property_key(b"xds\0cluster_name"), "xds.cluster_name");
        assert_eq!(property_key(b"ai.record"), "ai.record");
    }

    #[test]
    fn the_clock_and_random_stream_are_fixed() {
        let mut h = Host::new(Vec::new());
        assert_eq!(h.tick(), EPOCH_NS);
        assert_eq!(h.tick(), EPOCH_NS + CLOCK_STEP_NS);
        let a: Vec<u64> = (0..3).map(|_| h.next_random()).collect();
        let mut g = Host::new(Vec::new());
        let b: Vec<u64> = (0..3).map(|_| g.next_random()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }
}
