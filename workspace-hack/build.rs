// Empty: it exists so that [build-dependencies] (host-side features) take part in the build.
fn main() {}
