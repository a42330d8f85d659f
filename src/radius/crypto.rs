//! The keyed parts of RADIUS: User-Password hiding (RFC 2865 §5.2), Request and Response
//! Authenticators (RFC 2865 §3, RFC 2866 §3), and Message-Authenticator (RFC 3579 §3.2).
//!
//! Responses we sign carry Message-Authenticator as their *first* attribute: with it there,
//! an attacker cannot append the MD5 collision blocks of BlastRADIUS (CVE-2024-3596) ahead of it.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::attr::MESSAGE_AUTHENTICATOR;
use super::packet::{self, Code, DecodeError, EncodeError, HEADER_LEN, MessageAuthenticatorSlot, Packet, RawAttributes};

/// RFC 2865 §5.2: the hidden password is at most 128 octets.
pub const MAX_PASSWORD_LEN: usize = 128;

type HmacMd5 = Hmac<Md5>;

/// Hides a User-Password: pad to 16-octet blocks, XOR each with MD5(secret + previous block).
pub fn hide_password(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Result<Vec<u8>, EncodeError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(EncodeError::PasswordTooLong(password.len()));
    }
    let blocks = password.len().div_ceil(16).max(1);
    let mut out = Zeroizing::new(vec![0u8; blocks * 16]);
    out[..password.len()].copy_from_slice(password);
    let mut previous: [u8; 16] = *authenticator;
    for block in out.chunks_mut(16) {
        let mask = Md5::new().chain_update(secret).chain_update(previous).finalize();
        for (byte, m) in block.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
        previous.copy_from_slice(block);
    }
    Ok(out.to_vec())
}

/// Why a hidden User-Password could not be recovered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// The hidden value must be 16..=128 octets in whole 16-octet blocks.
    #[error("hidden User-Password of {0} octets is not 16..=128 octets in 16-octet blocks")]
    BadLength(usize),
}

/// Recovers the password bytes, trailing NUL padding removed. The bytes are kept raw: a NAS
/// may send UTF-8 or Latin-1, and only the directory knows how to compare them.
pub fn unhide_password(hidden: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Result<Zeroizing<Vec<u8>>, PasswordError> {
    if hidden.is_empty() || hidden.len() > MAX_PASSWORD_LEN || !hidden.len().is_multiple_of(16) {
        return Err(PasswordError::BadLength(hidden.len()));
    }
    let mut out = Zeroizing::new(hidden.to_vec());
    let mut previous: &[u8] = authenticator;
    for (block, cipher) in out.chunks_mut(16).zip(hidden.chunks(16)) {
        let mask = Md5::new().chain_update(secret).chain_update(previous).finalize();
        for (byte, m) in block.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
        previous = cipher;
    }
    let end = out.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    out.truncate(end);
    Ok(out)
}

/// What a packet's Message-Authenticator says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageAuthenticator {
    Absent,
    Valid,
    /// Wrong HMAC, wrong length, or more than one: all mean "do not trust this packet".
    Invalid,
}

/// Checks the Message-Authenticator of a received packet wherever it stands among the
/// attributes (Debian's radclient 3.2 puts it last). For a response, `request_authenticator`
/// is the authenticator of the request it answers; for a request, `None`.
pub fn check_message_authenticator(
    datagram: &[u8],
    secret: &[u8],
    request_authenticator: Option<&[u8; 16]>,
) -> Result<MessageAuthenticator, DecodeError> {
    let packet = packet::packet_bytes(datagram)?;
    let mut found = None;
    let mut attrs = RawAttributes::new(packet);
    loop {
        let offset = attrs.offset();
        let Some(attr) = attrs.next() else { break };
        let (typ, value) = attr?;
        if typ == MESSAGE_AUTHENTICATOR {
            if found.is_some() || value.len() != 16 {
                return Ok(MessageAuthenticator::Invalid);
            }
            found = Some((offset + 2, value));
        }
    }
    let Some((value_offset, received)) = found else {
        return Ok(MessageAuthenticator::Absent);
    };
    let mut copy = packet.to_vec();
    copy[value_offset..value_offset + 16].fill(0);
    if let Some(auth) = request_authenticator {
        copy[4..HEADER_LEN].copy_from_slice(auth);
    }
    let expected = hmac_md5(secret, &copy);
    Ok(if bool::from(expected.ct_eq(received)) { MessageAuthenticator::Valid } else { MessageAuthenticator::Invalid })
}

/// Verifies an Accounting-Request's authenticator: MD5(packet with zero authenticator + secret).
pub fn verify_accounting_request(datagram: &[u8], secret: &[u8]) -> Result<bool, DecodeError> {
    let packet = packet::packet_bytes(datagram)?;
    let mut copy = packet.to_vec();
    let received: [u8; 16] = packet[4..HEADER_LEN].try_into().unwrap_or_default();
    copy[4..HEADER_LEN].fill(0);
    let expected = md5_with_secret(&copy, secret);
    Ok(bool::from(expected.ct_eq(&received)))
}

/// Encodes a response to a request: Message-Authenticator first, then the attributes, then the
/// Response Authenticator over it all (computed with the request's authenticator).
///
/// The Message-Authenticator of an Accounting-Response to an Accounting-Request is computed over
/// a zeroed authenticator field, as FreeRADIUS signs and verifies it; every other response's over
/// the request's authenticator (RFC 3579 §3.2, RFC 5997 §4).
pub fn encode_response(
    response: &Packet,
    request_code: Code,
    request_authenticator: &[u8; 16],
    secret: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut out = response.encode_as(request_authenticator, MessageAuthenticatorSlot::First)?;
    let zero_basis = response.code == Code::AccountingResponse && request_code != Code::StatusServer;
    if zero_basis {
        out[4..HEADER_LEN].fill(0);
    }
    let mac = hmac_md5(secret, &out);
    out[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&mac);
    out[4..HEADER_LEN].copy_from_slice(request_authenticator);
    let auth = md5_with_secret(&out, secret);
    out[4..HEADER_LEN].copy_from_slice(&auth);
    Ok(out)
}

/// Encodes an Access-Request or Status-Server as a client: the packet's own random
/// authenticator, User-Password hidden with it, and optionally a Message-Authenticator (first).
pub fn encode_request(request: &Packet, secret: &[u8], message_authenticator: bool) -> Result<Vec<u8>, EncodeError> {
    let slot = if message_authenticator { MessageAuthenticatorSlot::First } else { MessageAuthenticatorSlot::Omitted };
    let mut out = request.encode_as(&request.authenticator, slot)?;
    if request.code == Code::AccountingRequest {
        // The Request Authenticator of accounting covers the packet (RFC 2866 §3); the
        // Message-Authenticator, if any, is computed first over a zero authenticator.
        out[4..HEADER_LEN].fill(0);
        if message_authenticator {
            let mac = hmac_md5(secret, &out);
            out[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&mac);
        }
        let auth = md5_with_secret(&out, secret);
        out[4..HEADER_LEN].copy_from_slice(&auth);
    } else if message_authenticator {
        let mac = hmac_md5(secret, &out);
        out[HEADER_LEN + 2..HEADER_LEN + 18].copy_from_slice(&mac);
    }
    Ok(out)
}

/// Checks a response's Response Authenticator against the request it answers (client side).
pub fn verify_response(datagram: &[u8], request_authenticator: &[u8; 16], secret: &[u8]) -> Result<bool, DecodeError> {
    let packet = packet::packet_bytes(datagram)?;
    let mut copy = packet.to_vec();
    let received: [u8; 16] = packet[4..HEADER_LEN].try_into().unwrap_or_default();
    copy[4..HEADER_LEN].copy_from_slice(request_authenticator);
    Ok(bool::from(md5_with_secret(&copy, secret).ct_eq(&received)))
}

fn hmac_md5(secret: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacMd5 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> HmacMd5 {
    // `new_from_slice` only fails for fixed-size-key MACs; keep a defined value regardless.
    <HmacMd5 as Mac>::new(&Default::default())
}

fn md5_with_secret(data: &[u8], secret: &[u8]) -> [u8; 16] {
    Md5::new().chain_update(data).chain_update(secret).finalize().into()
}
