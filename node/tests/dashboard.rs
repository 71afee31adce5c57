//! The operator dashboard in a real browser: Debian's Chromium, headless, driven over
//! WebDriver by chromedriver. A live test stream's card appears with its thumbnail
//! loaded, its figures and its relay state; it goes away when the stream ends; no key
//! reaches the page.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// chromedriver in its own process group, so that the browsers it starts go with it.
struct Driver {
    proc: Proc,
    port: u16,
    profile: TempDir,
}

impl Driver {
    fn start() -> Driver {
        require("chromedriver", "chromium-driver");
        require("chromium", "chromium");
        let port = free_port();
        let proc = Proc::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .process_group(0),
        );
        let up = wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(
            up.is_some(),
            "chromedriver does not listen: {}",
            proc.stderr.lock().unwrap()
        );
        Driver {
            proc,
            port,
            profile: TempDir::new("chromium-profile"),
        }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.0.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no browser session: {e}\n{}",
                    self.proc.stderr.lock().unwrap()
                )
            })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        signal_group(self.proc.child.id(), "KILL");
    }
}

/// Kills a whole process group (chromedriver and every Chromium process it started).
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .status();
}

/// Runs `script` in the page until it returns something other than null.
async fn until(c: &Client, what: &str, timeout: Duration, script: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if !v.is_null() {
            return v;
        }
        if start.elapsed() > timeout {
            let page = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap();
            panic!("{what} not within {timeout:?}; the page shows:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn the_dashboard_shows_a_live_channel_with_its_thumbnail_and_drops_it_when_it_ends() {
    let nginx = Nginx::start(&["live"], None);
    let node = Node::start(&format!(
        "[thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n\
         [relay]\ntargets = [\"rtmp://127.0.0.1:{}/live/{{channel_id}}\"]\n",
        nginx.port
    ));
    let (id, key) = node.create_channel("Studio <b>A</b>");
    let (srt_id, srt_key) = node.create_channel("Field unit");
    let (bf_id, bf_key) = node.create_channel("B-frames");
    let driver = Driver::start();
    let url = format!("http://127.0.0.1:{}/dashboard", node.http_port);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = driver.browser().await;
        c.goto(&url).await.unwrap();
        assert_eq!(c.title().await.unwrap(), "streamgate");
        until(
            &c,
            "the empty state",
            Duration::from_secs(10),
            "const e = document.getElementById('empty'); \
             return e && !e.hidden && e.offsetParent !== null ? e.innerText : null",
        )
        .await;

        let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 60);
        let went_live = Instant::now();
        let card = format!(".card[data-channel-id='{id}']");
        until(
            &c,
            "the card",
            Duration::from_secs(10),
            &format!("return document.querySelector(\"{card}\") ? true : null"),
        )
        .await;
        let appeared = went_live.elapsed();
        eprintln!("card shown {appeared:?} after ffmpeg started");

        // The thumbnail is a real JPEG the browser decoded: 160 wide, 4:3 kept.
        let img = until(
            &c,
            "the thumbnail image",
            Duration::from_secs(20),
            &format!(
                "const i = document.querySelector(\"{card} img\"); \
                 return i && i.complete && i.naturalWidth > 0 && !i.hidden \
                   ? [i.naturalWidth, i.naturalHeight, i.getAttribute('src')] : null"
            ),
        )
        .await;
        assert_eq!((img[0].as_u64(), img[1].as_u64()), (Some(160), Some(120)));
        let src = img[2].as_str().unwrap();
        let thumbnail = node.stream(&id).expect("listed")["thumbnail"].clone();
        assert!(
            src.starts_with(&format!("/thumbs/{}?", thumbnail.as_str().unwrap())),
            "{src}"
        );

        // Name (shown as text, not markup), figures, relay state, a ticking uptime.
        let fields = until(
            &c,
            "the stream's figures and a connected relay",
            Duration::from_secs(15),
            &format!(
                "const c = document.querySelector(\"{card}\"); if (!c) return null; \
                 const t = s => c.querySelector(s).textContent; \
                 const r = c.querySelector('.relays li'); \
                 if (!r || r.dataset.state !== 'connected' || t('.fps') === '–') return null; \
                 return {{ name: t('.name'), bold: c.querySelectorAll('.name b').length, \
                   resolution: t('.resolution'), fps: t('.fps'), bitrate: t('.bitrate'), \
                   codecs: t('.codecs'), relay: r.textContent, uptime: t('.uptime') }}"
            ),
        )
        .await;
        assert_eq!(fields["name"], "Studio <b>A</b>", "{fields}");
        assert_eq!(fields["bold"], 0, "a name is never markup: {fields}");
        assert_eq!(fields["resolution"], "320×240", "{fields}");
        let fps: f64 = fields["fps"].as_str().unwrap().parse().unwrap();
        assert!((25.0..=31.0).contains(&fps), "{fields}");
        assert!(
            fields["bitrate"].as_str().unwrap().ends_with("bit/s"),
            "{fields}"
        );
        assert_eq!(fields["codecs"], "h264 + aac", "{fields}");
        let ingest = c
            .execute(
                &format!(
                    "const c = document.querySelector(\"{card}\"); \
                     return [c.querySelector('.protocol').textContent, c.querySelector('.link').hidden]"
                ),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(ingest, serde_json::json!(["RTMP", true]), "RTMP has no SRT link figures");

        // A second channel over SRT: its card says so and shows the link.
        let mut srt = ffmpeg_srt(
            &srt_url(node.srt_port.unwrap(), &srt_key, ""),
            "libx264",
            "320x240",
            60,
        );
        let link = until(
            &c,
            "the SRT card with its link",
            Duration::from_secs(15),
            &format!(
                "const c = document.querySelector(\".card[data-channel-id='{srt_id}']\"); \
                 if (!c || c.querySelector('.link').hidden) return null; \
                 return [c.querySelector('.protocol').textContent, c.querySelector('.link').textContent]"
            ),
        )
        .await;
        assert_eq!(link[0], "SRT", "{link}");
        assert!(
            link[1].as_str().unwrap().starts_with("RTT ") && link[1].as_str().unwrap().contains("loss 0.0%"),
            "{link}"
        );
        drop(srt.child.kill());

        // Health: the clean stream's badge says good; an encoder with B-frames gets a
        // warning with the reason, and the fix on hover.
        until(
            &c,
            "a good health badge",
            Duration::from_secs(10),
            &format!(
                "const c = document.querySelector(\"{card}\"); \
                 return c && c.querySelector('.health').textContent === 'good' \
                   && c.querySelectorAll('.problems li').length === 0 ? true : null"
            ),
        )
        .await;
        let mut bf = ffmpeg_publish_with(
            &node.publish_url(&bf_key),
            &["-preset", "veryfast", "-bf", "3", "-g", "60"],
            None,
            60,
        );
        let problem = until(
            &c,
            "the B-frames warning on its card",
            Duration::from_secs(20),
            &format!(
                "const c = document.querySelector(\".card[data-channel-id='{bf_id}']\"); \
                 const p = c && c.querySelector('.problems li'); \
                 return p ? [c.querySelector('.health').textContent, p.textContent, p.title] : null"
            ),
        )
        .await;
        assert_eq!(problem[0], "warn", "{problem}");
        assert!(problem[1].as_str().unwrap().starts_with("B-frames on"), "{problem}");
        assert!(problem[2].as_str().unwrap().contains("bframes=0"), "{problem}");
        drop(bf.child.kill());
        let relay = fields["relay"].as_str().unwrap();
        assert!(
            relay.contains(&format!("127.0.0.1:{}/live/{id}", nginx.port))
                && relay.contains("relaying"),
            "{fields}"
        );
        let uptime = |v: &Value| -> u64 {
            let s = v.as_str().unwrap();
            let (m, sec) = s.rsplit_once(':').unwrap();
            m.parse::<u64>().unwrap() * 60 + sec.parse::<u64>().unwrap()
        };
        let first = uptime(&fields["uptime"]);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later = c
            .execute(
                &format!("return document.querySelector(\"{card} .uptime\").textContent"),
                vec![],
            )
            .await
            .unwrap();
        assert!(uptime(&later) >= first + 2, "{first} then {later}");

        // No key anywhere on the page or in what it loaded.
        let source = c.source().await.unwrap();
        let loaded = c
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name).join('\\n')",
                vec![],
            )
            .await
            .unwrap();
        assert!(!source.contains(&key) && !loaded.to_string().contains(&key));
        let (_, _, api) = node.http_get("/api/v1/streams");
        assert!(!String::from_utf8_lossy(&api).contains(&key));

        // The stream ends: the card goes, the empty state comes back.
        drop(ff.child.kill());
        let ended = Instant::now();
        until(
            &c,
            "the card's removal",
            Duration::from_secs(10),
            &format!(
                "return document.querySelector(\"{card}\") === null \
                 && !document.getElementById('empty').hidden ? true : null"
            ),
        )
        .await;
        eprintln!("card removed {:?} after the stream ended", ended.elapsed());
        c.close().await.unwrap();
    });
    node.assert_never_printed(&key);
    node.assert_never_printed(&srt_key);
    node.assert_never_printed(&bf_key);
}

/// A page of another origin (a website) shows the live channels with docs/website.md's
/// snippet: `fetch` of the streams, `EventSource` of the events, the thumbnails; the
/// browser enforces CORS, so this passes only if the node allows that origin.
#[test]
fn a_website_on_another_origin_shows_the_live_channels_with_the_docs_snippet() {
    use std::io::{Read, Write};
    let node = Node::start("[thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n");
    let (id, key) = node.create_channel("On the website");
    let snippet = common::source::doc_code_block(
        "docs/website.md",
        "## Show live channels on your website",
        "```html",
    );
    let node_url = format!("http://127.0.0.1:{}", node.http_port);
    assert!(snippet.contains("\"https://ingest.example.com\""));
    let page = format!(
        "<!doctype html><html><head><title>site</title></head><body>{}</body></html>",
        snippet.replace("https://ingest.example.com", &node_url)
    );
    // The website: another port, so another origin.
    let site = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let site_port = site.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in site.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let driver = Driver::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let c = driver.browser().await;
        c.goto(&format!("http://127.0.0.1:{site_port}/")).await.unwrap();
        let mut ff = ffmpeg_publish(&node.publish_url(&key), "320x240", 30);
        let shown = until(
            &c,
            "the channel with its thumbnail on the website",
            Duration::from_secs(25),
            &format!(
                "const f = document.querySelector(\"figure[data-channel-id='{id}']\"); \
                 const i = f && f.querySelector('img'); \
                 return i && i.complete && i.naturalWidth > 0 \
                   ? [f.querySelector('figcaption').textContent, i.naturalWidth, location.origin] : null"
            ),
        )
        .await;
        assert_eq!(shown[0], "On the website");
        assert_eq!(shown[1], 160);
        assert_ne!(shown[2].as_str().unwrap(), node_url, "the page is on another origin");
        // It goes when the stream ends (the offline event).
        drop(ff.child.kill());
        until(
            &c,
            "the channel gone from the website",
            Duration::from_secs(15),
            &format!("return document.querySelector(\"figure[data-channel-id='{id}']\") ? null : true"),
        )
        .await;
        c.close().await.unwrap();
    });
    node.assert_never_printed(&key);
}
