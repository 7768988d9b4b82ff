//! `publish` must not allocate (beyond the payload the caller already made): checked with a
//! counting global allocator, on the accepting path (feeder waiting on the queue) and on the
//! dropping path (queue full).
#![cfg(feature = "mqtt")]

#[path = "common/mqtt.rs"]
mod common;

use std::time::Duration;

use common::{free_port, wait_until, Broker, TempDir};
use tipedge::stream::mqtt::{MqttOptions, MqttPublisher, MqttTarget};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

/// Calls `publish` on every payload, counting this thread's allocations during the calls only.
fn publish_counting(publisher: &MqttPublisher, payloads: Vec<Vec<u8>>) -> (u64, usize) {
    let mut accepted = 0;
    let mut allocations = 0;
    for payload in payloads {
        let mut ok = false;
        allocations +=
            counting_alloc::allocations_during(|| ok = publisher.publish(payload)) as u64;
        accepted += usize::from(ok);
    }
    (allocations, accepted)
}

#[test]
fn publish_does_not_allocate() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("alloc");
    let port = free_port();
    let target: MqttTarget = format!("mqtt://127.0.0.1:{port}/tipedge/alloc")
        .parse()
        .unwrap();

    // No broker: the first 64 are accepted, the rest dropped (queue full).
    let options = MqttOptions {
        queue: 64,
        client_id: "pub-alloc".into(),
        ..MqttOptions::default()
    };
    let publisher = MqttPublisher::start(target.clone(), options.clone(), |_| {});
    let payloads: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("{{\"seq\":{i}}}").into_bytes())
        .collect();
    let (allocations, accepted) = publish_counting(&publisher, payloads);
    assert_eq!(accepted, 64);
    assert_eq!(allocations, 0, "publish allocated while accepting/dropping");
    drop(publisher);

    // With a broker: the feeder is blocked on the queue and gets woken by each send.
    let _broker = Broker::start(port, dir.path(), false);
    let publisher = MqttPublisher::start(target, options, |_| {});
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .connected));
    let mut total_allocations = 0;
    for round in 0..20 {
        let payloads: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{{\"round\":{round},\"i\":{i}}}").into_bytes())
            .collect();
        let (allocations, _) = publish_counting(&publisher, payloads);
        total_allocations += allocations;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        total_allocations, 0,
        "publish allocated while the feeder was waiting"
    );
    let stats = publisher.close(Duration::from_secs(5));
    assert_eq!(stats.published + stats.dropped, 1000, "{stats:?}");
}
