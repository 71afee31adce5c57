//! A TCP forwarder that can be switched to swallow everything, as a middlebox that lost
//! its connection state (or a stuck pooler, a proxy in front of a dead server) does:
//! connections are still accepted, but no byte gets through either way, and no
//! connection ever closes. Connections that lived through a swallowing spell stay dead
//! after it ends; only new ones get through again.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Middlebox {
    pub port: u16,
    swallowing: Arc<AtomicBool>,
    /// The "dead" flag of every connection made so far.
    connections: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    /// Sockets of dead connections, kept open (a dead path does not close) until drop.
    graveyard: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Middlebox {
    /// Forwards 127.0.0.1:`port` to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Middlebox {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallowing = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let graveyard: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (sw, conns, stopped) = (swallowing.clone(), connections.clone(), stop.clone());
        let graves = graveyard.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let dead = Arc::new(AtomicBool::new(sw.load(Ordering::SeqCst)));
                conns.lock().unwrap().push(dead.clone());
                let upstream = if dead.load(Ordering::SeqCst) {
                    None
                } else {
                    TcpStream::connect(("127.0.0.1", to)).ok()
                };
                match upstream {
                    Some(upstream) => {
                        for (from, into) in [
                            (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                            (upstream, client),
                        ] {
                            let (dead, graves) = (dead.clone(), graves.clone());
                            std::thread::spawn(move || pump(from, Some(into), &dead, &graves));
                        }
                    }
                    // Accepted, and then nothing: what it sends is read and dropped.
                    None => {
                        graves.lock().unwrap().push(client.try_clone().unwrap());
                        let graves = graves.clone();
                        std::thread::spawn(move || pump(client, None, &dead, &graves));
                    }
                }
            }
        });
        Middlebox {
            port,
            swallowing,
            connections,
            graveyard,
            stop,
        }
    }

    /// From now on nothing gets through, on the open connections (for good) and on new
    /// ones (while it lasts).
    pub fn swallow(&self) {
        self.swallowing.store(true, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().iter() {
            c.store(true, Ordering::SeqCst);
        }
    }

    /// New connections get through again; the ones that saw the swallowing stay dead.
    pub fn forward(&self) {
        self.swallowing.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` into `into` until either ends; once `dead`, reads and drops, and
/// never passes a close on (a dead path does not say so): `into` is kept open.
fn pump(
    mut from: TcpStream,
    mut into: Option<TcpStream>,
    dead: &AtomicBool,
    graveyard: &Mutex<Vec<TcpStream>>,
) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dead.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(into) = into.as_mut() {
            if into.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
    if let Some(into) = into {
        if dead.load(Ordering::SeqCst) {
            graveyard.lock().unwrap().push(into);
        } else {
            let _ = into.shutdown(std::net::Shutdown::Write);
        }
    }
}

impl Drop for Middlebox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for s in self.graveyard.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
