//! libsrt itself as the SRT caller (`sgbench compare-srt --generator libsrt`): the
//! system's `libsrt.so.1.5` (Debian: `libsrt1.5-openssl`), loaded at run time, so
//! that nothing else in the workspace needs it to build. Each publisher is one libsrt
//! socket in live mode with the key as its stream id; libsrt does the handshake, the
//! ACKs and the retransmissions, this only hands it 1316-byte payloads on time.
//!
//! The only `unsafe` of the crate: calls through the loaded library's symbols.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::SocketAddrV4;
use std::sync::OnceLock;

type Socket = i32;

/// libsrt's `SRT_SOCKOPT` values used here (srtcore/srt.h, 1.5).
const SRTO_SNDSYN: c_int = 1;
const SRTO_STREAMID: c_int = 46;

struct Api {
    _lib: libloading::Library,
    create: unsafe extern "C" fn() -> Socket,
    setflag: unsafe extern "C" fn(Socket, c_int, *const c_void, c_int) -> c_int,
    connect: unsafe extern "C" fn(Socket, *const c_void, c_int) -> c_int,
    sendmsg2: unsafe extern "C" fn(Socket, *const c_char, c_int, *mut c_void) -> c_int,
    close: unsafe extern "C" fn(Socket) -> c_int,
    lasterror: unsafe extern "C" fn() -> *const c_char,
}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

fn api() -> Result<&'static Api, String> {
    API.get_or_init(|| {
        // SAFETY: loading libsrt runs its initialisers, which only set up its own
        // state; the symbols are looked up with the C signatures of srt.h 1.5
        // (SRTSOCKET is int32_t), and the library is kept loaded for the process's life
        // (the `Api` is in a static).
        unsafe {
            let lib = libloading::Library::new("libsrt.so.1.5")
                .or_else(|_| libloading::Library::new("libsrt-gnutls.so.1.5"))
                .map_err(|e| format!("libsrt.so.1.5 (apt-get install libsrt1.5-openssl): {e}"))?;
            let startup: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"srt_startup").map_err(|e| e.to_string())?;
            startup();
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get($name).map_err(|e| e.to_string())?
                };
            }
            Ok(Api {
                create: sym!(b"srt_create_socket"),
                setflag: sym!(b"srt_setsockflag"),
                connect: sym!(b"srt_connect"),
                sendmsg2: sym!(b"srt_sendmsg2"),
                close: sym!(b"srt_close"),
                lasterror: sym!(b"srt_getlasterror_str"),
                _lib: lib,
            })
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn last_error(api: &Api) -> String {
    // SAFETY: srt_getlasterror_str returns a NUL-terminated string owned by libsrt
    // (thread-local), valid until the next libsrt call on this thread; it is copied
    // at once.
    unsafe { CStr::from_ptr((api.lasterror)()) }
        .to_string_lossy()
        .into_owned()
}

/// `struct sockaddr_in`, as libsrt reads it.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: [u8; 2],
    addr: [u8; 4],
    zero: [u8; 8],
}

/// A connected libsrt caller.
pub struct Caller {
    api: &'static Api,
    socket: Socket,
}

impl Caller {
    /// Connects (blocking: run it off the async threads) with `stream_id`, then
    /// makes sending non-blocking.
    pub fn connect(to: SocketAddrV4, stream_id: &str) -> Result<Caller, String> {
        let api = api()?;
        // SAFETY: every call gets a socket libsrt created and pointers to memory that
        // lives across the call, with the lengths of that memory.
        unsafe {
            let socket = (api.create)();
            if socket < 0 {
                return Err(last_error(api));
            }
            let caller = Caller { api, socket };
            if !stream_id.is_empty()
                && (api.setflag)(
                    socket,
                    SRTO_STREAMID,
                    stream_id.as_ptr().cast(),
                    stream_id.len() as c_int,
                ) < 0
            {
                return Err(last_error(api));
            }
            let addr = SockaddrIn {
                family: 2, // AF_INET
                port: to.port().to_be_bytes(),
                addr: to.ip().octets(),
                zero: [0; 8],
            };
            if (api.connect)(
                socket,
                (&addr as *const SockaddrIn).cast(),
                std::mem::size_of::<SockaddrIn>() as c_int,
            ) < 0
            {
                return Err(last_error(api));
            }
            let no: c_int = 0;
            if (api.setflag)(
                socket,
                SRTO_SNDSYN,
                (&no as *const c_int).cast(),
                std::mem::size_of::<c_int>() as c_int,
            ) < 0
            {
                return Err(last_error(api));
            }
            Ok(caller)
        }
    }

    /// Hands libsrt one payload (at most 1316 bytes); false when it refused it.
    pub fn send(&self, payload: &[u8]) -> bool {
        // SAFETY: `payload` is valid for its length during the call; a null message
        // control asks for the defaults.
        unsafe {
            (self.api.sendmsg2)(
                self.socket,
                payload.as_ptr().cast(),
                payload.len() as c_int,
                std::ptr::null_mut(),
            ) >= 0
        }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        // SAFETY: the socket is this caller's and is closed once.
        unsafe {
            (self.api.close)(self.socket);
        }
    }
}
