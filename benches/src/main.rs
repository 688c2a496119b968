//! Load benchmarks (see benches/README.md).

fn main() {
    println!("bazaar-bench: no scenario yet");
}
