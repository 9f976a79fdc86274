fn main() {
    eprintln!("placeholder: see docs/benchmarks.md");
}
