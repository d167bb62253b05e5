//! The byte layer of the target protocol, with no I/O: command words, payload commands, the
//! 16-byte binary header and server frames, encoded into and decoded from byte buffers.
//!
//! Decoders take the bytes received so far and answer `Ok(None)` when more bytes are needed,
//! `Ok(Some((value, consumed)))` when a whole item is there, and a [`FrameError`] for bytes that
//! cannot be valid. Every length read from the wire is checked against a cap before it is
//! trusted; nothing is allocated from an announced size.
//!
//! ```
//! use taskdist::protocol::frame::{self, Command, ServerMsg, Expect};
//! let mut buf = Vec::new();
//! frame::encode_command(&mut buf, Command::Clear);
//! assert_eq!(buf, [0xE6, 0x0D, 0, 0]);
//!
//! let push = frame::encode_frame_vec(b"<profile></profile>");
//! let (msg, used) = frame::decode_server(&push, Expect::Frames, 1024).unwrap().unwrap();
//! assert_eq!(used, push.len());
//! assert!(matches!(msg, ServerMsg::Frame(doc) if doc.starts_with(b"<profile>")));
//! ```

use std::fmt;

/// Length of the name field of a binary header (name plus NUL padding).
pub const NAME_FIELD_LEN: usize = 16;

/// Default cap on the size of a server frame. A real push holds at most about 100 kB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 * 1024;

/// A protocol word (PROTOCOL.md, "Command words").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// `0x00000DE5`: u32 length and task-set XML follow.
    SendDescs,
    /// `0x00000DE6`: stop and delete all tasks.
    Clear,
    /// `0x0DE5F11E`: u32 count and that many binaries follow.
    SendBinaries,
    /// `0x00000090`: server asks for the next binary.
    GoSend,
    /// `0x00514DE5`: start the loaded task-set.
    Start,
    /// `0x00514DE6`: stop all jobs.
    Stop,
    /// `0x000159D1`: ask for pending profile events.
    GetProfile,
    /// `0x000159D2`: ask for the live document.
    GetLive,
    /// `0x000159D3`: reboot the target (Fiasco.OC only).
    Reboot,
    /// `0x000AAAAA`: liveness probe; v3 servers echo it.
    Available,
    /// `0x006F7074`: u32 length and admission-control XML follow (v1 only).
    Optimize,
}

impl Command {
    /// Every command, in table order.
    pub const ALL: [Command; 11] = [
        Command::SendDescs,
        Command::Clear,
        Command::SendBinaries,
        Command::GoSend,
        Command::Start,
        Command::Stop,
        Command::GetProfile,
        Command::GetLive,
        Command::Reboot,
        Command::Available,
        Command::Optimize,
    ];

    /// The 32-bit word of this command.
    pub const fn word(self) -> u32 {
        match self {
            Command::SendDescs => 0x0000_0DE5,
            Command::Clear => 0x0000_0DE6,
            Command::SendBinaries => 0x0DE5_F11E,
            Command::GoSend => 0x0000_0090,
            Command::Start => 0x0051_4DE5,
            Command::Stop => 0x0051_4DE6,
            Command::GetProfile => 0x0001_59D1,
            Command::GetLive => 0x0001_59D2,
            Command::Reboot => 0x0001_59D3,
            Command::Available => 0x000A_AAAA,
            Command::Optimize => 0x006F_7074,
        }
    }

    /// The command with this word, if any.
    pub fn from_word(word: u32) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.word() == word)
    }

    /// The protocol name, e.g. `SEND_DESCS`.
    pub const fn name(self) -> &'static str {
        match self {
            Command::SendDescs => "SEND_DESCS",
            Command::Clear => "CLEAR",
            Command::SendBinaries => "SEND_BINARIES",
            Command::GoSend => "GO_SEND",
            Command::Start => "START",
            Command::Stop => "STOP",
            Command::GetProfile => "GET_PROFILE",
            Command::GetLive => "GET_LIVE",
            Command::Reboot => "REBOOT",
            Command::Available => "AVAILABLE",
            Command::Optimize => "OPTIMIZE",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes that cannot be a valid part of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A length field announced more bytes than the cap allows.
    #[error("{what} announces {size} bytes, more than the cap of {max} bytes")]
    TooLarge {
        /// What carried the length (frame, SEND_DESCS payload, binary image, ...).
        what: &'static str,
        /// The announced size.
        size: u64,
        /// The cap in force.
        max: usize,
    },
    /// A server frame of size 0 (the server never sends empty documents).
    #[error("empty server frame (size 0); the server never sends empty documents")]
    EmptyFrame,
    /// A binary name that does not fit the 16-byte field or holds a NUL byte.
    #[error("binary name {name:?} must be 1 to 15 bytes without NUL")]
    BadName {
        /// The offending name (lossy UTF-8).
        name: String,
    },
    /// The count of binaries in SEND_BINARIES is above the cap.
    #[error("SEND_BINARIES announces {count} binaries, more than the cap of {max}")]
    TooManyBinaries {
        /// Announced count.
        count: u32,
        /// Cap in force.
        max: u32,
    },
}

/// What a client waits for, which decides how a word from the server is read.
///
/// The protocol does not mark pushes apart from replies: a word is a GO_SEND or an AVAILABLE
/// echo only if the client is waiting for one; otherwise it is the length of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Only frames are expected (after START, or while draining).
    Frames,
    /// A GO_SEND may come; a word `0x90` is taken as GO_SEND unless the bytes already received
    /// right after it begin with `<pro` or `<liv` (which as a length would exceed any cap, so
    /// they prove the `0x90` was a 144-byte frame).
    GoSend,
    /// The AVAILABLE echo may come (v3). `0x000AAAAA` is larger than any accepted frame, so it
    /// is always unambiguous; this mode exists for symmetry and clarity.
    Echo,
    /// Either GO_SEND or the echo may come.
    GoSendOrEcho,
}

/// One item sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// GO_SEND: the server wants the next binary.
    GoSend,
    /// The echo of AVAILABLE.
    AvailableEcho,
    /// A frame: an XML document with its trailing `"\n\0"` (or whatever the server sent).
    Frame(&'a [u8]),
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decode one item from the server. `max_frame` caps the announced frame size.
///
/// The AVAILABLE echo is recognised in every mode: its value, 699,050, is far above any
/// sensible frame cap (caps at or above it are lowered to just below it).
pub fn decode_server(
    buf: &[u8],
    expect: Expect,
    max_frame: usize,
) -> Result<Option<(ServerMsg<'_>, usize)>, FrameError> {
    let Some(word) = read_u32(buf, 0) else {
        return Ok(None);
    };
    let max_frame = max_frame.min(Command::Available.word() as usize - 1);
    if word == Command::Available.word() {
        return Ok(Some((ServerMsg::AvailableEcho, 4)));
    }
    if word == Command::GoSend.word() && matches!(expect, Expect::GoSend | Expect::GoSendOrEcho) {
        let next = buf.get(4..8);
        let is_doc = matches!(next, Some(b"<pro") | Some(b"<liv"));
        if !is_doc {
            return Ok(Some((ServerMsg::GoSend, 4)));
        }
    }
    let size = word as usize;
    if size == 0 {
        return Err(FrameError::EmptyFrame);
    }
    if size > max_frame {
        return Err(FrameError::TooLarge {
            what: "server frame",
            size: u64::from(word),
            max: max_frame,
        });
    }
    match buf.get(4..4 + size) {
        Some(doc) => Ok(Some((ServerMsg::Frame(doc), 4 + size))),
        None => Ok(None),
    }
}

/// Append a command word.
pub fn encode_command(out: &mut Vec<u8>, cmd: Command) {
    out.extend_from_slice(&cmd.word().to_le_bytes());
}

/// Append a raw u32 (little-endian).
pub fn encode_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Append a command with a length-prefixed payload (SEND_DESCS, OPTIMIZE).
///
/// Fails if the payload does not fit a u32 length.
pub fn encode_payload(out: &mut Vec<u8>, cmd: Command, payload: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        what: cmd.name(),
        size: payload.len() as u64,
        max: u32::MAX as usize,
    })?;
    encode_command(out, cmd);
    encode_u32(out, len);
    out.extend_from_slice(payload);
    Ok(())
}

/// Append SEND_DESCS with the task-set XML.
pub fn encode_send_descs(out: &mut Vec<u8>, xml: &[u8]) -> Result<(), FrameError> {
    encode_payload(out, Command::SendDescs, xml)
}

/// Append OPTIMIZE with the admission-control XML (v1 only).
pub fn encode_optimize(out: &mut Vec<u8>, xml: &[u8]) -> Result<(), FrameError> {
    encode_payload(out, Command::Optimize, xml)
}

/// Append the SEND_BINARIES word and the count of binaries that follow.
pub fn encode_send_binaries(out: &mut Vec<u8>, count: u32) {
    encode_command(out, Command::SendBinaries);
    encode_u32(out, count);
}

/// Check a binary name for the 16-byte field: 1..=15 bytes, no NUL.
pub fn check_name(name: &str) -> Result<(), FrameError> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= NAME_FIELD_LEN || b.contains(&0) {
        return Err(FrameError::BadName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Append one binary: the 16-byte NUL-padded name, the u32 size and the image.
pub fn encode_binary(out: &mut Vec<u8>, name: &str, image: &[u8]) -> Result<(), FrameError> {
    check_name(name)?;
    let size = u32::try_from(image.len()).map_err(|_| FrameError::TooLarge {
        what: "binary image",
        size: image.len() as u64,
        max: u32::MAX as usize,
    })?;
    let mut field = [0u8; NAME_FIELD_LEN];
    field[..name.len()].copy_from_slice(name.as_bytes());
    out.extend_from_slice(&field);
    encode_u32(out, size);
    out.extend_from_slice(image);
    Ok(())
}

/// Append a server frame holding `doc`. A `"\n\0"` ending is added unless `doc` already ends in
/// a NUL; the size covers everything after the size field.
pub fn encode_frame(out: &mut Vec<u8>, doc: &[u8]) {
    let tail: &[u8] = match doc.last() {
        Some(0) => b"",
        Some(b'\n') => b"\0",
        _ => b"\n\0",
    };
    encode_u32(out, (doc.len() + tail.len()) as u32);
    out.extend_from_slice(doc);
    out.extend_from_slice(tail);
}

/// [`encode_frame`] into a new vector.
pub fn encode_frame_vec(doc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(doc.len() + 6);
    encode_frame(&mut v, doc);
    v
}

/// One item sent by the client, as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// A command without payload (CLEAR, START, STOP, GET_PROFILE, GET_LIVE, REBOOT, AVAILABLE,
    /// and GO_SEND if a confused client sends it).
    Plain(Command),
    /// SEND_DESCS with its XML payload.
    SendDescs(&'a [u8]),
    /// OPTIMIZE with its XML payload.
    Optimize(&'a [u8]),
    /// SEND_BINARIES with the announced count; the binaries follow, one per GO_SEND.
    SendBinaries(u32),
    /// A word that is no command; the real server logs it and reads the next word.
    Unknown(u32),
}

/// Decode one client command. `max_payload` caps SEND_DESCS/OPTIMIZE payloads and
/// `max_binaries` the SEND_BINARIES count.
pub fn decode_client(
    buf: &[u8],
    max_payload: usize,
    max_binaries: u32,
) -> Result<Option<(ClientMsg<'_>, usize)>, FrameError> {
    let Some(word) = read_u32(buf, 0) else {
        return Ok(None);
    };
    let Some(cmd) = Command::from_word(word) else {
        return Ok(Some((ClientMsg::Unknown(word), 4)));
    };
    match cmd {
        Command::SendDescs | Command::Optimize => {
            let Some(len) = read_u32(buf, 4) else {
                return Ok(None);
            };
            if len as usize > max_payload {
                return Err(FrameError::TooLarge {
                    what: cmd.name(),
                    size: u64::from(len),
                    max: max_payload,
                });
            }
            let end = 8 + len as usize;
            let Some(payload) = buf.get(8..end) else {
                return Ok(None);
            };
            let msg = if cmd == Command::SendDescs {
                ClientMsg::SendDescs(payload)
            } else {
                ClientMsg::Optimize(payload)
            };
            Ok(Some((msg, end)))
        }
        Command::SendBinaries => {
            let Some(n) = read_u32(buf, 4) else {
                return Ok(None);
            };
            if n > max_binaries {
                return Err(FrameError::TooManyBinaries {
                    count: n,
                    max: max_binaries,
                });
            }
            Ok(Some((ClientMsg::SendBinaries(n), 8)))
        }
        other => Ok(Some((ClientMsg::Plain(other), 4))),
    }
}

/// One binary as a server reads it after GO_SEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryMsg<'a> {
    /// The name up to the first NUL (the real server reads it as a C string).
    pub name: &'a [u8],
    /// The image.
    pub image: &'a [u8],
}

/// Decode one binary (16-byte name, u32 size, image). `max_image` caps the image size.
pub fn decode_binary(
    buf: &[u8],
    max_image: usize,
) -> Result<Option<(BinaryMsg<'_>, usize)>, FrameError> {
    let Some(size) = read_u32(buf, NAME_FIELD_LEN) else {
        return Ok(None);
    };
    if size as usize > max_image {
        return Err(FrameError::TooLarge {
            what: "binary image",
            size: u64::from(size),
            max: max_image,
        });
    }
    let start = NAME_FIELD_LEN + 4;
    let end = start + size as usize;
    let Some(image) = buf.get(start..end) else {
        return Ok(None);
    };
    let field = &buf[..NAME_FIELD_LEN];
    let name_len = field.iter().position(|&b| b == 0).unwrap_or(NAME_FIELD_LEN);
    Ok(Some((
        BinaryMsg {
            name: &field[..name_len],
            image,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for c in Command::ALL {
            assert_eq!(Command::from_word(c.word()), Some(c));
        }
        assert_eq!(Command::from_word(0x1234_5678), None);
    }

    #[test]
    fn need_more_bytes_is_none() {
        let f = encode_frame_vec(b"<profile/>");
        for cut in 0..f.len() {
            assert_eq!(decode_server(&f[..cut], Expect::Frames, 1000), Ok(None));
        }
    }

    #[test]
    fn go_send_vs_144_byte_frame() {
        let mut doc = b"<profile>".to_vec();
        doc.resize(142, b' ');
        let f = encode_frame_vec(&doc);
        assert_eq!(&f[..4], &[0x90, 0, 0, 0]);
        let (m, _) = decode_server(&f, Expect::GoSend, 1000).unwrap().unwrap();
        assert!(matches!(m, ServerMsg::Frame(_)));
        let (m, n) = decode_server(&f[..4], Expect::GoSend, 1000)
            .unwrap()
            .unwrap();
        assert_eq!((m, n), (ServerMsg::GoSend, 4));
        assert_eq!(decode_server(&f[..4], Expect::Frames, 1000), Ok(None));
    }
}
