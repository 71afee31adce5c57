//! The thumbnail worker: a long-lived subprocess of our own binary
//! (`streamgate thumbnail-worker`) that turns one H.264 keyframe (Annex B) into one JPEG
//! per request. A fresh decoder per request: nothing of one channel's stream can reach
//! another's picture. It runs outside the node's process, so a decoder crash on a
//! hostile frame costs one thumbnail, not the node.
//!
//! Protocol on stdin/stdout, all integers big-endian:
//! request  = "SGT1" | u32 body length | u16 max width | u8 quality | Annex-B bytes
//! response = u8 status (0 ok, 1 error) | u32 length | JPEG or UTF-8 error text

use std::io::{Read, Write};

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;

/// Request magic.
pub const MAGIC: &[u8; 4] = b"SGT1";
/// Largest request body accepted (a keyframe of a very high bitrate stream fits).
pub const MAX_REQUEST: usize = 32 * 1024 * 1024;
/// Bytes of the request header after the magic and length: width and quality.
pub const REQUEST_PARAMS: usize = 3;

/// A picture in planar YUV 4:2:0.
struct Planes {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
}

/// Area-average downscale of one plane: source rows are summed into per-column
/// accumulators, then each output pixel sums its columns. O(source pixels), no
/// per-pixel iterator chains.
fn downscale_plane(
    src: &[u8],
    stride: usize,
    sw: usize,
    sh: usize,
    tw: usize,
    th: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; tw * th];
    let mut acc = vec![0u32; sw];
    // Column range of each output pixel, computed once.
    let cols: Vec<(usize, usize)> = (0..tw)
        .map(|ox| {
            let x0 = ox * sw / tw;
            (x0, ((ox + 1) * sw / tw).max(x0 + 1).min(sw))
        })
        .collect();
    for oy in 0..th {
        let y0 = oy * sh / th;
        let y1 = ((oy + 1) * sh / th).max(y0 + 1).min(sh);
        acc.iter_mut().for_each(|a| *a = 0);
        for y in y0..y1 {
            let row = &src[y * stride..y * stride + sw];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as u32;
            }
        }
        let rows = (y1 - y0) as u32;
        let out_row = &mut out[oy * tw..(oy + 1) * tw];
        for (o, &(x0, x1)) in out_row.iter_mut().zip(&cols) {
            let sum: u32 = acc[x0..x1].iter().sum();
            *o = (sum / (rows * (x1 - x0) as u32)) as u8;
        }
    }
    out
}

/// Output size: at most `max_width` wide, never upscaled, aspect kept, even sizes.
pub fn target_size(width: usize, height: usize, max_width: usize) -> (usize, usize) {
    let tw = width.min(max_width.max(2)) & !1;
    let th = ((height * tw + width / 2) / width.max(1)).max(2) & !1;
    (tw.max(2), th)
}

fn scale(yuv: &impl YUVSource, max_width: usize) -> Planes {
    let (w, h) = yuv.dimensions();
    let (ys, us, vs) = yuv.strides();
    let (tw, th) = target_size(w, h, max_width);
    Planes {
        width: tw,
        height: th,
        y: downscale_plane(yuv.y(), ys, w, h, tw, th),
        u: downscale_plane(yuv.u(), us, w.div_ceil(2), h.div_ceil(2), tw / 2, th / 2),
        v: downscale_plane(yuv.v(), vs, w.div_ceil(2), h.div_ceil(2), tw / 2, th / 2),
    }
}

/// Encodes limited-range (video) YUV as a full-range (JFIF) JPEG.
fn encode_jpeg(p: &Planes, quality: u8) -> Result<Vec<u8>, String> {
    let mut full_y = [0u8; 256];
    let mut full_c = [0u8; 256];
    for v in 0..256usize {
        full_y[v] = ((v.saturating_sub(16) * 255 + 109) / 219).min(255) as u8;
        full_c[v] = (((v as i32 - 128) * 255 / 224) + 128).clamp(0, 255) as u8;
    }
    let (cw, ch) = (p.width / 2, p.height / 2);
    let mut data = vec![0u8; p.width * p.height * 3];
    for (row, out) in data.chunks_exact_mut(p.width * 3).enumerate() {
        let y = &p.y[row * p.width..(row + 1) * p.width];
        let crow = (row / 2).min(ch - 1) * cw;
        let (u, v) = (&p.u[crow..crow + cw], &p.v[crow..crow + cw]);
        for (col, px) in out.chunks_exact_mut(3).enumerate() {
            let c = (col / 2).min(cw - 1);
            px[0] = full_y[y[col] as usize];
            px[1] = full_c[u[c] as usize];
            px[2] = full_c[v[c] as usize];
        }
    }
    let mut out = Vec::with_capacity(32 * 1024);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(SamplingFactor::F_2_2);
    enc.encode(&data, p.width as u16, p.height as u16, ColorType::Ycbcr)
        .map_err(|e| format!("JPEG encoding failed: {e}"))?;
    Ok(out)
}

/// One keyframe (Annex B with its parameter sets) to one JPEG.
pub fn h264_keyframe_to_jpeg(
    annexb: &[u8],
    max_width: usize,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let mut decoder = Decoder::new().map_err(|e| format!("decoder init: {e}"))?;
    let mut picture = None;
    for nal in openh264::nal_units(annexb) {
        match decoder.decode(nal) {
            Ok(Some(yuv)) => picture = Some(scale(&yuv, max_width)),
            Ok(None) => {}
            Err(e) => return Err(format!("H.264 decoding failed: {e}")),
        }
    }
    let picture = picture.ok_or("no picture in the keyframe")?;
    encode_jpeg(&picture, quality)
}

/// The worker's main loop; returns when the node closes stdin.
pub fn run() -> std::io::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    loop {
        let mut head = [0u8; 8];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if &head[..4] != MAGIC || !(REQUEST_PARAMS..=MAX_REQUEST).contains(&len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "bad thumbnail request",
            ));
        }
        let mut body = vec![0u8; len];
        input.read_exact(&mut body)?;
        let width = u16::from_be_bytes([body[0], body[1]]) as usize;
        let quality = body[2];
        let (status, payload) = match h264_keyframe_to_jpeg(&body[REQUEST_PARAMS..], width, quality)
        {
            Ok(jpeg) => (0u8, jpeg),
            Err(e) => (1u8, e.into_bytes()),
        };
        output.write_all(&[status])?;
        output.write_all(&(payload.len() as u32).to_be_bytes())?;
        output.write_all(&payload)?;
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_sizes_keep_aspect_and_never_upscale() {
        assert_eq!(target_size(1280, 720, 640), (640, 360));
        assert_eq!(target_size(1920, 1080, 640), (640, 360));
        assert_eq!(target_size(320, 240, 640), (320, 240));
        assert_eq!(target_size(1366, 768, 640), (640, 360));
        assert_eq!(target_size(400, 400, 320), (320, 320));
    }

    #[test]
    fn downscale_averages_areas() {
        let src = [0u8, 100, 200, 50, 10, 90, 210, 70];
        // 4x2 -> 2x1: averages of 2x2 blocks.
        assert_eq!(downscale_plane(&src, 4, 4, 2, 2, 1), vec![50, 132]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(h264_keyframe_to_jpeg(&[0, 0, 0, 1, 0x65, 1, 2, 3], 640, 80).is_err());
        assert!(h264_keyframe_to_jpeg(&[], 640, 80).is_err());
    }
}
