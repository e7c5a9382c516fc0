//! The global limits across simulated replicas: each replica a store of its own (one
//! process's shared data), the service a model of `ai-gateway-ratelimit` (one counter per
//! descriptor, always incremented, refunds clamped at 0).

use std::collections::HashMap;

use super::sync::{self, Item};
use super::*;
use crate::quota::rls::{Response, Status};
use crate::testkit::stores::MemStore;

const T0: u64 = 1_800_000_000_000;

/// An engine for `replicas` gateways, syncing every 200 ms with a 250 ms timeout.
pub(crate) fn engine(replicas: u32) -> Engine {
    Engine::build(EngineSpec {
        cluster: "ratelimit".into(),
        domain: "ai-gateway".into(),
        expected_replicas: replicas,
        sync_interval_ms: 200,
        timeout_ms: 250,
    })
    .unwrap()
}

fn limits(requests: Option<u32>, tokens: Option<u32>, mode: Mode) -> Vec<Counter> {
    let g = TenantGlobal {
        unit: Unit::Hour,
        requests,
        tokens,
        mode,
        on_unavailable: OnUnavailable::Local,
    };
    let mut out = Vec::new();
    for (kind, limit) in [
        (CounterKind::Requests, requests),
        (CounterKind::Tokens, tokens),
    ] {
        if let Some(l) = limit {
            out.push(Counter::rate(kind, l, &g));
        }
    }
    out
}

fn tokens(n: u64) -> Costs {
    Costs {
        tokens: n,
        spend_micros: 0,
    }
}

#[derive(Default)]
struct Service {
    counters: HashMap<CounterKind, u64>,
    down: bool,
    /// Report ids already counted (the service's `once` keys).
    seen: std::collections::HashSet<u64>,
    /// Count the next sync, then lose its answer.
    lose_answer: bool,
}

impl Service {
    /// Answers a sync: the hits are what `begin` moved into each slot's `in_sync`.
    fn sync(
        &mut self,
        store: &MemStore,
        items: &[Item],
        g: &[Counter],
    ) -> Result<Response, CallFailure> {
        if self.down {
            return Err(CallFailure { grpc_status: 14 });
        }
        let mut statuses = Vec::new();
        for it in items {
            let slot = Slot::decode(&store.raw(&it.key).unwrap()).unwrap();
            let counter = &g[it.counter];
            let duplicate = slot.report != 0 && !self.seen.insert(slot.report);
            let c = self.counters.entry(counter.kind).or_insert(0);
            if duplicate {
                statuses.push(status(counter.limit, *c));
                continue;
            }
            *c = if slot.in_sync >= 0 {
                *c + slot.in_sync as u64
            } else {
                c.saturating_sub(slot.in_sync.unsigned_abs())
            };
            statuses.push(status(counter.limit, *c));
        }
        if std::mem::take(&mut self.lose_answer) {
            return Err(CallFailure { grpc_status: 4 });
        }
        Ok(Response {
            overall: Code::Ok,
            statuses,
        })
    }

    fn charge(&mut self, kind: CounterKind, hits: u64, limit: u32) -> Status {
        let c = self.counters.entry(kind).or_insert(0);
        *c += hits;
        status(limit, *c)
    }

    fn level(&self, kind: CounterKind) -> u64 {
        self.counters.get(&kind).copied().unwrap_or(0)
    }
}

fn status(limit: u32, counter: u64) -> Status {
    let over = counter > u64::from(limit);
    Status {
        code: if over { Code::OverLimit } else { Code::Ok },
        limit,
        unit: 3,
        remaining: if over { 0 } else { limit - counter as u32 },
        reset_ms: 1000,
    }
}

fn tenant<'a>(g: &'a [Counter], e: &'a Engine) -> Tenant<'a> {
    Tenant {
        prefix: "p",
        name: "t",
        counters: g,
        model: None,
        engine: e,
    }
}

/// One replica's sync, from `begin` to `finish`.
fn sync_once(store: &MemStore, svc: &mut Service, g: &[Counter], e: &Engine, now: u64) {
    let tenants = vec![(0usize, "t", g)];
    // Unique across the simulated replicas, as the VMs' random identities make them.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let mut ids = || SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Some(call) = sync::begin(store, "p", &tenants, e, now, &mut ids) else {
        return;
    };
    let answer = svc.sync(store, &call.items, g);
    sync::finish(store, &tenants, e, &call.items, answer, now);
}

/// `replicas` replicas with `per_replica` requests each, arriving `per_tick` at a time
/// between syncs; the syncs of one round run in `order`.
fn burst(n: u32, replicas: usize, per_replica: usize, per_tick: usize, flip: bool) -> (u64, u64) {
    let e = engine(replicas as u32);
    let g = limits(Some(n), None, Mode::Synced);
    let stores: Vec<MemStore> = (0..replicas).map(|_| MemStore::new()).collect();
    let mut svc = Service::default();
    let mut admitted = 0u64;
    let mut sent = 0;
    let mut now = T0;
    while sent < per_replica {
        for s in &stores {
            for _ in 0..per_tick.min(per_replica - sent) {
                if let Outcome::Admitted { .. } = admit_synced(s, &tenant(&g, &e), &tokens(0), now)
                {
                    admitted += 1;
                }
            }
        }
        sent += per_tick;
        now += 200;
        let mut order: Vec<&MemStore> = stores.iter().collect();
        if flip && (now / 200) % 2 == 0 {
            order.reverse();
        }
        for s in order {
            sync_once(s, &mut svc, &g, &e, now);
        }
    }
    for _ in 0..2 {
        now += 200;
        for s in &stores {
            sync_once(s, &mut svc, &g, &e, now);
        }
    }
    (admitted, svc.level(CounterKind::Requests))
}

#[test]
fn a_burst_across_replicas_admits_n_within_the_stated_bound() {
    let n = 100u32;
    for (replicas, per_tick, flip) in [(2, 300, false), (2, 40, true), (2, 7, false), (3, 50, true)]
    {
        let (admitted, counter) = burst(n, replicas, 300, per_tick, flip);
        let bound = (replicas as u64 - 1) * u64::from(n).div_ceil(replicas as u64);
        assert!(
            admitted >= u64::from(n) && admitted <= u64::from(n) + bound,
            "{replicas} replicas, {per_tick}/tick: admitted {admitted}, bound {bound}"
        );
        assert_eq!(counter, admitted, "every admission reported exactly once");
    }
}

#[test]
fn tokens_are_reserved_then_settled_into_the_global_counter() {
    let e = engine(2);
    let g = limits(None, Some(10_000), Mode::Synced);
    let (a, b) = (MemStore::new(), MemStore::new());
    let mut svc = Service::default();
    let t = tenant(&g, &e);
    let mut billed = 0;
    for (i, store) in [&a, &b, &a, &b].into_iter().enumerate() {
        let Outcome::Admitted { charges, .. } = admit_synced(store, &t, &tokens(1000), T0) else {
            panic!("admitted");
        };
        let used = 100 * (i as u64 + 1);
        settle(store, &t, &charges, &tokens(used), T0 + 50);
        billed += used;
    }
    sync_once(&a, &mut svc, &g, &e, T0 + 200);
    sync_once(&b, &mut svc, &g, &e, T0 + 200);
    assert_eq!(svc.level(CounterKind::Tokens), billed);
    // A settlement above the reservation is charged too.
    let Outcome::Admitted { charges, .. } = admit_synced(&a, &t, &tokens(100), T0 + 300) else {
        panic!("admitted");
    };
    settle(&a, &t, &charges, &tokens(900), T0 + 350);
    sync_once(&a, &mut svc, &g, &e, T0 + 400);
    assert_eq!(svc.level(CounterKind::Tokens), billed + 900);
}

#[test]
fn a_refund_larger_than_the_new_charges_is_sent_as_a_refund() {
    let e = engine(1);
    let g = limits(None, Some(10_000), Mode::Synced);
    let a = MemStore::new();
    let mut svc = Service::default();
    let t = tenant(&g, &e);
    let Outcome::Admitted { charges, .. } = admit_synced(&a, &t, &tokens(5000), T0) else {
        panic!("admitted");
    };
    sync_once(&a, &mut svc, &g, &e, T0 + 200);
    assert_eq!(svc.level(CounterKind::Tokens), 5000);
    settle(&a, &t, &charges, &tokens(1200), T0 + 300);
    let tenants = vec![(0usize, "t", g.as_slice())];
    let call = sync::begin(&a, "p", &tenants, &e, T0 + 400, &mut || u64::MAX - 7).unwrap();
    let slot = Slot::decode(&a.raw(&call.items[0].key).unwrap()).unwrap();
    assert_eq!(slot.in_sync, -3800);
    let answer = svc.sync(&a, &call.items, &g);
    sync::finish(&a, &tenants, &e, &call.items, answer, T0 + 400);
    assert_eq!(svc.level(CounterKind::Tokens), 1200);
}

#[test]
fn service_down_falls_back_locally_and_reports_once_it_is_back() {
    let e = engine(2);
    let g = limits(Some(100), None, Mode::Synced);
    let a = MemStore::new();
    let mut svc = Service {
        down: true,
        ..Service::default()
    };
    let t = tenant(&g, &e);
    sync_once(&a, &mut svc, &g, &e, T0 + 200);
    let mut modes = Vec::new();
    for _ in 0..60 {
        match admit_synced(&a, &t, &tokens(0), T0 + 210) {
            Outcome::Admitted { mode, .. } => modes.push(mode),
            Outcome::Denied { mode, .. } => assert_eq!(mode, QuotaMode::LocalFallback),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(modes.len(), 50, "limit / expected_replicas");
    assert!(modes.iter().all(|m| *m == QuotaMode::LocalFallback));
    svc.down = false;
    sync_once(&a, &mut svc, &g, &e, T0 + 400);
    assert_eq!(
        svc.level(CounterKind::Requests),
        50,
        "reported once, after the outage"
    );
    sync_once(&a, &mut svc, &g, &e, T0 + 600);
    assert_eq!(svc.level(CounterKind::Requests), 50, "and not again");
    assert!(matches!(
        admit_synced(&a, &t, &tokens(0), T0 + 610),
        Outcome::Admitted {
            mode: QuotaMode::Global,
            ..
        }
    ));
}

#[test]
fn strict_admits_exactly_the_limit_and_refunds_refusals() {
    let e = engine(2);
    let g = limits(Some(5), Some(1000), Mode::Strict);
    let (a, b) = (MemStore::new(), MemStore::new());
    let mut svc = Service::default();
    let t = tenant(&g, &e);
    let mut admitted = 0;
    for i in 0..12 {
        let store = if i % 2 == 0 { &a } else { &b };
        let call = strict_call(&t, &tokens(10), T0, &mut || 1).unwrap();
        assert_eq!(call.charges.len(), 2);
        let statuses = call
            .charges
            .iter()
            .map(|c| svc.charge(c.counter.kind, c.cost, c.counter.limit))
            .collect();
        let answer = Ok(Response {
            overall: Code::Ok,
            statuses,
        });
        match strict_outcome(store, &t, call, answer, T0) {
            Outcome::Admitted { mode, .. } => {
                assert_eq!(mode, QuotaMode::Strict);
                admitted += 1;
            }
            Outcome::Denied { counter, .. } => assert_eq!(counter.kind, CounterKind::Requests),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(
        svc.level(CounterKind::Requests),
        12,
        "refusals counted until the sync"
    );
    sync_once(
        &a,
        &mut svc,
        &limits(Some(5), Some(1000), Mode::Strict),
        &e,
        T0 + 200,
    );
    sync_once(&b, &mut svc, &g, &e, T0 + 200);
    assert_eq!(svc.level(CounterKind::Requests), 5, "refusals given back");
    assert_eq!(svc.level(CounterKind::Tokens), 50);
}

#[test]
fn a_strict_call_that_fails_falls_back_without_counting_twice() {
    let e = engine(2);
    let g = limits(Some(10), None, Mode::Strict);
    let a = MemStore::new();
    let t = tenant(&g, &e);
    let unsent = strict_outcome(
        &a,
        &t,
        strict_call(&t, &tokens(0), T0, &mut || 1).unwrap(),
        Err(CallFailure { grpc_status: 14 }),
        T0,
    );
    assert!(matches!(
        unsent,
        Outcome::Admitted {
            mode: QuotaMode::LocalFallback,
            ..
        }
    ));
    let key = g[0].key("p", "t");
    assert_eq!(
        Slot::decode(&a.raw(&key).unwrap()).unwrap().pending,
        1,
        "never counted: report it"
    );
    let maybe = strict_outcome(
        &a,
        &t,
        strict_call(&t, &tokens(0), T0, &mut || 1).unwrap(),
        Err(CallFailure { grpc_status: 4 }),
        T0,
    );
    assert!(matches!(
        maybe,
        Outcome::Admitted {
            mode: QuotaMode::LocalFallback,
            ..
        }
    ));
    let slot = Slot::decode(&a.raw(&key).unwrap()).unwrap();
    assert_eq!(
        (slot.pending, slot.local_used),
        (1, 2),
        "maybe counted: not reported again"
    );
    let mut closed = g.clone();
    closed[0].on_unavailable = OnUnavailable::Closed;
    let t = tenant(&closed, &e);
    let out = strict_outcome(
        &a,
        &t,
        strict_call(&t, &tokens(0), T0, &mut || 1).unwrap(),
        Err(CallFailure { grpc_status: 14 }),
        T0,
    );
    assert_eq!(out, Outcome::Unavailable);
}

#[test]
fn one_worker_per_process_syncs_and_another_takes_over_when_it_stops() {
    let e = engine(2);
    let store = MemStore::new();
    assert!(sync::elect(&store, "p", 1, &e, T0));
    assert!(!sync::elect(&store, "p", 2, &e, T0 + 100));
    assert!(sync::elect(&store, "p", 1, &e, T0 + 200));
    assert!(!sync::elect(&store, "p", 2, &e, T0 + 1200));
    assert!(
        sync::elect(&store, "p", 2, &e, T0 + 1201),
        "the leader stopped beating"
    );
    assert!(!sync::elect(&store, "p", 1, &e, T0 + 1300));
}

#[test]
fn descriptors_carry_kind_tenant_and_the_limit() {
    let e = engine(2);
    let g = limits(Some(100), Some(5000), Mode::Strict);
    let call = strict_call(&tenant(&g, &e), &tokens(0), T0, &mut || 1).unwrap();
    assert_eq!(
        call.charges.len(),
        1,
        "no tokens descriptor for a body-less request"
    );
    let expected = rls::encode_request(
        "ai-gateway",
        &[rls::Descriptor {
            entries: vec![("kind", "requests"), ("tenant", "t")],
            hits: Some(1),
            limit: Some(rls::Override {
                requests_per_unit: 100,
                unit: 3,
            }),
        }],
    );
    assert_eq!(call.message, expected);
    assert_eq!(
        limits(None, Some(1), Mode::Synced)[0].key("p", "a:b"),
        "p:g:a%3Ab:tok"
    );
}

#[test]
fn a_spend_counter_is_charged_by_a_call_and_settled_at_the_sync() {
    let e = engine(2);
    let counters = vec![Counter::spend(
        CounterKind::SpendDay,
        None,
        1000,
        OnUnavailable::Local,
    )];
    let a = MemStore::new();
    let mut svc = Service::default();
    let t = tenant(&counters, &e);
    let spend = |m| Costs {
        tokens: 0,
        spend_micros: m,
    };
    assert!(
        matches!(admit_synced(&a, &t, &spend(400), T0), Outcome::Admitted { ref charges, .. } if charges.is_empty()),
        "never from a share"
    );
    let mut admitted = Vec::new();
    for _ in 0..3 {
        let call = strict_call(&t, &spend(400), T0, &mut || 1).unwrap();
        // A spend counter is read, then charged, in the same call.
        let mut statuses = Vec::new();
        for c in &call.charges {
            statuses.push(svc.charge(c.counter.kind, 0, c.counter.limit));
            statuses.push(svc.charge(c.counter.kind, c.cost, c.counter.limit));
        }
        let answer = Ok(Response {
            overall: Code::Ok,
            statuses,
        });
        match strict_outcome(&a, &t, call, answer, T0) {
            Outcome::Admitted { charges, .. } => admitted.push(charges),
            Outcome::Denied { counter, .. } => assert_eq!(counter.kind, CounterKind::SpendDay),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        admitted.len(),
        2,
        "800 of 1000 reserved; the third does not fit"
    );
    assert_eq!(admitted[1][0].remaining_after(400), Some(200));
    for charges in &admitted {
        settle(&a, &t, charges, &spend(150), T0 + 10);
    }
    sync_once(&a, &mut svc, &counters, &e, T0 + 200);
    assert_eq!(
        svc.level(CounterKind::SpendDay),
        300,
        "billed 150 twice, the refusal given back"
    );
}

#[test]
fn a_report_whose_answer_was_lost_is_sent_again_and_counted_once() {
    let e = engine(2);
    let g = limits(Some(100), None, Mode::Synced);
    let a = MemStore::new();
    let mut svc = Service::default();
    let t = tenant(&g, &e);
    for _ in 0..10 {
        assert!(matches!(
            admit_synced(&a, &t, &tokens(0), T0),
            Outcome::Admitted { .. }
        ));
    }
    svc.lose_answer = true;
    sync_once(&a, &mut svc, &g, &e, T0 + 200);
    assert_eq!(
        svc.level(CounterKind::Requests),
        10,
        "counted, but the answer was lost"
    );
    for _ in 0..5 {
        assert!(matches!(
            admit_synced(&a, &t, &tokens(0), T0 + 250),
            Outcome::Admitted { .. }
        ));
    }
    sync_once(&a, &mut svc, &g, &e, T0 + 400);
    assert_eq!(
        svc.level(CounterKind::Requests),
        10,
        "the same report again: not counted twice"
    );
    sync_once(&a, &mut svc, &g, &e, T0 + 600);
    assert_eq!(
        svc.level(CounterKind::Requests),
        15,
        "then what was admitted meanwhile"
    );
}
