//! One connection driven in-process, deterministically: the node's connection code on
//! one end of an in-memory pipe, the shared RTMP client on the other, the real SQLite
//! engine in memory as the channel store, and tokio's paused clock, so deadlines are
//! exact and nothing depends on how fast the machine is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rtmp::ClientConfig;
use rtmp_io::{PublishError, Publisher, PublisherOptions};
use streamgate::auth::{Authorizer, FleetTakeover};
use streamgate::channel::Channel;
use streamgate::config::{AuthConfig, RtmpConfig};
use streamgate::hub::{EndReason, Hub, Protocol};
use streamgate::ingest::pump::Pump;
use streamgate::ingest::{connection, IngestContext};
use streamgate::key::StreamKey;
use streamgate::outbox::StatusOutbox;
use streamgate::revocation::KeyWatch;
use streamgate::store::sqlite::SqliteStore;
use streamgate::store::ChannelDirectory;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a test connection arrives: from `peer`, now, over RTMP.
fn arrival(peer: SocketAddr) -> connection::Arrival {
    connection::Arrival {
        peer,
        received: bytes::BytesMut::new(),
        accepted_at: tokio::time::Instant::now(),
        protocol: Protocol::Rtmp,
    }
}

/// A node without listeners: what one connection needs, over a store in memory.
struct Harness {
    ctx: Arc<IngestContext>,
    hub: Arc<Hub>,
    store: Arc<SqliteStore>,
    auth: Arc<Authorizer>,
    outbox: Arc<StatusOutbox>,
    shutdown: CancellationToken,
}

impl Harness {
    fn new(rtmp: RtmpConfig) -> Harness {
        Harness::with_auth(rtmp, AuthConfig::default())
    }

    fn with_auth(rtmp: RtmpConfig, auth: AuthConfig) -> Harness {
        Harness::build(rtmp, auth, Vec::new())
    }

    fn build(
        rtmp: RtmpConfig,
        auth: AuthConfig,
        observers: Vec<Arc<dyn streamgate::hub::PublishObserver>>,
    ) -> Harness {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let outbox = StatusOutbox::new();
        let hub = Hub::new(outbox.clone(), observers, rtmp.takeover_silence);
        let fleet = FleetTakeover::of(&rtmp, &streamgate::config::StatusConfig::default());
        let auth = Arc::new(Authorizer::new(
            store.clone(),
            store.clone(),
            auth,
            hub.clone(),
            fleet,
        ));
        let ctx = Arc::new(IngestContext::new(rtmp, hub.clone(), auth.clone()));
        Harness {
            ctx,
            hub,
            store,
            auth,
            outbox,
            shutdown: CancellationToken::new(),
        }
    }

    fn with_idle(idle_timeout: Duration) -> Harness {
        Harness::new(RtmpConfig {
            idle_timeout,
            ..RtmpConfig::default()
        })
    }

    /// A node whose every publish is recorded by the returned [`Recorder`].
    fn recording() -> (Harness, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let h = Harness::build(
            RtmpConfig::default(),
            AuthConfig::default(),
            vec![Arc::new(Attach(recorder.clone()))],
        );
        (h, recorder)
    }

    async fn channel(&self, name: &str) -> (Channel, StreamKey) {
        self.store.create_channel(name).await.unwrap()
    }

    /// A client connection: the node serves the other end of the pipe.
    fn connect(&self) -> (DuplexStream, JoinHandle<()>) {
        self.connect_from("192.0.2.10:50000".parse().unwrap())
    }

    /// A client connection from `peer`.
    fn connect_from(&self, peer: SocketAddr) -> (DuplexStream, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let ticket = self.ctx.admission.admit(peer.ip()).expect("admitted");
        let task = tokio::spawn(connection::serve(
            server,
            arrival(peer),
            ticket,
            self.ctx.clone(),
            self.shutdown.clone(),
        ));
        (client, task)
    }

    /// A client connection over loopback TCP, served as an ingest thread serves plain
    /// TCP: a publish waits in `pump`.
    async fn connect_tcp(&self, pump: &Arc<Pump>) -> (TcpStream, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        let ticket = self.ctx.admission.admit(peer.ip()).expect("admitted");
        let task = tokio::spawn(connection::serve(
            connection::PumpedTcp::new(server, pump.clone()),
            arrival(peer),
            ticket,
            self.ctx.clone(),
            self.shutdown.clone(),
        ));
        (client, task)
    }

    /// A new channel with a publisher live on it over TCP, through `pump`.
    async fn live_tcp(
        &self,
        name: &str,
        pump: &Arc<Pump>,
    ) -> (Channel, Publisher<TcpStream>, JoinHandle<()>) {
        let (ch, key) = self.channel(name).await;
        let (io, task) = self.connect_tcp(pump).await;
        let config = ClientConfig::new("live", "rtmp://node/live", key.expose());
        let publisher = Publisher::publish(io, config, PublisherOptions::default())
            .await
            .expect("publish accepted");
        (ch, publisher, task)
    }

    async fn publish(
        &self,
        app: &str,
        key: &str,
    ) -> (
        Result<Publisher<DuplexStream>, PublishError>,
        JoinHandle<()>,
    ) {
        self.publish_from("192.0.2.10:50000".parse().unwrap(), app, key)
            .await
    }

    async fn publish_from(
        &self,
        peer: SocketAddr,
        app: &str,
        key: &str,
    ) -> (
        Result<Publisher<DuplexStream>, PublishError>,
        JoinHandle<()>,
    ) {
        let (io, task) = self.connect_from(peer);
        let config = ClientConfig::new(app, "rtmp://node/live", key);
        (
            Publisher::publish(io, config, PublisherOptions::default()).await,
            task,
        )
    }

    /// A new channel with a publisher live on it.
    async fn live(
        &self,
        name: &str,
    ) -> (Channel, StreamKey, Publisher<DuplexStream>, JoinHandle<()>) {
        let (ch, key) = self.channel(name).await;
        let (publisher, task) = self.publish("live", key.expose()).await;
        (ch, key, publisher.expect("publish accepted"), task)
    }

    /// The state the channel would end in once the outbox is written: (live, session).
    fn final_status(&self, channel: &Channel) -> Option<(bool, uuid::Uuid)> {
        self.outbox
            .take_all()
            .into_iter()
            .rev()
            .find(|u| u.channel_id == channel.id)
            .map(|u| (u.live, u.session_id))
    }
}

/// A keyframe-shaped video message (the node relays what it cannot interpret).
fn video() -> Bytes {
    Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])
}

fn refusal(result: Result<Publisher<DuplexStream>, PublishError>) -> (String, String) {
    match result {
        Err(PublishError::Refused { code, description }) => (code, description),
        Err(other) => panic!("expected an RTMP refusal, got {other}"),
        Ok(_) => panic!("expected an RTMP refusal, the publish was accepted"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_publisher_is_dropped_at_the_idle_deadline_exactly() {
    let idle = Duration::from_secs(10);
    let h = Harness::with_idle(idle);
    let (ch, _, mut publisher, task) = h.live("quiet").await;
    publisher.send_media(9, 0, video());
    publisher.flush().await.unwrap();
    assert_eq!(h.hub.live_channels(), vec![ch.id]);
    // Nothing more is sent: the node closes the connection when the deadline passes.
    let last_sent = Instant::now();
    let closed = publisher.closed().await;
    assert!(matches!(closed, PublishError::Closed), "{closed:?}");
    let quiet = last_sent.elapsed();
    assert!(
        quiet >= idle && quiet < idle + Duration::from_millis(100),
        "closed after {quiet:?} of silence"
    );
    task.await.unwrap();
    assert!(h.hub.live_channels().is_empty());
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
}

#[tokio::test(start_paused = true)]
async fn traffic_keeps_a_publisher_alive_past_the_idle_deadline() {
    let idle = Duration::from_secs(10);
    let h = Harness::with_idle(idle);
    let (ch, _, mut publisher, _task) = h.live("chatty").await;
    for i in 0..30u32 {
        publisher.send_media(9, i * 1000, video());
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        publisher.poll_incoming().await.unwrap();
    }
    assert_eq!(h.hub.live_channels(), vec![ch.id], "still live after 30 s");
}

/// A turn woken by data looks at the socket only; the deadlines and the stop signal
/// are looked at when they fire. A stop that fires together with data arriving (one
/// wake for both) must still end the connection at once, while media keeps coming.
#[tokio::test(start_paused = true)]
async fn the_node_ends_a_publish_at_once_even_while_media_keeps_arriving() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, _, mut publisher, task) = h.live("busy").await;
    let stream = h.hub.get(&ch.id).unwrap();
    let mut ended_at = None;
    for i in 0..200u32 {
        publisher.send_media(9, i * 10, video());
        if publisher.flush().await.is_err() {
            break;
        }
        if i == 100 {
            // Data is waiting for the connection as the node ends the publish.
            stream.end(EndReason::Kicked);
            ended_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if task.is_finished() {
            break;
        }
    }
    let ended_at = ended_at.expect("ended after 100 frames");
    assert!(task.is_finished(), "the connection did not end");
    assert!(
        ended_at.elapsed() <= Duration::from_millis(10),
        "ended {:?} after the stop",
        ended_at.elapsed()
    );
    task.await.unwrap();
    assert!(h.hub.live_channels().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_same_key_on_a_new_connection_takes_over_and_the_channel_stays_live() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, key) = h.channel("takeover").await;
    let (first, first_task) = h.publish("live", key.expose()).await;
    let mut first = first.unwrap();
    let first_session = h.hub.get(&ch.id).unwrap().session_id;
    let (second, _second_task) = h.publish("live", key.expose()).await;
    let mut second = second.unwrap();
    // The old connection is closed by the node at once.
    assert!(matches!(first.closed().await, PublishError::Closed));
    first_task.await.unwrap();
    let stream = h.hub.get(&ch.id).expect("still live");
    assert_ne!(stream.session_id, first_session);
    second.send_media(9, 0, video());
    second.flush().await.unwrap();
    assert_eq!(h.final_status(&ch), Some((true, stream.session_id)));
}

/// Two encoders on one key (OBS and ffmpeg, say, from two places): the second is told
/// why it cannot go live while the first keeps sending, instead of the two taking the
/// channel from each other forever; once the first has gone silent for
/// `rtmp.takeover_silence` (a half-dead connection), the next attempt takes over.
#[tokio::test(start_paused = true)]
async fn a_second_encoder_is_refused_with_a_clear_status_until_the_first_goes_silent() {
    let h = Harness::new(RtmpConfig::default());
    let silence = RtmpConfig::default().takeover_silence;
    let (ch, key) = h.channel("two encoders").await;
    let (first, _first_task) = h.publish("live", key.expose()).await;
    let mut first = first.unwrap();
    let first_session = h.hub.get(&ch.id).unwrap().session_id;
    let elsewhere: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    for i in 0..5u32 {
        first.send_media(9, i * 1000, video());
        first.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (second, task) = h.publish_from(elsewhere, "live", key.expose()).await;
        let (code, description) = refusal(second);
        assert_eq!(code, "NetStream.Publish.BadName");
        assert!(
            description.contains("already live from another encoder"),
            "{description}"
        );
        task.await.unwrap();
        assert_eq!(h.hub.get(&ch.id).unwrap().session_id, first_session);
    }
    // The first stops sending (its connection went half-dead).
    tokio::time::sleep(silence).await;
    let (second, _second_task) = h.publish_from(elsewhere, "live", key.expose()).await;
    let _second = second.expect("a silent publisher is taken over");
    assert!(matches!(first.closed().await, PublishError::Closed));
    let stream = h.hub.get(&ch.id).unwrap();
    assert_ne!(stream.session_id, first_session);
    assert_eq!(stream.peer, elsewhere);
    assert_eq!(h.final_status(&ch), Some((true, stream.session_id)));
}

#[tokio::test(start_paused = true)]
async fn a_wrong_key_is_refused_with_a_status_the_client_shows() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, key) = h.channel("guarded").await;
    let wrong = format!("{}x", key.expose());
    let (result, task) = h.publish("live", &wrong).await;
    let (code, description) = refusal(result);
    assert_eq!(code, "NetStream.Publish.BadName");
    assert_eq!(description, "invalid stream key");
    task.await.unwrap();
    assert!(h.hub.live_channels().is_empty());
    assert_eq!(h.final_status(&ch), None, "no status for a refused publish");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_application_is_refused_with_the_right_url_shape() {
    let h = Harness::new(RtmpConfig::default());
    let (_, key) = h.channel("c").await;
    let (result, task) = h.publish("other", key.expose()).await;
    let (_, description) = refusal(result);
    assert!(
        description.contains("rtmp://HOST/live/<stream key>"),
        "{description}"
    );
    task.await.unwrap();
    assert!(h.hub.live_channels().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_empty_key_is_refused() {
    let h = Harness::new(RtmpConfig::default());
    let (result, _task) = h.publish("live", "").await;
    assert_eq!(refusal(result).0, "NetStream.Publish.BadName");
}

#[tokio::test(start_paused = true)]
async fn a_rotated_key_ends_the_live_publish_at_the_next_check() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, key, mut publisher, task) = h.live("rotating").await;
    let interval = Duration::from_secs(5);
    let watch = KeyWatch {
        hub: h.hub.clone(),
        store: h.store.clone(),
        auth: h.auth.clone(),
        interval,
        thumbnail_dir: None,
    };
    let stop = CancellationToken::new();
    let watcher = tokio::spawn(watch.run(stop.clone()));
    let stream = h.hub.get(&ch.id).unwrap();
    // Checks pass while the key is unchanged (the publisher keeps sending).
    for i in 0..15u32 {
        publisher.send_media(9, i * 1000, video());
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(!stream.is_ended());
    publisher.poll_incoming().await.unwrap();
    let new_key = h.store.rotate_key(ch.id).await.unwrap().unwrap();
    let rotated_at = Instant::now();
    assert!(matches!(publisher.closed().await, PublishError::Closed));
    assert!(
        rotated_at.elapsed() <= interval,
        "{:?}",
        rotated_at.elapsed()
    );
    assert_eq!(stream.end_reason(), Some(EndReason::KeyRevoked));
    task.await.unwrap();
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
    // The old key is refused from now on, the new one works.
    let (old, _) = h.publish("live", key.expose()).await;
    assert_eq!(refusal(old).0, "NetStream.Publish.BadName");
    let (new, _) = h.publish("live", new_key.expose()).await;
    assert!(new.is_ok());
    stop.cancel();
    watcher.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deleted_channel_ends_its_live_publish() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, _, mut publisher, task) = h.live("doomed").await;
    assert!(h.store.delete_channel(ch.id).await.unwrap());
    let watch = KeyWatch {
        hub: h.hub.clone(),
        store: h.store.clone(),
        auth: h.auth.clone(),
        interval: Duration::from_secs(5),
        thumbnail_dir: None,
    };
    let stream = h.hub.get(&ch.id).unwrap();
    watch.check().await;
    assert!(matches!(publisher.closed().await, PublishError::Closed));
    assert_eq!(stream.end_reason(), Some(EndReason::ChannelDeleted));
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_publishes_and_marks_them_offline() {
    let h = Harness::new(RtmpConfig::default());
    let (ch, _, mut publisher, task) = h.live("graceful").await;
    h.shutdown.cancel();
    h.hub.end_all(EndReason::Shutdown);
    assert!(matches!(publisher.closed().await, PublishError::Closed));
    task.await.unwrap();
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
}

/// A client that completes the handshake and then keeps sending small messages but
/// never publishes: closed at the auth deadline after accept, however busy it is.
#[tokio::test(start_paused = true)]
async fn a_connection_that_never_publishes_is_closed_at_the_auth_deadline() {
    use rtmp::chunk::{ChunkWriter, OutputQueue};
    use rtmp::handshake::{ClientHandshake, HandshakeKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let deadline = Duration::from_secs(10);
    let h = Harness::new(RtmpConfig {
        auth_deadline: deadline,
        ..RtmpConfig::default()
    });
    let accepted = Instant::now();
    let (mut io, task) = h.connect();
    let mut hs = ClientHandshake::new(HandshakeKind::Simple);
    let (mut out, mut buf) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    hs.start(&mut out);
    io.write_all(&out).await.unwrap();
    out.clear();
    while !hs.read(&mut buf, &mut out).unwrap() {
        assert!(io.read_buf(&mut buf).await.unwrap() > 0);
    }
    io.write_all(&out).await.unwrap();
    // A ping request every second, and read whatever comes back, until the close.
    let mut writer = ChunkWriter::new();
    let closed_at = loop {
        let mut q = OutputQueue::new();
        let ping = rtmp::message::user_control(rtmp::message::UC_PING_REQUEST, 1);
        writer.write(&ping, &mut q);
        if io.write_all(&q.take_contiguous()).await.is_err() {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut sink = [0u8; 4096];
        match tokio::time::timeout(Duration::ZERO, io.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break Instant::now(),
            _ => {}
        }
        assert!(accepted.elapsed() < deadline * 2, "never closed");
    };
    task.await.unwrap();
    // Seen by the client within its one-second sending period.
    let open_for = closed_at - accepted;
    assert!(
        open_for >= deadline && open_for <= deadline + Duration::from_secs(1),
        "open for {open_for:?}"
    );
    assert_eq!(h.ctx.admission.totals(), (0, 0), "its slots are returned");
}

/// Once its publish is accepted, a connection is no longer pending, and its slots are
/// returned when it ends.
#[tokio::test(start_paused = true)]
async fn an_accepted_publish_leaves_the_pending_count() {
    let h = Harness::new(RtmpConfig::default());
    let (_, _, publisher, task) = h.live("counted").await;
    assert_eq!(h.ctx.admission.totals(), (1, 0));
    publisher.finish().await.unwrap();
    task.await.unwrap();
    assert_eq!(h.ctx.admission.totals(), (0, 0));
}

/// A connection opened before its address started guessing gets no free guess: the
/// wait is looked up when the publish arrives. Each wrong key makes the next answer
/// slower; a valid key from the address waits as long, then goes live.
#[tokio::test(start_paused = true)]
async fn guesses_wait_longer_and_longer_even_on_connections_opened_earlier() {
    use rtmp::handshake::{ClientHandshake, HandshakeKind};
    use rtmp::{ClientEvent, ClientSession};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let h = Harness::with_auth(
        RtmpConfig::default(),
        AuthConfig {
            max_failures: 3,
            failure_delay: Duration::from_millis(500),
            max_failure_delay: Duration::from_secs(3),
            ..AuthConfig::default()
        },
    );
    let (_, key) = h.channel("guarded").await;

    // Opened first: handshake, connect, createStream; the publish is queued, not sent.
    let (mut early, _early_task) = h.connect();
    let mut hs = ClientHandshake::new(HandshakeKind::Simple);
    let (mut out, mut buf) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    hs.start(&mut out);
    early.write_all(&out).await.unwrap();
    out.clear();
    while !hs.read(&mut buf, &mut out).unwrap() {
        assert!(early.read_buf(&mut buf).await.unwrap() > 0);
    }
    early.write_all(&out).await.unwrap();
    let mut session = ClientSession::new(ClientConfig::new("live", "rtmp://node/live", "sg_early"));
    session.start();
    let mut events = Vec::new();
    while !session.is_publish_pending() {
        let bytes = session.output().take_contiguous();
        early.write_all(&bytes).await.unwrap();
        assert!(early.read_buf(&mut buf).await.unwrap() > 0);
        session.handle_bytes(&mut buf, &mut events).unwrap();
    }

    // Wrong keys on fresh connections: each answer slower than the one before.
    let mut waits = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let (result, _) = h.publish("live", &format!("sg_guess{i}")).await;
        assert_eq!(refusal(result).0, "NetStream.Publish.BadName");
        waits.push(started.elapsed());
    }
    assert_eq!(
        waits,
        vec![
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1000)
        ]
    );

    // The early connection's guess now waits the longest.
    let started = Instant::now();
    let publish = session.output().take_contiguous();
    early.write_all(&publish).await.unwrap();
    let refused = loop {
        assert!(
            early.read_buf(&mut buf).await.unwrap() > 0,
            "closed without an answer"
        );
        session.handle_bytes(&mut buf, &mut events).unwrap();
        if let Some(ClientEvent::Rejected { code, .. }) = events.pop() {
            break code;
        }
    };
    assert_eq!(refused, "NetStream.Publish.BadName");
    assert_eq!(started.elapsed(), Duration::from_secs(3));

    // The valid key from the same address: the same wait, then live.
    let started = Instant::now();
    let (valid, _) = h.publish("live", key.expose()).await;
    assert!(valid.is_ok());
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

/// Counts what the hub hands a subscriber of every publish.
#[derive(Default)]
struct Recorder {
    messages: std::sync::atomic::AtomicUsize,
}

impl streamgate::hub::Subscriber for Recorder {
    fn deliver(
        &self,
        messages: &[streamgate::hub::StreamMessage],
        _: &[bool],
        _: std::time::Instant,
    ) {
        self.messages
            .fetch_add(messages.len(), std::sync::atomic::Ordering::Relaxed);
    }
    fn close(&self) {}
    fn status(&self) -> streamgate::hub::SubscriberStatus {
        streamgate::hub::SubscriberStatus::default()
    }
}

struct Attach(Arc<Recorder>);

impl streamgate::hub::PublishObserver for Attach {
    fn published(&self, stream: &Arc<streamgate::hub::LiveStream>, _: &Channel) {
        stream.attach(self.0.clone());
    }
}

/// Empty media messages carry nothing and are dropped at ingest: they cost no relay
/// queue slot.
#[tokio::test(start_paused = true)]
async fn empty_media_messages_are_dropped_at_ingest() {
    let (h, recorder) = Harness::recording();
    let (ch, _, mut publisher, _task) = h.live("flooded").await;
    for i in 0..1000u32 {
        publisher.send_media(if i % 2 == 0 { 8 } else { 9 }, i, Bytes::new());
    }
    publisher.send_media(9, 1000, video());
    publisher.flush().await.unwrap();
    // The real message arrived: everything before it was interpreted.
    for _ in 0..100 {
        if recorder.messages.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        recorder.messages.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let stats = h.hub.get(&ch.id).unwrap().info().stats;
    assert_eq!(stats.bytes_total, video().len() as u64);
}

// The pump: a publisher on plain TCP is read, parsed and delivered by its ingest
// thread's pump, and goes back to its task for anything else. Real loopback sockets
// and the real clock (the pump waits on a real epoll instance).

/// A pump on the test's runtime, as each ingest thread has one.
fn pump() -> Arc<Pump> {
    let (pump, task) = Pump::start().unwrap();
    tokio::spawn(task);
    pump
}

/// Sends a first frame and waits until the pump holds the connection.
async fn in_the_pump(publisher: &mut Publisher<TcpStream>, pump: &Pump) {
    publisher.send_media(9, 0, video());
    publisher.flush().await.unwrap();
    eventually("in the pump", || pump.len() == 1).await;
}

/// Waits (up to 5 s) until `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_publisher_on_tcp_is_served_by_the_pump_acknowledged_and_ended_by_its_close() {
    let (h, recorder) = Harness::recording();
    let pump = pump();
    let (ch, mut publisher, task) = h.live_tcp("pumped", &pump).await;
    publisher.poll_incoming().await.unwrap();
    // Past the acknowledgement window (2.5 MB): 40 messages of 64 KiB, in ten writes.
    let payload = {
        let mut p = vec![0u8; 64 * 1024];
        p[..video().len()].copy_from_slice(&video());
        Bytes::from(p)
    };
    for i in 0..40u32 {
        publisher.send_media(9, i * 33, payload.clone());
        if i % 4 == 3 {
            publisher.flush().await.unwrap();
        }
    }
    eventually("every message delivered", || {
        recorder.messages.load(std::sync::atomic::Ordering::Relaxed) == 40
    })
    .await;
    assert_eq!(pump.len(), 1, "the publish waits in the pump");
    assert_eq!(
        h.hub.get(&ch.id).unwrap().info().stats.bytes_total,
        40 * 64 * 1024
    );
    // The acknowledgement the session queued was written by the pump.
    tokio::time::timeout(Duration::from_secs(5), publisher.io_mut().readable())
        .await
        .expect("an acknowledgement from the node")
        .unwrap();
    publisher.poll_incoming().await.unwrap();
    assert_eq!(pump.len(), 1, "still in the pump");

    drop(publisher);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection ends with the client's close")
        .unwrap();
    assert!(pump.is_empty());
    assert!(h.hub.live_channels().is_empty());
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
}

#[tokio::test]
async fn an_unpublish_read_by_the_pump_goes_back_to_the_connection() {
    let h = Harness::new(RtmpConfig::default());
    let pump = pump();
    let (ch, mut publisher, task) = h.live_tcp("unpublished", &pump).await;
    in_the_pump(&mut publisher, &pump).await;
    assert_eq!(h.hub.live_channels(), vec![ch.id]);

    // FCUnpublish and deleteStream, the connection kept open.
    let (mut io, mut session, _) = publisher.into_parts();
    session.finish();
    rtmp_io::write_queued(&mut io, session.output(), Duration::from_secs(5))
        .await
        .unwrap();
    eventually("offline after the unpublish", || {
        h.hub.live_channels().is_empty()
    })
    .await;
    assert!(pump.is_empty(), "no publish, nothing in the pump");
    assert!(
        !task.is_finished(),
        "the connection stays, to publish again"
    );
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
    io.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_idle_deadline_and_the_stop_signal_take_a_connection_back_from_the_pump() {
    let idle = Duration::from_millis(300);
    let h = Harness::with_idle(idle);
    let pump = pump();

    // Silent in the pump: closed at the idle deadline.
    let (quiet, mut publisher, task) = h.live_tcp("quiet", &pump).await;
    in_the_pump(&mut publisher, &pump).await;
    let last_sent = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), publisher.closed())
        .await
        .expect("closed by the node");
    assert!(matches!(closed, PublishError::Closed), "{closed:?}");
    let silence = last_sent.elapsed();
    assert!(
        silence >= idle - Duration::from_millis(50) && silence < idle + Duration::from_secs(1),
        "closed after {silence:?} of silence"
    );
    task.await.unwrap();
    assert!(pump.is_empty());
    assert_eq!(h.final_status(&quiet).map(|s| s.0), Some(false));

    // Sending in the pump, ended by the node: closed at once.
    let h = Harness::new(RtmpConfig::default());
    let (busy, mut publisher, task) = h.live_tcp("busy", &pump).await;
    in_the_pump(&mut publisher, &pump).await;
    let ended = std::time::Instant::now();
    h.hub.get(&busy.id).unwrap().end(EndReason::Kicked);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ended at once")
        .unwrap();
    assert!(ended.elapsed() < Duration::from_secs(1));
    assert!(pump.is_empty());
    assert!(h.hub.live_channels().is_empty());
}

#[tokio::test]
async fn malformed_input_read_by_the_pump_closes_only_that_connection() {
    let h = Harness::new(RtmpConfig::default());
    let pump = pump();
    let (_bad_ch, mut bad, bad_task) = h.live_tcp("bad", &pump).await;
    let (good_ch, mut good, good_task) = h.live_tcp("good", &pump).await;
    for p in [&mut bad, &mut good] {
        p.send_media(9, 0, video());
        p.flush().await.unwrap();
    }
    eventually("both in the pump", || pump.len() == 2).await;
    // A chunk of a message on a chunk stream never opened, continuing (fmt 3): a
    // protocol error.
    bad.io_mut().write_all(&[0xc5, 1, 2, 3]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), bad_task)
        .await
        .expect("the malformed connection is closed")
        .unwrap();
    good.send_media(9, 33, video());
    good.flush().await.unwrap();
    good.poll_incoming().await.unwrap();
    assert_eq!(pump.len(), 1);
    assert_eq!(h.hub.live_channels(), vec![good_ch.id]);
    assert!(!good_task.is_finished());
}

#[tokio::test]
async fn a_connection_task_that_ends_takes_its_socket_out_of_the_pump() {
    let h = Harness::new(RtmpConfig::default());
    let pump = pump();
    let (ch, mut publisher, task) = h.live_tcp("aborted", &pump).await;
    in_the_pump(&mut publisher, &pump).await;
    task.abort();
    let _ = task.await;
    assert!(pump.is_empty());
    assert!(h.hub.live_channels().is_empty());
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
    // The socket was closed with it.
    let closed = tokio::time::timeout(Duration::from_secs(5), publisher.closed())
        .await
        .expect("closed");
    assert!(
        matches!(closed, PublishError::Closed | PublishError::Io(_)),
        "{closed:?}"
    );
}

/// The last media and the client's close arrive together: the pump reads the media
/// (less than its room, which otherwise means it read everything) and must still see
/// the end of the stream.
#[tokio::test]
async fn a_close_that_arrives_with_the_last_media_ends_the_connection() {
    let (h, recorder) = Harness::recording();
    let pump = pump();
    let (ch, mut publisher, task) = h.live_tcp("last-words", &pump).await;
    in_the_pump(&mut publisher, &pump).await;
    // No await between the write and the close that lets the pump run.
    publisher.send_media(9, 33, video());
    publisher.flush().await.unwrap();
    publisher.io_mut().shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the connection ends with the client's close")
        .unwrap();
    assert!(pump.is_empty());
    assert_eq!(
        recorder.messages.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "the last media was delivered too"
    );
    assert_eq!(h.final_status(&ch).map(|s| s.0), Some(false));
}

/// A pumped publisher that keeps sending stays in the pump across its idle deadlines
/// (the deadline moves on; the connection is not taken back and given again), and
/// is closed at the deadline once it goes silent.
#[tokio::test]
async fn traffic_keeps_a_pumped_publisher_in_the_pump_past_its_idle_deadlines() {
    let idle = Duration::from_millis(200);
    let h = Harness::with_idle(idle);
    let pump = pump();
    let (ch, mut publisher, task) = h.live_tcp("steady", &pump).await;
    for i in 0..20u32 {
        publisher.send_media(9, i * 50, video());
        publisher.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second after the publish: five idle deadlines went by.
    assert_eq!(pump.taken(), 1, "given to the pump once");
    assert_eq!(pump.len(), 1);
    assert_eq!(h.hub.live_channels(), vec![ch.id]);
    let closed = tokio::time::timeout(Duration::from_secs(5), publisher.closed())
        .await
        .expect("closed once silent");
    assert!(matches!(closed, PublishError::Closed), "{closed:?}");
    task.await.unwrap();
    assert!(pump.is_empty());
}
