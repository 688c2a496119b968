//! Micro-benchmarks of what every authenticated request pays: verifying the access token, and
//! what every login pays: Argon2id. `cargo bench -p bazaar-node`.

use bazaar_node::passwords::{hash_password, verify_password};
use bazaar_node::tokens::TokenService;
use bazaar_protocol::values::Role;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

fn jwt(c: &mut Criterion) {
    let tokens =
        TokenService::new(b"benchmark secret of at least thirty-two bytes", Duration::from_secs(900), Duration::ZERO);
    let token = tokens.issue(&"0193c0de-7a1e-7c3b-9f4e-2b1d5c6a7e8f".into(), Role::Buyer, "s1");
    c.bench_function("jwt verify (HS256)", |b| b.iter(|| tokens.verify(black_box(&token)).expect("valid")));
    c.bench_function("jwt issue (HS256)", |b| b.iter(|| tokens.issue(&"u1".into(), black_box(Role::Seller), "s1")));
}

fn passwords(c: &mut Criterion) {
    let hash = hash_password("correct horse battery").expect("hash");
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(10);
    group.bench_function("verify", |b| b.iter(|| verify_password(black_box("correct horse battery"), Some(&hash))));
    group.finish();
}

criterion_group!(benches, jwt, passwords);
criterion_main!(benches);
