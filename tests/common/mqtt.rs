//! Test helpers: a real `mosquitto` on a loopback port, a rumqttc subscriber, bounded waits.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

include!("tools.rs");

/// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(
            tempfile::Builder::new()
                .prefix(&format!("tipedge-mqtt-{tag}-"))
                .tempdir()
                .expect("create temp dir"),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A `mosquitto` child process listening on `127.0.0.1:port`, killed on drop (also on panic).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    runs: u32,
}

impl Broker {
    /// Starts mosquitto on `port` with its config, log and (if `persistence`) database in `dir`;
    /// waits (at most 5 s) until it accepts connections.
    pub fn start(port: u16, dir: &Path, persistence: bool) -> Broker {
        let mut broker = Broker {
            child: None,
            port,
            dir: dir.to_path_buf(),
            runs: 0,
        };
        let mut config = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n\
             # keep root: the database lives in a root-owned temp dir\nuser root\n\
             max_queued_messages 0\nlog_dest stderr\nlog_type all\n"
        );
        if persistence {
            config.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 0\n",
                dir.display()
            ));
        }
        fs::write(dir.join("mosquitto.conf"), config).expect("write mosquitto.conf");
        broker.run();
        broker
    }

    /// (Re)starts the process with the existing config.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        self.runs += 1;
        let log = fs::File::create(self.dir.join(format!("mosquitto-{}.log", self.runs)))
            .expect("create broker log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto)");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let up = wait_until(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
        assert!(
            up,
            "mosquitto did not listen on {addr} within 5 s: {}",
            self.log()
        );
    }

    /// Stops the broker with SIGTERM (it saves its database and closes every connection) and
    /// waits for it to exit (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let exited = wait_until(Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (e.g. "STOP", "CONT") to the running broker.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("broker not running");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The broker's log of the current (or last) run.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join(format!("mosquitto-{}.log", self.runs)))
            .unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped (SIGSTOP) process.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A rumqttc subscriber (QoS 1) on its own thread that reconnects by itself and records every
/// message it gets, duplicates included.
pub struct Subscriber {
    pub messages: Arc<Mutex<Vec<Vec<u8>>>>,
    /// How many of them the broker marked as redelivered (DUP flag).
    redelivered: Arc<AtomicU64>,
    subscribed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    client: Client,
    thread: Option<JoinHandle<()>>,
}

impl Subscriber {
    /// `persistent`: clean_session=false, so the broker keeps the subscription and queues
    /// messages while this client is away (and, with broker persistence, across restarts).
    pub fn start(port: u16, topic: &str, client_id: &str, persistent: bool) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(!persistent)
            .set_max_packet_size(16 * 1024 * 1024, 64 * 1024);
        let (client, mut connection) = Client::new(options, 16);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let redelivered = Arc::new(AtomicU64::new(0));
        let subscribed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, messages, redelivered, subscribed, stop) = (
                client.clone(),
                Arc::clone(&messages),
                Arc::clone(&redelivered),
                Arc::clone(&subscribed),
                Arc::clone(&stop),
            );
            let topic = topic.to_string();
            thread::spawn(move || {
                // Blocking recv: never cut short inside a write (which could lose a PUBACK).
                while !stop.load(Ordering::Relaxed) {
                    match connection.recv() {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                            if !ack.session_present {
                                client
                                    .try_subscribe(topic.as_str(), QoS::AtLeastOnce)
                                    .expect("subscribe");
                            }
                        }
                        Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                            subscribed.store(true, Ordering::Relaxed)
                        }
                        Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                            if publish.dup {
                                redelivered.fetch_add(1, Ordering::Relaxed);
                            }
                            messages.lock().unwrap().push(publish.payload.to_vec())
                        }
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => thread::sleep(Duration::from_millis(20)),
                        Err(_) => break,
                    }
                }
            })
        };
        Subscriber {
            messages,
            redelivered,
            subscribed,
            stop,
            client,
            thread: Some(thread),
        }
    }

    /// Waits (bounded) for the SUBACK of the first subscription.
    pub fn wait_subscribed(&self, timeout: Duration) {
        assert!(
            wait_until(timeout, || self.subscribed.load(Ordering::Relaxed)),
            "no SUBACK within {timeout:?}"
        );
    }

    /// Messages the broker sent again with the DUP flag (redelivery on the broker-to-subscriber
    /// leg, e.g. after a restart), as opposed to a copy the publisher sent twice.
    pub fn redelivered(&self) -> u64 {
        self.redelivered.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` messages arrived; returns whether they did.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count() >= n)
    }

    /// Disconnects cleanly and joins the thread (bounded: left behind after 3 s).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
        if let Some(thread) = self.thread.take() {
            if wait_until(Duration::from_secs(3), || thread.is_finished()) {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Collects the notes of a publisher.
#[derive(Clone, Default)]
pub struct Notes(pub Arc<Mutex<Vec<String>>>);

impl Notes {
    pub fn sink(&self) -> impl Fn(&str) + Send + 'static {
        let notes = Arc::clone(&self.0);
        move |note: &str| notes.lock().unwrap().push(note.to_string())
    }

    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|n| n.contains(needle)).count()
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(needle) > 0)
    }
}
