//! Restarting without downtime: a second instance binds the same ports (SO_REUSEPORT),
//! the first gets SIGTERM, stops accepting at once, lets its live publish go on for the
//! drain time, ends it and exits. Meanwhile no new connection is refused, and the
//! publisher reconnects to the new instance and goes live there.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_restart_refuses_no_connection_and_the_publisher_goes_live_on_the_new_instance() {
    let (rtmp_port, http_port) = (free_port(), free_port());
    let mut old = Node::start(&format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\ndrain_timeout = \"3s\"\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n"
    ));
    let (id, key) = old.create_channel("continuous");
    let stop = Arc::new(AtomicBool::new(false));

    // The publisher: sends a keyframe-shaped message every 200 ms; when its connection
    // is ended, it reconnects at once (as OBS does) and counts its sessions.
    let sessions = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (stop, sessions, key) = (stop.clone(), sessions.clone(), key.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut p) = RawPublisher::publish(rtmp_port, "live", &key) else {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                sessions.fetch_add(1, Ordering::Relaxed);
                let mut ts = 0;
                while !stop.load(Ordering::Relaxed)
                    && p.try_send(9, ts, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])
                {
                    ts += 200;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
    };
    wait_db_live(&old, &id);

    // Probes: a new RTMP handshake and a new HTTP request every 25 ms, all along.
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (stop, failures, attempts) = (stop.clone(), failures.clone(), attempts.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                let rtmp = connect_from([127, 0, 0, 1].into(), rtmp_port)
                    .and_then(|mut s| handshake(&mut s));
                if let Err(e) = rtmp {
                    failures.lock().unwrap().push(format!("RTMP: {e}"));
                }
                let http =
                    std::net::TcpStream::connect(("127.0.0.1", http_port)).and_then(|mut s| {
                        use std::io::{Read, Write};
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.write_all(
                            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        )?;
                        let mut answer = String::new();
                        s.read_to_string(&mut answer)?;
                        if answer.starts_with("HTTP/1.1 200") {
                            Ok(())
                        } else {
                            Err(std::io::Error::other(answer))
                        }
                    });
                if let Err(e) = http {
                    failures.lock().unwrap().push(format!("HTTP: {e}"));
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };

    // The new instance starts on the same ports, while the old one streams.
    let new = old.another_instance();
    assert!(
        new.transcript.contains("another instance is running"),
        "the new instance leaves the old one's channels alone:\n{}",
        new.transcript.text()
    );
    // The old one gets SIGTERM: it stops accepting, drains 3 s, ends the publish.
    let stopping = Instant::now();
    assert!(old.terminate(), "clean exit:\n{}", old.transcript.text());
    assert!(
        stopping.elapsed() >= Duration::from_secs(3),
        "the live publish had its drain time"
    );
    assert!(old.transcript.contains("no longer accepting"));

    // The publisher reconnected, to the new instance, and is live there.
    wait_listed(&new, &id, Duration::from_secs(15));
    wait_db_live(&new, &id);
    assert!(sessions.load(Ordering::Relaxed) >= 2, "it reconnected");
    // Probes went on a while on the new instance alone.
    let until = attempts.load(Ordering::Relaxed) + 20;
    wait_for(Duration::from_secs(10), || {
        (attempts.load(Ordering::Relaxed) >= until).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    prober.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} probes failed during the restart: {failures:?}",
        failures.len(),
        attempts.load(Ordering::Relaxed)
    );
    assert!(
        attempts.load(Ordering::Relaxed) > 100,
        "the probes ran all along"
    );
    old.assert_never_printed(&key);
    new.assert_never_printed(&key);
}
