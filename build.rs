// The SQL migrations are embedded by refinery at compile time; rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
