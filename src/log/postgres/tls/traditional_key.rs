//! A private key in OpenSSL's older ("traditional") encrypted form: a PEM
//! `RSA PRIVATE KEY` or `EC PRIVATE KEY` block with the headers
//! `Proc-Type: 4,ENCRYPTED` and `DEK-Info: CIPHER,IV`, as `openssl genrsa
//! -aes256` (OpenSSL 1.x), `openssl rsa -aes256 -traditional` and `openssl
//! ec -aes256` write it. libpq reads it through OpenSSL, so keys made years
//! ago still work; so they do here.
//!
//! The cipher's key is OpenSSL's `EVP_BytesToKey` with MD5, one round and
//! the IV's first 8 bytes as salt; the body is the PKCS#1 or SEC1 key,
//! encrypted in CBC mode with PKCS#7 padding. The ciphers are OpenSSL's
//! for this form: AES-128/192/256-CBC and DES-EDE3-CBC (DES-CBC, 56-bit,
//! is refused).

use aes::cipher::{block_padding::Pkcs7, BlockCipher, BlockDecryptMut, KeyInit, KeyIvInit};
use base64::Engine;
use md5::{Digest, Md5};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer, PrivateSec1KeyDer};

/// The header that marks this form.
pub(crate) const ENCRYPTED_HEADER: &str = "Proc-Type: 4,ENCRYPTED";

/// Why a key in this form was not read: said to the user as it is (it
/// never holds the password).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unreadable(pub(crate) String);

/// The key the first encrypted block of `text` holds, decrypted with
/// `password`.
pub(crate) fn decrypt(text: &str, password: &str) -> Result<PrivateKeyDer<'static>, Unreadable> {
    let block = Block::parse(text)?;
    let plain = block.cipher.decrypt(password, &block.iv, &block.body)?;
    // A wrong password leaves good padding once in about 256 tries; what
    // it leaves is then no DER structure.
    if !is_one_der_sequence(&plain) {
        return Err(wrong_password());
    }
    Ok(match block.kind {
        Kind::Rsa => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(plain)),
        Kind::Ec => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(plain)),
    })
}

enum Kind {
    Rsa,
    Ec,
}

#[derive(Clone, Copy)]
enum Cipher {
    Aes128,
    Aes192,
    Aes256,
    TripleDes,
}

struct Block {
    kind: Kind,
    cipher: Cipher,
    iv: Vec<u8>,
    body: Vec<u8>,
}

impl Block {
    /// The first `RSA PRIVATE KEY` or `EC PRIVATE KEY` block with the
    /// encryption headers: its kind, cipher, IV and encrypted body.
    fn parse(text: &str) -> Result<Block, Unreadable> {
        let (kind, label) = [(Kind::Rsa, "RSA PRIVATE KEY"), (Kind::Ec, "EC PRIVATE KEY")]
            .into_iter()
            .find(|(_, label)| text.contains(&format!("-----BEGIN {label}-----")))
            .ok_or_else(|| Unreadable("it holds no RSA PRIVATE KEY or EC PRIVATE KEY block".into()))?;
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text.find(&begin).map_or(0, |at| at + begin.len());
        let inside = text[start..].split(&end).next().unwrap_or_default();
        let (headers, body) = inside
            .split_once("\n\n")
            .or_else(|| inside.split_once("\r\n\r\n"))
            .ok_or_else(|| Unreadable("its headers are not followed by an empty line".into()))?;
        let dek_info = headers
            .lines()
            .find_map(|line| line.trim().strip_prefix("DEK-Info:"))
            .ok_or_else(|| Unreadable("it has no DEK-Info header".into()))?;
        let (name, iv) = dek_info.trim().split_once(',').ok_or_else(|| Unreadable("its DEK-Info has no IV".into()))?;
        let cipher = Cipher::named(name.trim())?;
        let iv = hex::decode(iv.trim()).map_err(|_| Unreadable("its DEK-Info IV is not hexadecimal".into()))?;
        if iv.len() != cipher.iv_bytes() {
            return Err(Unreadable(format!("its DEK-Info IV has {} bytes, not {}", iv.len(), cipher.iv_bytes())));
        }
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let body = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| Unreadable("its body is not base64".into()))?;
        Ok(Block { kind, cipher, iv, body })
    }
}

impl Cipher {
    fn named(name: &str) -> Result<Cipher, Unreadable> {
        match name.to_ascii_uppercase().as_str() {
            "AES-128-CBC" => Ok(Cipher::Aes128),
            "AES-192-CBC" => Ok(Cipher::Aes192),
            "AES-256-CBC" => Ok(Cipher::Aes256),
            "DES-EDE3-CBC" => Ok(Cipher::TripleDes),
            other => Err(Unreadable(format!(
                "it is encrypted with {other}, which is not read (AES-128/192/256-CBC and DES-EDE3-CBC are)"
            ))),
        }
    }

    fn key_bytes(self) -> usize {
        match self {
            Cipher::Aes128 => 16,
            Cipher::Aes192 | Cipher::TripleDes => 24,
            Cipher::Aes256 => 32,
        }
    }

    fn iv_bytes(self) -> usize {
        match self {
            Cipher::TripleDes => 8,
            Cipher::Aes128 | Cipher::Aes192 | Cipher::Aes256 => 16,
        }
    }

    /// The plain key, or what a wrong password leaves of it.
    fn decrypt(self, password: &str, iv: &[u8], body: &[u8]) -> Result<Vec<u8>, Unreadable> {
        let key = bytes_to_key(password.as_bytes(), &iv[..8], self.key_bytes());
        match self {
            Cipher::Aes128 => cbc_decrypt::<aes::Aes128>(&key, iv, body),
            Cipher::Aes192 => cbc_decrypt::<aes::Aes192>(&key, iv, body),
            Cipher::Aes256 => cbc_decrypt::<aes::Aes256>(&key, iv, body),
            Cipher::TripleDes => cbc_decrypt::<des::TdesEde3>(&key, iv, body),
        }
    }
}

/// `body` decrypted with the block cipher `C` in CBC mode, PKCS#7 padding.
fn cbc_decrypt<C>(key: &[u8], iv: &[u8], body: &[u8]) -> Result<Vec<u8>, Unreadable>
where
    C: BlockDecryptMut + BlockCipher + KeyInit,
{
    cbc::Decryptor::<C>::new_from_slices(key, iv)
        .map_err(|_| Unreadable("its cipher could not be set up".into()))?
        .decrypt_padded_vec_mut::<Pkcs7>(body)
        .map_err(|_| wrong_password())
}

fn wrong_password() -> Unreadable {
    Unreadable("it could not be decrypted with sslpassword: the password is wrong".into())
}

/// Whether `bytes` are one DER `SEQUENCE` (tag 0x30) whose length, short
/// or long form, covers them exactly, as every PKCS#1 and SEC1 key is.
fn is_one_der_sequence(bytes: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = bytes else { return false };
    let (length, content) = if *first < 0x80 {
        (usize::from(*first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return false;
        }
        let length = rest[..count].iter().fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[count..])
    };
    length == content.len()
}

/// OpenSSL's `EVP_BytesToKey(cipher, MD5, salt, password, 1)`: MD5 over
/// the previous digest, the password and the salt, repeated until there
/// are `length` bytes.
fn bytes_to_key(password: &[u8], salt: &[u8], length: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(length + 16);
    let mut previous: Vec<u8> = Vec::new();
    while key.len() < length {
        let mut digest = Md5::new();
        digest.update(&previous);
        digest.update(password);
        digest.update(salt);
        previous = digest.finalize().to_vec();
        key.extend_from_slice(&previous);
    }
    key.truncate(length);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSL's own answer for these inputs (`openssl enc -aes-256-cbc
    /// -md md5 -pass pass:secret -S 0001020304050607 -P`): the key
    /// derivation matches it byte for byte.
    #[test]
    fn the_key_derivation_is_openssl_s() {
        let key = bytes_to_key(b"secret", &[0, 1, 2, 3, 4, 5, 6, 7], 32);
        assert_eq!(hex::encode_upper(key), OPENSSL_KEY);
    }

    const OPENSSL_KEY: &str = "035FB8145B73CF111570DC936112BE9C375A5D3D8B915BC213BDBEF9DBFB7851";

    /// An RSA key (PKCS#1) as `openssl rsa -traditional -aes256` encrypts
    /// it decrypts to the key `openssl genrsa -traditional` wrote.
    #[test]
    fn an_rsa_key_encrypted_by_openssl_decrypts_to_the_same_key() {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let (plain, encrypted) = (dir.path().join("plain.key"), dir.path().join("encrypted.key"));
        let openssl = |arguments: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new("openssl").args(arguments).status().unwrap();
            assert!(status.success(), "openssl {arguments:?}");
        };
        openssl(&["genrsa".as_ref(), "-traditional".as_ref(), "-out".as_ref(), plain.as_os_str(), "2048".as_ref()]);
        openssl(&[
            "rsa".as_ref(),
            "-traditional".as_ref(),
            "-aes256".as_ref(),
            "-passout".as_ref(),
            "pass:secret".as_ref(),
            "-in".as_ref(),
            plain.as_os_str(),
            "-out".as_ref(),
            encrypted.as_os_str(),
        ]);
        let expected = PrivateKeyDer::from_pem_file(&plain).unwrap();
        let text = std::fs::read_to_string(&encrypted).unwrap();
        assert!(text.contains("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED"), "{text}");
        let decrypted = decrypt(&text, "secret").unwrap();
        assert!(matches!(decrypted, PrivateKeyDer::Pkcs1(_)));
        assert_eq!(decrypted.secret_der(), expected.secret_der());
        assert!(decrypt(&text, "not-secret")
            .is_err_and(|Unreadable(why)| !why.contains("secret") || why.contains("sslpassword")));
    }

    #[test]
    fn only_one_whole_der_sequence_passes_for_a_key() {
        assert!(is_one_der_sequence(&[0x30, 0x02, 0x05, 0x00]));
        assert!(is_one_der_sequence(&[&[0x30, 0x81, 0x80][..], &[0; 0x80]].concat()));
        assert!(!is_one_der_sequence(&[0x30, 0x03, 0x05, 0x00]), "shorter than its length");
        assert!(!is_one_der_sequence(&[0x31, 0x02, 0x05, 0x00]), "not a SEQUENCE");
        assert!(!is_one_der_sequence(&[0x30, 0x80]), "indefinite length is not DER");
        assert!(!is_one_der_sequence(&[]));
    }

    #[test]
    fn a_block_without_its_headers_or_with_another_cipher_says_why() {
        let block = |headers: &str| {
            format!("-----BEGIN RSA PRIVATE KEY-----\n{headers}\n\nAAAA\n-----END RSA PRIVATE KEY-----\n")
        };
        let refused = |text: &str| decrypt(text, "secret").map(|_| ()).unwrap_err().0;
        assert!(refused("nothing").contains("no RSA PRIVATE KEY or EC PRIVATE KEY"));
        assert!(refused(&block("Proc-Type: 4,ENCRYPTED")).contains("no DEK-Info"));
        assert!(refused(&block("Proc-Type: 4,ENCRYPTED\nDEK-Info: DES-CBC,0001020304050607"))
            .contains("DES-CBC, which is not read"));
        assert!(
            refused(&block("Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,0001")).contains("IV has 2 bytes, not 16")
        );
        assert!(refused(&block("Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,zz")).contains("not hexadecimal"));
    }
}
