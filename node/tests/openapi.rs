//! `docs/openapi.json` held against the node: every route the node serves is in it (and
//! nothing else), and real answers of a node with a live stream, a relay and the admin
//! API validate against the schemas it gives, with unknown fields refused
//! (`additionalProperties: false`), so a field added, renamed or dropped fails here.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use common::*;

const TOKEN: &str = "openapi-admin-token-0123456789";

fn spec() -> serde_json::Value {
    let text = std::fs::read_to_string(common::source::workspace().join("docs/openapi.json"))
        .expect("docs/openapi.json");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// `~` and `/` escaped for a JSON pointer.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Validates `answer` against the schema of `path`/`method`/`status`/`media` in the
/// spec (its `$ref`s resolved within the document); panics with every error.
fn check(
    spec: &serde_json::Value,
    path: &str,
    method: &str,
    status: u16,
    answer: &serde_json::Value,
) {
    let pointer = format!(
        "#/paths/{}/{method}/responses/{status}/content/application~1json/schema",
        escape(path)
    );
    validate(spec, &pointer, answer, &format!("{method} {path} {status}"));
}

fn validate(spec: &serde_json::Value, pointer: &str, answer: &serde_json::Value, what: &str) {
    assert!(
        spec.pointer(&pointer[1..]).is_some(),
        "{what}: the spec has no {pointer}"
    );
    // The whole document as the root schema, pointing at the one to apply: `$ref`s
    // to `#/components/schemas/...` resolve in it; its other keys are not keywords.
    let mut root = spec.clone();
    // (a URI fragment: braces percent-encoded)
    root["$ref"] = pointer.replace('{', "%7B").replace('}', "%7D").into();
    root["$schema"] = "https://json-schema.org/draft/2020-12/schema".into();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match docs/openapi.json:\n{}\n{answer:#}",
        errors.join("\n")
    );
}

fn json_of(answer: (u16, String, Vec<u8>)) -> (u16, serde_json::Value) {
    let (status, head, body) = answer;
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_slice(&body).unwrap())
}

/// Every `.route("...")` of the node's routers, as OpenAPI writes paths.
fn routes_in_the_code() -> Vec<String> {
    let dir = common::source::workspace().join("node/src/http");
    let mut routes = Vec::new();
    for file in ["mod.rs", "admin.rs", "dashboard.rs"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for part in text.split(".route(").skip(1) {
            let part = part.trim_start();
            if let Some(rest) = part.strip_prefix('"') {
                routes.push(rest[..rest.find('"').unwrap()].to_string());
            }
        }
    }
    routes.sort();
    routes.dedup();
    routes
}

#[test]
fn every_route_is_described_and_nothing_else() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let mut described: Vec<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    described.sort();
    let routes = routes_in_the_code();
    assert!(routes.len() >= 12, "{routes:?}");
    assert_eq!(
        described, routes,
        "docs/openapi.json's paths against the routers"
    );
}

#[test]
fn real_answers_match_the_description() {
    let spec = spec();
    let dead = free_port();
    let node = Node::start(&format!(
        "[http]\nshow_node = true\n\
         [thumbnails]\ndir = \"thumbs\"\ninterval = \"2s\"\nwidth = 160\n\
         [relay]\ntargets = [\"rtmp://127.0.0.1:{dead}/live/{{channel_id}}\"]\n\
         [admin]\ntoken = \"{TOKEN}\"\n"
    ));
    // A request (with the admin token when `admin`), its JSON answer checked against
    // the description of `route` (the path as docs/openapi.json writes it).
    let ask = |method: &str, route: &str, path: &str, admin: bool| {
        let token = if admin {
            format!("Authorization: Bearer {TOKEN}\r\n")
        } else {
            String::new()
        };
        let (status, body) = json_of(node.http_request(node.http_port, method, path, &token));
        check(&spec, route, &method.to_lowercase(), status, &body);
        (status, body)
    };
    // The events, read from before the publish: live, then a thumbnail.
    let mut events = std::net::TcpStream::connect(("127.0.0.1", node.http_port)).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        events,
        "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();

    let (id, key) = node.create_channel("described");
    // Not live yet: the documented 404s.
    let health = format!("/api/v1/streams/{id}/health");
    let kick = format!("/admin/v1/channels/{id}/kick");
    let (status, _) = ask("GET", "/api/v1/streams/{channel_id}/health", &health, false);
    assert_eq!(status, 404);
    let (status, _) = ask("POST", "/admin/v1/channels/{id}/kick", &kick, true);
    assert_eq!(status, 404);

    let mut ff = ffmpeg_publish_with(&node.publish_url(&key), &["-bf", "2", "-g", "60"], None, 40);
    wait_for(Duration::from_secs(20), || {
        node.stream(&id)
            .filter(|s| !s["thumbnail_updated_at"].is_null() && !s["health"].is_null())
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("no thumbnail or health:\n{}", node.transcript.text()));
    // Measured: the frame rate needs a few seconds of stream.
    wait_for(Duration::from_secs(15), || {
        let (_, body) = json_of(node.http_get(&format!("/api/v1/streams/{id}/health")));
        body["measures"]["fps"].is_number().then_some(())
    })
    .expect("a measured frame rate");

    ask("GET", "/healthz", "/healthz", false);
    let (_, body) = ask("GET", "/api/v1/streams", "/api/v1/streams", false);
    assert_eq!(body["streams"].as_array().unwrap().len(), 1);
    assert!(!body["streams"][0]["relays"].as_array().unwrap().is_empty());
    let (status, body) = ask("GET", "/api/v1/streams/{channel_id}/health", &health, false);
    assert_eq!(status, 200);
    assert!(body["measures"]["fps"].is_number(), "{body}");
    let sessions = "/admin/v1/sessions";
    let (_, body) = ask("GET", sessions, sessions, true);
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    ask("GET", "/admin/v1/fleet", "/admin/v1/fleet", true);
    assert_eq!(ask("GET", sessions, sessions, false).0, 401);
    let forever = format!("{kick}?refuse_for=forever");
    assert_eq!(
        ask("POST", "/admin/v1/channels/{id}/kick", &forever, true).0,
        400
    );
    let unknown = format!("/thumbs/{}.jpg", "0".repeat(32));
    assert_eq!(ask("GET", "/thumbs/{name}", &unknown, false).0, 404);
    // The thumbnail and the other media types the document names.
    for (path, media) in [
        (body_path(&node, &id), "image/jpeg"),
        ("/metrics".to_string(), "text/plain"),
        ("/dashboard".to_string(), "text/html"),
        ("/dashboard/app.js".to_string(), "text/javascript"),
        ("/dashboard/style.css".to_string(), "text/css"),
    ] {
        let (status, head, _) = node.http_get(&path);
        assert_eq!(status, 200, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {media}")),
            "{path}: {head}"
        );
        let spec_path = if path.starts_with("/thumbs/") {
            "/thumbs/{name}"
        } else {
            &path
        };
        assert!(
            spec.pointer(&format!(
                "/paths/{}/get/responses/200/content/{}",
                escape(spec_path),
                escape(media)
            ))
            .is_some(),
            "{path} answers {media}, which docs/openapi.json does not say"
        );
    }

    let minute = format!("{kick}?refuse_for=60s");
    let (status, body) = ask("POST", "/admin/v1/channels/{id}/kick", &minute, true);
    assert_eq!(status, 200);
    assert_eq!(body["kicked"], true);

    // Every event seen on the stream: live, thumbnail, health (B-frames), offline.
    let mut seen = std::collections::BTreeSet::new();
    let mut reader = BufReader::new(events);
    let mut line = String::new();
    let schema = "#/paths/~1api~1v1~1events/get/responses/200/content/text~1event-stream/schema";
    while seen.len() < 4 {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let event: serde_json::Value = serde_json::from_str(data.trim()).unwrap();
            validate(&spec, schema, &event, &format!("event {}", event["type"]));
            seen.insert(event["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["health", "live", "offline", "thumbnail"]
    );
    let _ = ff.child.kill();
    node.assert_never_printed(&key);
}

fn body_path(node: &Node, id: &str) -> String {
    node.stream(id).unwrap()["thumbnail_url"]
        .as_str()
        .unwrap()
        .to_string()
}
