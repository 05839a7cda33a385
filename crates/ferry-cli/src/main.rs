//! ferry CLI
fn main() {}
