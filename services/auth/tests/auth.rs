//! The auth service over real gRPC, on PostgreSQL and on SQLite.

use std::time::Duration;

use atelier_auth::domain::keys::KeyRing;
use atelier_common::{Claims, error::field_violations, token};
use atelier_proto::auth::v1::{self as pb, auth_service_client::AuthServiceClient};
use atelier_testbed::{Backend, Options, TestPlatform, tonic_channel::Channel};
use atelier_testkit::backends;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tonic::{Code, Request};

const PASSWORD: &str = "correct horse battery";

type Client = AuthServiceClient<Channel>;

fn client(platform: &TestPlatform) -> Client {
    AuthServiceClient::new(platform.auth_channel())
}

async fn register(client: &mut Client, email: &str) -> pb::Session {
    client
        .register(pb::RegisterRequest {
            email: email.into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("register")
        .into_inner()
        .session
        .expect("session")
}

async fn refresh(client: &mut Client, token: &str) -> Result<pb::Session, tonic::Status> {
    client
        .refresh(pb::RefreshRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|reply| reply.into_inner().session.expect("session"))
}

async fn current_user(client: &mut Client, token: &str) -> Result<pb::User, tonic::Status> {
    let mut request = Request::new(pb::GetCurrentUserRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    client
        .get_current_user(request)
        .await
        .map(|reply| reply.into_inner().user.expect("user"))
}

backends!(
    register_login_refresh_logout,
    reusing_a_rotated_token_revokes_its_family,
    a_refresh_whose_answer_was_lost_can_be_repeated_once,
    no_second_chance_after_the_grace,
    duplicate_email_is_rejected_whatever_its_case,
    bad_registrations_name_their_fields,
    forged_and_expired_tokens_are_rejected,
);

async fn register_login_refresh_logout(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);

    let registered = register(&mut client, "Ada@Example.com").await;
    assert_eq!(registered.token_type, "Bearer");
    assert_eq!(registered.expires_in, 900);
    let user = registered.user.clone().expect("user");
    assert_eq!(
        user.email, "ada@example.com",
        "emails are stored normalised"
    );

    let me = current_user(&mut client, &registered.access_token)
        .await
        .expect("me");
    assert_eq!(me.id, user.id);

    let login = client
        .login(pb::LoginRequest {
            email: "  ADA@example.com ".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login with another case")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(login.user.expect("user").id, user.id);

    let rotated = refresh(&mut client, &login.refresh_token)
        .await
        .expect("refresh");
    assert_ne!(rotated.refresh_token, login.refresh_token);
    current_user(&mut client, &rotated.access_token)
        .await
        .expect("new access token works");

    client
        .logout(pb::LogoutRequest {
            refresh_token: rotated.refresh_token.clone(),
        })
        .await
        .expect("logout");
    let after = refresh(&mut client, &rotated.refresh_token)
        .await
        .expect_err("logged out");
    assert_eq!(after.code(), Code::Unauthenticated);
    // The registration's own session is another family and still works.
    refresh(&mut client, &registered.refresh_token)
        .await
        .expect("other session unaffected");

    let unknown = refresh(&mut client, "not-a-token")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::Unauthenticated);
}

async fn reusing_a_rotated_token_revokes_its_family(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);
    let first = register(&mut client, "grace@example.com").await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotate once");
    // The holder got and used the successor, so `first` is known to be retired.
    let third = refresh(&mut client, &second.refresh_token)
        .await
        .expect("rotate twice");

    let reuse = refresh(&mut client, &first.refresh_token)
        .await
        .expect_err("reuse");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(
        reuse.message().contains("already used"),
        "{}",
        reuse.message()
    );

    // The thief's replay took the legitimate holder's newer token down too.
    let revoked = refresh(&mut client, &third.refresh_token)
        .await
        .expect_err("family revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated);
}

async fn a_refresh_whose_answer_was_lost_can_be_repeated_once(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);
    let first = register(&mut client, "lost@example.com").await;
    // A page reloads mid-refresh: the rotation happened, its answer never arrived.
    let lost = refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotate once");
    let again = refresh(&mut client, &first.refresh_token)
        .await
        .expect("the same token, presented again at once, rotates again");
    assert_ne!(again.refresh_token, lost.refresh_token);
    refresh(&mut client, &again.refresh_token)
        .await
        .expect("the new successor works");

    // The successor nobody received was revoked: whoever shows it up is not the
    // holder, and the family goes.
    let replay = refresh(&mut client, &lost.refresh_token)
        .await
        .expect_err("the lost successor is revoked");
    assert_eq!(replay.code(), Code::Unauthenticated);
    let family = refresh(&mut client, &first.refresh_token)
        .await
        .expect_err("family revoked");
    assert_eq!(family.code(), Code::Unauthenticated);
}

async fn no_second_chance_after_the_grace(backend: Backend) {
    let mut options = Options::new(backend);
    options.lifetimes.reuse_grace = Duration::ZERO;
    let platform = TestPlatform::spawn_with(options).await;
    let mut client = client(&platform);
    let first = register(&mut client, "nograce@example.com").await;
    let second = refresh(&mut client, &first.refresh_token)
        .await
        .expect("rotate once");
    let reuse = refresh(&mut client, &first.refresh_token)
        .await
        .expect_err("reuse after the grace");
    assert_eq!(reuse.code(), Code::Unauthenticated);
    let revoked = refresh(&mut client, &second.refresh_token)
        .await
        .expect_err("family revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated);
}

async fn duplicate_email_is_rejected_whatever_its_case(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);
    register(&mut client, "linus@example.com").await;
    let duplicate = client
        .register(pb::RegisterRequest {
            email: "LINUS@Example.COM".into(),
            password: "another long password".into(),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
}

async fn bad_registrations_name_their_fields(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);
    let cases = [
        ("not an email", PASSWORD, vec!["email"]),
        ("", "", vec!["email", "password"]),
        ("short@example.com", "123456789", vec!["password"]),
        ("same@example.com", "Same@Example.com", vec!["password"]),
    ];
    for (email, password, fields) in cases {
        let status = client
            .register(pb::RegisterRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .expect_err("invalid registration");
        assert_eq!(status.code(), Code::InvalidArgument, "{email:?}");
        let named: Vec<_> = field_violations(&status)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(named, fields, "{email:?} / {password:?}");
    }
}

fn unsigned(header: &serde_json::Value, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).expect("claims"));
    format!("{header}.{claims}")
}

async fn forged_and_expired_tokens_are_rejected(backend: Backend) {
    let platform = TestPlatform::spawn(backend).await;
    let mut client = client(&platform);
    let session = register(&mut client, "mallory@example.com").await;
    let user_id = session.user.expect("user").id;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = |exp: i64| Claims {
        sub: user_id.clone(),
        email: "mallory@example.com".into(),
        iss: token::ISSUER.into(),
        aud: token::AUDIENCE.into(),
        iat: now - 10,
        exp,
        jti: "test".into(),
        role: String::new(),
    };
    let server_keys = KeyRing::load_or_create(&platform.keys_dir).expect("server keys");
    let kid = server_keys.public_keys()[0].kid.clone();

    // A token the server's key signed is accepted: the forgeries below differ only
    // in what they break.
    let genuine = server_keys.sign(&claims(now + 600)).expect("sign");
    current_user(&mut client, &genuine)
        .await
        .expect("genuine token");

    let expired = server_keys.sign(&claims(now - 120)).expect("sign");
    let other_key = KeyRing::ephemeral()
        .expect("other key")
        .sign(&claims(now + 600))
        .expect("sign");
    let mut tampered = genuine.clone();
    let last = tampered.pop().expect("signature");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let mut elevated = claims(now + 600);
    elevated.sub = uuid::Uuid::new_v4().to_string();
    let swapped_claims = {
        let parts: Vec<_> = genuine.split('.').collect();
        let forged = unsigned(
            &serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
            &elevated,
        );
        format!("{forged}.{}", parts[2])
    };
    let alg_none = format!(
        "{}.",
        unsigned(
            &serde_json::json!({"alg": "none", "typ": "JWT", "kid": kid}),
            &claims(now + 600)
        )
    );
    let hmac = {
        let header = jsonwebtoken::Header {
            kid: Some(kid.clone()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        };
        let secret =
            jsonwebtoken::EncodingKey::from_secret(server_keys.public_keys()[0].x.as_bytes());
        jsonwebtoken::encode(&header, &claims(now + 600), &secret).expect("hmac")
    };

    for (name, token) in [
        ("expired", expired),
        ("signed by another key", other_key),
        ("tampered signature", tampered),
        ("claims swapped under a valid signature", swapped_claims),
        ("alg none", alg_none),
        ("HS256 with the public key as secret", hmac),
        ("garbage", "a.b.c".to_owned()),
    ] {
        let status = current_user(&mut client, &token).await.expect_err(name);
        assert_eq!(status.code(), Code::Unauthenticated, "{name}");
    }
    let missing = client
        .get_current_user(pb::GetCurrentUserRequest {})
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated);
}
