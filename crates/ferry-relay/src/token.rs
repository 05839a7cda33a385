//! Tokens: signed (HMAC-SHA256, a JWT through `jsonwebtoken`), expiring, naming the device
//! (or, for a service token, the cloud service) and the scopes it may read and write. The
//! relay checks one in every handshake, and the write rule checks every change against the
//! grant it makes (`Claims::grant`).

use std::collections::BTreeSet;
use std::path::Path;

use ferry_cloud::{Grant, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// The fewest bytes a secret may have (the hash's own size).
pub const SECRET_BYTES_MIN: usize = 32;
/// A secret file with fewer distinct bytes is no random secret (32 random bytes have about
/// 30): a placeholder or a typed word.
const SECRET_DISTINCT_BYTES_MIN: usize = 8;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The device (`sub`).
    pub sub: String,
    /// The scopes it may read and write; empty: only its own (`sub`) and the shared `*`.
    #[serde(default)]
    pub scopes: BTreeSet<String>,
    /// Issued at (epoch seconds).
    pub iat: u64,
    /// Expires at (epoch seconds).
    pub exp: u64,
    /// A service token: its holder writes as the cloud (the models the cloud owns), not as
    /// a device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service: bool,
}

impl Claims {
    /// The scopes the device is granted: those named, else its own and the shared `*`.
    pub fn granted(&self) -> BTreeSet<String> {
        match self.scopes.is_empty() {
            true => [self.sub.clone(), "*".to_string()].into(),
            false => self.scopes.clone(),
        }
    }

    /// What the write rule lets the holder write: its role and its granted scopes.
    pub fn grant(&self) -> Grant {
        let scopes = Some(self.granted());
        match self.service {
            true => Grant::service(&self.sub, scopes),
            false => Grant::device(&self.sub, scopes),
        }
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its `exp`.
    #[error("the token expired")]
    Expired,
    /// The signature does not match: altered, or signed with another secret.
    #[error("the token's signature does not match (altered, or signed with another secret)")]
    BadSignature,
    /// Not a token at all.
    #[error("the token is malformed: {0}")]
    Malformed(String),
    /// The secret cannot sign (too short, unreadable).
    #[error("{0}")]
    Secret(String),
}

/// The relay's signing secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The secret in `bytes` (at least [`SECRET_BYTES_MIN`]).
    pub fn new(bytes: Vec<u8>) -> Result<Secret, TokenError> {
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(TokenError::Secret(format!(
                "a secret of {} bytes is too short: use at least {SECRET_BYTES_MIN} (head -c 32 /dev/urandom > FILE)",
                bytes.len()
            )));
        }
        Ok(Secret(bytes))
    }

    /// The secret in `path` (its bytes as they are). Refused if others than its owner may
    /// read the file, or if it is too short or too uniform to be random.
    pub fn from_file(path: &Path) -> Result<Secret, TokenError> {
        let refused =
            |why: String| TokenError::Secret(format!("the secret {}: {why}", path.display()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| refused(e.to_string()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(refused(format!(
                    "others than its owner may read it (mode {mode:o}): chmod 600 it"
                )));
            }
        }
        let bytes = std::fs::read(path).map_err(|e| refused(format!("cannot be read: {e}")))?;
        let distinct = bytes.iter().collect::<BTreeSet<_>>().len();
        if distinct < SECRET_DISTINCT_BYTES_MIN && bytes.len() >= SECRET_BYTES_MIN {
            return Err(refused(format!(
                "it has only {distinct} distinct bytes, which no random secret has: \
                 head -c 32 /dev/urandom > FILE"
            )));
        }
        Secret::new(bytes).map_err(|e| refused(e.to_string()))
    }

    /// A token for `device`, granted `scopes`, valid for `ttl_s` seconds from now.
    pub fn sign(
        &self,
        device: &str,
        scopes: BTreeSet<String>,
        ttl_s: u64,
    ) -> Result<String, TokenError> {
        self.sign_as(Role::Device, device, scopes, ttl_s)
    }

    /// A token for `name` in `role` (a device, or a cloud service), granted `scopes`, valid
    /// for `ttl_s` seconds from now.
    pub fn sign_as(
        &self,
        role: Role,
        name: &str,
        scopes: BTreeSet<String>,
        ttl_s: u64,
    ) -> Result<String, TokenError> {
        let iat = crate::wall_ms() / 1000;
        self.sign_claims(&Claims {
            sub: name.to_string(),
            scopes,
            iat,
            exp: iat.saturating_add(ttl_s),
            service: role == Role::Service,
        })
    }

    /// A token carrying `claims` as they are (a token service with its own clock).
    pub fn sign_claims(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(&self.0),
        )
        .map_err(|e| TokenError::Secret(e.to_string()))
    }

    /// The claims of `token`, if this secret signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, crate::wall_ms() / 1000)
    }

    /// [`Secret::verify`] at `now_s` (epoch seconds) of the relay's clock.
    pub fn verify_at(&self, token: &str, now_s: u64) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        // Expiry is checked below against the relay's clock, not the library's.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let decoded =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.0), &validation);
        let claims = decoded
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed(e.to_string()),
            })?;
        match claims.exp <= now_s {
            true => Err(TokenError::Expired),
            false => Ok(claims),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(fill: u8) -> Secret {
        Secret::new(vec![fill; 32]).unwrap()
    }

    #[test]
    fn a_token_names_its_device_and_scopes() {
        let token = secret(1)
            .sign("pump-7", ["pump-7".to_string(), "*".to_string()].into(), 60)
            .unwrap();
        let claims = secret(1).verify(&token).unwrap();
        assert_eq!(claims.sub, "pump-7");
        assert_eq!(
            claims.granted(),
            ["pump-7".to_string(), "*".to_string()].into()
        );
        let own = secret(1).sign("pump-8", BTreeSet::new(), 60).unwrap();
        assert_eq!(
            secret(1).verify(&own).unwrap().granted(),
            ["pump-8".to_string(), "*".to_string()].into()
        );
    }

    #[test]
    fn a_service_token_grants_the_service_role() {
        let scopes: BTreeSet<String> = ["*".to_string()].into();
        let token = secret(1)
            .sign_as(Role::Service, "config", scopes.clone(), 60)
            .unwrap();
        let grant = secret(1).verify(&token).unwrap().grant();
        assert_eq!(grant, Grant::service("config", Some(scopes)));
        let device = secret(1).sign("pump-7", BTreeSet::new(), 60).unwrap();
        let grant = secret(1).verify(&device).unwrap().grant();
        assert_eq!(grant.role, Role::Device, "a device token stays a device's");
    }

    #[test]
    fn a_wrong_expired_or_tampered_token_is_refused_saying_why() {
        let token = secret(1).sign("pump-7", BTreeSet::new(), 60).unwrap();
        assert_eq!(secret(2).verify(&token), Err(TokenError::BadSignature));
        let expired = secret(1).sign("pump-7", BTreeSet::new(), 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1_100));
        assert_eq!(secret(1).verify(&expired), Err(TokenError::Expired));
        // Another device's name in the same signature.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let other = secret(1).sign("pump-8", BTreeSet::new(), 60).unwrap();
        parts[1] = other.split('.').nth(1).unwrap().to_string();
        assert_eq!(
            secret(1).verify(&parts.join(".")),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            secret(1).verify("not a token"),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn a_short_secret_is_refused() {
        let error = Secret::new(vec![0; 8]).unwrap_err().to_string();
        assert!(error.contains("too short"), "{error}");
    }
}
