//! `crypt` fields in OneTable's own format, so that a OneTable app with the same key reads
//! what a device wrote and the reverse (ONETABLE.md, `crypt`).
//!
//! The key configuration is OneTable's `crypto` parameter: named keys, each a cipher and a
//! password (`{primary: {cipher: 'aes-256-gcm', password: '...'}}`); the key is the SHA-256
//! of the password. A value is stored as `{name}:{tag base64}:{iv hex}:{data base64}`
//! with a random 16-byte IV, and written with the key named `primary`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_types::{Item, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::{Model, Schema};

/// AES-256-GCM with OneTable's 16-byte IV.
type Cipher = AesGcm<Aes256, U16>;
/// The one cipher OneTable's format authenticates (its tag is GCM's).
pub const CIPHER: &str = "aes-256-gcm";
/// The key new values are encrypted with.
pub const WRITE_KEY: &str = "primary";
const TAG_LEN: usize = 16;
const IV_LEN: usize = 16;

/// The named keys of a database.
#[derive(Clone)]
pub struct Crypto {
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Crypto")
            .field("names", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Crypto {
    /// OneTable's `crypto` parameter: `{NAME: {cipher: 'aes-256-gcm', password: TEXT}}`,
    /// with a key named `primary`.
    pub fn from_json(config: &Json) -> Result<Crypto, String> {
        let names = config
            .as_object()
            .ok_or("crypto must be an object of named keys: {primary: {cipher, password}}")?;
        let mut keys = BTreeMap::new();
        for (name, key) in names {
            let cipher = key.get("cipher").and_then(Json::as_str);
            if cipher != Some(CIPHER) {
                return Err(format!(
                    "crypto.{name}.cipher must be '{CIPHER}' (found {})",
                    cipher.map_or("nothing".into(), |c| format!("'{c}'"))
                ));
            }
            let password = (key.get("password").and_then(Json::as_str))
                .filter(|p| !p.is_empty())
                .ok_or_else(|| format!("crypto.{name}.password must be a non-empty text"))?;
            keys.insert(name.clone(), Sha256::digest(password.as_bytes()).into());
        }
        if !keys.contains_key(WRITE_KEY) {
            return Err(format!(
                "crypto needs a key named '{WRITE_KEY}' (the one new values use)"
            ));
        }
        Ok(Crypto { keys })
    }

    /// `text` encrypted with the `primary` key, in OneTable's format.
    pub fn encrypt(&self, text: &str) -> Result<String, String> {
        let key = &self.keys[WRITE_KEY];
        let mut iv = [0u8; IV_LEN];
        getrandom::fill(&mut iv).map_err(|e| format!("no randomness for an IV: {e}"))?;
        let sealed = Cipher::new(key.into())
            .encrypt(Nonce::from_slice(&iv), Payload::from(text.as_bytes()))
            .map_err(|_| "encryption failed".to_string())?;
        let (data, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        Ok(format!(
            "{WRITE_KEY}:{}:{}:{}",
            BASE64.encode(tag),
            hex(&iv),
            BASE64.encode(data)
        ))
    }

    /// The text of a value in OneTable's format. A value not in that format is returned as
    /// it is (OneTable does the same); a wrong key or a tampered value is an error.
    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        let mut parts = stored.splitn(4, ':');
        let (Some(name), Some(tag), Some(iv), Some(data)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(stored.to_string());
        };
        if name.is_empty() || tag.is_empty() || iv.is_empty() || data.is_empty() {
            return Ok(stored.to_string());
        }
        let key = (self.keys.get(name)).ok_or_else(|| format!("no crypto key named '{name}'"))?;
        let bad = |what: &str| format!("a crypt value with a bad {what}");
        let tag = BASE64.decode(tag).map_err(|_| bad("tag"))?;
        let iv = unhex(iv)
            .filter(|iv| iv.len() == IV_LEN)
            .ok_or_else(|| bad("IV"))?;
        let mut sealed = BASE64.decode(data).map_err(|_| bad("ciphertext"))?;
        sealed.extend_from_slice(&tag);
        let plain = Cipher::new(key.into())
            .decrypt(Nonce::from_slice(&iv), Payload::from(sealed.as_slice()))
            .map_err(|_| {
                format!(
                    "a crypt value does not decrypt with key '{name}' (wrong password, or altered)"
                )
            })?;
        String::from_utf8(plain).map_err(|_| "a crypt value is not text".to_string())
    }
}

impl Model {
    /// The stored attributes of this model's crypt fields (a packed one holds a map, not
    /// text, and is left alone).
    /// Whether the model has crypt fields (its items must be opened for a caller).
    pub fn has_crypt(&self) -> bool {
        self.crypt_attrs().next().is_some()
    }

    fn crypt_attrs(&self) -> impl Iterator<Item = &str> {
        (self.fields.iter())
            .filter(|f| f.crypt)
            .map(|f| f.attr.as_str())
    }

    /// Encrypts the text values of this model's crypt fields in `item`, for storage.
    pub fn seal(&self, item: &mut Item, crypto: Option<&Crypto>) -> Result<(), String> {
        for attr in self.crypt_attrs() {
            // Empty text stays empty (as in OneTable); a value still sealed (one this key
            // could not open, carried through an update) is not sealed twice.
            if let Some(Value::S(text)) = item.get_mut(attr)
                && !text.is_empty()
                && !is_sealed(text)
            {
                let crypto =
                    crypto.ok_or_else(|| format!("{}.{attr}: no crypto key", self.name))?;
                *text = crypto.encrypt(text)?;
            }
        }
        Ok(())
    }

    /// `item` with the text of this model's crypt fields, for a caller. A value that does
    /// not decrypt (written with another key) is left as stored. Copies the item only when
    /// it has something to open.
    pub fn open<'a>(&self, item: &'a Item, crypto: Option<&Crypto>) -> Cow<'a, Item> {
        let mut opened = Cow::Borrowed(item);
        if let Some(crypto) = crypto {
            for (attr, text) in self.opened_attrs(item, crypto) {
                opened.to_mut().insert(attr, Value::S(text));
            }
        }
        opened
    }

    /// [`Model::open`] of an item the caller owns, in place (an update's existing item).
    pub fn open_owned(&self, mut item: Item, crypto: Option<&Crypto>) -> Item {
        if let Some(crypto) = crypto {
            for (attr, text) in self.opened_attrs(&item, crypto) {
                item.insert(attr, Value::S(text));
            }
        }
        item
    }

    /// The crypt attributes of `item` that `crypto` opens, with their text.
    fn opened_attrs(&self, item: &Item, crypto: &Crypto) -> Vec<(String, String)> {
        (self.crypt_attrs())
            .filter_map(|attr| match item.get(attr) {
                Some(Value::S(sealed)) => Some((attr.to_string(), crypto.decrypt(sealed).ok()?)),
                _ => None,
            })
            .collect()
    }
}

impl Schema {
    /// The first crypt field (`Model.field`), if the schema has one: a database of this
    /// schema needs a key.
    pub fn crypt_field(&self) -> Option<String> {
        self.models().find_map(|m| {
            m.fields
                .iter()
                .find(|f| f.crypt)
                .map(|f| format!("{}.{}", m.name, f.name))
        })
    }
}

/// Whether `text` has the shape of a sealed value (`name:tag:iv:data`, a 16-byte tag and
/// IV), whichever key sealed it.
fn is_sealed(text: &str) -> bool {
    let mut parts = text.splitn(4, ':');
    let (Some(name), Some(tag), Some(iv), Some(data)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    name_ok
        && BASE64.decode(tag).is_ok_and(|tag| tag.len() == TAG_LEN)
        && unhex(iv).is_some_and(|iv| iv.len() == IV_LEN)
        && !data.is_empty()
        && BASE64.decode(data).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crypto(password: &str) -> Crypto {
        Crypto::from_json(&json!({"primary": {"cipher": "aes-256-gcm", "password": password}}))
            .unwrap()
    }

    #[test]
    fn a_value_round_trips_and_is_not_stored_in_clear() {
        let stored = crypto("secret").encrypt("4111 1111").unwrap();
        assert!(
            stored.starts_with("primary:") && !stored.contains("4111"),
            "{stored}"
        );
        assert_eq!(stored.split(':').count(), 4);
        assert_eq!(crypto("secret").decrypt(&stored).unwrap(), "4111 1111");
    }

    #[test]
    fn onetable_ciphertext_decrypts() {
        // Written by dynamodb-onetable 2.7.7 (Node's crypto) with password "secret".
        let stored = "primary:IcwCDvZkxqje72hg07LHzQ==:000102030405060708090a0b0c0d0e0f:o6fp9w==";
        assert_eq!(crypto("secret").decrypt(stored).unwrap(), "test");
    }

    #[test]
    fn a_wrong_password_or_an_altered_value_is_an_error_not_garbage() {
        let stored = crypto("secret").encrypt("text").unwrap();
        assert!(
            crypto("other")
                .decrypt(&stored)
                .unwrap_err()
                .contains("wrong password")
        );
        let altered = stored.replacen(':', ":A", 1);
        assert!(crypto("secret").decrypt(&altered).is_err());
    }

    #[test]
    fn empty_text_and_values_already_sealed_are_left_as_they_are() {
        let schema = crate::Schema::parse(
            "{version: '1', indexes: {primary: {hash: 'pk'}}, models: {M: {pk: {type: 'string'}, \
             pin: {type: 'string', crypt: true}}}}",
        )
        .unwrap();
        let model = schema.model("M").unwrap();
        let other_key = crypto("old")
            .encrypt("4321")
            .unwrap()
            .replacen("primary", "retired", 1);
        let mut item = Item::new();
        item.insert("pin".into(), Value::S(other_key.clone()));
        model.seal(&mut item, Some(&crypto("new"))).unwrap();
        assert_eq!(item["pin"], Value::S(other_key), "not sealed twice");
        item.insert("pin".into(), Value::S(String::new()));
        model.seal(&mut item, Some(&crypto("new"))).unwrap();
        assert_eq!(item["pin"], Value::S(String::new()));
    }

    #[test]
    fn a_bad_configuration_names_what_is_wrong() {
        let error =
            Crypto::from_json(&json!({"primary": {"cipher": "aes-128-cbc", "password": "x"}}))
                .unwrap_err();
        assert!(error.contains("crypto.primary.cipher"), "{error}");
        let error =
            Crypto::from_json(&json!({"other": {"cipher": "aes-256-gcm", "password": "x"}}))
                .unwrap_err();
        assert!(error.contains("primary"), "{error}");
    }
}
