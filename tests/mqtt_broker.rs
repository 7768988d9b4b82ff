//! The MQTT publisher of `tipedge stream` against a real mosquitto on loopback. Each test starts its own broker on a free
//! port (killed on drop, also on panic); every wait is bounded.
//!
//! Run with `-- --nocapture` to see the measured numbers.
#![cfg(feature = "mqtt")]

#[path = "common/mqtt.rs"]
mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, wait_until, Broker, Notes, Subscriber, TempDir};
use tipedge::stream::mqtt::{MqttOptions, MqttPublisher, MqttTarget};

fn target(port: u16, topic: &str) -> MqttTarget {
    format!("mqtt://127.0.0.1:{port}/{topic}").parse().unwrap()
}

fn options(client_id: &str, max_backoff_ms: u64) -> MqttOptions {
    MqttOptions {
        client_id: client_id.to_string(),
        keep_alive: Duration::from_secs(5),
        max_backoff: Duration::from_millis(max_backoff_ms),
        ..MqttOptions::default()
    }
}

/// `{"seq":N}` as bytes.
fn seq_payload(seq: u64) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}").into_bytes()
}

fn seq_of(payload: &[u8]) -> u64 {
    let text = std::str::from_utf8(payload).expect("utf-8 payload");
    text.trim_start_matches("{\"seq\":")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a seq payload: {text}"))
}

/// Requirement 1: Every message arrives, in order, byte-identical; published == sent, nothing dropped.
#[test]
fn happy_path_delivers_everything_in_order() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("happy");
    let port = free_port();
    let broker = Broker::start(port, dir.path(), false);
    let sub = Subscriber::start(port, "tipedge/happy", "sub-happy", false);
    sub.wait_subscribed(Duration::from_secs(5));

    let notes = Notes::default();
    let publisher = MqttPublisher::start(
        target(port, "tipedge/happy"),
        options("pub-happy", 500),
        notes.sink(),
    );

    // JSON-ish, every byte value, an empty payload and one larger than rumqttc's 10 KiB default.
    let mut sent: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| format!("{{\"seq\":{i},\"label\":\"person\",\"score\":0.{i:03}}}").into_bytes())
        .collect();
    sent.push((0..=255u8).collect());
    sent.push(Vec::new());
    sent.push((0..200_000u32).map(|i| (i % 251) as u8).collect());
    let started = Instant::now();
    for payload in &sent {
        assert!(
            publisher.publish(payload.clone()),
            "queue of 1024 refused a message"
        );
    }
    let publish_time = started.elapsed();

    let all = sub.wait_for(sent.len(), Duration::from_secs(10));
    let delivery_time = started.elapsed();
    let got = sub.messages();
    assert!(
        all,
        "received {} of {}; broker log:\n{}",
        got.len(),
        sent.len(),
        broker.log()
    );
    assert_eq!(got.len(), sent.len(), "duplicates without any reconnect");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert!(
            g == s,
            "message {i} differs (len {} vs {})",
            g.len(),
            s.len()
        );
    }
    assert!(publisher.stats().connected);

    let stats = publisher.close(Duration::from_secs(5));
    println!(
        "happy path: {} messages, publish calls {:?}, all received after {:?}, stats {:?}",
        sent.len(),
        publish_time,
        delivery_time,
        stats
    );
    assert_eq!(stats.queued, sent.len() as u64);
    assert_eq!(stats.published, sent.len() as u64);
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.reconnects, 0);
    assert!(!stats.connected, "still connected after close: {stats:?}");
    assert_eq!(
        notes.all(),
        vec![format!("mqtt://127.0.0.1:{port}/tipedge/happy: connected")]
    );
    sub.stop();
}

/// Requirement 2: Broker unreachable at start: start and publish never block, overflow is dropped and
/// counted, a note says why; once a broker listens, the queued messages and new ones flow.
#[test]
fn unreachable_at_start_then_broker_appears() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("late");
    let topic = "tipedge/late";

    // Prepare the subscriber's persistent session (and its subscription) in the database the
    // late broker will load, so it gets every message whatever the timing of its connection.
    {
        let setup_port = free_port();
        let mut setup = Broker::start(setup_port, dir.path(), true);
        let sub = Subscriber::start(setup_port, topic, "sub-late", true);
        sub.wait_subscribed(Duration::from_secs(5));
        sub.stop();
        setup.stop();
    }

    let port = free_port();
    let notes = Notes::default();
    let t0 = Instant::now();
    let publisher =
        MqttPublisher::start(target(port, topic), options("pub-late", 400), notes.sink());
    let start_time = t0.elapsed();
    assert!(
        start_time < Duration::from_millis(200),
        "start took {start_time:?}"
    );

    let mut accepted = Vec::new();
    let mut slowest = Duration::ZERO;
    let t1 = Instant::now();
    for seq in 0..10_000u64 {
        let payload = seq_payload(seq);
        let before = Instant::now();
        let ok = publisher.publish(payload);
        slowest = slowest.max(before.elapsed());
        if ok {
            accepted.push(seq);
        }
    }
    let all_calls = t1.elapsed();
    println!(
        "unreachable: start {start_time:?}; 10000 publish calls in {all_calls:?}, slowest {slowest:?}; accepted {}",
        accepted.len()
    );
    assert!(
        slowest < Duration::from_millis(100),
        "a publish call took {slowest:?}"
    );
    assert!(
        all_calls < Duration::from_secs(1),
        "10000 publish calls took {all_calls:?}"
    );
    // Nothing leaves the queue while there is no connection: exactly `queue` are accepted.
    assert_eq!(accepted, (0..1024).collect::<Vec<u64>>());
    let stats = publisher.stats();
    assert_eq!(
        (stats.queued, stats.dropped, stats.published),
        (1024, 8976, 0)
    );
    assert!(!stats.connected);

    assert!(notes.wait_for(
        "cannot connect (connection refused)",
        Duration::from_secs(3)
    ));
    assert!(wait_until(Duration::from_secs(3), || publisher
        .stats()
        .last_error
        .is_some_and(|e| e.contains("connection refused"))));
    // Several attempts fail (100, 200, 400, 400 ms ...) but only the first is noted.
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        notes.count("cannot connect"),
        1,
        "notes: {:#?}",
        notes.all()
    );
    let first = &notes.all()[0];
    assert!(
        first.starts_with(&format!(
            "mqtt://127.0.0.1:{port}/{topic}: cannot connect (connection refused); retrying in "
        )),
        "{first}"
    );

    let broker_start = Instant::now();
    let broker = Broker::start(port, dir.path(), true);
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .connected));
    let connect_delay = broker_start.elapsed();
    assert!(wait_until(Duration::from_secs(10), || publisher
        .stats()
        .published
        == 1024));
    let flush_delay = broker_start.elapsed();

    // New messages flow too.
    for seq in 1024..1124u64 {
        assert!(publisher.publish(seq_payload(seq)));
        accepted.push(seq);
    }
    let sub = Subscriber::start(port, topic, "sub-late", true);
    let all = sub.wait_for(accepted.len(), Duration::from_secs(10));
    let got: Vec<u64> = sub.messages().iter().map(|p| seq_of(p)).collect();
    assert!(
        all,
        "received {} of {}; broker log:\n{}",
        got.len(),
        accepted.len(),
        broker.log()
    );
    assert_eq!(got, accepted, "not every message, in order, exactly once");

    let stats = publisher.close(Duration::from_secs(5));
    println!(
        "unreachable: broker up -> connected {connect_delay:?}, -> 1024 acknowledged {flush_delay:?}; final {stats:?}; notes {:#?}",
        notes.all()
    );
    assert_eq!(
        (stats.queued, stats.published, stats.dropped),
        (1124, 1124, 8976)
    );
    assert_eq!(stats.reconnects, 0);
    assert!(
        notes.count("connected (after ") == 1,
        "notes: {:#?}",
        notes.all()
    );
    sub.stop();
}

/// Requirement 3: Broker stopped and restarted mid-run while a thread publishes every ~5 ms: everything
/// accepted reaches the broker (seen by a persistent subscriber), publishing resumes.
///
/// How the subscriber observes it across the restart: it has a persistent session
/// (clean_session=false, QoS 1) and mosquitto runs with `persistence true` in the test's temp
/// dir. SIGTERM makes mosquitto save its database (session, subscription, messages not yet
/// delivered to the subscriber) and the restarted broker loads it, so messages the broker
/// acknowledged before the stop and those the publisher sends after the restart, before the
/// subscriber is back, are all delivered. QoS 1 may deliver twice (a PUBACK lost with the
/// connection makes the publisher resend; a subscriber's PUBACK lost makes the broker resend):
/// duplicates are counted separately, missing messages must be zero.
#[test]
fn broker_restart_mid_run_loses_nothing_accepted() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("restart");
    let topic = "tipedge/restart";
    let port = free_port();
    let mut broker = Broker::start(port, dir.path(), true);
    let sub = Subscriber::start(port, topic, "sub-restart", true);
    sub.wait_subscribed(Duration::from_secs(5));

    let notes = Notes::default();
    let publisher = Arc::new(MqttPublisher::start(
        target(port, topic),
        options("pub-restart", 1000),
        notes.sink(),
    ));
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .connected));

    // Publishing thread: one message every ~5 ms with a sequence number, for 3.5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let publisher = Arc::clone(&publisher);
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let (mut sent, mut accepted, mut slowest) = (0u64, Vec::new(), Duration::ZERO);
            let end = Instant::now() + Duration::from_millis(3500);
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                let payload = seq_payload(sent);
                let before = Instant::now();
                if publisher.publish(payload) {
                    accepted.push(sent);
                }
                slowest = slowest.max(before.elapsed());
                sent += 1;
                thread::sleep(Duration::from_millis(5));
            }
            (sent, accepted, slowest)
        })
    };

    thread::sleep(Duration::from_millis(1000));
    let kill_at = Instant::now();
    broker.stop();
    assert!(wait_until(Duration::from_secs(3), || !publisher
        .stats()
        .connected));
    let noticed = kill_at.elapsed();
    thread::sleep(Duration::from_millis(1000));
    let published_before_restart = publisher.stats().published;
    let restart_at = Instant::now();
    broker.run();
    let resumed = wait_until(Duration::from_secs(10), || {
        publisher.stats().published > published_before_restart
    });
    let resume_time = restart_at.elapsed();
    assert!(resumed, "no acknowledgement within 10 s after the restart");

    let (sent, accepted, slowest) = producer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let publisher = Arc::try_unwrap(publisher).ok().expect("producer is done");
    let stats = publisher.close(Duration::from_secs(10));

    let accepted_set: BTreeSet<u64> = accepted.iter().copied().collect();
    let all = wait_until(Duration::from_secs(10), || {
        let got: BTreeSet<u64> = sub.messages().iter().map(|p| seq_of(p)).collect();
        accepted_set.is_subset(&got)
    });
    let received: Vec<u64> = sub.messages().iter().map(|p| seq_of(p)).collect();
    let mut times: HashMap<u64, usize> = HashMap::new();
    for seq in &received {
        *times.entry(*seq).or_default() += 1;
    }
    let duplicates: usize = times.values().map(|n| n - 1).sum();
    let missing: Vec<u64> = accepted_set
        .iter()
        .filter(|s| !times.contains_key(s))
        .copied()
        .collect();
    let unexpected = times.keys().filter(|s| !accepted_set.contains(s)).count();
    // Out of order: a first delivery of a sequence number lower than one already seen.
    let mut seen = BTreeSet::new();
    let mut out_of_order = 0;
    for seq in &received {
        if seen.insert(*seq) && seen.range(seq + 1..).next().is_some() {
            out_of_order += 1;
        }
    }
    println!(
        "restart: sent {sent}, accepted {}, dropped {}, received {} ({} distinct), duplicates {duplicates} \
         ({} redelivered by the broker with DUP), \
         missing {}, first deliveries out of order {out_of_order}; broker stop noticed after {noticed:?}, \
         downtime ~1 s, first ack {resume_time:?} after restart; slowest publish call {slowest:?}; \
         final stats {stats:?}; notes {:#?}",
        accepted.len(),
        stats.dropped,
        received.len(),
        times.len(),
        sub.redelivered(),
        missing.len(),
        notes.all()
    );
    assert!(
        all,
        "missing {} accepted messages: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(unexpected, 0);
    assert_eq!(stats.queued, accepted.len() as u64);
    assert_eq!(
        stats.published, stats.queued,
        "not all acknowledged at close"
    );
    assert_eq!(stats.dropped, sent - accepted.len() as u64);
    assert_eq!(
        stats.dropped, 0,
        "the queue of 1024 should absorb a 1 s outage at 200 msg/s"
    );
    assert!(stats.reconnects >= 1);
    assert!(
        slowest < Duration::from_millis(100),
        "a publish call took {slowest:?}"
    );
    assert!(notes.count("connection lost") >= 1 && notes.count("connected again") >= 1);
    sub.stop();
}

/// close() is bounded when the broker never comes: it returns after about its timeout and
/// reports what was abandoned.
#[test]
fn close_is_bounded_without_broker() {
    let port = free_port();
    let notes = Notes::default();
    let publisher = MqttPublisher::start(
        target(port, "tipedge/none"),
        options("pub-none", 200),
        notes.sink(),
    );
    for seq in 0..10 {
        assert!(publisher.publish(seq_payload(seq)));
    }
    let t = Instant::now();
    let stats = publisher.close(Duration::from_millis(300));
    let took = t.elapsed();
    println!("close without broker took {took:?}: {stats:?}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(600),
        "{took:?}"
    );
    assert_eq!((stats.queued, stats.published), (10, 0));
    assert!(
        notes.count("closed with 10 of 10 messages not acknowledged") == 1,
        "{:#?}",
        notes.all()
    );

    // Nothing queued: close returns at once even though nothing is connected.
    let publisher = MqttPublisher::start(
        target(port, "tipedge/none"),
        options("pub-none2", 200),
        |_| {},
    );
    let t = Instant::now();
    let _ = publisher.close(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

/// Requirement 3, harder: Broker stopped in the middle of a burst, with up to 100 messages sent but not yet
/// acknowledged and more inside rumqttc: those are taken back and resent after the restart, so
/// every accepted message still reaches the (persistent) subscriber; resends show up as
/// duplicates, never as gaps.
#[test]
fn broker_stop_during_burst_resends_unacknowledged() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("burst");
    let topic = "tipedge/burst";
    let port = free_port();
    let mut broker = Broker::start(port, dir.path(), true);
    let sub = Subscriber::start(port, topic, "sub-burst", true);
    sub.wait_subscribed(Duration::from_secs(5));

    let notes = Notes::default();
    let total = 20_000u64;
    let publisher = MqttPublisher::start(
        target(port, topic),
        MqttOptions {
            queue: total as usize,
            ..options("pub-burst", 200)
        },
        notes.sink(),
    );
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .connected));
    for seq in 0..total {
        assert!(publisher.publish(seq_payload(seq)));
    }
    assert!(wait_until(Duration::from_secs(10), || publisher
        .stats()
        .published
        >= 2_000));
    let at_stop = publisher.stats().published;
    broker.stop();
    thread::sleep(Duration::from_millis(300));
    broker.run();
    let all_acked = wait_until(Duration::from_secs(20), || {
        publisher.stats().published == total
    });
    let stats = publisher.close(Duration::from_secs(5));
    assert!(all_acked, "not all acknowledged: {stats:?}");

    let all = wait_until(Duration::from_secs(20), || {
        let got: BTreeSet<u64> = sub.messages().iter().map(|p| seq_of(p)).collect();
        got.len() as u64 == total
    });
    let received: Vec<u64> = sub.messages().iter().map(|p| seq_of(p)).collect();
    let distinct: BTreeSet<u64> = received.iter().copied().collect();
    println!(
        "burst: {total} accepted, broker stopped after {at_stop} acknowledged, received {} ({} distinct, {} duplicates, \
         {} of them redelivered by the broker with DUP); \
         final {stats:?}; notes {:#?}",
        received.len(),
        distinct.len(),
        received.len() - distinct.len(),
        sub.redelivered(),
        notes.all()
    );
    assert!(all, "received only {} distinct of {total}", distinct.len());
    assert_eq!(distinct.iter().next_back(), Some(&(total - 1)));
    assert_eq!(
        (stats.queued, stats.published, stats.dropped),
        (total, total, 0)
    );
    assert!(stats.reconnects >= 1);
    sub.stop();
}

/// close() is bounded even when the broker is frozen (SIGSTOP) with messages in flight: the
/// connection is up, nothing is acknowledged, nothing fails.
#[test]
fn close_is_bounded_with_frozen_broker() {
    if !common::needs("mosquitto") {
        return;
    }
    let dir = TempDir::new("frozen");
    let port = free_port();
    let broker = Broker::start(port, dir.path(), false);
    let notes = Notes::default();
    let publisher = MqttPublisher::start(
        target(port, "tipedge/frozen"),
        options("pub-frozen", 200),
        notes.sink(),
    );
    assert!(wait_until(Duration::from_secs(5), || publisher
        .stats()
        .connected));
    broker.signal("STOP");
    let mut slowest = Duration::ZERO;
    for seq in 0..500 {
        let before = Instant::now();
        assert!(publisher.publish(seq_payload(seq)));
        slowest = slowest.max(before.elapsed());
    }
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    let stats = publisher.close(Duration::from_millis(500));
    let took = t.elapsed();
    broker.signal("CONT");
    println!(
        "frozen broker: slowest publish {slowest:?}, close took {took:?}: {stats:?}; notes {:#?}",
        notes.all()
    );
    // By construction: at most the timeout plus the connection thread's 250 ms wait slice.
    assert!(took < Duration::from_millis(1000), "close took {took:?}");
    assert!(
        slowest < Duration::from_millis(100),
        "a publish call took {slowest:?}"
    );
    assert_eq!((stats.queued, stats.published), (500, 0));
    assert_eq!(
        notes.count("closed with 500 of 500 messages not acknowledged"),
        1
    );
}
