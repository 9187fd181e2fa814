//! Credentials: email normalisation, the password policy and argon2id hashing.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use atelier_common::FieldViolation;

pub const MIN_PASSWORD_CHARS: usize = 10;
/// Bounds the work one request can ask of the hasher.
pub const MAX_PASSWORD_CHARS: usize = 256;
const MAX_EMAIL_LEN: usize = 254;

/// The canonical form of an email: trimmed and lower-cased, so lookups and the
/// unique index are case-insensitive.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks a registration's fields, returning every violation at once.
pub fn check_registration(email: &str, password: &str) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    if email.is_empty() {
        violations.push(FieldViolation::new("email", "is required"));
    } else if email.len() > MAX_EMAIL_LEN || !email_address::EmailAddress::is_valid(email) {
        violations.push(FieldViolation::new("email", "is not a valid email address"));
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        violations.push(FieldViolation::new(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    } else if chars > MAX_PASSWORD_CHARS {
        violations.push(FieldViolation::new(
            "password",
            format!("must be at most {MAX_PASSWORD_CHARS} characters"),
        ));
    } else if normalize_email(password) == email {
        violations.push(FieldViolation::new(
            "password",
            "must not be the email address",
        ));
    }
    violations
}

/// Hashes with argon2id and the crate's OWASP-recommended defaults.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// True when `password` matches the stored PHC string `hash`.
pub fn verify(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reports_every_field() {
        let violations = check_registration("not-an-email", "short");
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "password"]);
    }

    #[test]
    fn password_equal_to_email_is_rejected() {
        let email = normalize_email(" Someone@Example.com ");
        let violations = check_registration(&email, "SOMEONE@example.com");
        assert_eq!(
            violations,
            vec![FieldViolation::new(
                "password",
                "must not be the email address"
            )]
        );
    }

    #[test]
    fn good_registration_passes() {
        assert!(check_registration("a@example.com", "correct horse battery").is_empty());
    }

    #[test]
    fn hashes_verify_and_are_salted() {
        let first = hash("correct horse battery").expect("hash");
        let second = hash("correct horse battery").expect("hash");
        assert!(first.starts_with("$argon2id$"));
        assert_ne!(first, second);
        assert!(verify("correct horse battery", &first));
        assert!(!verify("wrong horse battery", &first));
        assert!(!verify("anything", "not a hash"));
    }
}
