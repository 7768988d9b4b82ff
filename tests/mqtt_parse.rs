//! `MqttTarget` parsing and `MqttOptions` defaults (no broker needed).
#![cfg(feature = "mqtt")]

use std::time::Duration;

use tipedge::stream::mqtt::{MqttOptions, MqttStats, MqttTarget};

fn parse(url: &str) -> Result<MqttTarget, String> {
    url.parse::<MqttTarget>()
}

#[test]
fn parses_host_port_and_topic() {
    let t = parse("mqtt://broker.local:1884/cams/front/events").unwrap();
    assert_eq!(t.host, "broker.local");
    assert_eq!(t.port, 1884);
    assert_eq!(t.topic, "cams/front/events");
    assert_eq!(t.to_string(), "mqtt://broker.local:1884/cams/front/events");
}

#[test]
fn default_port_ipv6_and_odd_topics() {
    let t = parse("mqtt://127.0.0.1/x").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.topic.as_str()),
        ("127.0.0.1", 1883, "x")
    );

    let t = parse("MQTT://[::1]:2000/a/b").unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.topic.as_str()),
        ("::1", 2000, "a/b")
    );
    assert_eq!(t.to_string(), "mqtt://[::1]:2000/a/b");

    let t = parse("mqtt://[::1]/t").unwrap();
    assert_eq!(t.port, 1883);

    // Everything after the first '/' is the topic, leading/trailing slashes included.
    let t = parse("mqtt://h//lead/trail/").unwrap();
    assert_eq!(t.topic, "/lead/trail/");
    let t = parse("mqtt://h/with space/ünïcode?q").unwrap();
    assert_eq!(t.topic, "with space/ünïcode?q");
}

#[test]
fn rejects_bad_urls_with_a_one_line_reason_naming_the_url() {
    let cases = [
        ("http://h/t", "scheme"),
        ("mqtts://h/t", "TLS"),
        ("h:1883/t", "expected mqtt://"),
        ("mqtt://h", "missing /topic"),
        ("mqtt://h/", "empty topic"),
        ("mqtt:///t", "empty host"),
        ("mqtt://:1883/t", "empty host"),
        ("mqtt://h:/t", "bad port"),
        ("mqtt://h:0/t", "port 0"),
        ("mqtt://h:65536/t", "bad port"),
        ("mqtt://h:12ab/t", "bad port"),
        ("mqtt://h/a/+/b", "wildcards"),
        ("mqtt://h/a/#", "wildcards"),
        ("mqtt://user:pw@h/t", "credentials"),
        ("mqtt://[::1/t", "']'"),
        ("mqtt://[::1]x/t", "after the IPv6"),
        ("mqtt://h o/t", "whitespace"),
    ];
    for (url, reason) in cases {
        let err = parse(url).expect_err(url);
        assert!(
            err.contains(url),
            "{url}: error does not name the URL: {err}"
        );
        assert!(err.contains(reason), "{url}: expected '{reason}' in: {err}");
        assert!(!err.contains('\n'), "{url}: not one line: {err}");
    }
}

#[test]
fn option_defaults() {
    let o = MqttOptions::default();
    assert_eq!(o.queue, 1024);
    assert_eq!(o.client_id, format!("tipedge-{}", std::process::id()));
    assert_eq!(o.max_backoff, Duration::from_secs(5));
    assert!(o.keep_alive >= Duration::from_secs(1));
    let s = MqttStats::default();
    assert_eq!(
        (s.queued, s.published, s.dropped, s.reconnects),
        (0, 0, 0, 0)
    );
    assert!(!s.connected && s.last_error.is_none());
}
