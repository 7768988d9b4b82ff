// Included (`include!`) by `mod.rs` and by `mqtt.rs`, which some tests load as their own
// `common` module.

/// Whether `tool`, an external program a test runs (ffmpeg as a camera, mosquitto as the MQTT
/// broker), is on the PATH. Without it the test is skipped and says so on stderr (written past
/// the test harness's capture, so `cargo test` shows it), unless `TIPEDGE_REQUIRE_TOOLS` is set:
/// then a missing tool fails the test. `.ci/run` installs the tools and sets it. The note names
/// the test by its thread, which the test harness names after it.
#[allow(dead_code)]
pub fn needs(tool: &str) -> bool {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let found = Command::new(tool)
        .arg("--help")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_or_else(|e| e.kind() != std::io::ErrorKind::NotFound, |_| true);
    if found {
        return true;
    }
    let thread = std::thread::current();
    // With one test thread the harness runs the tests on the main thread.
    let test = thread.name().filter(|&n| n != "main").unwrap_or("a test");
    let why = format!("{tool} is not installed (apt-get install {tool})");
    if std::env::var_os("TIPEDGE_REQUIRE_TOOLS").is_some() {
        panic!("{test}: {why}, and TIPEDGE_REQUIRE_TOOLS is set");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "note: {test} skipped: {why}; TIPEDGE_REQUIRE_TOOLS=1 makes this a failure"
    );
    false
}
