//! STUN, the subset ICE connectivity checks need: the Binding method,
//! short-term MESSAGE-INTEGRITY and FINGERPRINT (RFC 8489), and the ICE
//! attributes PRIORITY, USE-CANDIDATE, ICE-CONTROLLED and ICE-CONTROLLING
//! (RFC 8445 §7, §16.1). Written by hand: a message is a 20-byte header
//! and a list of type-length-value attributes padded to 4 bytes, and the
//! two checksums are the only delicate part.
//!
//! STUN shares the media port with RTP and SRTP. [`looks_like_stun`] is the
//! demultiplexing test of RFC 7983 §7 (first byte 0..=3) tightened with the
//! magic cookie; [`Message::parse`] then checks everything else.
//!
//! Parsing never panics on input and says why it refused ([`StunError`]).
//! The checks are in the order RFC 8489 §6.3 gives them: header, then
//! attributes, then FINGERPRINT (§14.7) which must come last; attributes
//! after MESSAGE-INTEGRITY other than FINGERPRINT are ignored (§14.5).
//! MESSAGE-INTEGRITY itself is checked over the raw bytes with
//! [`check_integrity`], because it covers the bytes as sent, padding
//! included, not what we would re-encode.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// RFC 8489 §5: the fixed value in bytes 4..8 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 §18.2: the Binding method.
pub const BINDING: u16 = 0x0001;
/// RFC 8489 §5: the header is 20 bytes.
pub const HEADER_LEN: usize = 20;

/// RFC 8489 §14.7: the CRC-32 is XOR-ed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;
/// Size on the wire of MESSAGE-INTEGRITY (4 + 20) and FINGERPRINT (4 + 4).
const INTEGRITY_TLV_LEN: usize = 24;
const FINGERPRINT_TLV_LEN: usize = 8;
/// The largest message body whose length fits the 16-bit field and is a
/// multiple of 4 (RFC 8489 §5).
const MAX_BODY: usize = 0xFFFC;

/// Attribute types (RFC 8489 §18.3, RFC 8445 §16.1). Types below 0x8000
/// are comprehension-required, the others comprehension-optional.
pub mod attr_type {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

use attr_type::*;

/// RFC 8489 §5: the two class bits of the message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// RFC 8489 §14.3; for ICE "<receiver's ufrag>:<sender's ufrag>" (RFC 8445 §7.2.2).
    Username(String),
    /// RFC 8489 §14.5: HMAC-SHA1, 20 bytes.
    MessageIntegrity([u8; 20]),
    /// RFC 8489 §14.8: code 300..=699 and a reason phrase.
    ErrorCode { code: u16, reason: String },
    /// RFC 8489 §14.9: the types a 420 did not understand.
    UnknownAttributes(Vec<u16>),
    /// RFC 8489 §14.2: the source address the request came from, as seen by
    /// the responder, XOR-ed with the cookie (and the transaction for IPv6).
    XorMappedAddress(SocketAddr),
    /// RFC 8445 §7.1.1.
    Priority(u32),
    /// RFC 8445 §7.1.2: the controlling agent nominates this pair.
    UseCandidate,
    /// RFC 8489 §14.14.
    Software(String),
    /// RFC 8489 §14.7: CRC-32 of the message up to it, XOR 0x5354554e.
    Fingerprint(u32),
    /// RFC 8445 §7.1.3: the sender believes it is controlled; its tiebreaker.
    IceControlled(u64),
    /// RFC 8445 §7.1.3: the sender believes it is controlling; its tiebreaker.
    IceControlling(u64),
    /// Any type this module does not decode, value as received.
    Other { typ: u16, value: Vec<u8> },
}

impl Attribute {
    /// The attribute's type on the wire.
    pub fn typ(&self) -> u16 {
        match self {
            Attribute::Username(_) => USERNAME,
            Attribute::MessageIntegrity(_) => MESSAGE_INTEGRITY,
            Attribute::ErrorCode { .. } => ERROR_CODE,
            Attribute::UnknownAttributes(_) => UNKNOWN_ATTRIBUTES,
            Attribute::XorMappedAddress(_) => XOR_MAPPED_ADDRESS,
            Attribute::Priority(_) => PRIORITY,
            Attribute::UseCandidate => USE_CANDIDATE,
            Attribute::Software(_) => SOFTWARE,
            Attribute::Fingerprint(_) => FINGERPRINT,
            Attribute::IceControlled(_) => ICE_CONTROLLED,
            Attribute::IceControlling(_) => ICE_CONTROLLING,
            Attribute::Other { typ, .. } => *typ,
        }
    }

    /// The value bytes, unpadded. The transaction is needed for XOR-ing an
    /// IPv6 address (RFC 8489 §14.2).
    fn value(&self, transaction: &[u8; 12]) -> Vec<u8> {
        match self {
            Attribute::Username(s) | Attribute::Software(s) => s.as_bytes().to_vec(),
            Attribute::MessageIntegrity(tag) => tag.to_vec(),
            Attribute::ErrorCode { code, reason } => {
                // RFC 8489 §14.8: 21 reserved bits, class (hundreds) in 3 bits, number 0..99.
                let class = ((code / 100) & 0x07) as u8;
                let number = (code % 100) as u8;
                let mut v = vec![0, 0, class, number];
                v.extend_from_slice(reason.as_bytes());
                v
            }
            Attribute::UnknownAttributes(types) => {
                types.iter().flat_map(|t| t.to_be_bytes()).collect()
            }
            Attribute::XorMappedAddress(addr) => encode_xor_address(*addr, transaction),
            Attribute::Priority(p) => p.to_be_bytes().to_vec(),
            Attribute::UseCandidate => Vec::new(),
            Attribute::Fingerprint(crc) => crc.to_be_bytes().to_vec(),
            Attribute::IceControlled(t) | Attribute::IceControlling(t) => t.to_be_bytes().to_vec(),
            Attribute::Other { value, .. } => value.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub class: Class,
    /// The 12-bit method (RFC 8489 §5); higher bits are dropped on encoding.
    pub method: u16,
    pub transaction: [u8; 12],
    pub attributes: Vec<Attribute>,
}

/// Why bytes are not a STUN message this module accepts. Every variant is
/// the sender's fault; a STUN agent discards such a message silently
/// (RFC 8489 §6.3) or, for a request it could read, answers 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StunError {
    /// Fewer bytes than the 20-byte header (RFC 8489 §5).
    TooShort { len: usize },
    /// The header is not STUN's: the reason names the check that failed
    /// (top two bits zero, magic cookie; RFC 8489 §5).
    NotStun(&'static str),
    /// The header's message length is not a multiple of 4, or is not the
    /// number of bytes after the header (RFC 8489 §5).
    BadLength { declared: usize, actual: usize },
    /// An attribute (or its 4-byte header, when `attribute` is None) starting
    /// at byte `at` runs past the end of the message (RFC 8489 §14).
    Truncated { attribute: Option<u16>, at: usize },
    /// A known attribute whose value is malformed.
    BadAttribute { typ: u16, reason: &'static str },
    /// FINGERPRINT does not match the CRC of the message (RFC 8489 §14.7).
    BadFingerprint { carried: u32, computed: u32 },
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    FingerprintNotLast,
}

impl fmt::Display for StunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StunError::TooShort { len } => {
                write!(f, "{len} bytes, shorter than the 20-byte STUN header")
            }
            StunError::NotStun(reason) => write!(f, "not STUN: {reason}"),
            StunError::BadLength { declared, actual } if declared % 4 != 0 => {
                write!(f, "message length {declared} is not a multiple of 4 ({actual} bytes follow the header)")
            }
            StunError::BadLength { declared, actual } => write!(
                f,
                "message length {declared} but {actual} bytes follow the header"
            ),
            StunError::Truncated {
                attribute: Some(t),
                at,
            } => {
                write!(f, "attribute 0x{t:04x} at byte {at} runs past the end")
            }
            StunError::Truncated {
                attribute: None,
                at,
            } => {
                write!(f, "attribute header at byte {at} runs past the end")
            }
            StunError::BadAttribute { typ, reason } => {
                write!(f, "attribute 0x{typ:04x}: {reason}")
            }
            StunError::BadFingerprint { carried, computed } => write!(
                f,
                "FINGERPRINT 0x{carried:08x} but the message gives 0x{computed:08x}"
            ),
            StunError::FingerprintNotLast => write!(f, "an attribute follows FINGERPRINT"),
        }
    }
}

impl std::error::Error for StunError {}

/// What MESSAGE-INTEGRITY says about a message under a given key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    Absent,
    Valid,
    Invalid,
}

/// RFC 7983 §7 / RFC 8489 §5: first byte 0..=3, at least 20 bytes, magic
/// cookie in bytes 4..8. Cheap, for demultiplexing STUN from RTP/SRTP
/// (first byte 128..=191) and DTLS (20..=63) on one port.
pub fn looks_like_stun(packet: &[u8]) -> bool {
    match packet {
        [first, _, _, _, c0, c1, c2, c3, ..] => {
            packet.len() >= HEADER_LEN
                && *first <= 3
                && u32::from_be_bytes([*c0, *c1, *c2, *c3]) == MAGIC_COOKIE
        }
        _ => false,
    }
}

impl Message {
    pub fn new(class: Class, method: u16, transaction: [u8; 12]) -> Self {
        Message {
            class,
            method,
            transaction,
            attributes: Vec::new(),
        }
    }

    /// Parse a whole datagram: header (top two bits zero, length a multiple
    /// of 4 and equal to the rest, magic cookie; RFC 8489 §5), then every
    /// attribute TLV with its padding (§14). A FINGERPRINT must be the last
    /// attribute and must be correct (§14.7). Attributes after
    /// MESSAGE-INTEGRITY other than FINGERPRINT are ignored (§14.5);
    /// MESSAGE-INTEGRITY is kept but not checked (see [`check_integrity`]).
    /// Unknown types become [`Attribute::Other`].
    pub fn parse(bytes: &[u8]) -> Result<Message, StunError> {
        let header = read_header(bytes)?;
        let transaction = header.transaction;
        let mut attributes = Vec::new();
        let mut after_integrity = false;
        for tlv in Tlvs::new(bytes) {
            let tlv = tlv?;
            match tlv.typ {
                FINGERPRINT => {
                    let carried = u32::from_be_bytes(fixed(tlv.typ, tlv.value, "is 4 bytes")?);
                    if tlv.start + FINGERPRINT_TLV_LEN != bytes.len() {
                        return Err(StunError::FingerprintNotLast);
                    }
                    // RFC 8489 §14.7: over the message up to the attribute, with
                    // the header length counting it: as received, since it is last.
                    let prefix = bytes.get(..tlv.start).unwrap_or_default();
                    let computed = crc32(prefix) ^ FINGERPRINT_XOR;
                    if carried != computed {
                        return Err(StunError::BadFingerprint { carried, computed });
                    }
                    attributes.push(Attribute::Fingerprint(carried));
                }
                // RFC 8489 §14.5: agents MUST ignore attributes after
                // MESSAGE-INTEGRITY, with the exception of FINGERPRINT.
                _ if after_integrity => {}
                MESSAGE_INTEGRITY => {
                    after_integrity = true;
                    attributes.push(Attribute::MessageIntegrity(fixed(
                        tlv.typ,
                        tlv.value,
                        "is 20 bytes of HMAC-SHA1",
                    )?));
                }
                typ => attributes.push(decode_attribute(typ, tlv.value, &transaction)?),
            }
        }
        Ok(Message {
            class: header.class,
            method: header.method,
            transaction,
            attributes,
        })
    }

    /// Encode with the attributes as given (padding with zero bytes), then,
    /// if `integrity_key` is Some, MESSAGE-INTEGRITY over everything before
    /// it with the length field counting it (RFC 8489 §14.5), then, if
    /// `fingerprint`, FINGERPRINT (§14.7). MessageIntegrity and Fingerprint
    /// entries of `self.attributes` are skipped: they are computed here.
    /// An attribute that would take the message past what the 16-bit
    /// length field can say (64 KiB) is left out.
    pub fn encode(&self, integrity_key: Option<&[u8]>, fingerprint: bool) -> Vec<u8> {
        self.encode_with_padding(integrity_key, fingerprint, 0)
    }

    /// [`Message::encode`] with padding bytes of value `pad`. RFC 8489 §14
    /// lets padding be anything; RFC 5769's vectors pad with spaces (0x20),
    /// and MESSAGE-INTEGRITY and FINGERPRINT cover the padding, so
    /// reproducing those vectors byte for byte needs `pad = 0x20`.
    pub fn encode_with_padding(
        &self,
        integrity_key: Option<&[u8]>,
        fingerprint: bool,
        pad: u8,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&message_type(self.class, self.method).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction);
        let trailer = INTEGRITY_TLV_LEN + FINGERPRINT_TLV_LEN;
        for attribute in &self.attributes {
            if matches!(
                attribute,
                Attribute::MessageIntegrity(_) | Attribute::Fingerprint(_)
            ) {
                continue;
            }
            let value = attribute.value(&self.transaction);
            let body = out.len() - HEADER_LEN;
            if body + 4 + padded(value.len()) + trailer > MAX_BODY {
                continue;
            }
            push_tlv(&mut out, attribute.typ(), &value, pad);
        }
        if let Some(key) = integrity_key {
            // RFC 8489 §14.5: the length field already counts MESSAGE-INTEGRITY
            // when the HMAC is computed (but not a FINGERPRINT after it).
            set_length(&mut out, INTEGRITY_TLV_LEN);
            let tag = hmac_sha1(key, &out);
            push_tlv(&mut out, MESSAGE_INTEGRITY, &tag, pad);
        }
        if fingerprint {
            set_length(&mut out, FINGERPRINT_TLV_LEN);
            let crc = crc32(&out) ^ FINGERPRINT_XOR;
            push_tlv(&mut out, FINGERPRINT, &crc.to_be_bytes(), pad);
        }
        set_length(&mut out, 0);
        out
    }

    /// The first USERNAME (RFC 8489 §14: only the first of a type counts).
    pub fn username(&self) -> Option<&str> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Username(u) => Some(u.as_str()),
            _ => None,
        })
    }

    pub fn priority(&self) -> Option<u32> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Priority(p) => Some(*p),
            _ => None,
        })
    }

    pub fn use_candidate(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::UseCandidate))
    }

    pub fn error_code(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::ErrorCode { code, .. } => Some(*code),
            _ => None,
        })
    }

    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::XorMappedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    pub fn ice_controlling(&self) -> Option<u64> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::IceControlling(t) => Some(*t),
            _ => None,
        })
    }

    pub fn ice_controlled(&self) -> Option<u64> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::IceControlled(t) => Some(*t),
            _ => None,
        })
    }

    pub fn has_message_integrity(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::MessageIntegrity(_)))
    }

    pub fn has_fingerprint(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| matches!(a, Attribute::Fingerprint(_)))
    }

    /// Comprehension-required attribute types (< 0x8000) this module does
    /// not know, each once, in order of appearance: what a 420 lists in
    /// UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1).
    pub fn unknown_required(&self) -> Vec<u16> {
        let mut unknown: Vec<u16> = Vec::new();
        for a in &self.attributes {
            if let Attribute::Other { typ, .. } = a {
                if *typ < 0x8000 && !unknown.contains(typ) {
                    unknown.push(*typ);
                }
            }
        }
        unknown
    }
}

/// Check MESSAGE-INTEGRITY of raw message `bytes` with short-term `key`
/// (the password's bytes; RFC 8489 §9.1.1): HMAC-SHA1 over the message up
/// to the MESSAGE-INTEGRITY attribute, with the header length adjusted to
/// end at that attribute (§14.5). Absent if the message has none; Invalid
/// for a wrong HMAC, or for bytes that are not a whole STUN message
/// (truncated, or with a malformed header).
pub fn check_integrity(bytes: &[u8], key: &[u8]) -> Integrity {
    if read_header(bytes).is_err() {
        return Integrity::Invalid;
    }
    for tlv in Tlvs::new(bytes) {
        let Ok(tlv) = tlv else {
            return Integrity::Invalid;
        };
        if tlv.typ != MESSAGE_INTEGRITY {
            continue;
        }
        let Ok(tag) = <[u8; 20]>::try_from(tlv.value) else {
            return Integrity::Invalid;
        };
        let Some(prefix) = bytes.get(..tlv.start) else {
            return Integrity::Invalid;
        };
        let Ok(length) = u16::try_from(tlv.start - HEADER_LEN + INTEGRITY_TLV_LEN) else {
            return Integrity::Invalid;
        };
        return match hmac_with_length(key, prefix, length).verify_slice(&tag) {
            Ok(()) => Integrity::Valid,
            Err(_) => Integrity::Invalid,
        };
    }
    Integrity::Absent
}

/// CRC-32 (IEEE 802.3, the one of zlib and ISO-HDLC: reflected polynomial
/// 0xEDB88320, initial and final XOR 0xFFFFFFFF), as FINGERPRINT uses it
/// (RFC 8489 §14.7 cites ITU V.42, the same CRC).
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc32_table();
    !bytes.iter().fold(!0u32, |crc, b| {
        TABLE[((crc ^ u32::from(*b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// The checked header of a message.
struct Header {
    class: Class,
    method: u16,
    transaction: [u8; 12],
}

/// RFC 8489 §5: top two bits zero, magic cookie, length a multiple of 4
/// equal to the bytes after the header.
fn read_header(bytes: &[u8]) -> Result<Header, StunError> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(StunError::TooShort { len: bytes.len() });
    };
    let [t0, t1, l0, l1, c0, c1, c2, c3, tx @ ..] = head else {
        return Err(StunError::TooShort { len: bytes.len() });
    };
    let typ = u16::from_be_bytes([*t0, *t1]);
    if typ & 0xC000 != 0 {
        return Err(StunError::NotStun(
            "the top two bits of the type are not zero",
        ));
    }
    if u32::from_be_bytes([*c0, *c1, *c2, *c3]) != MAGIC_COOKIE {
        return Err(StunError::NotStun("no magic cookie"));
    }
    let declared = usize::from(u16::from_be_bytes([*l0, *l1]));
    let actual = bytes.len() - HEADER_LEN;
    if declared % 4 != 0 || declared != actual {
        return Err(StunError::BadLength { declared, actual });
    }
    let Ok(transaction) = <[u8; 12]>::try_from(tx) else {
        return Err(StunError::TooShort { len: bytes.len() });
    };
    Ok(Header {
        class: Class::from_bits(((typ >> 4) & 0b01) | ((typ >> 7) & 0b10)),
        method: (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80),
        transaction,
    })
}

/// RFC 8489 §5: the method's 12 bits interleaved with the class bits C0
/// (bit 4) and C1 (bit 8).
fn message_type(class: Class, method: u16) -> u16 {
    let m = method & 0x0FFF;
    let c = class.bits();
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 0b01) << 4) | ((c & 0b10) << 7)
}

/// One attribute as found on the wire.
struct Tlv<'a> {
    typ: u16,
    /// Offset of the attribute's header in the message.
    start: usize,
    value: &'a [u8],
}

/// The attributes of a message whose header has been read, each with its
/// padding skipped (RFC 8489 §14).
struct Tlvs<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Tlvs<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Tlvs {
            bytes,
            at: HEADER_LEN,
        }
    }
}

impl<'a> Iterator for Tlvs<'a> {
    type Item = Result<Tlv<'a>, StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.at;
        if start >= self.bytes.len() {
            return None;
        }
        // Stop after any error: the rest cannot be framed.
        self.at = self.bytes.len();
        let Some([t0, t1, l0, l1]) = self.bytes.get(start..start + 4) else {
            return Some(Err(StunError::Truncated {
                attribute: None,
                at: start,
            }));
        };
        let typ = u16::from_be_bytes([*t0, *t1]);
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let value_start = start + 4;
        let truncated = StunError::Truncated {
            attribute: Some(typ),
            at: start,
        };
        let Some(value) = self.bytes.get(value_start..value_start + len) else {
            return Some(Err(truncated));
        };
        let end = value_start + padded(len);
        if end > self.bytes.len() {
            return Some(Err(truncated));
        }
        self.at = end;
        Some(Ok(Tlv { typ, start, value }))
    }
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

fn push_tlv(out: &mut Vec<u8>, typ: u16, value: &[u8], pad: u8) {
    // Callers keep values within MAX_BODY, so the length fits 16 bits.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + padded(value.len()) - value.len(), pad);
}

/// Set the header's length to the attributes so far plus `more` bytes.
fn set_length(out: &mut [u8], more: usize) {
    let body = out.len().saturating_sub(HEADER_LEN) + more;
    let len = u16::try_from(body).unwrap_or(u16::MAX);
    if let Some(field) = out.get_mut(2..4) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// HMAC-SHA1 of `message` as it stands (its length field already set).
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    let mut mac = new_hmac(key);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA1 over `prefix` (header and attributes before MESSAGE-INTEGRITY)
/// with the header's length field replaced by `length` (RFC 8489 §14.5).
fn hmac_with_length(key: &[u8], prefix: &[u8], length: u16) -> Hmac<Sha1> {
    let mut mac = new_hmac(key);
    mac.update(prefix.get(..2).unwrap_or_default());
    mac.update(&length.to_be_bytes());
    mac.update(prefix.get(4..).unwrap_or_default());
    mac
}

fn new_hmac(key: &[u8]) -> Hmac<Sha1> {
    // HMAC hashes long keys and pads short ones: every length is accepted
    // (RFC 2104 §2), so this cannot fail.
    <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// A fixed-size value, or BadAttribute with `reason` (which states the size).
fn fixed<const N: usize>(
    typ: u16,
    value: &[u8],
    reason: &'static str,
) -> Result<[u8; N], StunError> {
    <[u8; N]>::try_from(value).map_err(|_| StunError::BadAttribute { typ, reason })
}

fn utf8(typ: u16, value: &[u8]) -> Result<String, StunError> {
    String::from_utf8(value.to_vec()).map_err(|_| StunError::BadAttribute {
        typ,
        reason: "not UTF-8",
    })
}

fn decode_attribute(
    typ: u16,
    value: &[u8],
    transaction: &[u8; 12],
) -> Result<Attribute, StunError> {
    Ok(match typ {
        USERNAME => Attribute::Username(utf8(typ, value)?),
        SOFTWARE => Attribute::Software(utf8(typ, value)?),
        ERROR_CODE => decode_error_code(value)?,
        UNKNOWN_ATTRIBUTES => {
            let pairs = value.chunks_exact(2);
            if !pairs.remainder().is_empty() {
                return Err(StunError::BadAttribute {
                    typ,
                    reason: "a list of 2-byte types has an odd length",
                });
            }
            Attribute::UnknownAttributes(
                pairs
                    .filter_map(|c| match c {
                        [a, b] => Some(u16::from_be_bytes([*a, *b])),
                        _ => None,
                    })
                    .collect(),
            )
        }
        XOR_MAPPED_ADDRESS => Attribute::XorMappedAddress(decode_xor_address(value, transaction)?),
        PRIORITY => Attribute::Priority(u32::from_be_bytes(fixed(typ, value, "is 4 bytes")?)),
        USE_CANDIDATE => {
            if !value.is_empty() {
                return Err(StunError::BadAttribute {
                    typ,
                    reason: "USE-CANDIDATE has no value",
                });
            }
            Attribute::UseCandidate
        }
        ICE_CONTROLLED => {
            Attribute::IceControlled(u64::from_be_bytes(fixed(typ, value, "is 8 bytes")?))
        }
        ICE_CONTROLLING => {
            Attribute::IceControlling(u64::from_be_bytes(fixed(typ, value, "is 8 bytes")?))
        }
        _ => Attribute::Other {
            typ,
            value: value.to_vec(),
        },
    })
}

/// RFC 8489 §14.8: class 3..=6 in the low 3 bits of byte 2, number 0..=99
/// in byte 3, then a UTF-8 reason phrase.
fn decode_error_code(value: &[u8]) -> Result<Attribute, StunError> {
    let bad = |reason| StunError::BadAttribute {
        typ: ERROR_CODE,
        reason,
    };
    let [_, _, class, number, reason @ ..] = value else {
        return Err(bad("shorter than 4 bytes"));
    };
    let class = u16::from(class & 0x07);
    let number = u16::from(*number);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(bad("class not 3..=6 or number over 99"));
    }
    Ok(Attribute::ErrorCode {
        code: class * 100 + number,
        reason: utf8(ERROR_CODE, reason)?,
    })
}

/// RFC 8489 §14.2: family 0x01 (IPv4, 8 bytes) or 0x02 (IPv6, 20 bytes);
/// the port is XOR-ed with the cookie's top 16 bits, an IPv4 address with
/// the cookie, an IPv6 address with the cookie and the transaction.
fn decode_xor_address(value: &[u8], transaction: &[u8; 12]) -> Result<SocketAddr, StunError> {
    let bad = |reason| StunError::BadAttribute {
        typ: XOR_MAPPED_ADDRESS,
        reason,
    };
    let [_, family, p0, p1, address @ ..] = value else {
        return Err(bad("shorter than 4 bytes"));
    };
    let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match family {
        0x01 => {
            let a: [u8; 4] = address
                .try_into()
                .map_err(|_| bad("an IPv4 address is 4 bytes"))?;
            IpAddr::V4(Ipv4Addr::from(u32::from_be_bytes(a) ^ MAGIC_COOKIE))
        }
        0x02 => {
            let mut a: [u8; 16] = address
                .try_into()
                .map_err(|_| bad("an IPv6 address is 16 bytes"))?;
            for (byte, mask) in a.iter_mut().zip(xor_mask(transaction)) {
                *byte ^= mask;
            }
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return Err(bad("address family is neither 0x01 nor 0x02")),
    };
    Ok(SocketAddr::new(ip, port))
}

fn encode_xor_address(addr: SocketAddr, transaction: &[u8; 12]) -> Vec<u8> {
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut v = Vec::with_capacity(20);
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 0x01]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend_from_slice(&(u32::from(ip) ^ MAGIC_COOKIE).to_be_bytes());
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 0x02]);
            v.extend_from_slice(&port.to_be_bytes());
            v.extend(
                ip.octets()
                    .iter()
                    .zip(xor_mask(transaction))
                    .map(|(b, m)| b ^ m),
            );
        }
    }
    v
}

/// The 16 bytes an IPv6 address is XOR-ed with: cookie, then transaction.
fn xor_mask(transaction: &[u8; 12]) -> impl Iterator<Item = u8> + '_ {
    MAGIC_COOKIE
        .to_be_bytes()
        .into_iter()
        .chain(transaction.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
    const TX: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 §2.1: sample request (short-term credentials).
    const REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, // Request type and message length
        0x21, 0x12, 0xa4, 0x42, // Magic cookie
        0xb7, 0xe7, 0xa7, 0x01, // }
        0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
        0xfa, 0x87, 0xdf, 0xae, // }
        0x80, 0x22, 0x00, 0x10, // SOFTWARE attribute header
        0x53, 0x54, 0x55, 0x4e, // }
        0x20, 0x74, 0x65, 0x73, // }  User-agent...
        0x74, 0x20, 0x63, 0x6c, // }  ...name
        0x69, 0x65, 0x6e, 0x74, // }
        0x00, 0x24, 0x00, 0x04, // PRIORITY attribute header
        0x6e, 0x00, 0x01, 0xff, // ICE priority value
        0x80, 0x29, 0x00, 0x08, // ICE-CONTROLLED attribute header
        0x93, 0x2f, 0xf9, 0xb1, // }  Pseudo-random tie breaker...
        0x51, 0x26, 0x3b, 0x36, // }   ...for ICE control
        0x00, 0x06, 0x00, 0x09, // USERNAME attribute header
        0x65, 0x76, 0x74, 0x6a, // }
        0x3a, 0x68, 0x36, 0x76, // }  Username (9 bytes) and padding (3 bytes)
        0x59, 0x20, 0x20, 0x20, // }
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
        0x9a, 0xea, 0xa7, 0x0c, // }
        0xbf, 0xd8, 0xcb, 0x56, // }
        0x78, 0x1e, 0xf2, 0xb5, // }  HMAC-SHA1 fingerprint
        0xb2, 0xd3, 0xf2, 0x49, // }
        0xc1, 0xb5, 0x71, 0xa2, // }
        0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
        0xe5, 0x7a, 0x3b, 0xcf, // CRC32 fingerprint
    ];

    /// RFC 5769 §2.2: sample IPv4 response.
    const RESPONSE_V4: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, // Response type and message length
        0x21, 0x12, 0xa4, 0x42, // Magic cookie
        0xb7, 0xe7, 0xa7, 0x01, // }
        0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
        0xfa, 0x87, 0xdf, 0xae, // }
        0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
        0x74, 0x65, 0x73, 0x74, // }
        0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
        0x74, 0x6f, 0x72, 0x20, // }
        0x00, 0x20, 0x00, 0x08, // XOR-MAPPED-ADDRESS attribute header
        0x00, 0x01, 0xa1, 0x47, // Address family (IPv4) and xor'd mapped port number
        0xe1, 0x12, 0xa6, 0x43, // Xor'd mapped IPv4 address
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
        0x2b, 0x91, 0xf5, 0x99, // }
        0xfd, 0x9e, 0x90, 0xc3, // }
        0x8c, 0x74, 0x89, 0xf9, // }  HMAC-SHA1 fingerprint
        0x2a, 0xf9, 0xba, 0x53, // }
        0xf0, 0x6b, 0xe7, 0xd7, // }
        0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
        0xc0, 0x7d, 0x4c, 0x96, // CRC32 fingerprint
    ];

    /// RFC 5769 §2.3: sample IPv6 response.
    const RESPONSE_V6: [u8; 92] = [
        0x01, 0x01, 0x00, 0x48, // Response type and message length
        0x21, 0x12, 0xa4, 0x42, // Magic cookie
        0xb7, 0xe7, 0xa7, 0x01, // }
        0xbc, 0x34, 0xd6, 0x86, // }  Transaction ID
        0xfa, 0x87, 0xdf, 0xae, // }
        0x80, 0x22, 0x00, 0x0b, // SOFTWARE attribute header
        0x74, 0x65, 0x73, 0x74, // }
        0x20, 0x76, 0x65, 0x63, // }  UTF-8 server name
        0x74, 0x6f, 0x72, 0x20, // }
        0x00, 0x20, 0x00, 0x14, // XOR-MAPPED-ADDRESS attribute header
        0x00, 0x02, 0xa1, 0x47, // Address family (IPv6) and xor'd mapped port number
        0x01, 0x13, 0xa9, 0xfa, // }
        0xa5, 0xd3, 0xf1, 0x79, // }  Xor'd mapped IPv6 address
        0xbc, 0x25, 0xf4, 0xb5, // }
        0xbe, 0xd2, 0xb9, 0xd9, // }
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
        0xa3, 0x82, 0x95, 0x4e, // }
        0x4b, 0xe6, 0x7b, 0xf1, // }
        0x17, 0x84, 0xc9, 0x7c, // }  HMAC-SHA1 fingerprint
        0x82, 0x92, 0xc2, 0x75, // }
        0xbf, 0xe3, 0xed, 0x41, // }
        0x80, 0x28, 0x00, 0x04, // FINGERPRINT attribute header
        0xc8, 0xfb, 0x0b, 0x4c, // CRC32 fingerprint
    ];

    /// RFC 5769 §2.4: sample request with long-term authentication.
    const LONG_TERM_REQUEST: [u8; 116] = [
        0x00, 0x01, 0x00, 0x60, // Request type and message length
        0x21, 0x12, 0xa4, 0x42, // Magic cookie
        0x78, 0xad, 0x34, 0x33, // }
        0xc6, 0xad, 0x72, 0xc0, // }  Transaction ID
        0x29, 0xda, 0x41, 0x2e, // }
        0x00, 0x06, 0x00, 0x12, // USERNAME attribute header
        0xe3, 0x83, 0x9e, 0xe3, // }
        0x83, 0x88, 0xe3, 0x83, // }
        0xaa, 0xe3, 0x83, 0x83, // }  Username value (18 bytes) and padding (2 bytes)
        0xe3, 0x82, 0xaf, 0xe3, // }
        0x82, 0xb9, 0x00, 0x00, // }
        0x00, 0x15, 0x00, 0x1c, // NONCE attribute header
        0x66, 0x2f, 0x2f, 0x34, // }
        0x39, 0x39, 0x6b, 0x39, // }
        0x35, 0x34, 0x64, 0x36, // }
        0x4f, 0x4c, 0x33, 0x34, // }  Nonce value
        0x6f, 0x4c, 0x39, 0x46, // }
        0x53, 0x54, 0x76, 0x79, // }
        0x36, 0x34, 0x73, 0x41, // }
        0x00, 0x14, 0x00, 0x0b, // REALM attribute header
        0x65, 0x78, 0x61, 0x6d, // }
        0x70, 0x6c, 0x65, 0x2e, // }  Realm value (11 bytes) and padding (1 byte)
        0x6f, 0x72, 0x67, 0x00, // }
        0x00, 0x08, 0x00, 0x14, // MESSAGE-INTEGRITY attribute header
        0xf6, 0x70, 0x24, 0x65, // }
        0x6d, 0xd6, 0x4a, 0x3e, // }
        0x02, 0xb8, 0xe0, 0x71, // }  HMAC-SHA1 fingerprint
        0x2e, 0x85, 0xc9, 0xa2, // }
        0x8c, 0xa8, 0x96, 0x66, // }
    ];

    /// RFC 8489 §9.2.2: the long-term key is MD5("マトリックス:example.org:TheMatrIX")
    /// (the password "The<U+00AD>M<U+00AA>tr<U+2168>" after SASLprep, RFC 5769 §2.4).
    /// Precomputed: this crate has no MD5 and needs none.
    const LONG_TERM_KEY: [u8; 16] = [
        0xe8, 0xca, 0x7a, 0xd5, 0x9d, 0x5e, 0xb0, 0x51, 0x8e, 0x31, 0x29, 0x11, 0xd2, 0xda, 0xb2,
        0xa9,
    ];

    fn vectors() -> [&'static [u8]; 4] {
        [&REQUEST, &RESPONSE_V4, &RESPONSE_V6, &LONG_TERM_REQUEST]
    }

    #[test]
    fn crc32_is_the_iso_hdlc_crc() {
        // The catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn rfc5769_sample_request_reads_back_its_ice_attributes() {
        let m = Message::parse(&REQUEST).unwrap();
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.method, BINDING);
        assert_eq!(m.transaction, TX);
        assert_eq!(m.username(), Some("evtj:h6vY"));
        assert_eq!(m.priority(), Some(0x6e00_01ff));
        assert_eq!(m.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(m.ice_controlling(), None);
        assert!(!m.use_candidate());
        assert!(m
            .attributes
            .contains(&Attribute::Software("STUN test client".into())));
        assert_eq!(
            m.attributes.last(),
            Some(&Attribute::Fingerprint(0xe57a_3bcf))
        );
        assert!(m.has_message_integrity() && m.has_fingerprint());
        assert!(m.unknown_required().is_empty());
        assert!(looks_like_stun(&REQUEST));
    }

    #[test]
    fn rfc5769_sample_request_authenticates_with_the_short_term_password() {
        assert_eq!(check_integrity(&REQUEST, PASSWORD), Integrity::Valid);
        assert_eq!(
            check_integrity(&REQUEST, b"VOkJxbRl1RmTxUk/WvJxBu"),
            Integrity::Invalid
        );
    }

    #[test]
    fn rfc5769_sample_request_re_encodes_to_the_same_bytes() {
        let m = Message::parse(&REQUEST).unwrap();
        // The vector pads USERNAME with spaces, which the HMAC and CRC cover.
        assert_eq!(m.encode_with_padding(Some(PASSWORD), true, 0x20), REQUEST);
        // Zero padding differs only in the padding and the two checksums.
        let zero = m.encode(Some(PASSWORD), true);
        assert_eq!(zero.len(), REQUEST.len());
        assert_eq!(
            Message::parse(&zero).unwrap().attributes[..4],
            m.attributes[..4]
        );
        assert_eq!(check_integrity(&zero, PASSWORD), Integrity::Valid);
    }

    #[test]
    fn rfc5769_ipv4_response_maps_192_0_2_1_port_32853() {
        let m = Message::parse(&RESPONSE_V4).unwrap();
        assert_eq!(
            (m.class, m.method, m.transaction),
            (Class::Success, BINDING, TX)
        );
        assert_eq!(
            m.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert!(m
            .attributes
            .contains(&Attribute::Software("test vector".into())));
        assert_eq!(check_integrity(&RESPONSE_V4, PASSWORD), Integrity::Valid);
        assert_eq!(
            m.encode_with_padding(Some(PASSWORD), true, 0x20),
            RESPONSE_V4
        );
    }

    #[test]
    fn rfc5769_ipv6_response_maps_2001_db8_1234_5678_11_2233_4455_6677_port_32853() {
        let m = Message::parse(&RESPONSE_V6).unwrap();
        assert_eq!(
            (m.class, m.method, m.transaction),
            (Class::Success, BINDING, TX)
        );
        assert_eq!(
            m.xor_mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert!(m
            .attributes
            .contains(&Attribute::Software("test vector".into())));
        assert_eq!(check_integrity(&RESPONSE_V6, PASSWORD), Integrity::Valid);
        assert_eq!(
            m.encode_with_padding(Some(PASSWORD), true, 0x20),
            RESPONSE_V6
        );
    }

    #[test]
    fn rfc5769_long_term_request_parses_with_its_japanese_username_and_authenticates() {
        let m = Message::parse(&LONG_TERM_REQUEST).unwrap();
        assert_eq!((m.class, m.method), (Class::Request, BINDING));
        assert_eq!(m.username(), Some("マトリックス"));
        assert!(m.attributes.contains(&Attribute::Other {
            typ: 0x0014,
            value: b"example.org".to_vec()
        }));
        assert!(m.attributes.contains(&Attribute::Other {
            typ: 0x0015,
            value: b"f//499k954d6OL34oL9FSTvy64sA".to_vec()
        }));
        // NONCE and REALM are comprehension-required and unknown here.
        assert_eq!(m.unknown_required(), vec![0x0015, 0x0014]);
        assert!(!m.has_fingerprint());
        assert_eq!(
            check_integrity(&LONG_TERM_REQUEST, &LONG_TERM_KEY),
            Integrity::Valid
        );
        assert_eq!(
            check_integrity(&LONG_TERM_REQUEST, PASSWORD),
            Integrity::Invalid
        );
    }

    #[test]
    fn a_flipped_byte_before_message_integrity_makes_it_invalid() {
        // Every byte the HMAC covers or is, except the length field (replaced
        // for the HMAC) and MESSAGE-INTEGRITY's own header.
        let mi_at = REQUEST.len() - 32;
        for i in (0..mi_at).chain(mi_at + 4..mi_at + 24) {
            if (2..4).contains(&i) {
                continue;
            }
            let mut b = REQUEST;
            b[i] ^= 0x01;
            assert_eq!(
                check_integrity(&b, PASSWORD),
                Integrity::Invalid,
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_message_without_message_integrity_has_it_absent() {
        let bytes = Message::new(Class::Request, BINDING, TX).encode(None, true);
        assert_eq!(check_integrity(&bytes, PASSWORD), Integrity::Absent);
        assert_eq!(
            check_integrity(&REQUEST[..40], PASSWORD),
            Integrity::Invalid
        );
    }

    #[test]
    fn a_wrong_fingerprint_is_an_error() {
        let mut b = REQUEST;
        b[107] ^= 0xff;
        assert!(matches!(
            Message::parse(&b),
            Err(StunError::BadFingerprint {
                carried: 0xe57a_3b30,
                computed: 0xe57a_3bcf
            })
        ));
        // A change anywhere before it is caught the same way.
        let mut b = REQUEST;
        b[30] ^= 0x01;
        assert!(matches!(
            Message::parse(&b),
            Err(StunError::BadFingerprint { .. })
        ));
    }

    #[test]
    fn fingerprint_must_be_the_last_attribute() {
        // A correct FINGERPRINT (its CRC counting the attribute after it in
        // the header length) followed by an empty SOFTWARE.
        let mut b = Message::new(Class::Request, BINDING, TX).encode(None, false);
        b[3] = 12;
        let crc = crc32(&b) ^ FINGERPRINT_XOR;
        b.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        b.extend_from_slice(&crc.to_be_bytes());
        b.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]);
        assert_eq!(Message::parse(&b), Err(StunError::FingerprintNotLast));
        // Without the trailing attribute (and the length adjusted) it is fine.
        b.truncate(b.len() - 4);
        b[3] = 8;
        let crc = crc32(&b[..20]) ^ FINGERPRINT_XOR;
        b[24..28].copy_from_slice(&crc.to_be_bytes());
        assert!(Message::parse(&b).unwrap().has_fingerprint());
    }

    #[test]
    fn attributes_after_message_integrity_other_than_fingerprint_are_ignored() {
        // RFC 8489 §14.5: append PRIORITY after MESSAGE-INTEGRITY, then FINGERPRINT.
        let mut m = Message::new(Class::Request, BINDING, TX);
        m.attributes.push(Attribute::Username("a:b".into()));
        let mut b = m.encode(Some(b"key"), false);
        b.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0, 0, 0, 7]);
        let body = (b.len() - HEADER_LEN + 8) as u16;
        b[2..4].copy_from_slice(&body.to_be_bytes());
        let crc = crc32(&b) ^ FINGERPRINT_XOR;
        b.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
        b.extend_from_slice(&crc.to_be_bytes());
        let parsed = Message::parse(&b).unwrap();
        assert_eq!(parsed.priority(), None);
        assert!(parsed.has_fingerprint());
        assert_eq!(check_integrity(&b, b"key"), Integrity::Valid);
    }

    #[test]
    fn every_truncation_of_the_vectors_is_an_error() {
        for v in vectors() {
            for len in 0..v.len() {
                assert!(Message::parse(&v[..len]).is_err(), "length {len}");
                assert_ne!(check_integrity(&v[..len], PASSWORD), Integrity::Valid);
            }
        }
        assert_eq!(
            Message::parse(&REQUEST[..10]),
            Err(StunError::TooShort { len: 10 })
        );
        assert_eq!(
            Message::parse(&REQUEST[..104]),
            Err(StunError::BadLength {
                declared: 88,
                actual: 84
            })
        );
    }

    #[test]
    fn bad_headers_are_errors_with_their_reason() {
        let mut b = REQUEST;
        b[4] = 0x22;
        assert_eq!(
            Message::parse(&b),
            Err(StunError::NotStun("no magic cookie"))
        );
        assert!(!looks_like_stun(&b));
        let mut b = REQUEST;
        b[0] = 0x40;
        assert!(matches!(Message::parse(&b), Err(StunError::NotStun(_))));
        let mut b = REQUEST;
        b[3] = 0x59;
        assert_eq!(
            Message::parse(&b),
            Err(StunError::BadLength {
                declared: 0x59,
                actual: 88
            })
        );
        // An attribute claiming more than the message holds.
        let mut b = RESPONSE_V4;
        b[23] = 0x40;
        assert_eq!(
            Message::parse(&b),
            Err(StunError::Truncated {
                attribute: Some(SOFTWARE),
                at: 20
            })
        );
        for e in [
            StunError::NotStun("no magic cookie"),
            StunError::BadLength {
                declared: 0x59,
                actual: 88,
            },
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn looks_like_stun_tells_stun_from_rtp_and_dtls() {
        assert!(looks_like_stun(&RESPONSE_V6));
        let mut rtp = [0u8; 40];
        rtp[0] = 0x80;
        rtp[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        assert!(!looks_like_stun(&rtp));
        let mut dtls = rtp;
        dtls[0] = 22;
        assert!(!looks_like_stun(&dtls));
        assert!(!looks_like_stun(&REQUEST[..19]));
        assert!(!looks_like_stun(&[]));
    }

    #[test]
    fn message_type_interleaves_class_and_method_bits() {
        // RFC 8489 §6: Binding request 0x0001, indication 0x0011, success 0x0101, error 0x0111.
        for (class, typ) in [
            (Class::Request, 0x0001),
            (Class::Indication, 0x0011),
            (Class::Success, 0x0101),
            (Class::Error, 0x0111),
        ] {
            let b = Message::new(class, BINDING, TX).encode(None, false);
            assert_eq!(u16::from_be_bytes([b[0], b[1]]), typ);
            assert_eq!(Message::parse(&b).unwrap().class, class);
        }
        let m = Message::new(Class::Error, 0x0ABC, TX);
        assert_eq!(Message::parse(&m.encode(None, false)).unwrap(), m);
    }

    #[test]
    fn every_attribute_round_trips() {
        let mut m = Message::new(Class::Error, BINDING, TX);
        m.attributes = vec![
            Attribute::Username("ab:cd".into()),
            Attribute::ErrorCode {
                code: 487,
                reason: "Role Conflict".into(),
            },
            Attribute::UnknownAttributes(vec![0x0777, 0x0015, 0x0003]),
            Attribute::XorMappedAddress("203.0.113.9:54321".parse().unwrap()),
            Attribute::XorMappedAddress("[2001:db8::1]:3478".parse().unwrap()),
            Attribute::Priority(0x7e00_00ff),
            Attribute::UseCandidate,
            Attribute::Software("drlab".into()),
            Attribute::IceControlled(1),
            Attribute::IceControlling(u64::MAX),
            Attribute::Other {
                typ: 0x8777,
                value: vec![1, 2, 3],
            },
        ];
        let bytes = m.encode(Some(b"pwd"), true);
        assert_eq!(bytes.len() % 4, 0);
        let back = Message::parse(&bytes).unwrap();
        let fp = back.attributes.last().cloned().unwrap();
        assert!(matches!(fp, Attribute::Fingerprint(_)));
        let n = m.attributes.len();
        assert_eq!(back.attributes[..n], m.attributes[..]);
        assert!(matches!(back.attributes[n], Attribute::MessageIntegrity(_)));
        assert_eq!(back.error_code(), Some(487));
        assert_eq!(check_integrity(&bytes, b"pwd"), Integrity::Valid);
    }

    #[test]
    fn encode_computes_integrity_and_fingerprint_rather_than_copying_them() {
        let mut m = Message::new(Class::Request, BINDING, TX);
        m.attributes.push(Attribute::MessageIntegrity([0; 20]));
        m.attributes.push(Attribute::Fingerprint(0));
        let bytes = m.encode(Some(b"k"), true);
        assert_eq!(bytes.len(), HEADER_LEN + 24 + 8);
        assert_eq!(check_integrity(&bytes, b"k"), Integrity::Valid);
        assert!(Message::parse(&bytes).is_ok());
    }

    #[test]
    fn malformed_known_attributes_are_errors() {
        for (typ, value) in [
            (PRIORITY, &[0u8, 1, 2][..]),
            (USE_CANDIDATE, &[0u8][..]),
            (ICE_CONTROLLING, &[0u8; 4][..]),
            (USERNAME, &[0xffu8, 0xfe][..]),
            (ERROR_CODE, &[0u8, 0, 2, 0][..]),
            (UNKNOWN_ATTRIBUTES, &[0u8, 1, 2][..]),
            (XOR_MAPPED_ADDRESS, &[0u8, 3, 0, 0, 1, 2, 3, 4][..]),
            (XOR_MAPPED_ADDRESS, &[0u8, 2, 0, 0, 1, 2, 3, 4][..]),
        ] {
            let mut m = Message::new(Class::Request, BINDING, TX);
            m.attributes.push(Attribute::Other {
                typ,
                value: value.to_vec(),
            });
            let err = Message::parse(&m.encode(None, false)).unwrap_err();
            assert!(
                matches!(err, StunError::BadAttribute { typ: t, .. } if t == typ),
                "0x{typ:04x}: {err}"
            );
        }
    }

    #[test]
    fn unknown_required_lists_comprehension_required_types_once() {
        let mut m = Message::new(Class::Request, BINDING, TX);
        for typ in [0x0777, 0x8777, 0x0777, 0x0001] {
            m.attributes.push(Attribute::Other { typ, value: vec![] });
        }
        assert_eq!(m.unknown_required(), vec![0x0777, 0x0001]);
    }

    #[test]
    fn truncations_and_single_byte_mutations_of_the_vectors_never_panic() {
        for v in vectors() {
            for len in 0..=v.len() {
                let _ = Message::parse(&v[..len]);
                let _ = check_integrity(&v[..len], PASSWORD);
                let _ = looks_like_stun(&v[..len]);
            }
            for i in 0..v.len() {
                for x in 0..=255u8 {
                    let mut b = v.to_vec();
                    b[i] = x;
                    if let Ok(m) = Message::parse(&b) {
                        let _ = m.encode(Some(PASSWORD), true);
                        let _ = m.unknown_required();
                    }
                    let _ = check_integrity(&b, PASSWORD);
                }
            }
        }
    }

    #[test]
    fn an_oversized_attribute_is_left_out_rather_than_overflowing_the_length() {
        let mut m = Message::new(Class::Request, BINDING, TX);
        m.attributes.push(Attribute::Software("x".repeat(70_000)));
        m.attributes.push(Attribute::Priority(1));
        let bytes = m.encode(Some(b"k"), true);
        let back = Message::parse(&bytes).unwrap();
        assert_eq!(back.priority(), Some(1));
        assert!(!back
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::Software(_))));
    }
}
