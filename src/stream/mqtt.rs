//! MQTT output of `tipedge stream`: predictions and events published as JSON (or any bytes) to
//! one topic of an MQTT 3.1.1 broker, without ever blocking the frame loop.
//!
//! # Threads and queues
//!
//! ```text
//! frame loop --publish()--> bounded queue --> feeder thread --try_publish--> rumqttc --> broker
//!                           (`queue` slots)   (holds 1 msg +      (request channel,    ^
//!                                              resend list)        100 in flight)      |
//!                                                   ^                                  |
//!                                                   +---- connection thread -----------+
//!                                                         (drives rumqttc, reconnects,
//!                                                          counts PUBACKs, notes)
//! ```
//!
//! [`MqttPublisher::publish`] only does `try_send` on a bounded `std::sync::mpsc::sync_channel`
//! whose slots are allocated by `start`, plus atomic counters: no allocation, no I/O, and no lock
//! that a network thread holds across I/O (the only synchronisation is the channel's own, a
//! short critical section inside std when the feeder sleeps waiting for a message). The feeder
//! thread moves messages into rumqttc with `try_publish` only while a connection is up, so
//! rumqttc's request channel (whose blocking `Client::publish` would stall a caller once full)
//! never fills up with a backlog while disconnected: the backlog stays in the bounded queue,
//! where overflow is refused and counted.
//!
//! # Delivery guarantee
//!
//! Every message is published with QoS 1 (not retained) and counts as *published* when the
//! broker's PUBACK for it arrives. The guarantee is **at-least-once for every message that
//! [`MqttPublisher::publish`] accepted (returned `true`)**, as long as the publisher is not
//! closed before the broker acknowledged it:
//!
//! * The connection can drop and the broker can restart any number of times. Messages that were
//!   sent but not acknowledged when the connection dropped, and those already handed to rumqttc
//!   but not yet sent, are taken back (rumqttc 0.25 itself would discard them on a clean-session
//!   reconnect) and sent again, before any newer message, once a connection is up again. If the
//!   broker had received such a message and only its PUBACK was lost, it gets it twice:
//!   receivers must tolerate duplicates (QoS 1 semantics). Apart from such re-sends, the broker
//!   receives messages in `publish` order.
//! * While no connection is up, accepted messages wait in the bounded queue (`queue` slots); the
//!   network threads additionally hold at most about 130 messages taken out of the queue (one
//!   being handed over, rumqttc's request channel of 32 and up to 100 sent but not yet
//!   acknowledged), so memory stays bounded.
//!
//! What is lost, and how it is counted:
//!
//! * **Queue full**: `publish` returns `false` and the message is counted in
//!   [`MqttStats::dropped`]; it is never sent. The same happens for a payload too large for one
//!   MQTT packet (about 256 MiB).
//! * **Closing**: [`MqttPublisher::close`] keeps sending and waiting for acknowledgements until
//!   everything accepted is acknowledged or its timeout expires. What is still unacknowledged
//!   then is abandoned: in the final stats it is `queued - published` (and a note says how many).
//!   Dropping an [`MqttPublisher`] without `close` is `close` with a zero timeout.
//! * **Process end**: everything is kept in memory only; if the process dies, what was not yet
//!   acknowledged is lost (and, unlike the cases above, not counted anywhere).
//! * **Broker side**: a message counts as published once the broker acknowledged it; whether a
//!   subscriber gets it afterwards is the broker's business (subscriber session, broker
//!   persistence, `max_queued_messages`, ...).
//!
//! The publisher connects with a clean session (it subscribes to nothing, so there is no broker
//! side state worth keeping); re-sends are therefore new PUBLISH packets with fresh packet ids.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ClientError, Connection, ConnectionError, Event, Outgoing, Packet, QoS, Request,
    StateError,
};

/// Port used when the URL names none.
const DEFAULT_PORT: u16 = 1883;
/// Largest "remaining length" of an MQTT packet (four length bytes).
const MAX_REMAINING_LENGTH: usize = 268_435_455;
/// First reconnect delay; doubled after every failure up to `MqttOptions::max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// TCP connect + CONNACK timeout, enforced by rumqttc (whole seconds).
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// Capacity of rumqttc's request channel between the feeder and the connection thread.
const RUMQTT_CHANNEL: usize = 32;
/// rumqttc's limit on QoS 1 messages sent and not yet acknowledged.
const MAX_INFLIGHT: u16 = 100;
/// Longest the connection thread waits for one rumqttc event while connected: how late it may
/// notice `close` when nothing else wakes it (e.g. a frozen broker). rumqttc cannot be woken from
/// outside, and cutting a wait short is safe except inside a write, which is detected (see
/// `Driver::run`) and answered with a reconnect.
const CONNECTED_SLICE: Duration = Duration::from_millis(250);
/// Longest the feeder waits for a new message before looking around again.
const FEEDER_IDLE: Duration = Duration::from_millis(100);
/// Longest the feeder sleeps while rumqttc's channel is full (it is usually woken earlier).
const FEEDER_BLOCKED: Duration = Duration::from_millis(20);
/// Longest the feeder sleeps while disconnected (it is woken on connect and on close).
const FEEDER_DISCONNECTED: Duration = Duration::from_millis(500);
/// A connection that lasted this long resets the backoff and the note rate limit when it drops.
const STABLE_CONNECTION: Duration = Duration::from_secs(5);
/// While failing to connect, one note per this many failures ...
const NOTE_EVERY_FAILURES: u64 = 10;
/// ... or when the last note is older than this.
const NOTE_EVERY: Duration = Duration::from_secs(30);
/// How long `close` waits for the threads beyond its timeout before leaving them behind.
const JOIN_GRACE: Duration = Duration::from_millis(500);

/// Where to publish: `mqtt://host[:port]/topic`.
///
/// The port is 1883 when omitted. The topic is everything after the first `/` following the
/// host (it may contain `/`, it is not percent-decoded); it must not be empty and must not contain
/// the wildcards `+` or `#`. An IPv6 host is written in brackets (`mqtt://[::1]:1883/t`) and
/// stored without them. TLS (`mqtts://`) and credentials in the URL are not supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Topic every message is published on.
    pub topic: String,
}

impl FromStr for MqttTarget {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let fail = |reason: &str| format!("invalid MQTT URL '{url}': {reason}");
        let scheme_end = url
            .find("://")
            .ok_or_else(|| fail("expected mqtt://host[:port]/topic"))?;
        let scheme = &url[..scheme_end];
        if scheme.eq_ignore_ascii_case("mqtts") {
            return Err(fail("TLS (mqtts://) is not supported, use mqtt://"));
        }
        if !scheme.eq_ignore_ascii_case("mqtt") {
            return Err(fail("the scheme must be mqtt://"));
        }
        let rest = &url[scheme_end + 3..];
        let (authority, topic) = rest
            .split_once('/')
            .ok_or_else(|| fail("missing /topic after the host"))?;
        if authority.contains('@') {
            return Err(fail("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| fail("missing ']' after the IPv6 address"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(fail("unexpected text after the IPv6 address")),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(fail("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("the host contains whitespace or control characters"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(0) => return Err(fail("port 0 is not allowed")),
                Ok(port) => port,
                Err(_) => return Err(fail(&format!("bad port '{text}' (expected 1-65535)"))),
            },
        };
        validate_topic(topic).map_err(|reason| fail(&reason))?;
        Ok(MqttTarget {
            host: host.to_string(),
            port,
            topic: topic.to_string(),
        })
    }
}

impl fmt::Display for MqttTarget {
    /// Canonical URL, always with the port: `mqtt://host:port/topic`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mqtt://{}:{}/{}",
            self.host_for_socket(),
            self.port,
            self.topic
        )
    }
}

impl MqttTarget {
    /// The host as it goes before `:port` (IPv6 addresses in brackets).
    fn host_for_socket(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Why a topic cannot be published on, if it cannot.
fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("empty topic".to_string());
    }
    if topic.contains(['+', '#']) {
        return Err("the topic must not contain the wildcards '+' or '#'".to_string());
    }
    if topic.contains('\0') {
        return Err("the topic must not contain NUL".to_string());
    }
    if topic.len() > usize::from(u16::MAX) {
        return Err("the topic is longer than 65535 bytes".to_string());
    }
    Ok(())
}

/// Tuning of an [`MqttPublisher`].
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// Messages that may wait for the network thread (default 1024); `publish` drops beyond it.
    /// 0 is treated as 1.
    pub queue: usize,
    /// MQTT client id (default `tipedge-<pid>`). Two clients with the same id on one broker take
    /// the connection from each other, so give each publisher of a process its own.
    pub client_id: String,
    /// MQTT keep-alive (default 10 s): a silent dead connection is noticed after at most about
    /// twice this. Whole seconds; values between 0 and 1 s are raised to 1 s, 0 disables pings.
    pub keep_alive: Duration,
    /// Longest delay between connection attempts (default 5 s); delays start at 100 ms and
    /// double after every failed attempt. They go back to 100 ms only when a connection that
    /// lasted at least 5 s drops, so a connection that keeps dropping right away (e.g. another
    /// client taking over the same client id) is retried with growing delays too.
    pub max_backoff: Duration,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            queue: 1024,
            client_id: format!("tipedge-{}", std::process::id()),
            keep_alive: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Counters of an [`MqttPublisher`]; all but `connected` and `last_error` only grow.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MqttStats {
    /// Messages accepted by `publish` (it returned `true`).
    pub queued: u64,
    /// Messages acknowledged by the broker (QoS 1 PUBACK); never more than `queued`.
    pub published: u64,
    /// Messages refused by `publish` because the queue was full (or the payload too large).
    pub dropped: u64,
    /// Successful connections after the first one.
    pub reconnects: u64,
    /// Whether a connection to the broker is up.
    pub connected: bool,
    /// The latest connection problem, e.g. `cannot connect: connection refused`.
    pub last_error: Option<String>,
}

/// State shared by the caller and the two network threads.
struct Shared {
    /// `mqtt://host:port/topic`, the prefix of every note.
    label: String,
    queued: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Set once, by `close` or `drop`: the instant after which the threads give up.
    close_deadline: OnceLock<Instant>,
    /// Hand-over between the feeder and the connection thread (never held across I/O).
    handoff: Mutex<Handoff>,
}

/// What the feeder may do, decided by the connection thread.
struct Handoff {
    /// A connection is up: messages may be handed to rumqttc.
    connected: bool,
    /// Messages taken back from rumqttc after a connection loss, oldest first; they are handed
    /// over again before anything newer.
    resend: VecDeque<Vec<u8>>,
}

impl Shared {
    fn handoff(&self) -> MutexGuard<'_, Handoff> {
        self.handoff
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn closing(&self) -> Option<Instant> {
        self.close_deadline.get().copied()
    }

    /// Everything accepted so far has been acknowledged.
    fn all_acknowledged(&self) -> bool {
        self.published.load(Ordering::Acquire) >= self.queued.load(Ordering::Acquire)
    }

    fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    fn stats(&self) -> MqttStats {
        // `published` first, so that a concurrent acknowledgement cannot make it exceed `queued`.
        let published = self.published.load(Ordering::Acquire);
        MqttStats {
            queued: self.queued.load(Ordering::Acquire),
            published,
            dropped: self.dropped.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Publishes messages to one MQTT topic from a background connection; see the module docs for
/// the delivery guarantee.
pub struct MqttPublisher {
    shared: Arc<Shared>,
    /// `None` once closing.
    tx: Option<SyncSender<Vec<u8>>>,
    /// Largest payload that fits one MQTT packet on this topic.
    max_payload: usize,
    feeder: Option<JoinHandle<()>>,
    connection: Option<JoinHandle<()>>,
}

impl MqttPublisher {
    /// Starts the background connection thread; never blocks on the network and never fails
    /// because the broker is unreachable (that is reported through `stats().last_error` and an
    /// optional callback for one-line notes, and retried with exponential backoff 100 ms →
    /// max_backoff).
    ///
    /// `on_note` is called from the connection thread with single lines such as
    /// `mqtt://127.0.0.1:1884/x: cannot connect (connection refused); retrying in 0.4 s` or
    /// `mqtt://127.0.0.1:1884/x: connected`. Repeated connection failures are reported on the
    /// first one, then every 10th or after 30 s. An invalid topic (possible only when the
    /// target was built by hand, not parsed) is reported as a note and nothing is ever sent.
    pub fn start(
        target: MqttTarget,
        options: MqttOptions,
        on_note: impl Fn(&str) + Send + 'static,
    ) -> MqttPublisher {
        let label = target.to_string();
        let shared = Arc::new(Shared {
            label,
            queued: AtomicU64::new(0),
            published: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            close_deadline: OnceLock::new(),
            handoff: Mutex::new(Handoff {
                connected: false,
                resend: VecDeque::new(),
            }),
        });
        let (tx, rx) = mpsc::sync_channel(options.queue.max(1));
        let max_payload = MAX_REMAINING_LENGTH.saturating_sub(4 + target.topic.len());

        let mut rumqtt = rumqttc::MqttOptions::new(
            options.client_id.clone(),
            target.host_for_socket(),
            target.port,
        );
        rumqtt
            .set_keep_alive(keep_alive_for_rumqttc(options.keep_alive))
            .set_clean_session(true)
            .set_inflight(MAX_INFLIGHT)
            // Incoming packets are acknowledgements only; outgoing ones may be as large as MQTT
            // allows (rumqttc's default of 10 KiB would make a larger payload fail forever).
            .set_max_packet_size(64 * 1024, MAX_REMAINING_LENGTH + 5);
        let (client, mut conn) = Client::new(rumqtt, RUMQTT_CHANNEL);
        let mut network = conn.eventloop.network_options();
        network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        conn.eventloop.set_network_options(network);

        let topic_problem = validate_topic(&target.topic).err();
        let feeder = {
            let shared = Arc::clone(&shared);
            let client = client.clone();
            let topic = target.topic.clone();
            thread::Builder::new()
                .name("mqtt-feed".into())
                .spawn(move || feed(&shared, &rx, &client, &topic))
                .expect("cannot spawn the MQTT feeder thread")
        };
        let connection = {
            let shared = Arc::clone(&shared);
            let feeder_thread = feeder.thread().clone();
            let max_backoff = options.max_backoff.max(INITIAL_BACKOFF);
            thread::Builder::new()
                .name("mqtt-conn".into())
                .spawn(move || {
                    let mut driver = Driver {
                        shared: &shared,
                        connection: &mut conn,
                        feeder: feeder_thread,
                        on_note: &on_note,
                        max_backoff,
                        backoff: INITIAL_BACKOFF,
                        ever_connected: false,
                        connected_at: None,
                        failures: 0,
                        last_note: None,
                        told_down: false,
                    };
                    let outcome = panic::catch_unwind(AssertUnwindSafe(|| match &topic_problem {
                        Some(problem) => driver.refuse(problem),
                        None => driver.run(),
                    }));
                    if outcome.is_err() {
                        // A bug (ours or rumqttc's): stop handing messages over, say so; what
                        // is queued is reported as abandoned at close.
                        shared.handoff().connected = false;
                        shared.connected.store(false, Ordering::Relaxed);
                        shared.set_last_error(
                            "internal error: MQTT connection thread panicked".into(),
                        );
                        on_note(&format!(
                            "{}: internal error, MQTT output stopped",
                            shared.label
                        ));
                    }
                    drop(client);
                })
                .expect("cannot spawn the MQTT connection thread")
        };
        MqttPublisher {
            shared,
            tx: Some(tx),
            max_payload,
            feeder: Some(feeder),
            connection: Some(connection),
        }
    }

    /// Queues one message (QoS 1, not retained) on the target topic; never blocks: returns false
    /// and counts a drop when the bounded queue is full.
    ///
    /// Neither allocates nor waits: one `try_send` on a bounded channel whose slots were
    /// allocated by `start`, and atomic counters. A payload larger than one MQTT packet allows
    /// (about 256 MiB) is refused and counted as dropped too.
    pub fn publish(&self, payload: Vec<u8>) -> bool {
        let shared = &self.shared;
        let Some(tx) = &self.tx else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if payload.len() > self.max_payload {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        // Counted before it can be sent, so `published <= queued` always holds.
        shared.queued.fetch_add(1, Ordering::AcqRel);
        match tx.try_send(payload) {
            Ok(()) => true,
            Err(_) => {
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MqttStats {
        self.shared.stats()
    }

    /// Flushes what is queued for up to `timeout`, disconnects, joins the thread; returns the final stats.
    ///
    /// Returns as soon as everything accepted is acknowledged, else after about `timeout`;
    /// `queued - published` in the result is what was abandoned. If a thread is stuck in a
    /// network call beyond `timeout` plus half a second (a connection attempt to a host that
    /// does not answer can take 5 s), it is left to finish on its own instead of being joined.
    pub fn close(mut self, timeout: Duration) -> MqttStats {
        self.shutdown(timeout);
        self.shared.stats()
    }

    fn shutdown(&mut self, timeout: Duration) {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        let _ = self.shared.close_deadline.set(deadline);
        // The feeder sees the end of the queue once it has taken everything out of it.
        self.tx = None;
        let handles: Vec<JoinHandle<()>> = [self.feeder.take(), self.connection.take()]
            .into_iter()
            .flatten()
            .collect();
        for handle in &handles {
            handle.thread().unpark();
        }
        let give_up = deadline + JOIN_GRACE;
        for handle in handles {
            while !handle.is_finished() && Instant::now() < give_up {
                thread::sleep(Duration::from_millis(2));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for MqttPublisher {
    /// Same as `close(Duration::ZERO)`: what is not yet acknowledged is abandoned.
    fn drop(&mut self) {
        if self.feeder.is_some() || self.connection.is_some() {
            self.shutdown(Duration::ZERO);
        }
    }
}

/// rumqttc accepts 0 or whole seconds of at least 1 (it panics otherwise); MQTT caps it at 65535.
fn keep_alive_for_rumqttc(keep_alive: Duration) -> Duration {
    if keep_alive.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_secs(keep_alive.as_secs().clamp(1, u64::from(u16::MAX)))
    }
}

/// What the feeder did in one round.
enum Feed {
    /// Everything it had was handed over: wait for the next message.
    Idle,
    /// rumqttc's channel is full: wait to be woken when rumqttc takes a request.
    Blocked,
    /// No connection: leave messages in the queue and wait to be woken on connect or close.
    Disconnected,
}

/// Feeder thread: moves messages from the bounded queue into rumqttc, resends first, and only
/// while connected, so that nothing piles up inside rumqttc while the broker is away.
fn feed(shared: &Shared, rx: &Receiver<Vec<u8>>, client: &Client, topic: &str) {
    let mut held: Option<Vec<u8>> = None;
    let mut queue_open = true;
    loop {
        // Longest wait allowed now: up to the close deadline, if closing.
        let mut limit = Duration::MAX;
        if let Some(deadline) = shared.closing() {
            // Every accepted message is acknowledged, so nothing is left in the queue, held
            // or in the resend list. The request also wakes the connection thread.
            if shared.all_acknowledged() {
                let _ = client.try_disconnect();
                return;
            }
            limit = deadline.saturating_duration_since(Instant::now());
            if limit.is_zero() {
                return;
            }
        }
        match hand_over(shared, client, topic, &mut held) {
            Feed::Blocked => thread::park_timeout(FEEDER_BLOCKED.min(limit)),
            Feed::Disconnected => thread::park_timeout(FEEDER_DISCONNECTED.min(limit)),
            Feed::Idle if queue_open => match rx.recv_timeout(FEEDER_IDLE.min(limit)) {
                Ok(payload) => held = Some(payload),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => queue_open = false,
            },
            // Closing, queue empty: waiting for acknowledgements (woken on each one).
            Feed::Idle => thread::park_timeout(FEEDER_IDLE.min(limit)),
        }
    }
}

/// Hands the resend list and then the held message to rumqttc, as far as it takes them.
fn hand_over(shared: &Shared, client: &Client, topic: &str, held: &mut Option<Vec<u8>>) -> Feed {
    // The lock makes "connected" and the hand-over atomic with respect to the connection thread
    // taking everything back after a loss; `try_publish` does not block.
    let mut handoff = shared.handoff();
    if !handoff.connected {
        return Feed::Disconnected;
    }
    while let Some(payload) = handoff.resend.pop_front() {
        if let Err(payload) = try_publish(client, topic, payload) {
            handoff.resend.push_front(payload);
            return Feed::Blocked;
        }
    }
    if let Some(payload) = held.take() {
        if let Err(payload) = try_publish(client, topic, payload) {
            *held = Some(payload);
            return Feed::Blocked;
        }
    }
    Feed::Idle
}

/// `Client::try_publish`, giving the payload back when rumqttc's channel is full.
fn try_publish(client: &Client, topic: &str, payload: Vec<u8>) -> Result<(), Vec<u8>> {
    match client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
        Ok(()) => Ok(()),
        Err(ClientError::TryRequest(Request::Publish(publish)))
        | Err(ClientError::Request(Request::Publish(publish))) => Err(publish.payload.into()),
        // Not produced by try_publish; nothing to give back.
        Err(_) => Ok(()),
    }
}

/// The connection thread's state: drives rumqttc's event loop, reconnects, counts PUBACKs.
struct Driver<'a, N: Fn(&str)> {
    shared: &'a Shared,
    connection: &'a mut Connection,
    feeder: Thread,
    on_note: &'a N,
    max_backoff: Duration,
    /// Delay before the next connection attempt.
    backoff: Duration,
    ever_connected: bool,
    /// When the current (or last) connection came up.
    connected_at: Option<Instant>,
    /// Failed attempts and short-lived connections since the last stable connection.
    failures: u64,
    /// When the last failure note was given (rate limit).
    last_note: Option<Instant>,
    /// The current trouble was reported, so its end is reported too.
    told_down: bool,
}

impl<N: Fn(&str)> Driver<'_, N> {
    fn note(&self, text: &str) {
        (self.on_note)(&format!("{}: {text}", self.shared.label));
    }

    /// Permanent failure (invalid topic): report, send nothing, wait for close.
    fn refuse(&mut self, problem: &str) {
        self.note(&format!("not connecting: {problem}"));
        self.shared.set_last_error(problem.to_string());
        while let Some(deadline) = self.wait_time(None) {
            thread::park_timeout(deadline);
        }
        self.closing_note();
    }

    /// How long to wait at most before looking at the close deadline again; `None` when it is
    /// time to stop. `want` is the wait wanted without closing (`None`: a long one).
    fn wait_time(&self, want: Option<Duration>) -> Option<Duration> {
        let want = want.unwrap_or(Duration::from_secs(1));
        match self.shared.closing() {
            None => Some(want),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || (!self.connected() && self.shared.all_acknowledged()) {
                    None
                } else {
                    Some(want.min(left))
                }
            }
        }
    }

    fn connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    fn run(&mut self) {
        loop {
            let slice = if self.connected() {
                CONNECTED_SLICE
            } else {
                // Long enough for rumqttc's own connect timeout: cutting a connection attempt
                // short would restart it from scratch every time.
                Duration::from_secs(CONNECT_TIMEOUT_SECS) + Duration::from_millis(500)
            };
            let Some(slice) = self.wait_time(Some(slice)) else {
                break;
            };
            match self.connection.recv_timeout(slice) {
                Ok(Ok(event)) => {
                    if self.on_event(event) {
                        break;
                    }
                }
                Ok(Err(error)) => {
                    self.on_error(&describe(&error));
                    self.sleep_backoff();
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {
                    // rumqttc queues an event before writing the packet it belongs to; an event
                    // left behind means the wait was cut inside a write, so whether that packet
                    // went out is unknown. Start over on a fresh connection (and resend).
                    if self.connected() && !self.connection.eventloop.state.events.is_empty() {
                        self.on_error("network write stalled");
                        self.sleep_backoff();
                    }
                }
                // Every request sender is gone; cannot happen while this thread holds a client.
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.take_back();
        self.shared.connected.store(false, Ordering::Relaxed);
        self.closing_note();
    }

    /// Handles one event; returns true when the thread should stop.
    fn on_event(&mut self, event: Event) -> bool {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => self.on_connected(),
            Event::Incoming(Packet::PubAck(_)) => {
                self.shared.published.fetch_add(1, Ordering::AcqRel);
                if self.shared.closing().is_some() {
                    self.feeder.unpark();
                }
            }
            // rumqttc took a request off its channel: there is room for the feeder again.
            Event::Outgoing(Outgoing::Publish(_)) => self.feeder.unpark(),
            // Sent only once everything is acknowledged, while closing.
            Event::Outgoing(Outgoing::Disconnect) => return true,
            _ => {}
        }
        false
    }

    fn on_connected(&mut self) {
        let resend = {
            let mut handoff = self.shared.handoff();
            handoff.connected = true;
            handoff.resend.len()
        };
        self.shared.connected.store(true, Ordering::Relaxed);
        if self.ever_connected {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        // Say so when it is the first connection or the trouble before it was reported.
        if !self.ever_connected || self.told_down {
            let text = match (self.ever_connected, self.failures, resend) {
                (false, 0, _) => "connected".to_string(),
                (false, failures, _) => format!("connected (after {failures} failed attempts)"),
                (true, _, 0) => "connected again".to_string(),
                (true, _, resend) => {
                    format!("connected again; resending {resend} unacknowledged messages")
                }
            };
            self.note(&text);
        }
        self.ever_connected = true;
        self.told_down = false;
        self.connected_at = Some(Instant::now());
        self.feeder.unpark();
    }

    /// After a failed attempt or a lost connection: take messages back, record, maybe note.
    fn on_error(&mut self, reason: &str) {
        let was_connected = self.connected();
        self.take_back();
        self.shared.connected.store(false, Ordering::Relaxed);
        let stable = was_connected
            && self
                .connected_at
                .is_some_and(|at| at.elapsed() >= STABLE_CONNECTION);
        if stable {
            // A new episode: back to the shortest delay, and report it.
            self.failures = 0;
            self.last_note = None;
            self.backoff = INITIAL_BACKOFF;
        } else {
            // A failed attempt, or a connection that did not last (e.g. another client with
            // the same id taking it over): keep backing off, rate-limit the notes.
            self.failures += 1;
        }
        let (what, error) = if was_connected {
            ("connection lost", format!("connection lost: {reason}"))
        } else {
            ("cannot connect", format!("cannot connect: {reason}"))
        };
        self.shared.set_last_error(error);
        let due = stable
            || self.failures == 1
            || self.failures.is_multiple_of(NOTE_EVERY_FAILURES)
            || self.last_note.is_none_or(|at| at.elapsed() >= NOTE_EVERY);
        if due {
            let attempts = match self.failures {
                0 | 1 => String::new(),
                n => format!(" ({n} failures in a row)"),
            };
            let retry = self.backoff.as_secs_f64();
            self.note(&format!(
                "{what} ({reason}){attempts}; retrying in {retry:.1} s"
            ));
            self.last_note = Some(Instant::now());
            self.told_down = true;
        }
    }

    /// Marks the connection down and moves every message rumqttc holds (sent but not
    /// acknowledged, or still in its request channel) to the front of the resend list.
    fn take_back(&mut self) {
        let mut handoff = self.shared.handoff();
        handoff.connected = false;
        let eventloop = &mut self.connection.eventloop;
        // Acknowledgements that arrived before the loss but were not yet handed out as events.
        for event in eventloop.state.events.drain(..) {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                self.shared.published.fetch_add(1, Ordering::AcqRel);
            }
        }
        // Under the lock, so the feeder cannot add to rumqttc's channel meanwhile: this also
        // drains whatever it handed over after rumqttc's own clean-up on the error.
        eventloop.clean();
        let mut taken: VecDeque<Vec<u8>> = eventloop
            .pending
            .drain(..)
            .filter_map(|request| match request {
                Request::Publish(publish) => Some(publish.payload.into()),
                _ => None,
            })
            .collect();
        if !taken.is_empty() {
            taken.extend(handoff.resend.drain(..));
            handoff.resend = taken;
        }
    }

    /// Waits before the next connection attempt (woken early by `close`) and doubles the delay.
    fn sleep_backoff(&mut self) {
        let until = Instant::now() + self.backoff;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.wait_time(Some(left)) {
                Some(wait) => thread::park_timeout(wait),
                None => break,
            }
        }
        self.backoff = (self.backoff * 2).min(self.max_backoff);
    }

    fn closing_note(&self) {
        let stats = self.shared.stats();
        let abandoned = stats.queued.saturating_sub(stats.published);
        if abandoned > 0 {
            self.note(&format!(
                "closed with {abandoned} of {} messages not acknowledged",
                stats.queued
            ));
        }
    }
}

/// A short, one-line reason for a connection error.
fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::Io(io)
        | ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::Error::Io(io))) => {
            describe_io(io)
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".to_string()
        }
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "no answer to keep-alive ping".to_string()
        }
        ConnectionError::NetworkTimeout => "timed out".to_string(),
        ConnectionError::FlushTimeout => "network write timed out".to_string(),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {code:?}")
        }
        other => one_line(&other.to_string()),
    }
}

fn describe_io(error: &io::Error) -> String {
    let text = match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::BrokenPipe => "broken pipe",
        io::ErrorKind::TimedOut => "timed out",
        io::ErrorKind::UnexpectedEof => "connection closed",
        _ => return one_line(&error.to_string()),
    };
    text.to_string()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
