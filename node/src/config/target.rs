//! Relay targets: URL templates such as `rtmp://origin:1935/live/{channel_id}` rendered
//! per channel (`{channel_id}`, `{thumb_id}`, `{name}`), split into what an RTMP client
//! needs (host, port, TLS, app, tcUrl, stream name), and shown redacted (no userinfo,
//! no query) wherever they are displayed. A template is checked when it is parsed
//! (config load, `channel set-relay-targets`), so a [`TargetTemplate`] always renders
//! to a usable URL shape.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Placeholders a template may use.
pub const PLACEHOLDERS: [&str; 3] = ["{channel_id}", "{thumb_id}", "{name}"];

/// Why a relay URL is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must start with rtmp:// or rtmps://")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("has an invalid port")]
    Port,
    #[error("needs an application and a stream name, like rtmp://host/live/{{channel_id}}")]
    Path,
    #[error("uses an unknown placeholder {0} (known: {{channel_id}}, {{thumb_id}}, {{name}})")]
    Placeholder(String),
}

/// A parsed, rendered relay URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Application (first path segment).
    pub app: String,
    /// Stream name (rest of the path, with any query string).
    pub stream: String,
}

impl RelayUrl {
    pub fn parse(url: &str) -> Result<RelayUrl, TargetError> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else {
            return Err(TargetError::Scheme);
        };
        let (authority, path) = rest.split_once('/').ok_or(TargetError::Path)?;
        // Userinfo is not an RTMP concept; drop it rather than send it anywhere.
        let hostport = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| TargetError::Port)?,
            ),
            _ => (hostport.to_string(), if tls { 443 } else { 1935 }),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(TargetError::NoHost);
        }
        let (app, stream) = path.split_once('/').ok_or(TargetError::Path)?;
        if app.is_empty() || stream.is_empty() || stream.starts_with('?') {
            return Err(TargetError::Path);
        }
        Ok(RelayUrl {
            tls,
            host,
            port,
            app: app.to_string(),
            stream: stream.to_string(),
        })
    }

    /// The tcUrl sent in connect: `rtmp://host:port/app`.
    pub fn tc_url(&self) -> String {
        format!(
            "{}://{}:{}/{}",
            self.scheme(),
            self.host_for_url(),
            self.port,
            self.app
        )
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "rtmps"
        } else {
            "rtmp"
        }
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The URL without userinfo and query: safe to show in the API and logs.
    pub fn redacted(&self) -> String {
        let stream = self.stream.split('?').next().unwrap_or_default();
        format!("{}/{stream}", self.tc_url())
    }
}

impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({})", self.redacted())
    }
}

/// A configured target template.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetTemplate(String);

impl fmt::Debug for TargetTemplate {
    /// Redacted: no userinfo, no query, literal stream path segments masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetTemplate({:?})", self.redacted())
    }
}

/// Values substituted into a template.
pub struct TemplateValues<'a> {
    pub channel_id: &'a str,
    pub thumb_id: &'a str,
    pub name: &'a str,
}

impl TargetTemplate {
    /// Checks the template by rendering it with sample values.
    pub fn new(template: &str) -> Result<TargetTemplate, TargetError> {
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map(|e| start + e + 1)
                .unwrap_or(rest.len());
            let ph = &rest[start..end];
            if !PLACEHOLDERS.contains(&ph) {
                return Err(TargetError::Placeholder(ph.to_string()));
            }
            rest = &rest[end..];
        }
        let t = TargetTemplate(template.to_string());
        RelayUrl::parse(&t.render_raw(&TemplateValues {
            channel_id: "00000000-0000-0000-0000-000000000000",
            thumb_id: "0",
            name: "n",
        }))?;
        Ok(t)
    }

    fn render_raw(&self, v: &TemplateValues<'_>) -> String {
        self.0
            .replace("{channel_id}", v.channel_id)
            .replace("{thumb_id}", v.thumb_id)
            .replace("{name}", &url_escape(v.name))
    }

    pub fn render(&self, v: &TemplateValues<'_>) -> Result<RelayUrl, TargetError> {
        RelayUrl::parse(&self.render_raw(v))
    }

    /// The stream path after the application, each segment shown through `show` when
    /// it is made of placeholders only, and as `***` when it has literal text (which
    /// may be a third party's stream key).
    fn masked_stream_path(&self, show: impl Fn(&str) -> String) -> String {
        let without_query = self.0.split('?').next().unwrap_or_default();
        let path = without_query
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|(_, path)| path.split_once('/'))
            .map_or("", |(_app, stream)| stream);
        path.split('/')
            .map(|segment| {
                let literal = PLACEHOLDERS
                    .iter()
                    .fold(segment.to_string(), |rest, ph| rest.replace(ph, ""));
                if literal.is_empty() {
                    show(segment)
                } else {
                    "***".to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// What the API shows of a target rendered for one channel: scheme, host, port,
    /// application and the placeholder values; literal path segments are `***`.
    pub fn public_url(&self, v: &TemplateValues<'_>) -> Result<String, TargetError> {
        let url = self.render(v)?;
        let path =
            self.masked_stream_path(|segment| TargetTemplate(segment.to_string()).render_raw(v));
        Ok(format!("{}/{path}", url.tc_url()))
    }

    /// The template as it may be printed (`check-config`, `Debug`): no userinfo, no
    /// query, placeholders kept, literal stream path segments `***`.
    pub fn redacted(&self) -> String {
        let sample = TemplateValues {
            channel_id: "{channel_id}",
            thumb_id: "{thumb_id}",
            name: "{name}",
        };
        let tc_url = RelayUrl::parse(&self.render_raw(&sample))
            .map(|u| u.tc_url())
            .unwrap_or_else(|_| "rtmp://?".into());
        format!("{tc_url}/{}", self.masked_stream_path(str::to_string))
    }
}

impl Serialize for TargetTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TargetTemplate {
    /// The error says why the template is unusable, never the URL (its query may hold
    /// a token).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TargetTemplate::new(&s).map_err(|e| serde::de::Error::custom(format!("relay target {e}")))
    }
}

/// Percent-escapes what may not stand in a path segment (channel names are free text).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let t = TargetTemplate::new("rtmp://origin.example/live/{channel_id}").unwrap();
        let u = t
            .render(&TemplateValues {
                channel_id: "abc",
                thumb_id: "def",
                name: "My Show",
            })
            .unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.app.as_str(), u.stream.as_str()),
            ("origin.example", 1935, "live", "abc")
        );
        assert_eq!(u.tc_url(), "rtmp://origin.example:1935/live");
        let u = TargetTemplate::new("rtmps://user:pw@cdn:8443/app/{name}_{thumb_id}?token=s3cret")
            .unwrap()
            .render(&TemplateValues {
                channel_id: "abc",
                thumb_id: "def",
                name: "My Show",
            })
            .unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 8443);
        assert_eq!(u.stream, "My%20Show_def?token=s3cret");
        assert_eq!(u.redacted(), "rtmps://cdn:8443/app/My%20Show_def");
        assert!(!format!("{u:?}").contains("s3cret") && !u.redacted().contains("pw"));
        assert_eq!(RelayUrl::parse("rtmps://h/a/b").unwrap().port, 443);
        assert_eq!(
            RelayUrl::parse("rtmp://[::1]:1936/a/b").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert_eq!(
            TargetTemplate::new("http://x/live/{channel_id}"),
            Err(TargetError::Scheme)
        );
        assert_eq!(
            TargetTemplate::new("rtmp://x/{channel_id}"),
            Err(TargetError::Path)
        );
        assert_eq!(
            TargetTemplate::new("rtmp://x:99999/a/{channel_id}"),
            Err(TargetError::Port)
        );
        assert_eq!(
            TargetTemplate::new("rtmp://x/a/{key}"),
            Err(TargetError::Placeholder("{key}".into()))
        );
    }

    #[test]
    fn literal_path_segments_are_masked_wherever_a_target_is_shown() {
        let v = TemplateValues {
            channel_id: "abc",
            thumb_id: "def",
            name: "My Show",
        };
        let t =
            TargetTemplate::new("rtmp://user:pw@a.rtmp.youtube.com/live2/xxxx-3rd-party-key?x=1")
                .unwrap();
        assert_eq!(
            t.public_url(&v).unwrap(),
            "rtmp://a.rtmp.youtube.com:1935/live2/***"
        );
        assert_eq!(t.redacted(), "rtmp://a.rtmp.youtube.com:1935/live2/***");
        assert!(!format!("{t:?}").contains("3rd-party") && !format!("{t:?}").contains("pw"));
        let t = TargetTemplate::new(
            "rtmps://cdn:8443/app/{channel_id}/{name}_{thumb_id}/k3y-{channel_id}",
        )
        .unwrap();
        assert_eq!(
            t.public_url(&v).unwrap(),
            "rtmps://cdn:8443/app/abc/***/***"
        );
        assert_eq!(t.redacted(), "rtmps://cdn:8443/app/{channel_id}/***/***");
        let t = TargetTemplate::new("rtmp://origin/live/{channel_id}").unwrap();
        assert_eq!(t.public_url(&v).unwrap(), "rtmp://origin:1935/live/abc");
    }
}
