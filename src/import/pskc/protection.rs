//! How a PSKC container protects its secrets (RFC 6030 Section 6.1): a pre-shared key named by
//! `EncryptionKey/KeyName` encrypts each value with AES-CBC (`EncryptedValue`, the IV its first
//! 16 bytes), and `MACMethod` carries a MAC key, encrypted with the same pre-shared key, whose
//! HMAC over each encrypted value is its `ValueMAC`. The MAC is checked, in constant time,
//! before anything is decrypted; an encrypted value without one is refused.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use hmac::{Hmac, Mac};
use roxmltree::Node;

use super::{base64_value, child, child_text};
use crate::secret::Secret;

const AES128_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes128-cbc";
const AES256_CBC: &str = "http://www.w3.org/2001/04/xmlenc#aes256-cbc";
const HMAC_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
const HMAC_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256";

/// The keys that open a container's encrypted values.
pub struct Protection {
    psk: Secret<Vec<u8>>,
    mac: MacAlgorithm,
    mac_key: Secret<Vec<u8>>,
}

#[derive(Clone, Copy)]
enum MacAlgorithm {
    Sha1,
    Sha256,
}

impl Protection {
    /// The container's protection: `None` when its values are in the clear; `Err` (for the whole
    /// file) when they are protected in a way radmfa does not open, or not with this key.
    pub fn of(container: Node<'_, '_>, psk: Option<&Secret<Vec<u8>>>) -> Result<Option<Self>, String> {
        let Some(encryption) = child(container, "EncryptionKey") else {
            // The admin expects the vendor's protection: a file without it may have been
            // stripped of it, its seeds replaced by someone else's.
            if psk.is_some() {
                return Err("--psk-file was given, but the file is not protected by a pre-shared key (no EncryptionKey): \
                            was its protection stripped? import it without --psk-file only if it came to you in the clear"
                    .into());
            }
            return Ok(None);
        };
        if child(encryption, "DerivedKey").is_some() {
            return Err("the file is encrypted with a key derived from a password (DerivedKey): radmfa takes a pre-shared key; \
                        ask the vendor for one, or decrypt the file first"
                .into());
        }
        if child(encryption, "X509Data").is_some() {
            return Err("the file is encrypted to a certificate (X509Data): radmfa takes a pre-shared key; ask the vendor for one".into());
        }
        let name = child_text(encryption, "KeyName").unwrap_or_default();
        let Some(psk) = psk else {
            return Err(format!("the file is encrypted with the pre-shared key {name:?}: give it with --psk-file"));
        };
        let Some(method) = child(container, "MACMethod") else {
            return Err("the file is encrypted without a MACMethod: radmfa takes encrypted values only with their MAC".into());
        };
        let mac = match method.attribute("Algorithm").unwrap_or_default() {
            HMAC_SHA1 => MacAlgorithm::Sha1,
            HMAC_SHA256 => MacAlgorithm::Sha256,
            other => return Err(format!("MACMethod {other:?} is not supported (hmac-sha1 or hmac-sha256)")),
        };
        let Some(sealed_mac_key) = child(method, "MACKey") else {
            return Err("the MACMethod has no MACKey".into());
        };
        let mac_key = decrypt(sealed_mac_key, psk)
            .map_err(|why| format!("the MAC key does not open with the pre-shared key ({why}): is --psk-file the key for {name:?}?"))?;
        Ok(Some(Self { psk: psk.clone(), mac, mac_key }))
    }

    /// A `Secret`'s `EncryptedValue`, its `ValueMAC` checked first.
    pub fn open(&self, secret: Node<'_, '_>) -> Result<Secret<Vec<u8>>, String> {
        let encrypted = child(secret, "EncryptedValue").ok_or("no EncryptedValue")?;
        let cipher_value = cipher_value(encrypted)?;
        let value_mac = child(secret, "ValueMAC").ok_or("an encrypted secret without its ValueMAC")?;
        let value_mac = base64_value(value_mac).map_err(|_| "ValueMAC: not base64")?;
        if !self.mac.verify(self.mac_key.expose(), &cipher_value, value_mac.expose()) {
            return Err("its ValueMAC does not match: the file was altered, or made for another pre-shared key".into());
        }
        decrypt(encrypted, &self.psk)
    }
}

impl MacAlgorithm {
    /// Whether `tag` is the HMAC of `data`, compared in constant time.
    fn verify(self, key: &[u8], data: &[u8], tag: &[u8]) -> bool {
        match self {
            Self::Sha1 => Hmac::<sha1::Sha1>::new_from_slice(key).is_ok_and(|mut m| {
                m.update(data);
                m.verify_slice(tag).is_ok()
            }),
            Self::Sha256 => Hmac::<sha2::Sha256>::new_from_slice(key).is_ok_and(|mut m| {
                m.update(data);
                m.verify_slice(tag).is_ok()
            }),
        }
    }
}

/// The bytes of an encrypted value's `CipherData/CipherValue`: IV and ciphertext.
fn cipher_value(encrypted: Node<'_, '_>) -> Result<Vec<u8>, String> {
    let value = child(encrypted, "CipherData").and_then(|data| child(data, "CipherValue")).ok_or("no CipherData/CipherValue")?;
    let bytes = base64_value(value).map_err(|_| "CipherValue: not base64")?;
    Ok(bytes.expose().clone())
}

/// An `EncryptionMethod` + `CipherData` element's plaintext, under `key`.
fn decrypt(encrypted: Node<'_, '_>, key: &Secret<Vec<u8>>) -> Result<Secret<Vec<u8>>, String> {
    let method = child(encrypted, "EncryptionMethod").and_then(|m| m.attribute("Algorithm")).unwrap_or_default();
    let data = cipher_value(encrypted)?;
    if data.len() < 32 || data.len() % 16 != 0 {
        return Err("CipherValue is not an IV and whole AES blocks".into());
    }
    let (iv, ciphertext) = data.split_at(16);
    let key = key.expose();
    let wrong_key = |bits: usize| format!("the pre-shared key is {} bytes; {method} takes {}", key.len(), bits / 8);
    let mut buffer = ciphertext.to_vec();
    let plain = match method {
        AES128_CBC => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
            .map_err(|_| wrong_key(128))?
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map(<[u8]>::to_vec),
        AES256_CBC => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
            .map_err(|_| wrong_key(256))?
            .decrypt_padded_mut::<Pkcs7>(&mut buffer)
            .map(<[u8]>::to_vec),
        "" => return Err("no EncryptionMethod".into()),
        other => return Err(format!("encryption {other:?} is not supported (aes128-cbc or aes256-cbc)")),
    };
    zeroize::Zeroize::zeroize(&mut buffer);
    plain.map(Secret::new).map_err(|_| "it does not decrypt with the pre-shared key".into())
}
