//! `crypt` fields sealed at rest: a write stores them encrypted in OneTable's format (so
//! they replicate, and reach the cloud, encrypted), a read opens them for the caller.

use ferry_schema::{Crypto, Model, Schema};
use ferry_store::Store;
use ferry_types::Item;

use crate::{Error, Result};

/// Meta record holding a value sealed with the database's key, to tell a wrong key at open.
const META_KEY_CHECK: &str = "crypt_check";
const KEY_CHECK_TEXT: &str = "ferry";

/// Refuses a schema with crypt fields and no key (naming the field), and a key that is not
/// the one the database was written with; remembers the key's check value.
pub(crate) fn check_key(store: &Store, schema: &Schema, crypto: Option<&Crypto>) -> Result<()> {
    schema.require_crypto(crypto)?;
    let Some(crypto) = crypto else {
        return Ok(());
    };
    match store.meta_text(META_KEY_CHECK)? {
        Some(sealed) => match crypto.decrypt(&sealed) {
            Ok(text) if text == KEY_CHECK_TEXT => Ok(()),
            _ => Err(Error::Argument(
                "the crypto key is not the one this database's crypt fields were written with"
                    .into(),
            )),
        },
        None => {
            let sealed = crypto.encrypt(KEY_CHECK_TEXT).map_err(Error::Argument)?;
            store.write(ferry_store::Durability::Immediate, |tx| {
                tx.set_meta(META_KEY_CHECK, sealed.into_bytes());
                Ok::<_, Error>(())
            })?;
            Ok(())
        }
    }
}

/// Encrypts the text values of `model`'s crypt fields in `item`.
pub(crate) fn seal(model: &Model, item: &mut Item, crypto: Option<&Crypto>) -> Result<()> {
    model.seal(item, crypto).map_err(Error::Argument)
}
