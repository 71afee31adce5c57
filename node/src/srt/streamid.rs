//! The stream id of an SRT publish: where its key is. Three forms are read, so that
//! every guide's spelling works:
//!
//! - the bare key: `sg_...`;
//! - the RTMP app and key, as many guides write it: `live/sg_...` (a leading `/` is
//!   allowed);
//! - SRT's access-control syntax: `#!::r=live/sg_...,m=publish` (keys in any order;
//!   `r` may also be the bare key; `u`, `h`, `s` and custom keys are ignored).
//!
//! This node only takes publishes: `m=request` (a player) or any mode but `publish`
//! is refused; a missing `m` counts as `publish` (nothing else is served here). The
//! key itself is checked by the authorizer, never here, and never logged.

use ::srt::RejectCode;

use crate::key::StreamKey;

/// Why a stream id names no key this node can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("no stream id (the key goes in it: streamid=<stream key>)")]
    Missing,
    #[error("stream id without a key")]
    NoKey,
    #[error("the app in the stream id is not this node's (rtmp.app)")]
    UnknownApp,
    #[error("mode {0:?} in the stream id: this node only takes publishes (m=publish)")]
    Mode(String),
    #[error("type {0:?} in the stream id: this node only takes streams")]
    Type(String),
    #[error(
        "unsupported stream id syntax (use the key, live/<key> or #!::r=live/<key>,m=publish)"
    )]
    Syntax,
}

impl StreamIdError {
    /// The rejection code the publisher is sent.
    pub fn code(&self) -> RejectCode {
        match self {
            StreamIdError::Missing | StreamIdError::NoKey | StreamIdError::Syntax => {
                RejectCode::BAD_REQUEST
            }
            StreamIdError::UnknownApp => RejectCode::NOT_FOUND,
            StreamIdError::Mode(_) => RejectCode::BAD_MODE,
            StreamIdError::Type(_) => RejectCode(1415),
        }
    }

    /// For logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StreamIdError::Missing => "no_stream_id",
            StreamIdError::NoKey => "no_key",
            StreamIdError::UnknownApp => "unknown_app",
            StreamIdError::Mode(_) => "not_publish",
            StreamIdError::Type(_) => "not_stream",
            StreamIdError::Syntax => "stream_id_syntax",
        }
    }
}

/// The key a stream id carries, for `app`.
pub fn key_of(stream_id: Option<&str>, app: &str) -> Result<StreamKey, StreamIdError> {
    let id = stream_id.map(str::trim).filter(|s| !s.is_empty());
    let Some(id) = id else {
        return Err(StreamIdError::Missing);
    };
    let resource = match id.strip_prefix("#!") {
        Some(rest) => {
            let Some(pairs) = rest.strip_prefix("::") else {
                return Err(StreamIdError::Syntax);
            };
            let (mut resource, mut mode, mut kind) = (None, None, None);
            for pair in pairs.split(',') {
                let (k, v) = pair.split_once('=').ok_or(StreamIdError::Syntax)?;
                match k.trim() {
                    "r" => resource = Some(v.trim()),
                    "m" => mode = Some(v.trim()),
                    "t" => kind = Some(v.trim()),
                    _ => {}
                }
            }
            if let Some(m) = mode.filter(|m| *m != "publish") {
                return Err(StreamIdError::Mode(clip(m)));
            }
            if let Some(t) = kind.filter(|t| *t != "stream") {
                return Err(StreamIdError::Type(clip(t)));
            }
            resource.ok_or(StreamIdError::NoKey)?
        }
        None => id,
    };
    let resource = resource.strip_prefix('/').unwrap_or(resource);
    let key = match resource.split_once('/') {
        Some((a, key)) if a == app => key,
        Some(_) => return Err(StreamIdError::UnknownApp),
        None => resource,
    };
    if key.is_empty() || key.contains('/') {
        return Err(StreamIdError::NoKey);
    }
    Ok(StreamKey::new(key))
}

/// A mode or type to quote in a log line: one of the words the syntax defines, or
/// `"other"` (whatever else a caller wrote there could be a key).
fn clip(s: &str) -> String {
    match s {
        "request" | "publish" | "bidirectional" | "stream" | "file" | "auth" => s.into(),
        _ => "other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Result<String, StreamIdError> {
        key_of(Some(s), "live").map(|k| k.expose().to_string())
    }

    #[test]
    fn every_form_gives_the_key() {
        for form in [
            "sg_abc",
            "live/sg_abc",
            "/live/sg_abc",
            " live/sg_abc ",
            "#!::r=live/sg_abc,m=publish",
            "#!::m=publish,r=live/sg_abc",
            "#!::u=someone,r=live/sg_abc,m=publish,h=example.com",
            "#!::r=sg_abc,m=publish",
            "#!::r=live/sg_abc",
            "#!::r=live/sg_abc,t=stream,m=publish,company_x=1",
        ] {
            assert_eq!(key(form).as_deref(), Ok("sg_abc"), "{form}");
        }
    }

    #[test]
    fn what_is_not_a_publish_of_this_app_is_refused_with_its_code() {
        assert_eq!(key_of(None, "live").unwrap_err(), StreamIdError::Missing);
        assert_eq!(key(""), Err(StreamIdError::Missing));
        assert_eq!(key("other/sg_abc"), Err(StreamIdError::UnknownApp));
        assert_eq!(
            key("other/sg_abc").unwrap_err().code(),
            RejectCode::NOT_FOUND
        );
        let e = key("#!::r=live/sg_abc,m=request").unwrap_err();
        assert_eq!((e.code(), e.label()), (RejectCode::BAD_MODE, "not_publish"));
        assert_eq!(
            key("#!::r=live/x,t=file").unwrap_err().code(),
            RejectCode(1415)
        );
        assert_eq!(key("#!::m=publish"), Err(StreamIdError::NoKey));
        assert_eq!(key("live/"), Err(StreamIdError::NoKey));
        assert_eq!(key("live/a/b"), Err(StreamIdError::NoKey));
        assert_eq!(key("#!{r=x}"), Err(StreamIdError::Syntax));
        assert_eq!(key("#!::r"), Err(StreamIdError::Syntax));
    }

    #[test]
    fn errors_never_carry_the_key() {
        for form in [
            "sg_secret/live",
            "#!::r=live/x,m=sg_secret",
            "#!::r=live/x,t=sg_secret",
            "#!::r=live/sg_secret,m=request",
        ] {
            let e = key(form).unwrap_err();
            assert!(!format!("{e} {e:?}").contains("sg_secret"), "{form}: {e}");
        }
    }
}
