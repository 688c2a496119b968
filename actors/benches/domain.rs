//! Micro-benchmarks of the hot pure functions: the routing hash and the domain decisions that run
//! on every order. `cargo bench -p bazaar-actors`.

use bazaar_actors::placement;
use bazaar_protocol::orders::OrderStatus;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn routing(c: &mut Criterion) {
    let three = ["node1", "node2", "node3"];
    let ten: Vec<String> = (1..=10).map(|i| format!("node{i}")).collect();
    let key = "order/0193c0de-7a1e-7c3b-9f4e-2b1d5c6a7e8f";
    c.bench_function("placement::owner over 3 members", |b| {
        b.iter(|| placement::owner(black_box(key), three.iter().copied()))
    });
    c.bench_function("placement::owner over 10 members", |b| {
        b.iter(|| placement::owner(black_box(key), ten.iter().map(String::as_str)))
    });
}

fn status_machine(c: &mut Criterion) {
    c.bench_function("OrderStatus::may_become, all 25 pairs", |b| {
        b.iter(|| {
            let mut allowed = 0;
            for from in OrderStatus::ALL {
                for to in OrderStatus::ALL {
                    allowed += usize::from(black_box(from).may_become(black_box(to)));
                }
            }
            allowed
        })
    });
}

criterion_group!(benches, routing, status_machine);
criterion_main!(benches);
