//! Encryption (HaiCrypt as libsrt does it): the key material message, the key
//! encrypting key derived from the passphrase (PBKDF2-HMAC-SHA1, 2048 rounds, the
//! salt's last 8 bytes), the stream keys wrapped with it (RFC 3394), and AES-CTR over
//! each data packet's payload with a counter made of the salt and the packet's
//! sequence number. The listener decrypts; [`Encrypter`] (a sender's side) serves
//! tests and benchmarks.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

use crate::seq::SeqNo;

/// PBKDF2 rounds HaiCrypt uses.
const PBKDF2_ROUNDS: u32 = 2048;
/// RFC 3394's initial value.
const WRAP_IV: [u8; 8] = [0xa6; 8];
/// Salt bytes (the only length defined).
pub const SALT_LEN: usize = 16;
/// Shortest and longest passphrase SRT accepts.
pub const PASSPHRASE_MIN: usize = 10;
pub const PASSPHRASE_MAX: usize = 79;

/// Why key material cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KmError {
    #[error("malformed key material")]
    Malformed,
    #[error("unsupported cipher (only AES-CTR)")]
    Unsupported,
    #[error("the passphrase does not unwrap the key")]
    BadSecret,
}

/// A key material message, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial<'a> {
    /// Which keys it carries: 1 even, 2 odd, 3 both (even first).
    pub keys: u8,
    pub salt: &'a [u8],
    /// Bytes of one key (16, 24, 32).
    pub key_len: usize,
    /// The wrapped key(s), 8 bytes longer than the keys.
    pub wrapped: &'a [u8],
}

impl<'a> KeyMaterial<'a> {
    /// Reads a message (trailing padding to a 32-bit boundary is allowed).
    pub fn parse(b: &'a [u8]) -> Result<KeyMaterial<'a>, KmError> {
        if b.len() < 16 {
            return Err(KmError::Malformed);
        }
        // Version 1, packet type 2 (key material), signature "HAI".
        if b[0] != 0x12 || b[1..3] != [0x20, 0x29] {
            return Err(KmError::Malformed);
        }
        let keys = b[3] & 0b11;
        if keys == 0 {
            return Err(KmError::Malformed);
        }
        // Cipher AES-CTR, no authentication, stream encapsulation MPEG-TS/SRT.
        if b[8] != 2 || b[9] != 0 {
            return Err(KmError::Unsupported);
        }
        if b[10] != 2 {
            return Err(KmError::Malformed);
        }
        let salt_len = b[14] as usize * 4;
        let key_len = b[15] as usize * 4;
        if salt_len != SALT_LEN || !matches!(key_len, 16 | 24 | 32) {
            return Err(KmError::Malformed);
        }
        let n = if keys == 3 { 2 } else { 1 };
        let end = 16 + salt_len + 8 + n * key_len;
        if b.len() < end || b[end..].len() >= 4 || b[end..].iter().any(|&x| x != 0) {
            return Err(KmError::Malformed);
        }
        Ok(KeyMaterial {
            keys,
            salt: &b[16..16 + salt_len],
            key_len,
            wrapped: &b[16 + salt_len..end],
        })
    }
}

/// AES of one of the three key sizes.
#[derive(Clone)]
enum Aes {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

type Block = GenericArray<u8, aes::cipher::consts::U16>;

impl Aes {
    fn new(key: &[u8]) -> Option<Aes> {
        Some(match key.len() {
            16 => Aes::A128(aes::Aes128::new_from_slice(key).ok()?),
            24 => Aes::A192(aes::Aes192::new_from_slice(key).ok()?),
            32 => Aes::A256(aes::Aes256::new_from_slice(key).ok()?),
            _ => return None,
        })
    }

    fn encrypt(&self, blocks: &mut [Block]) {
        match self {
            Aes::A128(a) => a.encrypt_blocks(blocks),
            Aes::A192(a) => a.encrypt_blocks(blocks),
            Aes::A256(a) => a.encrypt_blocks(blocks),
        }
    }

    fn decrypt(&self, block: &mut Block) {
        match self {
            Aes::A128(a) => a.decrypt_block(block),
            Aes::A192(a) => a.decrypt_block(block),
            Aes::A256(a) => a.decrypt_block(block),
        }
    }
}

/// The key encrypting key of a passphrase for a salt.
pub fn derive_kek(passphrase: &[u8], salt: &[u8], key_len: usize) -> Vec<u8> {
    let mut kek = vec![0u8; key_len];
    let tail = &salt[salt.len().saturating_sub(8)..];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(passphrase, tail, PBKDF2_ROUNDS, &mut kek);
    kek
}

/// RFC 3394 key wrap.
pub fn wrap(kek: &[u8], keys: &[u8]) -> Vec<u8> {
    let aes = Aes::new(kek).expect("a 16, 24 or 32-byte key encrypting key");
    let n = keys.len() / 8;
    let mut a = WRAP_IV;
    let mut r: Vec<[u8; 8]> = keys
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    for j in 0..6 {
        for (i, ri) in r.iter_mut().enumerate() {
            let mut b = Block::default();
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            aes.encrypt(std::slice::from_mut(&mut b));
            let t = (n * j + i + 1) as u64;
            a.copy_from_slice(&b[..8]);
            for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
                *x ^= y;
            }
            ri.copy_from_slice(&b[8..]);
        }
    }
    let mut out = a.to_vec();
    for ri in r {
        out.extend_from_slice(&ri);
    }
    out
}

/// RFC 3394 key unwrap; `BadSecret` when the integrity check fails (a wrong
/// passphrase).
pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, KmError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(KmError::Malformed);
    }
    let aes = Aes::new(kek).ok_or(KmError::Malformed)?;
    let n = wrapped.len() / 8 - 1;
    let mut a: [u8; 8] = wrapped[..8].try_into().expect("8 bytes");
    let mut r: Vec<[u8; 8]> = wrapped[8..]
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    for j in (0..6).rev() {
        for i in (0..n).rev() {
            let t = (n * j + i + 1) as u64;
            let mut b = Block::default();
            for (k, (x, y)) in a.iter().zip(t.to_be_bytes()).enumerate() {
                b[k] = x ^ y;
            }
            b[8..].copy_from_slice(&r[i]);
            aes.decrypt(&mut b);
            a.copy_from_slice(&b[..8]);
            r[i].copy_from_slice(&b[8..]);
        }
    }
    if a != WRAP_IV {
        return Err(KmError::BadSecret);
    }
    Ok(r.concat())
}

/// AES-CTR over a packet's payload: counter block = (salt's first 14 bytes XOR the
/// sequence number at bytes 10..14) then a 16-bit block index. The same operation
/// encrypts and decrypts.
fn ctr(aes: &Aes, salt: &[u8; SALT_LEN], seq: SeqNo, payload: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[10..14].copy_from_slice(&seq.get().to_be_bytes());
    for (x, s) in iv[..14].iter_mut().zip(salt) {
        *x ^= s;
    }
    // A packet is at most ~1500 bytes: 94 blocks, encrypted together (AES-NI works
    // on several blocks at once).
    let mut blocks = [Block::default(); 96];
    for chunk in payload.chunks_mut(16 * blocks.len()).enumerate() {
        let (c, data) = chunk;
        let count = data.len().div_ceil(16);
        for (i, b) in blocks[..count].iter_mut().enumerate() {
            let index = (c * 96 + i) as u16;
            b[..14].copy_from_slice(&iv[..14]);
            b[14..].copy_from_slice(&index.to_be_bytes());
        }
        aes.encrypt(&mut blocks[..count]);
        for (d, k) in data.iter_mut().zip(blocks.iter().flat_map(|b| b.iter())) {
            *d ^= k;
        }
    }
}

/// A receiver's keys: the even and odd stream keys in force and how to unwrap new
/// ones (a sender refreshes its keys during the stream).
pub struct Decrypter {
    passphrase: Vec<u8>,
    salt: [u8; SALT_LEN],
    /// The key encrypting key for `salt` (its length is the stream keys').
    kek: Vec<u8>,
    even: Option<Aes>,
    odd: Option<Aes>,
}

impl std::fmt::Debug for Decrypter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decrypter")
    }
}

impl Decrypter {
    /// The keys of a caller's key material, unwrapped with `passphrase`.
    pub fn new(passphrase: &[u8], km: &KeyMaterial<'_>) -> Result<Decrypter, KmError> {
        let mut d = Decrypter {
            passphrase: passphrase.to_vec(),
            salt: [0; SALT_LEN],
            kek: Vec::new(),
            even: None,
            odd: None,
        };
        d.update(km)?;
        Ok(d)
    }

    /// Takes a refreshed key material message.
    pub fn update(&mut self, km: &KeyMaterial<'_>) -> Result<(), KmError> {
        if self.kek.len() != km.key_len || self.salt[..] != *km.salt {
            self.kek = derive_kek(&self.passphrase, km.salt, km.key_len);
            self.salt.copy_from_slice(km.salt);
        }
        let keys = unwrap(&self.kek, km.wrapped)?;
        let key = |i: usize| Aes::new(&keys[i * km.key_len..(i + 1) * km.key_len]);
        match km.keys {
            1 => self.even = key(0),
            2 => self.odd = key(0),
            _ => {
                self.even = key(0);
                self.odd = key(1);
            }
        }
        Ok(())
    }

    /// Decrypts a payload in place; `false` when the key it names is not known.
    pub fn decrypt(&self, seq: SeqNo, key: u8, payload: &mut [u8]) -> bool {
        let aes = match key {
            1 => self.even.as_ref(),
            2 => self.odd.as_ref(),
            _ => None,
        };
        match aes {
            Some(aes) => {
                ctr(aes, &self.salt, seq, payload);
                true
            }
            None => false,
        }
    }
}

/// A sender's side: one (even) stream key, for tests and benchmarks.
pub struct Encrypter {
    salt: [u8; SALT_LEN],
    aes: Aes,
}

impl Encrypter {
    /// Encrypts with `key` (16, 24 or 32 bytes) and `salt`; also gives the key material
    /// message that carries the key wrapped with `passphrase`.
    pub fn new(passphrase: &[u8], salt: [u8; SALT_LEN], key: &[u8]) -> (Encrypter, Vec<u8>) {
        let kek = derive_kek(passphrase, &salt, key.len());
        let wrapped = wrap(&kek, key);
        let mut km = vec![0x12, 0x20, 0x29, 1, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 4];
        km.push((key.len() / 4) as u8);
        km.extend_from_slice(&salt);
        km.extend_from_slice(&wrapped);
        (
            Encrypter {
                salt,
                aes: Aes::new(key).expect("a 16, 24 or 32-byte key"),
            },
            km,
        )
    }

    /// Encrypts a payload in place (the packet's key flag is 1, even).
    pub fn encrypt(&self, seq: SeqNo, payload: &mut [u8]) {
        ctr(&self.aes, &self.salt, seq, payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_wrap_matches_rfc_3394() {
        // RFC 3394 4.1 and 4.6.
        let kek = hex("000102030405060708090A0B0C0D0E0F");
        let key = hex("00112233445566778899AABBCCDDEEFF");
        let w = wrap(&kek, &key);
        assert_eq!(w, hex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5"));
        assert_eq!(unwrap(&kek, &w).unwrap(), key);
        let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let key = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let w = wrap(&kek, &key);
        assert_eq!(
            w,
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21")
        );
        assert_eq!(unwrap(&kek, &w).unwrap(), key);
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert_eq!(unwrap(&kek, &bad), Err(KmError::BadSecret));
    }

    #[test]
    fn kek_is_pbkdf2_hmac_sha1_over_the_salts_tail() {
        // RFC 6070's second vector ("password", "salt", 2 rounds) cannot be run at
        // 2048 rounds; the derivation is checked against the PBKDF2 of the salt's last
        // 8 bytes instead, and two salts that share them give the same key.
        let a = derive_kek(b"passphrase-1", &[7u8; 16], 16);
        let mut other = [9u8; 16];
        other[8..].copy_from_slice(&[7u8; 8]);
        assert_eq!(a, derive_kek(b"passphrase-1", &other, 16));
        assert_ne!(a, derive_kek(b"passphrase-2", &[7u8; 16], 16));
        let mut expect = [0u8; 16];
        pbkdf2::pbkdf2_hmac::<sha1::Sha1>(b"passphrase-1", &[7u8; 8], 2048, &mut expect);
        assert_eq!(a, expect);
    }

    #[test]
    fn a_payload_encrypted_by_a_sender_decrypts_with_the_passphrase_only() {
        let salt = [3u8; SALT_LEN];
        for key_len in [16, 24, 32] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            let (enc, km) = Encrypter::new(b"correct horse battery", salt, &key);
            let parsed = KeyMaterial::parse(&km).unwrap();
            assert_eq!((parsed.keys, parsed.key_len), (1, key_len));
            let plain: Vec<u8> = (0..1316u32).map(|i| (i * 31 % 251) as u8).collect();
            let mut data = plain.clone();
            enc.encrypt(SeqNo::new(77), &mut data);
            assert_ne!(data, plain);
            let dec = Decrypter::new(b"correct horse battery", &parsed).unwrap();
            let mut back = data.clone();
            assert!(dec.decrypt(SeqNo::new(77), 1, &mut back));
            assert_eq!(back, plain);
            // Another sequence number is another counter.
            let mut wrong_seq = data.clone();
            dec.decrypt(SeqNo::new(78), 1, &mut wrong_seq);
            assert_ne!(wrong_seq, plain);
            // The odd key was never sent.
            assert!(!dec.decrypt(SeqNo::new(77), 2, &mut data.clone()));
            assert_eq!(
                Decrypter::new(b"wrong horse battery", &parsed).unwrap_err(),
                KmError::BadSecret
            );
        }
    }

    #[test]
    fn key_material_is_checked() {
        let (_, km) = Encrypter::new(b"0123456789", [1; 16], &[2; 16]);
        assert!(KeyMaterial::parse(&km).is_ok());
        let mut padded = km.clone();
        padded.extend_from_slice(&[0, 0]);
        assert!(KeyMaterial::parse(&padded).is_ok());
        let mut gcm = km.clone();
        gcm[8] = 4;
        assert_eq!(KeyMaterial::parse(&gcm), Err(KmError::Unsupported));
        let mut sign = km.clone();
        sign[2] = 0;
        assert_eq!(KeyMaterial::parse(&sign), Err(KmError::Malformed));
        assert_eq!(
            KeyMaterial::parse(&km[..km.len() - 1]),
            Err(KmError::Malformed)
        );
        let mut no_key = km.clone();
        no_key[3] = 0;
        assert_eq!(KeyMaterial::parse(&no_key), Err(KmError::Malformed));
    }
}
